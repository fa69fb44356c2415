"""`gridbot vault deposit|withdraw|status|history [LEDGER]`: a vault's ledger.

The ledger is the SQLite file ``bot.vault.ledger`` keeps: the live bot's, beside its state
(``--config`` with ``vault.enabled``), ``vault.ledger_path`` of a config, or the ``ledger.db``
of a ``gridbot stress`` report. ``status`` and ``history`` read it; ``deposit`` and
``withdraw`` write a request into it in one transaction, which the running bot applies at its
next pass (``bot.live.vault_exits``): shares minted or burned at the NAV of that moment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from bot.errors import ConfigError
from bot.inputs import depositor, number, share_amount

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "vault",
        help="show a vault's ledger: depositors, shares and exits",
        description="Show a vault ledger (SQLite): status (depositors, shares, exits) or "
        "history (every deposit, withdrawal request and payout).",
    )
    p.add_argument("action", choices=("status", "history", "deposit", "withdraw"))
    p.add_argument(
        "ledger",
        nargs="?",
        help="the ledger file (default: vault.ledger_path of --config, else "
        "results/vault/ledger.db)",
    )
    p.add_argument("--ledger", dest="ledger_opt", help="the ledger file (as LEDGER)")
    p.add_argument(
        "--config",
        help="config of the bot: its live ledger (live.state_dir) with vault.enabled, else "
        "vault.ledger_path",
    )
    p.add_argument("--depositor", type=depositor, help="deposit / withdraw: who")
    p.add_argument(
        "--amount",
        type=number(0.0, 1e12, lo_open=True),
        help="deposit: USDT already transferred to the account",
    )
    p.add_argument(
        "--shares",
        type=share_amount,
        help="withdraw: a number of shares, P%% of the depositor's shares, or all",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bot.config import load_config
    from bot.vault.ledger import Ledger, live_ledger_path

    console = Console(stderr=True)
    if args.ledger or args.ledger_opt:
        path = Path(args.ledger or args.ledger_opt)
    elif args.config:
        cfg = load_config(args.config)
        path = Path(cfg.vault.ledger_path)
        if cfg.vault.enabled:
            path = live_ledger_path(cfg.live.state_dir)
    else:
        path = Path("results/vault/ledger.db")
    if args.action in ("deposit", "withdraw"):
        return _request(args, path, console)
    if not path.is_file():
        raise ConfigError(f"vault ledger {str(path)!r}: no such file")
    with Ledger(path) as led:
        if args.action == "history":
            rows = led.history()
            table = Table(title=f"vault history: {path}", title_justify="left")
            for col in ("id", "time_ms", "kind", "depositor", "amount", "shares", "nav_per_share"):
                table.add_column(col, justify="right")
            for r in rows:
                table.add_row(
                    str(r["id"]), str(r["time_ms"]), r["kind"], r["depositor"],
                    f"{r['amount']:,.2f}", f"{r['shares']:,.4f}", f"{r['nav_per_share']:.6f}",
                )  # fmt: skip
            console.print(table)
            payload: dict = {"ledger": str(path), "history": rows}
        else:
            # each exit with its slice of every position (live exits: what is closed so far)
            exits = [{**e.__dict__, "slices": led.slices(e.id)} for e in led.exits()]
            payload = {
                "ledger": str(path),
                "total_shares": led.total_shares(),
                "depositors": led.depositors(),
                "exits": exits,
                "requests": led.requests(),
            }
            table = Table(title=f"vault status: {path}", title_justify="left")
            for col in ("exit", "depositor", "mode", "status", "progress", "marked", "realized"):
                table.add_column(col, justify="right")
            for e in exits:
                table.add_row(
                    str(e["id"]), e["depositor"], e["mode"], e["status"], f"{e['progress']:.2%}",
                    f"{e['marked_value']:,.2f}",
                    "-" if e["realized_value"] is None else f"{e['realized_value']:,.2f}",
                )  # fmt: skip
            console.print(f"shares: {payload['total_shares']:,.4f} held by {payload['depositors']}")
            console.print(table)
    if args.json:
        print(orjson.dumps(payload).decode(), flush=True)
    return 0


def _request(args: argparse.Namespace, path: Path, console: Console) -> int:
    """Write a deposit or withdrawal request for the running bot (one transaction)."""
    import time

    from bot.vault.ledger import Ledger

    if not args.depositor:
        raise ConfigError(f"vault {args.action}: --depositor NAME is required")
    if args.action == "deposit" and args.amount is None:
        raise ConfigError("vault deposit: --amount USDT is required")
    if args.action == "withdraw" and args.shares is None:
        raise ConfigError("vault withdraw: --shares (a number, P% or all) is required")
    if not path.parent.is_dir():
        raise ConfigError(f"vault ledger {str(path)!r}: no such folder")
    now_ms = int(time.time() * 1000)
    with Ledger(path) as led:
        if args.action == "deposit":
            rid = led.submit("deposit", args.depositor, now_ms, amount=args.amount)
            what = f"deposit of {args.amount:,.2f} USDT"
        else:
            kind, x = args.shares
            shares = x * led.shares_of(args.depositor) if kind == "fraction" else x
            rid = led.submit("withdraw", args.depositor, now_ms, shares=shares)
            what = f"withdrawal of {shares:,.6g} shares"
    console.print(f"vault request {rid}: {what} by {args.depositor}, applied by the bot next")
    if args.json:
        print(orjson.dumps({"ledger": str(path), "request": rid}).decode(), flush=True)
    return 0

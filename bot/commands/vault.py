"""`gridbot vault status|history [LEDGER]`: read a vault's ledger (shares, NAV, exits).

The ledger is the SQLite file ``bot.vault.ledger`` keeps (``vault.ledger_path`` of a config, or
the ``ledger.db`` of a ``gridbot stress`` report). Read-only: the live bot does not yet run a
vault, so deposits and withdrawals are not taken here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from bot.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "vault",
        help="show a vault's ledger: depositors, shares and exits",
        description="Show a vault ledger (SQLite): status (depositors, shares, exits) or "
        "history (every deposit, withdrawal request and payout).",
    )
    p.add_argument("action", choices=("status", "history"))
    p.add_argument(
        "ledger",
        nargs="?",
        help="the ledger file (default: vault.ledger_path of --config, else "
        "results/vault/ledger.db)",
    )
    p.add_argument("--config", help="config whose vault.ledger_path names the ledger")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bot.config import load_config
    from bot.vault.ledger import Ledger

    console = Console(stderr=True)
    if args.ledger:
        path = Path(args.ledger)
    elif args.config:
        path = Path(load_config(args.config).vault.ledger_path)
    else:
        path = Path("results/vault/ledger.db")
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
            exits = [e.__dict__ for e in led.exits()]
            payload = {
                "ledger": str(path),
                "total_shares": led.total_shares(),
                "depositors": led.depositors(),
                "exits": exits,
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

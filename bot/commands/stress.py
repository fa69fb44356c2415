"""`gridbot stress CONFIG --withdraw FRACTION@TIME ...`: a vault's mass withdrawals in a backtest.

Human output (the exits and the remaining vault) goes to stderr; with ``--json`` stdout carries
exactly one JSON object (see ``backtest.stress``): ``exits``, ``nav_per_share_before``,
``nav_per_share_after_request``, ``remaining``, ``ledger`` and ``report_dir``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from bot import inputs
from bot.commands.backtest import _dates, add_data_flags, apply_data_flags, resolve_data_path
from bot.config import load_config
from bot.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stress",
        help="stress a vault with mass withdrawals over historical candles",
        description="Backtest CONFIG as a vault with many depositors and apply withdrawals "
        "(a fraction of every depositor's shares) and deposits; report each exit's mode, "
        "marked and realized value, slippage, fees, funding and tranches, the NAV per share "
        "of those who stay and the remaining vault's risk.",
    )
    p.add_argument("config", help="config file (hjson); its vault section sets the buffers")
    p.add_argument(
        "--withdraw",
        action="append",
        default=[],
        metavar="FRACTION@TIME",
        help="a withdrawal of FRACTION (0.9 or 90%%) of the shares at TIME (UTC), repeatable",
    )
    p.add_argument(
        "--deposit",
        action="append",
        default=[],
        metavar="AMOUNT@TIME",
        help="a deposit of AMOUNT USDT at TIME (UTC), repeatable",
    )
    add_data_flags(p)
    p.add_argument("--out", help="folder for the report (default: backtest.results_dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(run=run)


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def run(args: argparse.Namespace) -> int:
    from backtest.data import load_candles_with_report
    from backtest.report import publish
    from backtest.stress import new_stress_dir, parse_request, run_stress, write_stress_report

    console = Console(stderr=True)
    if not args.withdraw and not args.deposit:
        raise ConfigError("give at least one --withdraw FRACTION@TIME (or --deposit AMOUNT@TIME)")
    requests = [parse_request(s, "withdraw") for s in args.withdraw]
    requests += [parse_request(s, "deposit") for s in args.deposit]
    config_path = Path(args.config)
    config = apply_data_flags(load_config(config_path), args, str(config_path))
    bt = config.backtest
    start_ms, end_ms = _dates(config, args)
    data_path = resolve_data_path(bt.data, config_path)
    with console.status(f"loading candles of {', '.join(bt.symbols)} from {data_path} ..."):
        candles, report = load_candles_with_report(
            data_path,
            bt.symbols,
            start_ms=start_ms,
            end_ms=end_ms,
            max_gap_minutes=bt.max_gap_minutes,
            cache_dir=Path(bt.results_dir) / "cache",
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    out_dir = inputs.writable_dir(
        args.out or bt.results_dir, "--out" if args.out else "backtest.results_dir"
    )
    work, name = new_stress_dir(out_dir, config, candles)
    t0 = time.perf_counter()
    with console.status("running the vault (compiling the engine on the first run only) ..."):
        result = run_stress(config, candles, requests, ledger_path=work / "ledger.db")
    elapsed = time.perf_counter() - t0
    # written whole in a hidden folder, then renamed: never a half report under its name
    write_stress_report(result, work, plots=not args.no_plots, report_dir=out_dir / name)
    folder = publish(work, out_dir, name)
    if folder != out_dir / name:  # the name was taken: say where it really is
        write_stress_report(result, folder, plots=False, report_dir=folder)
    rep = result.report

    table = Table(title="vault exits", title_justify="left")
    for col in (
        "requested", "fraction", "mode", "marked", "realized", "slippage", "fees", "funding",
        "tranches", "paid at", "min margin ratio",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    for ex in rep["exits"]:
        risk = ex["liquidation_risk"]
        mr = risk["min_margin_ratio"]
        table.add_row(
            ex["requested_at"], f"{ex['fraction']:.2%}", ex["mode"], _money(ex["marked_value"]),
            _money(ex["realized_value"]), _money(ex["slippage"]), _money(ex["fees"]),
            _money(ex["funding"]), str(ex["tranches"]), ex["paid_at"] or "not yet",
            "-" if mr is None else f"{mr:.3f}",
            style="bold red" if risk["liquidated_during_unwind"] else None,
        )  # fmt: skip
    console.print(table)
    rem = rep["remaining"]
    console.print(
        f"NAV per share before / after the first request: {rep['nav_per_share_before']} / "
        f"{rep['nav_per_share_after_request']}"
    )
    console.print(
        f"remaining vault: final equity {_money(rem['final_equity'])}, worst drawdown of NAV per "
        f"share {rem['drawdown_worst']:.2%}, entries blocked in {rem['entries_blocked_candles']} "
        f"candles, liquidated: "
        + (
            "[bold red]YES " + str(rem["liquidation_time"]) + "[/bold red]"
            if rem["liquidated"]
            else "no"
        )
    )
    console.print(f"stress took {elapsed:.2f} s; report: [bold]{folder}[/bold]")
    if args.json:
        payload = {**rep, "report_dir": str(folder)}
        print(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY).decode(), flush=True)
    return 0

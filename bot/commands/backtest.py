"""`gridbot backtest CONFIG`: run a config over historical candles and write a report folder.

Human output (load notes, progress, the metrics table) goes to stderr; with ``--json`` stdout
carries exactly one JSON object: the metrics plus ``report_dir`` and ``symbols``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from bot import inputs
from bot.config import Config, config_to_dict, load_config, parse_config
from bot.errors import ConfigError, DataError
from bot.inputs import parse_date_ms

__all__ = ["add_parser", "apply_data_flags", "resolve_data_path", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "backtest",
        help="backtest a config over historical candles",
        description="Backtest CONFIG over candles and write a report folder "
        "(analysis.json, fills.csv, equity.csv, config, plots).",
    )
    p.add_argument("config", help="config file (hjson)")
    add_data_flags(p)
    p.add_argument("--out", help="folder for the report (default: backtest.results_dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (faster)")
    p.add_argument("--download", action="store_true",
                   help="download the coins and dates the --data folder lacks first (ccxt, "
                   "Binance USDT-M; resumable, with a progress bar; funding history too)")  # fmt: skip
    p.add_argument("--download-url", type=inputs.url,
                   help="download from this Binance-compatible REST URL (implies --download; "
                   "e.g. a `gridbot venue`)")  # fmt: skip
    p.add_argument("--download-retries", type=inputs.integer(0, 100), default=5,
                   help="retries per request when downloading (default 5)")  # fmt: skip
    p.add_argument(
        "--event",
        action="append",
        metavar="SPEC",
        help="an outside event, repeatable: deposit:AMOUNT@TIME, withdraw:AMOUNT|PCT%%@TIME, "
        "reduce:SYMBOL:long|short:QTY[:PRICE]@TIME, reduce_all:FRACTION|PCT%%@TIME, "
        "deleverage:FRACTION|PCT%%@TIME (profitable positions only)",
    )
    p.set_defaults(run=run)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """--symbols, --data, --start, --end: the flags :func:`apply_data_flags` applies (every
    command that runs a backtest takes them, checked alike)."""
    p.add_argument(
        "--symbols",
        type=inputs.symbols,
        help="comma-separated symbols, overriding backtest.symbols",
    )
    p.add_argument("--data", help="candle folder or file, overriding backtest.data")
    p.add_argument(
        "--start", type=inputs.date_text, help="start date (UTC, inclusive), e.g. 2021-05-18"
    )
    p.add_argument(
        "--end", type=inputs.date_text, help="end date (UTC, exclusive), e.g. 2021-05-20"
    )


def apply_data_flags(config: Config, args: argparse.Namespace, source: str) -> Config:
    """The config with --symbols, --data, --start and --end applied, re-validated (shared by the
    commands that run backtests); a bad flag is an error naming the flag."""
    data = config_to_dict(config)
    bt = data["backtest"]
    if args.symbols is not None:  # checked by inputs.symbols while parsing
        bt["symbols"] = list(args.symbols)
    if args.data is not None:
        bt["data"] = args.data
    for flag, key, value in (
        ("--start", "start_date", args.start),
        ("--end", "end_date", args.end),
    ):
        if value is not None:
            try:
                parse_date_ms(value)
            except ConfigError as exc:
                raise ConfigError(f"{flag}: {exc}") from None
            bt[key] = value
    return parse_config(data, f"{source} (with command-line flags)")


def resolve_data_path(data: str, config_path: Path) -> Path:
    """A relative ``backtest.data`` path: the current directory first, then the config's folder."""
    p = Path(data).expanduser()
    if p.is_absolute():
        return p
    tried = [Path.cwd() / p, config_path.resolve().parent / p]
    for candidate in tried:
        try:
            if candidate.exists():
                return candidate
        except OSError as exc:  # e.g. a name too long for the file system
            raise DataError(f"backtest.data = {data[:200]!r}: {exc.strerror or exc}") from None
    raise DataError(
        f"backtest.data = {data!r}: no such candle folder or file; looked in "
        + " and ".join(str(t) for t in dict.fromkeys(tried))
    )


def _dates(config: Config, args: argparse.Namespace) -> tuple[int | None, int | None]:
    bt = config.backtest

    def parse(value: str | None, key: str, flag: str, given: str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse_date_ms(value)
        except ConfigError as exc:
            where = flag if given is not None else f"backtest.{key}"
            raise ConfigError(f"{where}: {exc}") from None

    start = parse(bt.start_date, "start_date", "--start", args.start)
    end = parse(bt.end_date, "end_date", "--end", args.end)
    if start is not None and end is not None and start >= end:
        raise ConfigError(
            f"start date {bt.start_date!r} is not before end date {bt.end_date!r} "
            f"(backtest.start_date / --start, backtest.end_date / --end)"
        )
    return start, end


def _fmt(key: str, v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "YES" if v else "no"
    if isinstance(v, float):
        if key in (
            "adg",
            "daily_gain_mean",
            "mdg",
            "drawdown_worst",
            "hard_stop_trigger_drawdown_mean",
        ):
            return f"{v * 100:.4f} %"
        if key.endswith("_hours_max") or key.startswith("hours_"):
            return f"{v:.1f} h"
        if key.endswith("_pct"):
            return f"{v:.2f} %"
        return f"{v:,.6g}"
    return str(v)


def _summary(metrics: dict, symbols: tuple[str, ...], hard_stop: bool = True) -> Table:
    table = Table(title=f"backtest: {', '.join(symbols)}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if not hard_stop and k.startswith("hard_stop_"):
            continue  # the stop is off: its metrics stay in --json and analysis.json
        style = "bold red" if k in ("liquidated", "liquidation_time") and v else None
        table.add_row(k, _fmt(k, v), style=style)
    return table


def run(args: argparse.Namespace) -> int:
    # Heavy imports here: `gridbot --help` and other commands stay fast.
    from backtest.data import format_ms, load_candles_with_report
    from backtest.events import parse_events
    from backtest.metrics import compute_metrics, hard_stop_stops
    from backtest.report import write_report
    from backtest.runner import run_backtest

    console = Console(stderr=True)
    config_path = Path(args.config)
    config = apply_data_flags(load_config(config_path), args, str(config_path))
    events = parse_events(getattr(args, "event", None))
    bt = config.backtest
    start_ms, end_ms = _dates(config, args)
    download = args.download or args.download_url is not None
    if download and not Path(bt.data).expanduser().exists():
        data_path = Path(bt.data).expanduser()  # a new cache folder: created by the download
    else:
        data_path = resolve_data_path(bt.data, config_path)
    # Where the report goes is checked before the long part, not after it.
    results_dir = inputs.writable_dir(bt.results_dir, "backtest.results_dir")  # + the cache
    out_dir = results_dir if args.out is None else inputs.writable_dir(args.out, "--out")

    if download:
        from backtest.on_demand import ensure_data

        if data_path.is_file():
            raise ConfigError(f"--download: backtest.data {str(data_path)!r} is a file; "
                              "give --data FOLDER")  # fmt: skip
        fetched = ensure_data(
            data_path, bt.symbols, start_ms, end_ms, base_url=args.download_url,
            max_retries=args.download_retries, progress=sys.stderr.isatty(),
        )  # fmt: skip
        if fetched:
            console.print(f"downloaded into {data_path}: {', '.join(fetched)}")
    with console.status(f"loading candles of {', '.join(bt.symbols)} from {data_path} ..."):
        candles, report = load_candles_with_report(
            data_path,
            bt.symbols,
            start_ms=start_ms,
            end_ms=end_ms,
            max_gap_minutes=bt.max_gap_minutes,
            cache_dir=Path(bt.results_dir) / "cache",
        )
    n = len(candles.timestamps)
    console.print(
        f"candles: {n} x {len(candles.symbols)} symbols, {format_ms(int(candles.timestamps[0]))}"
        f" to {format_ms(int(candles.timestamps[-1]) + candles.timeframe_ms)}"
    )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(
        "filled (gap) candles in range: "
        + ", ".join(f"{s} {c}" for s, c in candles.filled_candles.items())
    )

    t0 = time.perf_counter()
    with console.status(
        f"running the backtest over {n} candles (compiling the engine on the first run only, "
        f"~15 s) ..."
    ):
        bt_run = run_backtest(config, candles, events)
    elapsed = time.perf_counter() - t0
    metrics = compute_metrics(bt_run)
    funding = bt_run.funding.as_dict(bt.funding_rate_8h) if bt_run.funding else None
    if funding is not None:
        console.print("funding: " + ", ".join(
            f"{s} exchange history (every {funding['interval_hours'][s]:g} h)" if v == "history"
            else f"{s} constant {bt.funding_rate_8h:g} per 8 h"
            for s, v in funding["source"].items()
        ))  # fmt: skip

    with console.status("writing the report" + ("" if args.no_plots else " and plots") + " ..."):
        folder = write_report(
            bt_run, metrics, out_dir, config_source=str(config_path), plots=not args.no_plots
        )
    hsl_on = config.bot.common.equity_hard_stop_loss.enabled
    console.print(_summary(metrics, candles.symbols, hsl_on))
    for stop in hard_stop_stops(bt_run):
        restart = stop["restarted_at"] or "never (halted to the end)"
        console.print(
            f"[bold red]hard stop[/bold red] fired at {stop['fired_at']} (score "
            f"{_fmt('drawdown_worst', stop['score'])}): {stop['closes']} market closes cost "
            f"{stop['close_loss']:,.2f} USDT; restarted {restart}"
        )
    console.print(f"backtest took {elapsed:.2f} s; report: [bold]{folder}[/bold]")
    if args.json:
        payload = {**metrics, "report_dir": str(folder), "symbols": list(candles.symbols),
                   "funding": funding}  # fmt: skip
        print(orjson.dumps(payload).decode(), flush=True)
    return 0

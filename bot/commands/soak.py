"""`gridbot soak CONFIG [--data DIR] [--symbols A,B] [--exchange binance|bybit] [--seed N]
[--minutes M] [--speed X] [--start DATE] [--trades-out FILE] [--json]`: the proof harness.

Runs the simulated venue (in-process, 127.0.0.1, ephemeral ports) over real candles, replayed
fast, and the live bot as a real subprocess (``python -m bot.cli live``) against it, for
``--minutes`` of wall-clock time under random faults drawn from ``--seed``
(:mod:`backtest.venue.chaos`): dropped, 1008-closed and silent sockets, REST 429 then 418,
5xx, delays, margin rejects, a deleverage while the streams are silent, manual position
changes, an exchange account reset, a flip to one-way mode, kill -9 of the bot (also at the
moment a fill is booked) and restarts on the same state. Then the faults and candles stop, the
bot settles, is stopped, and everything is measured from the venue's records
(:mod:`backtest.soak`).

Human output (a table) goes to stderr; ``--json`` prints one JSON object on stdout. Exit code
0 when every check passes, 1 when one fails (the table and ``failed_checks`` say which), 2 on
bad input. Each run writes a folder under ``backtest.results_dir`` (``soak_<time>_<exchange>_s<seed>``):
the bot's config, logs and state, the fault schedule and log, trades.csv and summary.json.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from bot.config import load_config
from bot.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "soak",
        help="run the live bot against the simulated venue under random faults and check it",
        description="Soak test: the venue over real candles, the live bot as a subprocess, "
        "random faults reproducible by seed; measured from the venue's own records.",
    )
    p.add_argument("config", help="config file (hjson)")
    p.add_argument("--data", help="candle folder or file (default: backtest.data)")
    p.add_argument("--symbols", help="comma-separated symbols (default: live.symbols, else backtest.symbols)")  # fmt: skip
    p.add_argument("--exchange", choices=("binance", "bybit"), default="binance",
                   help="the venue API the bot trades through (default binance)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1, help="seed of the fault schedule (default 1)")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="wall-clock minutes of faults (default 5), then a settle period")  # fmt: skip
    p.add_argument("--speed", type=float, default=400.0,
                   help="replay speed, x real time (default 400: a 1m candle every 0.15 s); "
                   "lowered when the data is too short for --minutes")  # fmt: skip
    p.add_argument("--start", help="first replayed candle (UTC); default: drawn from the seed")
    p.add_argument("--trades-out", help="write the venue's trade list to this CSV file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="log every fault as it fires")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from backtest.data import load_candles, parse_date_ms
    from backtest.soak import SoakOptions, run_soak, summary_lines
    from bot.commands.backtest import resolve_data_path

    console = Console(stderr=True)
    config = load_config(args.config)
    if not 0 < args.minutes <= 24 * 60:  # NaN fails too
        raise ConfigError(f"--minutes {args.minutes}: must be > 0 and at most 1440")
    if not 0 < args.speed < math.inf:
        raise ConfigError(f"--speed {args.speed}: must be > 0 (400 = a 1m candle every 0.15 s)")
    if args.symbols:
        symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    else:
        symbols = list(config.live.symbols or config.backtest.symbols)
    if not symbols:
        raise ConfigError(f"--symbols {args.symbols!r}: give symbols like BTCUSDT,DOGEUSDT")
    data = (
        Path(args.data) if args.data else resolve_data_path(config.backtest.data, Path(args.config))
    )
    start_ms = parse_date_ms(args.start) if args.start else None
    candles = load_candles(data, symbols, max_gap_minutes=config.backtest.max_gap_minutes)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("websockets", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    opts = SoakOptions(
        config=config,
        candles=candles,
        exchange=args.exchange,
        seed=args.seed,
        minutes=args.minutes,
        speed=args.speed,
        start_ms=start_ms,
        trades_out=Path(args.trades_out) if args.trades_out else None,
    )
    console.print(
        f"soak: {args.exchange}, {', '.join(symbols)}, seed {args.seed}, "
        f"{args.minutes:g} min of faults (then a settle period) ..."
    )
    try:
        result = asyncio.run(run_soak(opts))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except RuntimeError as exc:  # the harness could not run the bot (start-up never finished)
        console.print(f"[red]gridbot soak: could not run:[/red] {exc}")
        return 1
    s = result.summary
    table = Table(title=f"soak {'passed' if s['ok'] else 'FAILED'}", show_lines=False)
    for col in ("measure", "value", "check"):
        table.add_column(col)
    for measure, value, verdict in summary_lines(s):
        style = "red" if verdict == "FAIL" else None
        table.add_row(measure, value, verdict, style=style)
    console.print(table)
    if s["failed_checks"]:
        console.print(f"[red]failed checks:[/red] {', '.join(s['failed_checks'])}")
    console.print(f"results: {s['results_dir']} ({s['seconds']:.0f} s)")
    if args.json:
        print(orjson.dumps(s).decode(), flush=True)
    return 0 if s["ok"] else 1

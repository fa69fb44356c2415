"""`gridbot download`: 1m candles of Binance USDT-M perpetuals into OUT/SYMBOL.csv.gz (resumable)."""

from __future__ import annotations

import argparse
import sys

from bot import inputs

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "download",
        help="download 1m candles (Binance USDT-M futures)",
        description="Download 1m OHLCV candles with ccxt into OUT/SYMBOL.csv.gz. A rerun resumes "
        "after the last candle already in the file.",
    )
    p.add_argument("--exchange", default="binance", help="exchange (only 'binance' USDT-M futures)")
    p.add_argument(
        "--symbols",
        required=True,
        type=inputs.symbols,
        help="comma-separated, e.g. BTCUSDT,ETHUSDT",
    )
    p.add_argument(
        "--start",
        required=True,
        type=inputs.date_text,
        help="start date (UTC, inclusive), e.g. 2024-01-01",
    )
    p.add_argument("--end", type=inputs.date_text, help="end date (UTC, exclusive; default: now)")
    p.add_argument(
        "--out",
        default="data/binance_usdtm_1m",
        help="output folder (default data/binance_usdtm_1m)",
    )
    p.add_argument(
        "--retries",
        type=inputs.integer(0, 100),
        default=5,
        help="retries per request on rate limits / network errors, 0 .. 100 (default 5)",
    )
    p.add_argument("--base-url", type=inputs.url, help="REST base URL of a Binance-compatible server, e.g. the local "
                   "`gridbot venue` (http://127.0.0.1:8080); for testing and paper trading")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from backtest.data import format_ms, parse_date_ms
    from backtest.download import download_candles

    out = inputs.writable_dir(args.out, "--out")
    results = download_candles(
        args.symbols,
        parse_date_ms(args.start),
        parse_date_ms(args.end) if args.end else None,
        out,
        exchange_id=args.exchange,
        base_url=args.base_url,
        max_retries=args.retries,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    from backtest.download_funding import download_funding

    end_ms = max((r.last_ms or 0) for r in results.values()) + 60_000 if results else 0
    funding = download_funding(
        list(results), parse_date_ms(args.start), end_ms, out,
        base_url=args.base_url, max_retries=args.retries,
    ) if end_ms else {}  # fmt: skip
    for r in results.values():
        span = (
            f"{format_ms(r.first_ms)} .. {format_ms(r.last_ms)}"
            if r.first_ms is not None and r.last_ms is not None
            else "empty"
        )
        print(
            f"{r.symbol}: +{r.rows_added} candles, {r.rows_total} in {r.path} ({span}); "
            f"+{funding.get(r.symbol, 0)} funding rates",
            file=sys.stderr,
        )
    return 0

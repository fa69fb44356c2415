"""`gridbot venue --data PATH`: the simulated exchange (Binance USDT-M and Bybit v5 formats) on 127.0.0.1, replaying
historical candles for paper trading (REST for ccxt, websockets for streams).

One account is created. Its API key and secret come from the environment (``--api-key-env``,
default GRIDBOT_API_KEY, and ``--api-secret-env``, default GRIDBOT_API_SECRET); when either is
unset a random pair is generated and written to a mode-0600 JSON file under the results folder,
whose path (never the secret) is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

from bot import inputs
from bot.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "venue",
        help="run the simulated exchange (Binance USDT-M and Bybit v5 formats) on 127.0.0.1",
        description="Serve a Binance USDT-M and Bybit v5 compatible REST + websocket exchange on 127.0.0.1 "
        "that replays historical candles, for paper trading with the live bot.",
    )
    p.add_argument("--data", required=True, help="candle folder or file (CSV / CSV.gz)")
    p.add_argument(
        "--symbols",
        type=inputs.symbols,
        help="comma-separated symbols (default: every file in --data)",
    )
    p.add_argument(
        "--speed",
        type=inputs.SPEED,
        default=1.0,
        help="replay speed: X times real time (default 1)",
    )
    p.add_argument(
        "--port", type=inputs.PORT, default=8080, help="REST port (0: any free port; default 8080)"
    )
    p.add_argument(
        "--ws-port", type=inputs.PORT, default=8081, help="websocket port (0: any; default 8081)"
    )
    p.add_argument(
        "--balance",
        type=inputs.BALANCE,
        default=10_000.0,
        help="USDT wallet balance (default 10000)",
    )
    p.add_argument(
        "--start",
        type=inputs.date_text,
        help="replay start (UTC); earlier candles are served as history",
    )
    p.add_argument("--end", type=inputs.date_text, help="replay end (UTC, exclusive)")
    p.add_argument("--api-key-env", default="GRIDBOT_API_KEY", help="env var holding the API key")
    p.add_argument(
        "--api-secret-env", default="GRIDBOT_API_SECRET", help="env var holding the API secret"
    )
    p.add_argument(
        "--hedge", action="store_true", help="start the account in hedge (dual-side) mode"
    )
    p.add_argument("--fill-mode", choices=("candle", "trades"), default="candle",
                   help="candle: the backtester's candle rule (default); trades: 4 trades per candle")  # fmt: skip
    p.add_argument(
        "--funding-rate",
        type=inputs.FUNDING_RATE,
        default=0.0001,
        help="funding rate per 8 h, -0.01 .. 0.01 (default 0.0001)",
    )
    p.add_argument(
        "--maker-fee",
        type=inputs.MAKER_FEE,
        default=0.0002,
        help="maker fee fraction, -0.001 .. 0.01 (negative: rebate; default 0.0002)",
    )
    p.add_argument(
        "--taker-fee",
        type=inputs.TAKER_FEE,
        default=0.0005,
        help="taker fee fraction, 0 .. 0.01 (default 0.0005)",
    )
    p.add_argument(
        "--results", default="results", help="folder for the generated key file (default results/)"
    )
    p.set_defaults(run=run)


def _credentials(args: argparse.Namespace) -> tuple[str, str, Path | None]:
    key, secret = os.environ.get(args.api_key_env), os.environ.get(args.api_secret_env)
    if key and secret:
        return key, secret, None
    key, secret = "venue-" + secrets.token_hex(16), secrets.token_hex(32)
    folder = inputs.writable_dir(args.results, "--results")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "venue_api_key.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"apiKey": key, "secret": secret}, f)
    os.chmod(path, 0o600)
    return key, secret, path


def run(args: argparse.Namespace) -> int:
    from backtest.data import load_candles, parse_date_ms
    from backtest.venue.server import Venue, VenueConfig

    # every flag was checked while parsing (bot.inputs)
    symbols = args.symbols
    end_ms = parse_date_ms(args.end) if args.end else None
    candles = load_candles(args.data, symbols, end_ms=end_ms)
    start_index = 0
    if args.start:
        import numpy as np

        start_index = int(np.searchsorted(candles.timestamps, parse_date_ms(args.start)))
        if start_index >= len(candles.timestamps):
            raise ConfigError(f"--start {args.start}: after the last candle of --data")
    config = VenueConfig(
        rest_port=args.port,
        ws_port=args.ws_port,
        maker_fee=args.maker_fee,
        taker_fee=args.taker_fee,
        funding_rate=args.funding_rate,
        fill_mode=args.fill_mode,
        start_index=start_index,
    )
    venue = Venue(candles, config)
    key, secret, key_file = _credentials(args)
    venue.add_account(key, secret, args.balance, hedge_mode=args.hedge)

    async def main() -> int:
        await venue.start()
        err = sys.stderr
        print(f"gridbot venue: REST {venue.rest_url}  websockets {venue.ws_url}", file=err)
        print(f"  symbols {', '.join(candles.symbols)}; {venue.n_candles - venue.index} candles to replay "
              f"at {args.speed:g}x; history {venue.index} candles", file=err)  # fmt: skip
        if key_file is not None:
            print(f"  API key and secret written to {key_file} (mode 0600)", file=err)
        else:
            print(
                f"  API key from ${args.api_key_env}, secret from ${args.api_secret_env}", file=err
            )
        try:
            n = await venue.run(args.speed)
            print(f"gridbot venue: replay finished after {n} candles", file=err)
        finally:
            await venue.stop()
        return 0

    return asyncio.run(main())

"""`gridbot venue --data PATH`: the simulated exchange (Binance USDT-M and Bybit v5 formats) on 127.0.0.1, replaying
historical candles for paper trading (REST for ccxt, websockets for streams).

One account is created. Its API key and secret come from the environment (``--api-key-env``,
default GRIDBOT_API_KEY, and ``--api-secret-env``, default GRIDBOT_API_SECRET); when either is
unset a random pair is generated and written to a mode-0600 JSON file under the results folder,
whose path (never the secret) is printed.

Without ``--start`` the first candles are served as history only, as many as the EMAs' warm-up
of ``--config`` (default configs/default.hjson, else the built-in defaults), so a bot started
against it seeds its EMAs from real klines instead of starting cold. At start-up it prints the
exact ``gridbot live`` command (and the equivalent ``live`` config keys) that trades it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shlex
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
        help="replay start (UTC); earlier candles are served as history "
        "(default: after the EMAs' warm-up of --config)",
    )
    p.add_argument("--config", help="the bot config you will run against it: sets the history "
                   "served and the printed command (default configs/default.hjson)")  # fmt: skip
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
    p.add_argument("--scenario", metavar="FILE",
                   help="an exchange-sim scenario (hjson): its traders, liquidity provider and "
                   "insurance fund trade beside the account; liquidations step by step, "
                   "deleverage events close its profitable positions")  # fmt: skip
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


DEFAULT_CONFIG = "configs/default.hjson"


def _config(args: argparse.Namespace) -> tuple[object, str | None]:
    """(config, its path or None) for the warm-up length and the printed command."""
    from bot.config import Config, load_config

    path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    return (load_config(path) if path else Config()), path


def _gridbot() -> str:
    """How this gridbot was invoked, to print a command that runs the same one."""
    if Path(sys.argv[0]).name == "gridbot":
        return sys.argv[0]
    return f"{shlex.quote(sys.executable)} -m bot.cli"


def live_command(
    config_path: str | None,
    symbols: list[str],
    rest_url: str,
    ws_url: str,
    key_file: Path | None,
    gridbot: str = "gridbot",
) -> str:
    """The `gridbot live` command that trades this venue (Binance USDT-M's interface)."""
    parts = [config_path or "CONFIG", "--exchange", "binance", "--symbols", ",".join(symbols),
             "--base-url", rest_url, "--ws-url", ws_url]  # fmt: skip
    if key_file is not None:
        parts += ["--key-file", str(key_file)]
    return gridbot + " live " + " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    from backtest.data import load_candles, parse_date_ms
    from backtest.venue.server import Venue, VenueConfig

    # every flag was checked while parsing (bot.inputs)
    symbols = args.symbols
    end_ms = parse_date_ms(args.end) if args.end else None
    candles = load_candles(args.data, symbols, end_ms=end_ms)
    start_index = 0
    bot_config, config_path = _config(args)
    if not args.start:
        from bot.config import warmup_candles

        warm = warmup_candles(bot_config, int(candles.timeframe_ms))  # type: ignore[arg-type]
        start_index = min(max(warm, 0), len(candles.timestamps) - 1)
    else:
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
        # a vault's closes (bot.live.vault_exits) move the price as the stress backtest models
        vault_impact_coef=bot_config.vault.impact_coef if bot_config.vault.enabled else 0.0,  # type: ignore[attr-defined]
        vault_volatility_window_minutes=bot_config.vault.volatility_window_minutes,  # type: ignore[attr-defined]
    )
    venue = Venue(candles, config)
    from backtest.funding import funding_matrix

    funding = funding_matrix(candles.symbols, candles.timestamps, candles.timeframe_ms,
                             args.funding_rate, candles.sources)  # fmt: skip
    if "history" in funding.source.values():  # the exchange's history next to the candles
        venue.engine.funding_table = funding.rates
    if args.scenario:
        from backtest.venue.risk_loop import VenueRisk
        from backtest.venue.scenario import load_scenario

        venue.risk = VenueRisk(venue, load_scenario(args.scenario))
    key, secret, key_file = _credentials(args)
    venue.add_account(key, secret, args.balance, hedge_mode=args.hedge)

    async def main() -> int:
        await venue.start()
        err = sys.stderr
        print(f"gridbot venue: REST {venue.rest_url}  websockets {venue.ws_url}", file=err)
        print(f"  symbols {', '.join(candles.symbols)}; {venue.n_candles - venue.index} candles to replay "
              f"at {args.speed:g}x; history {venue.index} candles (served as klines for the EMAs)",
              file=err)  # fmt: skip
        print("  funding: " + ", ".join(
            f"{s} {'the exchange history' if v == 'history' else f'{args.funding_rate:g} per 8 h'}"
            for s, v in funding.source.items()), file=err)  # fmt: skip
        if key_file is not None:
            key_file_abs = key_file.resolve()
            print(f"  API key and secret written to {key_file_abs} (mode 0600)", file=err)
        else:
            key_file_abs = None
            print(
                f"  API key from ${args.api_key_env}, secret from ${args.api_secret_env}", file=err
            )
        cmd = live_command(config_path, list(candles.symbols), venue.rest_url, venue.ws_url,
                           key_file_abs, _gridbot())  # fmt: skip
        print("  trade it with the live bot, from another terminal in this folder:", file=err)
        print(f"    {cmd}", file=err)
        print("  (--exchange bybit for its Bybit v5 interface), or set in the config's live "
              "section:", file=err)  # fmt: skip
        keys = f'base_url: "{venue.rest_url}", ws_url: "{venue.ws_url}"'
        if key_file_abs is not None:
            keys += f', key_file: "{key_file_abs}"'
        elif args.api_key_env != "GRIDBOT_API_KEY" or args.api_secret_env != "GRIDBOT_API_SECRET":
            keys += f', api_key_env: "{args.api_key_env}", api_secret_env: "{args.api_secret_env}"'
        print(f"    {keys}", file=err)
        sys.stderr.flush()
        try:
            n = await venue.run(args.speed)
            print(f"gridbot venue: replay finished after {n} candles", file=err)
            if venue.risk is not None:
                r = venue.risk.result()
                print(f"  scenario: {len(r['liquidations'])} account(s) liquidated, "
                      f"{len(r['deleverage_events'])} deleverage event(s), "
                      f"{len(r['venue_deleverages'])} of them on this account; insurance fund "
                      f"{r['insurance_fund'][-1]['balance']:.2f} USDT", file=err)  # fmt: skip
        finally:
            await venue.stop()
        return 0

    return asyncio.run(main())

"""`gridbot live CONFIG [--symbols A,B] [--exchange binance|bybit|sim] [--dry-run]`.

Trades the configured coins on one account until SIGINT/SIGTERM (then stops cleanly,
cancelling our orders if ``live.cancel_orders_on_stop``).

Exchanges: ``binance`` (USDT-M futures: hedge mode, cross margin, post-only GTX) and ``bybit``
(v5 linear USDT perpetuals on a unified account: hedge mode, post-only, the private websocket
authenticated with the API key). Same core, same decisions; ``live.base_url`` / ``live.ws_url``
override the endpoints (e.g. a testnet).

``--dry-run`` starts the simulated venue in-process on 127.0.0.1 and trades it instead of a real
account, through the chosen exchange's API format (the venue serves both). With no internet
(as here) the venue replays the bundled sample candles (``backtest.data``) as its public feed,
at ``--speed`` times real time; with internet it would be fed by the exchange's live public
streams instead (same venue, prices from the real market).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bot import inputs
from bot.config import Config, load_config, with_overrides

if TYPE_CHECKING:
    from backtest.venue.server import Venue

__all__ = ["add_parser", "run"]

log = logging.getLogger("gridbot.live.command")

BINANCE_WS = "wss://fstream.binance.com"
BYBIT_WS = "wss://stream.bybit.com"  # + /v5/public/linear and /v5/private
DEFAULT_WS = {"binance": BINANCE_WS, "bybit": BYBIT_WS}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "live",
        help="trade live (or --dry-run against the in-process simulated venue)",
        description="Run the grid bot live on one account: one task per coin.",
    )
    p.add_argument("config", help="config file (hjson)")
    p.add_argument(
        "--symbols", type=inputs.symbols, help="comma-separated symbols, overriding live.symbols"
    )
    p.add_argument(
        "--exchange",
        choices=("binance", "bybit", "sim"),
        help="overrides live.exchange: binance (USDT-M futures), bybit (v5 linear perpetuals), "
        "sim (the simulated venue, as --dry-run)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="trade the simulated venue on 127.0.0.1 through the exchange's API format "
        "(fed by the bundled sample data here)",
    )
    p.add_argument(
        "--speed", type=inputs.SPEED, default=60.0, help="dry-run replay speed (default 60x)"
    )
    p.add_argument(
        "--max-minutes", type=inputs.MINUTES, help="stop after this many minutes (wall clock)"
    )
    p.add_argument(
        "--base-url",
        type=inputs.url,
        help="overrides live.base_url (e.g. a `gridbot venue`'s REST URL)",
    )
    p.add_argument(
        "--ws-url", type=_ws_url, help="overrides live.ws_url (e.g. a `gridbot venue`'s websockets)"
    )
    p.add_argument("--key-file", help="overrides live.key_file (a mode-0600 JSON key file)")
    p.add_argument(
        "--reset-hard-stop",
        action="store_true",
        help="end the equity hard stop's halt: peak = equity now, green (logged)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(run=run)


def _ws_url(text: str) -> str:
    try:
        return inputs.check_url(text, ("ws", "wss"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    over = {
        k: getattr(args, k, None)
        for k in ("base_url", "ws_url", "key_file")
        if getattr(args, k, None) is not None
    }
    if over:  # plain strings: the config's types hold them as they are
        config = config.model_copy(update={"live": config.live.model_copy(update=over)})
    exchange = args.exchange or config.live.exchange
    approved = config.live.approved_coins
    # empty (approved_coins "all", no symbols): every USDT-margined perpetual the exchange
    # lists (a dry run: every coin of the bundled data), listed by the bot at its start
    symbols = list(args.symbols or config.live.symbols or (() if approved == "all" else approved))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    dry = args.dry_run or exchange == "sim"
    if not dry:
        inputs.writable_dir(config.live.state_dir, "live.state_dir")
        return asyncio.run(_main(config, symbols, dry, args, exchange))
    # A dry run's state belongs to its throw-away venue: keep it in a temporary folder that
    # goes away with the run, never as a dry-*.sqlite left in live.state_dir.
    with tempfile.TemporaryDirectory(prefix="gridbot-dry-run-") as tmp:
        config = with_overrides(config, {"live.state_dir": tmp})
        return asyncio.run(_main(config, symbols, dry, args, exchange))


async def _main(
    config: Config, symbols: list[str], dry: bool, args: argparse.Namespace, exchange: str
) -> int:
    from bot.exchange.registry import make_adapter
    from bot.live.bot import LiveBot
    from bot.live.credentials import install_redaction, load_credentials
    from bot.live.monitor import Monitor

    venue = None
    feed: asyncio.Task | None = None
    base_url: str | None
    if dry:
        venue, key, secret = await _start_venue(config, symbols)
        base_url, ws_url = venue.rest_url, venue.ws_url
    else:
        key, secret = load_credentials(config.live)
        base_url = config.live.base_url
        ws_url = config.live.ws_url or DEFAULT_WS[exchange]
    live_cfg = config.live
    monitor_secrets = [key, secret]
    # "sim" speaks the venue's Binance format
    kind = "bybit" if exchange == "bybit" else "binance"
    adapter = make_adapter(kind, key, secret, base_url=base_url, throttle=not dry)
    # a dry run's state is its own (a fresh venue each time): never mixed with the real one
    # (each exchange its own state file: fill cursors and positions are per account)
    name = "live" if kind == "binance" else f"live-{kind}"
    name = f"dry-{secrets.token_hex(4)}" if dry else name
    # a dry run's vault ledger is its own too: real requests are never applied to a fake venue
    ledger = str(Path(live_cfg.state_dir) / f"{name}.vault.sqlite") if dry else None
    bot = LiveBot(config, adapter, symbols=symbols or None, ws_url=ws_url, state_name=name,
                  vault_ledger=ledger, reset_hard_stop=args.reset_hard_stop)  # fmt: skip
    # the page, the log file, the heartbeat and the alerts (a dry run logs to its own file)
    log_file = live_cfg.log_file
    if dry and log_file:
        log_file = str(Path(log_file).with_suffix("")) + "-dry-run.jsonl"
    monitor = Monitor(bot, live_cfg, secrets=monitor_secrets, dry_run=dry, exchange=kind,
                      log_file=log_file or "")  # fmt: skip
    monitor.check()  # a status page beyond loopback without a token: refused before anything
    uninstall = install_redaction(monitor._secrets)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, bot.stop)
        except (NotImplementedError, RuntimeError):
            pass
    stop_reason, stop_error = "during the start-up", True
    try:
        await monitor.start()
        task = asyncio.create_task(bot.run())
        ready = asyncio.create_task(bot.wait_ready(timeout=None))  # type: ignore[arg-type]
        await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if bot.streams is not None:  # started (not refused, not stopped during the start-up)
            monitor.started()
        if venue is not None:
            feed = asyncio.create_task(venue.run(speed=args.speed, stop=bot.stopped))
        if args.max_minutes:
            loop.call_later(args.max_minutes * 60, bot.stop)
        try:
            await task
        except BaseException as exc:
            stop_reason = f"{type(exc).__name__}: {exc}"
            raise
        stop_reason, stop_error = f"cleanly; {len(bot.fills)} fills this session", False
        log.info("stopped cleanly; %d fills this session", len(bot.fills))
        return 0
    finally:
        bot.stop()
        monitor.stopped(stop_reason, error=stop_error)
        await monitor.close()
        if feed is not None:
            feed.cancel()
        await adapter.close()
        if venue is not None:
            await venue.stop()
        uninstall()


async def _start_venue(config: Config, symbols: list[str]) -> tuple[Venue, str, str]:
    """The simulated venue on loopback, fed by the bundled sample (no internet here)."""
    from pathlib import Path

    from backtest.data import load_candles
    from backtest.replay import round_to_ticks
    from backtest.venue.server import Venue, VenueConfig
    from bot.config import warmup_candles

    bt = config.backtest
    from bot.commands.backtest import resolve_data_path

    path = resolve_data_path(bt.data, Path(getattr(config, "_source", ".")))
    candles = round_to_ticks(load_candles(path, symbols or None))
    start = min(max(1, warmup_candles(config, 60_000)), len(candles.timestamps) - 1)
    venue = Venue(
        candles,
        VenueConfig(maker_fee=bt.maker_fee, funding_rate=bt.funding_rate_8h, start_index=start),
    )
    key, secret = "dry-" + secrets.token_hex(12), secrets.token_hex(32)
    venue.add_account(key, secret, bt.starting_balance)
    await venue.start()
    log.info("dry run: simulated venue on %s replaying %s", venue.rest_url, bt.data)
    return venue, key, secret

"""A real-time (not lockstep) run of the live bot against the venue, for races that lockstep
hides: the venue replays candles on its own clock while the bot reacts as it would live."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections.abc import Callable
from typing import Any

from backtest.replay import replay_config, round_to_ticks
from backtest.venue.server import Venue, VenueConfig
from bot.config import Config, warmup_candles
from bot.exchange.registry import make_adapter
from bot.live.bot import LiveBot


def run_realtime(
    config: Config,
    candles: Any,
    *,
    exchange: str,
    seconds: float,
    candles_per_second: float,
    setup: Callable[[Venue], Any] | None = None,
    measure: Callable[[Venue], tuple[float, float]],
    on_candle: Callable[[int, Venue, LiveBot], Any] | None = None,
    live_overrides: dict[str, Any] | None = None,
) -> tuple[float, float, int]:
    """Run for ``seconds`` of wall time; returns (worst measured value, its limit, fills).

    ``on_candle(i, venue, bot)`` runs after the i-th candle (may be a coroutine function)."""

    async def go() -> tuple[float, float, int]:
        candles_t = round_to_ticks(candles)
        start = max(1, warmup_candles(config, candles_t.timeframe_ms))
        venue = Venue(
            candles_t,
            VenueConfig(
                maker_fee=config.backtest.maker_fee,
                weight_limit_per_minute=10**9,
                start_index=start,
            ),
        )
        key, secret = secrets.token_hex(16), secrets.token_hex(32)
        venue.add_account(key, secret, config.backtest.starting_balance)
        await venue.start()
        adapter = make_adapter(exchange, key, secret, base_url=venue.rest_url, throttle=False)
        tmp = tempfile.TemporaryDirectory(prefix="gridbot-rt-")
        cfg = replay_config(
            config, tmp.name, {"stream_silence_timeout_seconds": 2.0, **(live_overrides or {})}
        )
        bot = LiveBot(cfg, adapter, symbols=candles_t.symbols, ws_url=venue.ws_url)
        task = asyncio.create_task(bot.run())
        worst, limit = 0.0, 1.0
        try:
            await bot.wait_ready()
            await asyncio.sleep(1.0)  # streams up, first orders placed
            if setup is not None:
                setup(venue)
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            i = 0
            while loop.time() < end and venue.index < venue.n_candles and not task.done():
                await venue.advance(1)
                if on_candle is not None:
                    r = on_candle(i, venue, bot)
                    if asyncio.iscoroutine(r):
                        await r
                i += 1
                for _ in range(4):
                    await asyncio.sleep(0.25 / candles_per_second)
                    w, lim = measure(venue)
                    if w > worst:
                        worst, limit = w, lim
            if task.done():
                task.result()  # the bot's own failure, if any
        finally:
            bot.stop()
            await asyncio.gather(task, return_exceptions=True)
            await adapter.close()
            await venue.stop()
            tmp.cleanup()
        n_fills = len(venue.engine.accounts[key].trades)
        return worst, limit, n_fills

    return asyncio.run(go())

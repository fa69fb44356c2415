"""A kill -9 restart that races an exchange-side account reset (the soak's finding, Binance seed
1): once the bot knows the account was reset, it never sends a close for a position the exchange
no longer has. Real time, real ccxt HTTP and real websockets against the simulated venue; the
bot killed in-process (its task cancelled wherever it is) and started again on its saved book.

The finding: the reset was noticed ("adopting the exchange's positions"), the open orders were
forgotten, but the old positions stayed until the end of the sync, seconds later on a busy
machine; meanwhile every cycle placed the grid's closes again for positions that were gone."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from dataclasses import dataclass
from typing import Any

import pytest

from backtest.replay import replay_config, round_to_ticks
from backtest.venue.server import Venue, VenueConfig
from bot.config import warmup_candles
from bot.exchange.registry import make_adapter
from bot.live.bot import LiveBot
from bot.live.orders import PREFIX
from tests.test_live_replay import sample, trading_config

pytestmark = pytest.mark.slow

CANDLES_PER_SECOND = 6.0
REST_DELAY_MS = 250.0  # a busy machine (the soak's): each REST answer comes this late


@dataclass
class CloseAttempt:
    symbol: str
    position_side: str
    qty: float
    exchange_position: float  # the side's size on the exchange when the close came in
    reset_known: bool  # the bot had already noticed the reset when it sent it
    side_traded: bool  # the account had a fill on this side (after a reset: the new account's)


class Recorder:
    """Every close of ours the venue receives, with the exchange's position at that moment and
    whether the running bot had noticed the reset by then."""

    def __init__(self, venue: Venue, key: str) -> None:
        self.venue, self.key = venue, key
        self.bot: LiveBot | None = None
        self.closes: list[CloseAttempt] = []
        eng = venue.engine
        self._place = eng.place_order
        eng.place_order = self._place_order  # type: ignore[method-assign]

    def _place_order(self, api_key: str, symbol: str, side: str, *a: Any, **kw: Any) -> Any:
        ps = str(kw.get("position_side") or "BOTH").upper()
        closing = (ps, side.upper()) in (("LONG", "SELL"), ("SHORT", "BUY"))
        if api_key == self.key and closing and str(kw.get("client_order_id")).startswith(PREFIX):
            acct = self.venue.engine.account(api_key)
            pos = acct.positions.get((symbol, ps))
            known = self.bot is not None and self.bot.reconciler.resets > 0
            # a side that traded again may have just closed, its fill on its way: an ordinary
            # race, not the reset's
            traded = any(t.symbol == symbol and t.position_side == ps for t in acct.trades)
            self.closes.append(
                CloseAttempt(symbol, ps, float(a[1]), pos.amount if pos else 0.0, known, traded)
            )
        return self._place(api_key, symbol, side, *a, **kw)


def _positions(venue: Venue, key: str) -> dict[tuple[str, str], float]:
    acct = venue.engine.account(key)
    return {k: abs(p.amount) for k, p in acct.positions.items() if p.amount}


async def _run(exchange: str) -> tuple[Recorder, dict[str, Any]]:
    config = trading_config()
    candles = round_to_ticks(sample(3.0))
    start = max(1, warmup_candles(config, candles.timeframe_ms))
    venue = Venue(
        candles,
        VenueConfig(
            maker_fee=config.backtest.maker_fee, weight_limit_per_minute=10**9, start_index=start
        ),
    )
    key, secret = secrets.token_hex(16), secrets.token_hex(32)
    venue.add_account(key, secret, config.backtest.starting_balance)
    rec = Recorder(venue, key)
    await venue.start()
    adapter = make_adapter(exchange, key, secret, base_url=venue.rest_url, throttle=False)
    tmp = tempfile.TemporaryDirectory(prefix="gridbot-reset-phantom-")
    overrides = {"stream_silence_timeout_seconds": 2.0, "rest_sync_interval_seconds": 2.0}
    cfg = replay_config(config, tmp.name, overrides)
    seen: dict[str, Any] = {}

    async def candles_for(seconds: float, task: asyncio.Task) -> None:
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end and not task.done():
            await venue.advance(1)
            await asyncio.sleep(1.0 / CANDLES_PER_SECOND)

    async def start_bot() -> tuple[LiveBot, asyncio.Task]:
        bot = LiveBot(cfg, adapter, symbols=candles.symbols, ws_url=venue.ws_url)
        rec.bot = bot
        task = asyncio.create_task(bot.run())
        await asyncio.wait_for(bot.wait_ready(), 30.0)
        return bot, task

    bot, task = await start_bot()
    try:
        await asyncio.sleep(1.0)  # streams up, first orders placed
        for _ in range(400):  # until the grid holds positions on both coins' books
            await candles_for(0.5, task)
            if len(_positions(venue, key)) >= 2 or task.done():
                break
        seen["before_kill"] = _positions(venue, key)
        task.cancel()  # kill -9: no clean stop, the saved book is what the next one finds
        await asyncio.gather(task, return_exceptions=True)
        await venue.advance(1)  # the market moves while the bot is dead
        bot, task = await start_bot()
        await asyncio.sleep(0.8)  # the restarted bot's first cycles, then the reset
        venue.delay_rest(REST_DELAY_MS)
        venue.reset_account(key, hedge_mode=False, restart=True)  # flat, one-way, sockets dropped
        await candles_for(12.0, task)
        venue.delay_rest(0)
        await candles_for(3.0, task)
        seen["resets"] = bot.reconciler.resets
        seen["book"] = {
            (s, "LONG" if j == 0 else "SHORT"): bot.book.position(s, j)[0]
            for s in bot.coins
            for j in range(2)
        }
        seen["exchange"] = _positions(venue, key)
        seen["steps"] = {s: venue.engine.specs[s].qty_step for s in bot.coins}
        if task.done():
            task.result()  # the bot's own failure, if any
    finally:
        bot.stop()
        await asyncio.gather(task, return_exceptions=True)
        await adapter.close()
        await venue.stop()
        tmp.cleanup()
    return rec, seen


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_no_close_for_a_position_the_reset_account_no_longer_has(exchange):
    rec, seen = asyncio.run(_run(exchange))
    assert len(seen["before_kill"]) >= 2, f"the grid should hold positions: {seen}"
    assert seen["resets"] >= 1, "the restarted bot must notice the reset"
    phantom = [
        c for c in rec.closes if c.reset_known and c.exchange_position == 0.0 and not c.side_traded
    ]
    assert phantom == [], (
        f"{len(phantom)} closes sent after the bot noticed the reset, for positions the "
        f"exchange no longer has: {phantom[:4]}"
    )
    for (s, ps), mine in seen["book"].items():
        theirs = seen["exchange"].get((s, ps), 0.0)
        assert abs(mine - theirs) <= seen["steps"][s] / 2, f"{s} {ps}: book {mine}, exchange"

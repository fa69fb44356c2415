"""What comes into the live bot: websocket streams (normalized into :mod:`bot.exchange.events`
at the boundary), closed klines into the EMAs, and the REST fallbacks while a stream is down.

Every stream event goes to the book (fills, order statuses, balance, positions) or to a coin
(prices, klines). A stream that goes down puts the book in doubt (no new entries) until it is
back and a REST recovery has brought in what was missed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.config import warmup_candles
from bot.core import ema_seed, ema_update
from bot.core.forager import forager_seed, forager_update
from bot.core.trailing import trail_update
from bot.errors import ExchangeError
from bot.exchange.binance.streams import BinanceStreams, binance_events
from bot.exchange.bybit.streams import BybitPrivateStream, BybitPublicStream, BybitStreams
from bot.exchange.events import (
    BalanceEvent,
    Event,
    FillEvent,
    KlineEvent,
    OrderEvent,
    PositionEvent,
    PriceEvent,
    StreamExpired,
)
from bot.live.coin import Coin
from bot.live.revisions import REVISIONS

if TYPE_CHECKING:
    from bot.live.bot import LiveBot

__all__ = ["Feeds"]

log = logging.getLogger("gridbot.live.feeds")

MINUTE_MS = 60_000


class Feeds:
    def __init__(self, bot: LiveBot) -> None:
        self.bot = bot
        self.adapter = bot.adapter
        self.streams: BinanceStreams | BybitStreams | None = None
        self.market_up = False
        self.listen_key: str | None = None
        self.clock_offset_ms = 0  # server minus local clock (Bybit's ws auth expiry)
        # Binance can carry the user stream on the market connection (lockstep keeps a
        # candle's fills ahead of its kline that way); Bybit cannot
        self.user_in_market = bot.pacing.user_stream_on_market_connection(
            self.adapter.uses_listen_key
        )
        # private data on a socket of its own, in lockstep: REST state at each closed kline
        self.candle_snapshots = bot.pacing.candle_snapshots(self.user_in_market)

    # ------------------------------------------------------------------ streams

    def stream_names(self) -> list[str]:
        return ["market"] if self.user_in_market else ["market", "user"]

    def make_streams(self) -> BinanceStreams | BybitStreams:
        """The per-exchange part: which sockets, and their messages -> :mod:`events`."""
        silence = self.bot.live.stream_silence_timeout_seconds
        if self.adapter.kind == "bybit":
            ping = self.bot.ws_ping_interval_seconds
            public = BybitPublicStream(
                self.bot.ws_url, self.bot.symbols, self.on_events,
                silence_timeout_seconds=silence, ping_interval_seconds=ping,
                on_state=lambda up: self.on_stream_state("market", up),
                price_symbols=set(self.bot.active.symbols),
            )  # fmt: skip
            private = BybitPrivateStream(
                self.bot.ws_url, self.adapter.ws_auth_args, self.on_events,
                silence_timeout_seconds=silence, ping_interval_seconds=ping,
                time_offset_ms=lambda: self.clock_offset_ms,
                on_state=lambda up: self.on_stream_state("user", up),
            )  # fmt: skip
            self.streams = BybitStreams(public, private)
            return self.streams

        async def on_binance(ev: str, data: dict[str, Any]) -> None:
            await self.on_events(binance_events(ev, data))

        self.streams = BinanceStreams(
            ws_url=self.bot.ws_url,
            symbols=self.bot.symbols,
            on_event=on_binance,
            listen_key=self.get_listen_key,
            market_path=self.bot.market_path,
            user_in_market=self.user_in_market,
            silence_timeout_seconds=silence,
            on_state=self.on_stream_state,
            price_symbols=set(self.bot.active.symbols),
        )
        return self.streams

    async def follow_active(self, symbols: frozenset[str]) -> None:
        """The price streams of the active coins (:mod:`bot.live.active_coins`), on the open
        market connection; a refused or unanswered change is asked again on the reconnect."""
        st = self.streams
        if isinstance(st, BybitStreams):
            await st.public.set_prices(symbols)
        elif st is not None:
            await st.set_prices(symbols)

    def ready(self) -> bool:
        """Every stream connected (and, on Bybit, its subscriptions acknowledged)."""
        st = self.streams
        if isinstance(st, BybitStreams):
            return st.ready()
        return st is not None and all(c.connected.is_set() for c in st.clients)

    def user_stream_up(self) -> bool:
        """Is the stream carrying our fills connected (as far as we can tell)?"""
        st = self.streams
        if st is None:
            return False
        name = "market" if self.user_in_market else "user"
        return any(c.name == name and c.connected.is_set() for c in st.clients)

    def restart_streams(self, why: str) -> None:
        """Drop every socket and reconnect with a fresh listen key (the old one may be dead)."""
        log.warning("reconnecting the streams: %s", why)
        self.listen_key = None
        if self.streams is not None:
            for cl in self.streams.clients:
                self.bot.background(cl.close())

    async def get_listen_key(self) -> str:
        if self.listen_key is None:
            self.listen_key = await self.bot.rest(self.adapter.listen_key)
        return self.listen_key

    async def keepalive_loop(self) -> None:
        while not self.bot.stopping:
            await asyncio.sleep(self.bot.listen_key_keepalive_seconds)
            try:
                await self.adapter.keepalive_listen_key()
            except ExchangeError as exc:
                log.warning("listen key keepalive: %s (a new key on the next connect)", exc)
                self.listen_key = None

    def on_stream_state(self, name: str, up: bool) -> None:
        bot = self.bot
        if name == "market":
            self.market_up = up
        if bot.stopping:
            return
        if up:
            bot.book.resolve(f"{name} stream down")
            bot.recover_after_connect()
        else:
            bot.book.doubt(f"{name} stream down")
            log.warning("%s stream down; REST fallback until it is back", name)
        bot.notify("stream", name=name, up=up)

    # ------------------------------------------------------------------ events

    async def on_events(self, events: list[Event]) -> None:  # noqa: C901 -- one branch per stream event kind (debt)
        """Stream events, already normalized (:mod:`bot.exchange.events`), in arrival order."""
        bot = self.bot
        book = bot.book
        for ev in events:
            if isinstance(ev, PriceEvent):
                c = bot.coins.get(ev.symbol)
                if c is not None and bot.pacing.trade_prices:
                    c.last_price = ev.price
                    c.wake.set()
            elif isinstance(ev, KlineEvent):
                await self.on_kline(ev)
            elif isinstance(ev, StreamExpired):
                log.warning("listen key expired: reconnecting with a new one")
                self.listen_key = None
                if self.streams is not None:
                    for cl in self.streams.clients:
                        await cl.close()
            else:
                book.user_seq += 1
                if isinstance(ev, OrderEvent):
                    if book.order_update(ev):
                        self.adapter.client_ids.retire(ev.client_id)
                    if not ev.open and not ev.cancelled and bot.pacing.wake_on_fill:
                        self._wake(ev.symbol)
                elif self.candle_snapshots:
                    pass  # fills, balance, positions: by REST per candle (Reconciler)
                elif isinstance(ev, FillEvent):
                    if bot.book_fill(ev):
                        if bot.pacing.wake_on_fill:
                            self._wake(ev.symbol)
                elif isinstance(ev, BalanceEvent):
                    book.balance_report(ev)
                elif isinstance(ev, PositionEvent):
                    if book.position_report(ev):
                        bot.on_outside_change(ev.symbol)
                    if book.resync_wanted:
                        bot.want_sync()

    def _wake(self, symbol: str) -> None:
        c = self.bot.coins.get(symbol)
        if c is not None:
            c.wake.set()

    async def on_kline(self, k: KlineEvent) -> None:
        c = self.bot.coins.get(k.symbol)
        if c is None or not k.closed:
            return
        if k.open_ms > c.last_kline_ts + MINUTE_MS:
            # missed klines: fetch them by REST (one catch-up at a time per coin), and
            # reconcile, since a connection that dropped klines may have dropped fills too
            if c.catching_up:
                # applied after the catch-up
                c.pending_klines.append((k.open_ms, k.close, k.high, k.low, k.volume))
            else:
                self.bot.background(self._fill_gap(c))
        elif self.apply_kline(c, k.open_ms, k.close, k.high, k.low, k.volume):
            if self.candle_snapshots:
                try:
                    assert self.bot.reconciler is not None  # built before the streams run
                    await self.bot.reconciler.candle_state(k.open_ms)
                except ExchangeError as exc:  # the cycle must not run without the fills
                    log.warning("REST state for the candle failed: %s; recovering", exc)
                    self.bot.want_sync()
                    return
            c.wake.set()

    async def _fill_gap(self, c: Coin) -> None:
        try:
            await self.catch_up_klines(c)
        except ExchangeError as exc:
            log.warning("%s: catching up klines failed: %s", c.symbol, exc)
        c.wake.set()

    # ------------------------------------------------------------------ klines and EMAs

    def apply_kline(  # noqa: PLR0913
        self,
        c: Coin,
        ts: int,
        close: float,
        high: float = math.nan,
        low: float = math.nan,
        volume: float = 0.0,
    ) -> bool:
        if ts != c.last_kline_ts + MINUTE_MS:
            return False  # old (already in the EMAs) or not the next one
        ema_update(c.emas[0], self.bot.alphas[0], close)
        ema_update(c.emas[1], self.bot.alphas[1], close)
        high = close if math.isnan(high) else high
        low = close if math.isnan(low) else low
        for j in range(2):
            forager_update(c.fema[j], self.bot.f_alphas[j], high, low, close, volume)
            REVISIONS.emas += 1  # in place: the minute's cached ranking is stale
            # the extremes since the position changed: klines after the one it changed in
            if ts > c.trail_since_ms[j]:
                trail_update(c.trails[j], high, low, close)
        c.last_kline_ts = ts
        c.last_price = close  # the kline's close is the minute's last trade
        c.kline_close = close
        self.save_emas(c)
        return True

    def save_emas(self, c: Coin) -> None:
        self.bot.state.set_many(
            {
                f"emas:{c.symbol}": c.emas.ravel().tolist(),
                f"last_kline_ts:{c.symbol}": c.last_kline_ts,
                **self.trail_state(c),
            }
        )

    @staticmethod
    def trail_state(c: Coin) -> dict:
        # inf (no low yet) is not JSON: saved as None
        return {
            f"trail:{c.symbol}": [None if math.isinf(x) else x for x in c.trails.ravel()],
            f"trail_pos:{c.symbol}": [list(p) for p in c.trail_pos],
            f"trail_since_ms:{c.symbol}": list(c.trail_since_ms),
            f"fema:{c.symbol}": c.fema.ravel().tolist(),
        }

    def load_emas(self, c: Coin) -> None:
        emas = self.bot.state.get(f"emas:{c.symbol}")
        if emas is not None:
            c.emas = np.array(emas, dtype=np.float64).reshape(2, 3)
            c.last_kline_ts = int(self.bot.state.get(f"last_kline_ts:{c.symbol}", -1))
            trail = self.bot.state.get(f"trail:{c.symbol}")
            if trail is not None:
                c.trails = np.array([np.inf if x is None else x for x in trail]).reshape(2, -1)
                c.trail_pos = [tuple(p) for p in self.bot.state.get(f"trail_pos:{c.symbol}")]
                c.trail_since_ms = list(self.bot.state.get(f"trail_since_ms:{c.symbol}"))
            fema = self.bot.state.get(f"fema:{c.symbol}")
            if fema is not None:
                c.fema = np.array(fema, dtype=np.float64).reshape(2, -1)

    async def server_now_ms(self) -> int:
        if self.bot.pacing.asks_server_time():
            try:
                self.clock_offset_ms = await self.adapter.server_time_offset_ms()
            except ExchangeError:
                pass
        return int(time.time() * 1000) + self.clock_offset_ms

    async def seed_emas(self, c: Coin) -> None:
        """EMAs of closed 1m closes: the backtester's warm-up length, seeded with ``ema_seed``;
        or, after a restart, the saved EMAs advanced through the klines missed since."""
        bot = self.bot
        if c.last_kline_ts >= 0 and await self.catch_up_klines(c, max_gap=10_000):
            if math.isnan(c.last_price):  # nothing new since the restart: the last close
                rows = await bot.rest(self.adapter.fetch_klines, c.symbol, limit=2)
                rows = rows[rows[:, 0] <= c.last_kline_ts]
                if rows.shape[0]:
                    c.last_price = c.kline_close = float(rows[-1, 4])
            if bot.pacing.trade_prices:  # live: the latest trade beats the last close
                prices = await bot.rest(self.adapter.fetch_last_prices, [c.symbol])
                c.last_price = prices.get(c.symbol, c.last_price)
            return
        n = max(1, warmup_candles(bot.config, MINUTE_MS))
        rows = await bot.rest(self.adapter.fetch_klines, c.symbol, limit=n + 1)
        rows = bot.pacing.closed_klines(rows, await self.server_now_ms())[-n:]
        if rows.shape[0] == 0:
            raise ExchangeError(f"{c.symbol}: no klines to seed the EMAs from")
        if rows.shape[0] < n:
            log.warning("%s: only %d of %d klines for the EMAs", c.symbol, rows.shape[0], n)
        closes = np.ascontiguousarray(rows[:, 4])
        c.emas = np.stack([ema_seed(closes, bot.alphas[0]), ema_seed(closes, bot.alphas[1])])
        ohlcv = np.ascontiguousarray(rows[:, 1:6])
        c.fema = np.stack([forager_seed(ohlcv, a) for a in bot.f_alphas])
        c.last_kline_ts = int(rows[-1, 0])
        c.last_price = c.kline_close = float(closes[-1])
        self.save_emas(c)

    async def catch_up_klines(self, c: Coin, max_gap: int = 10_000) -> bool:
        """Advance the EMAs through closed klines missed since ``last_kline_ts``; False when the
        gap is too long to bridge (then the caller re-seeds)."""
        if c.catching_up or c.last_kline_ts < 0:
            return c.last_kline_ts >= 0
        c.catching_up = True
        try:
            start = c.last_kline_ts + MINUTE_MS
            rows = await self.bot.rest(
                self.adapter.fetch_klines, c.symbol, start_ms=start, limit=max_gap + 2
            )
            rows = self.bot.pacing.closed_klines(rows, await self.server_now_ms())
            if rows.shape[0] > max_gap:
                return False
            for r in rows:
                self.apply_kline(c, int(r[0]), *(float(r[i]) for i in (4, 2, 3, 5)))
            # klines the stream brought while we fetched: newer than the answer, in order
            for ts, close, high, low, volume in sorted(c.pending_klines):
                self.apply_kline(c, ts, close, high, low, volume)
            return True
        finally:
            c.pending_klines.clear()
            c.catching_up = False

    async def fallback_loop(self) -> None:
        """While the market stream is down: REST prices and missed klines (bounded polling)."""
        bot = self.bot
        period = min(5.0, max(0.5, bot.live.stream_silence_timeout_seconds / 2))
        while not bot.stopping:
            await asyncio.sleep(period)
            if self.market_up:
                continue
            try:
                if bot.pacing.trade_prices:
                    active = sorted(bot.active.symbols)  # inactive coins: kline closes
                    prices = await self.adapter.fetch_last_prices(active) if active else {}
                    for s, p in prices.items():
                        if s in bot.coins and p > 0:
                            bot.coins[s].last_price = p
                await bot.recover()
            except ExchangeError as exc:
                log.warning("REST fallback: %s", exc)

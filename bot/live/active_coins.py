"""Which coins the live bot trades right now, and the price streams that follows.

The forager's inputs (1m klines: the volume and range EMAs) come for every coin of the universe;
the price stream and the order cycle only for the ACTIVE coins:
- those the account holds a position in, either side (the strategy's share or the account's);
- those with an open order of ours (until their cycle cancelled it);
- the forager's candidates: the coins ``forager_slots`` lets open now, per enabled side, with
  the same inputs as the cycle's ideal orders (:meth:`bot.live.cycle.OrderCycle.ideal`).

An inactive coin's ideal orders are none (flat, nothing to open), so skipping its cycle changes
nothing; its price is its latest kline close. When the set changes the streams subscribe and
unsubscribe on the open connection (:meth:`BinanceStreams.set_prices`,
:meth:`BybitPublicStream.set_prices`); a reconnect subscribes what is active at that moment.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.core.params import P_ENABLED
from bot.errors import ConfigError
from bot.live.revisions import REVISIONS

if TYPE_CHECKING:
    from bot.live.bot import LiveBot
    from bot.live.coin import Coin

__all__ = ["BINANCE_MAX_STREAMS", "ActiveCoins", "check_stream_limit"]

log = logging.getLogger("gridbot.live.active")

MINUTE_MS = 60_000
#: Binance: at most 1024 streams on one connection (klines of the universe + prices of the
#: active coins + the user stream)
BINANCE_MAX_STREAMS = 1024
_BINANCE_PRICE_RESERVE = 64  # price streams kept free for the active coins


def check_stream_limit(kind: str, n_symbols: int) -> None:
    """Refuse a universe whose kline streams leave no room on one Binance connection."""
    room = BINANCE_MAX_STREAMS - _BINANCE_PRICE_RESERVE - 1
    if kind == "binance" and n_symbols > room:
        raise ConfigError(
            f"{n_symbols} coins: Binance carries at most {BINANCE_MAX_STREAMS} streams on one "
            f"connection (a kline stream per coin, a price stream per active coin): narrow "
            f"live.symbols or live.approved_coins to at most {room} coins"
        )


class ActiveCoins:
    def __init__(self, bot: LiveBot) -> None:
        self.bot = bot
        self.symbols: frozenset[str] = frozenset()  # the active set the streams follow
        self.changes = 0  # how often it changed (for the status page and tests)
        self._wanted: frozenset[str] = frozenset()
        self._wanted_key: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ the set

    def holding(self) -> set[str]:
        """Coins with a position (either side) or an open order of ours."""
        bot = self.bot
        out = set()
        for s in bot.coins:
            cb = bot.book.coins.get(s)
            if cb is not None and cb.open:
                out.add(s)
                continue
            for j in (0, 1):
                if bot.book.position(s, j)[0] != 0.0 or bot.strategy_position(s, j)[0] != 0.0:
                    out.add(s)
                    break
        return out

    def candidates(self, now_ms: int) -> set[str]:
        """The coins the forager lets hold a position or an initial entry now, either side
        (the same slots the cycle's ideal orders read at ``now_ms``)."""
        bot = self.bot
        slots, index = bot.minute.slots(now_ms)
        out: set[str] = set()
        for j in (0, 1):
            if bot.params[j][P_ENABLED] == 0.0:
                continue  # a side turned off opens nothing (its positions count as held)
            out.update(s for s, i in index.items() if slots[j, i])
        return out

    def now_ms(self) -> int:
        """The open of the candle orders rest in now (after the newest closed kline)."""
        return max((c.last_kline_ts for c in self.bot.coins.values()), default=-1) + MINUTE_MS

    def wanted(self, now_ms: int | None = None) -> frozenset[str]:
        """The active set at ``now_ms``, computed once per minute and kept until a position,
        an eligibility, a forager EMA or an open order changes (:mod:`bot.live.minute_inputs`)."""
        now_ms = self.now_ms() if now_ms is None else now_ms
        minute = self.bot.minute
        key = (*minute.slots_key(now_ms), REVISIONS.orders)
        if minute.cached and key == self._wanted_key:
            return self._wanted
        self._wanted = frozenset(self.holding() | self.candidates(now_ms))
        self._wanted_key = key
        return self._wanted

    # ------------------------------------------------------------------ the cycle's questions

    def needs_cycle(self, c: Coin) -> bool:
        """Does ``c`` have orders to hold, cancel or open now? (Refreshes the active set.)"""
        active = self.refresh(c.last_kline_ts + MINUTE_MS)
        return c.symbol in active

    def after_cycle(self, c: Coin) -> None:
        """An active coin's cycle changed its orders maybe: one that cancelled its last order
        and holds nothing leaves the set now, not at the next kline."""
        if c.symbol in self.symbols:
            self.refresh(c.last_kline_ts + MINUTE_MS)

    def refresh(self, now_ms: int | None = None) -> frozenset[str]:
        """Recompute the active set; when it changed, wake the coins that came in and have the
        streams follow it (in the background, tracked: lockstep waits for the acks)."""
        new = self.wanted(now_ms)
        if new == self.symbols:
            return new
        came, went = sorted(new - self.symbols), sorted(self.symbols - new)
        self.symbols = new
        self.changes += 1
        log.info(
            "active coins: %s (in: %s; out: %s)",
            ", ".join(sorted(new)) or "none",
            ", ".join(came) or "-",
            ", ".join(went) or "-",
        )
        for s in came:
            self.bot.coins[s].wake.set()
        self.bot.notify("active_coins", symbols=sorted(new), came=came, went=went)
        if self.bot.feeds.streams is not None and not self.bot.stopping:
            self.bot.background(self.bot.feeds.follow_active(new))
        return new

"""The account-wide inputs of the minute's decisions, computed once and read by every coin.

With approved_coins "all" every coin's cycle wakes at each closed kline. What it asks about
the whole account is the same for every coin of the minute: the forager's slots per side
(from every coin's strategy size, eligibility and forager EMAs) and the active set. Rebuilt by
every coin's cycle that made a minute cost O(n_coins^2) on the event loop; here they are
computed once per key and reused:
- the slots: keyed by the open of the candle the orders rest in (``now_ms``: eligibility
  depends on it), ``REVISIONS.slots`` (sizes, eligibility, a vault's held slice) and, when the
  forager ranks, ``REVISIONS.emas``;
- the active set (:mod:`bot.live.active_coins`): the slots' key and ``REVISIONS.orders``.

A fill, an adopted outside change, an order created or cancelled moves a revision where the
value is stored (:mod:`bot.live.revisions`): the next question recomputes, so a position that
opened within the minute takes its slot before any other coin's cycle asks. The answers are
exactly the uncached ones (``cached = False`` recomputes every call: the benchmark's baseline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bot.core.forager import forager_slots
from bot.core.params import (
    P_FILTER_VOLATILITY_WINDOW,
    P_FILTER_VOLUME_DROP_PCT,
    P_FILTER_VOLUME_WINDOW,
)
from bot.live.revisions import REVISIONS

if TYPE_CHECKING:
    from bot.live.bot import LiveBot

__all__ = ["MinuteInputs"]

SlotsKey = tuple[int, int, int]


class MinuteInputs:
    def __init__(self, bot: LiveBot) -> None:
        self.bot = bot
        self.cached = True  # False: recompute every call (the old path, for the benchmark)
        self.computed = 0  # slot rankings computed (tests: once per key)
        self._key: SlotsKey | None = None
        self._slots = np.zeros((2, 0), dtype=np.bool_)  # [long, short] x coins
        self._index: dict[str, int] = {}

    def slots_key(self, now_ms: int) -> SlotsKey:
        emas = REVISIONS.emas if self.bot.forager_ranks else 0  # unranked: EMAs unread
        return now_ms, REVISIONS.slots, emas

    def slots(self, now_ms: int) -> tuple[np.ndarray, dict[str, int]]:
        """The forager's slots at ``now_ms``: ([long, short] x coins bool, symbol -> column),
        as :func:`bot.core.forager.forager_slots` gives them from the strategy's sizes."""
        key = self.slots_key(now_ms)
        if not self.cached or key != self._key:
            self._slots, self._index = self._compute(now_ms)
            self._key = key
            self.computed += 1
        return self._slots, self._index

    def may_open(self, symbol: str, j: int, now_ms: int) -> bool:
        """Does the forager give ``symbol`` a slot on side ``j`` (0 long, 1 short) now?"""
        slots, index = self.slots(now_ms)
        return bool(slots[j, index[symbol]])

    def _compute(self, now_ms: int) -> tuple[np.ndarray, dict[str, int]]:
        bot = self.bot
        syms = list(bot.coins)
        if not syms:
            return np.zeros((2, 0), dtype=np.bool_), {}
        coins = [bot.coins[s] for s in syms]
        eligible = np.array([c.eligible_from_ms <= now_ms for c in coins], dtype=np.bool_)
        out = np.zeros((2, len(syms)), dtype=np.bool_)
        for j in (0, 1):
            sizes = np.array([bot.strategy_position(s, j)[0] for s in syms], dtype=np.float64)
            fema = np.array([c.fema[j] for c in coins], dtype=np.float64)
            prm = bot.params[j]
            out[j] = forager_slots(
                sizes, bot.n_positions[j], eligible, fema, prm[P_FILTER_VOLUME_WINDOW],
                prm[P_FILTER_VOLATILITY_WINDOW], prm[P_FILTER_VOLUME_DROP_PCT],
            )  # fmt: skip
        return out, {s: i for i, s in enumerate(syms)}

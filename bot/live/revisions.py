"""Counters that move whenever an input of the minute's account-wide decisions changes.

The forager's slots, the sizes they rank from and the active set are computed once a minute
(:mod:`bot.live.minute_inputs`) and reused by every coin's cycle until one of these moves:
- ``slots``: a position size was written (a fill, an adopted outside change, a snapshot, a
  reload), a vault's held slice changed, or a coin's eligibility did;
- ``emas``: a coin's forager EMAs were written (a closed kline, a seed, a reload);
- ``orders``: our open orders of a coin changed (created, cancelled, ended, listed by REST).

The writers bump them where the value is stored (:class:`bot.live.book.SideBook`,
:class:`bot.live.book.OpenOrders`, :class:`bot.live.coin.Coin`), so no path that changes an
input can leave a stale answer behind. One set for the process: a second bot in it only
recomputes more often, never reads a stale answer.
"""

from __future__ import annotations

__all__ = ["REVISIONS", "Revisions"]


class Revisions:
    __slots__ = ("emas", "orders", "slots")

    def __init__(self) -> None:
        self.slots = 0
        self.emas = 0
        self.orders = 0


REVISIONS = Revisions()

"""The bot's book of one account: a cache of the exchange's truth, reconciled with it.

Per coin and position side: the position booked from our own fills (exact average price, the
backtester's arithmetic), the exchange's last report of it, and what is on its way (fills the
exchange announced that have not reached us yet); per coin: our open orders and the fill
cursor (the watermark up to which fills are booked, saved with the position in one
transaction, so that a restart resumes exactly where the book stood). Account-wide: the
balance, its peak, and the reasons the book cannot be trusted right now ("doubts": a stream
down, a snapshot pending, a reconciliation running, a position-mode problem).

Rules:
- a fill is booked once (by trade id) and moves the cursor;
- a consistent REST snapshot (no fill between it and the cursor) is the truth: where the
  exchange's size differs from the booked one, the position changed without a fill of ours
  (deleverage, ADL, a manual trade, a reset) and the exchange's position is adopted;
- a stream report of a position is adopted at once when it is not from one of our orders
  (deleverage, ADL); one from an order that disagrees with the book asks for a REST
  reconciliation (its fills may still be on their way) and counts in the guard;
- the pre-trade guard (:meth:`Book.entry_room`) sizes nothing: it counts how many entries
  may go out so that, with the largest position we have reason to believe in and every entry
  of that side that may rest filled, the exposure stays within its limit.

No I/O but the state store; no clock; no knowledge of any exchange's wire format.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from bot.core import apply_fill, entries_within_limit
from bot.exchange.events import FUNDING, ORDER, FillEvent, OrderEvent, PositionEvent
from bot.live.book_balance import BalanceBook, BalanceCheck
from bot.live.orders import PREFIX, LiveOrder
from bot.live.revisions import REVISIONS
from bot.live.state import StateStore

__all__ = ["Book", "CoinBook", "LiveFill", "OpenOrders", "SideBook"]

log = logging.getLogger("gridbot.live.book")

ROUTINE_DOUBT = "reconciling"  # the doubt of every periodic reconciliation (short, expected)


@dataclass(frozen=True)
class LiveFill:
    """A fill of ours as the user stream (or REST catch-up) reported it."""

    time_ms: int
    symbol: str
    pside: int  # +1 long, -1 short
    qty: float  # signed: + buy, - sell
    price: float
    trade_id: int | str  # Binance: the trade id; Bybit: the execId
    client_id: str


@dataclass
class SideBook:
    """One position side: booked (exact) and as the exchange last reported it."""

    size: float = 0.0
    price: float = 0.0
    report: tuple[float, float] | None = None  # (size, price) from the exchange
    report_time_ms: int = -1  # -1: from a consistent REST snapshot
    fill_time_ms: int = -1  # time of the last fill booked on this side

    def __setattr__(self, name: str, value: object) -> None:
        if name == "size":  # the minute's cached slots and active set read it
            REVISIONS.slots += 1
        object.__setattr__(self, name, value)


class OpenOrders(dict[str, LiveOrder]):
    """Our open orders of a coin by client id; every change moves ``REVISIONS.orders`` (the
    minute's cached active set holds the coins with an open order)."""

    def __setitem__(self, key: str, value: LiveOrder) -> None:
        REVISIONS.orders += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        REVISIONS.orders += 1
        super().__delitem__(key)

    def pop(self, key: str, *default: LiveOrder | None) -> LiveOrder | None:  # type: ignore[override]
        REVISIONS.orders += 1
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, LiveOrder]:
        REVISIONS.orders += 1
        return super().popitem()

    def clear(self) -> None:
        REVISIONS.orders += 1
        super().clear()

    def update(self, *args: Any, **kw: LiveOrder) -> None:
        REVISIONS.orders += 1
        super().update(*args, **kw)

    def setdefault(self, key: str, default: LiveOrder) -> LiveOrder:
        REVISIONS.orders += 1
        return super().setdefault(key, default)

    def __ior__(self, other: Any) -> OpenOrders:  # type: ignore[override,misc]
        REVISIONS.orders += 1
        super().update(other)
        return self


@dataclass
class _OrderProgress:
    """How much of one of our orders the exchange says filled, and how much we booked."""

    pside: int
    sign: float  # +1 buy, -1 sell
    price: float
    exchange_filled: float = 0.0
    booked: float = 0.0


@dataclass
class CoinBook:
    symbol: str
    qty_step: float
    sides: list[SideBook] = field(default_factory=lambda: [SideBook(), SideBook()])
    booked: int = 0  # fills booked so far (stream or REST)
    open: OpenOrders = field(default_factory=OpenOrders)  # ours, by client id
    unsure: dict[str, LiveOrder] = field(default_factory=dict)  # creates with no answer
    progress: dict[str, _OrderProgress] = field(default_factory=dict)  # by order id
    closed_ids: deque[str] = field(default_factory=lambda: deque(maxlen=2000))
    cursor: int = -1  # fill watermark: Binance trade id, Bybit exec time (ms)
    cursor_ids: list[str] = field(default_factory=list)  # fills seen at the cursor itself
    saved: bool = False  # the position came from the state store (not a first start)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "open":  # a whole new dict (a REST listing): counted as its changes too
            REVISIONS.orders += 1
            if not isinstance(value, OpenOrders):
                value = OpenOrders(cast(dict[str, LiveOrder], value))
        object.__setattr__(self, name, value)


class Book(BalanceBook):
    """Every coin's book and the account's balance (:mod:`bot.live.book_balance`); see the
    module docstring."""

    def __init__(
        self,
        state: StateStore,
        symbols: Iterable[str],
        qty_steps: dict[str, float],
        *,
        on_doubt_cleared: Callable[[], None] | None = None,
        on_adopt: Callable[[str, int, float, float], None] | None = None,
        on_transfer: Callable[[float, float], None] | None = None,
        explain_balance: bool = False,
    ) -> None:
        self.state = state
        self.coins = {s: CoinBook(s, qty_steps[s]) for s in symbols}
        self.balance = math.nan
        self.balance_peak = math.nan
        self.fills: list[LiveFill] = []
        self.user_seq = 0  # bumps on every user-stream event (REST order lists check it)
        self.changes = 0  # bumps on every booked fill or adopted position (snapshots check it)
        self._seen: set[tuple[str, str]] = set()
        self._fill_since_balance = False
        self._doubts: set[str] = set()
        self._on_doubt_cleared = on_doubt_cleared
        self._on_adopt = on_adopt  # (symbol, 0 long / 1 short, our size, the exchange's)
        self._on_transfer = on_transfer  # (balance before, after) of a deposit / withdrawal
        self._raise_when_explained = False
        # where the exchange's balance reports give no reason (Bybit): our fills explain them
        self.balance_check: BalanceCheck | None = BalanceCheck() if explain_balance else None
        self.on_unexplained: Callable[[], None] | None = None
        self.resync_wanted = False  # an event disagreed with the book: reconcile soon

    # ------------------------------------------------------------------ persistence

    def load(self, balance: float) -> None:
        """The saved book (positions with their cursors, the balance peak)."""
        self.balance = balance
        self.balance_peak = max(float(self.state.get("balance_peak", balance)), balance)
        self.state.set("balance_peak", self.balance_peak)
        for s, c in self.coins.items():
            saved = self.state.get(f"pos:{s}")
            c.cursor = int(self.state.get(f"last_trade_id:{s}", -1))
            c.cursor_ids = [str(x) for x in self.state.get(f"cursor_ids:{s}", [])]
            self._seen.update((s, x) for x in c.cursor_ids)  # Bybit: inclusive cursor
            if saved is not None and c.cursor >= 0:
                for j in range(2):
                    c.sides[j].size, c.sides[j].price = float(saved[j][0]), float(saved[j][1])
                c.saved = True

    def save(self, c: CoinBook) -> None:
        """Position and cursor together: a restart resumes from a consistent pair."""
        self.state.set_many(
            {
                f"pos:{c.symbol}": [[x.size, x.price] for x in c.sides],
                f"last_trade_id:{c.symbol}": c.cursor,
                f"cursor_ids:{c.symbol}": c.cursor_ids[-200:],
                "balance_peak": self.balance_peak,
            }
        )

    # ------------------------------------------------------------------ doubts

    def doubt(self, reason: str) -> None:
        if reason not in self._doubts:
            # a routine reconciliation is not news; anything else is
            level = logging.DEBUG if reason == ROUTINE_DOUBT else logging.INFO
            log.log(level, "book in doubt: %s (no new entries until resolved)", reason)
        self._doubts.add(reason)

    def resolve(self, reason: str) -> None:
        if reason in self._doubts:
            self._doubts.discard(reason)
            if not self._doubts:
                level = logging.DEBUG if reason == ROUTINE_DOUBT else logging.INFO
                log.log(level, "book trusted again")
                if self._on_doubt_cleared is not None:
                    self._on_doubt_cleared()

    @property
    def doubts(self) -> frozenset[str]:
        return frozenset(self._doubts)

    # ------------------------------------------------------------------ fills

    def fill(self, f: FillEvent, *, save: bool = True) -> bool:
        """Book a fill once (by trade id); True if it was new."""
        c = self.coins.get(f.symbol)
        key = (f.symbol, str(f.trade_id))  # as saved with the cursor (ints and execIds alike)
        if c is None or key in self._seen:
            return False
        self._seen.add(key)
        c.booked += 1
        self.changes += 1
        side = c.sides[0 if f.pside > 0 else 1]
        side.size, side.price, pnl = apply_fill(f.pside, side.size, side.price, f.qty, f.price)
        if self.balance_check is not None:
            self.balance_check.on_fill(float(pnl), f.qty * f.price)
        side.fill_time_ms = max(side.fill_time_ms, f.time_ms)
        cursor = f.cursor if f.cursor >= 0 else f.time_ms
        if cursor > c.cursor:
            c.cursor, c.cursor_ids = cursor, [str(f.trade_id)]
        elif cursor == c.cursor:
            c.cursor_ids.append(str(f.trade_id))
        if f.order_id:
            prog = c.progress.get(f.order_id)
            if prog is None:  # an order from before a restart: track it from this fill on
                sign = 1.0 if f.qty > 0 else -1.0
                prog = c.progress[f.order_id] = _OrderProgress(f.pside, sign, f.price)
            prog.booked += abs(f.qty)
            prog.exchange_filled = max(prog.exchange_filled, prog.booked)
        if f.remaining == 0.0 and f.client_id.startswith(PREFIX):
            self._gone(c, f.client_id, f.order_id)
        if f.client_id and not f.client_id.startswith(PREFIX):
            # not an order of ours: an exchange deleverage (Binance client id adl_autoclose), a
            # liquidation or a manual trade. Booked like any fill (the position shrinks at its
            # price); the cycle re-grids from it. (REST fills on Binance carry no client id.)
            log.warning(
                "%s %s: a fill of an order that is not ours (%s): %g at %g (deleverage / "
                "liquidation / manual); booked, re-gridding",
                f.symbol, "long" if f.pside > 0 else "short", f.client_id or "no client id",
                f.qty, f.price,
            )  # fmt: skip
        self._fill_since_balance = True
        self.fills.append(
            LiveFill(f.time_ms, f.symbol, f.pside, f.qty, f.price, f.trade_id, f.client_id)
        )
        if save:
            self.save(c)
        return True

    # ------------------------------------------------------------------ orders

    def order_update(self, o: OrderEvent) -> bool:
        """An order status from the stream; True when it ended (the caller retires its id)."""
        c = self.coins.get(o.symbol)
        if c is None or not o.client_id.startswith(PREFIX):
            return False  # not ours: never tracked
        was = c.open.get(o.client_id)
        if o.filled is not None and o.order_id:
            # only orders we track: a late status of one already settled and gone says nothing
            prog = c.progress.get(o.order_id)
            if prog is None and was is not None and was.order_id == o.order_id:
                prog = self._progress(c, was)
            if prog is not None:
                prog.exchange_filled = max(prog.exchange_filled, o.filled)
        if not o.open:
            if o.filled is None and not o.cancelled and was is not None:
                # filled, by how much unknown: count what rested as on its way until a fill
                # or a snapshot says otherwise
                prog = self._progress(c, was)
                prog.exchange_filled = max(prog.exchange_filled, prog.booked + abs(was.qty))
            self._gone(c, o.client_id, o.order_id)
            return True
        if o.order_id not in c.closed_ids:
            prev = c.open.get(o.client_id) or c.unsure.pop(o.client_id, None)
            c.open[o.client_id] = LiveOrder(
                c.symbol, o.pside, o.qty, o.price,
                prev.kind if prev else 0, prev.level if prev else 0, o.client_id, o.order_id,
            )  # fmt: skip
        return False

    def _progress(self, c: CoinBook, o: LiveOrder) -> _OrderProgress:
        oid = str(o.order_id)
        prog = c.progress.get(oid)
        if prog is None:
            prog = c.progress[oid] = _OrderProgress(o.pside, 1.0 if o.qty > 0 else -1.0, o.price)
            if len(c.progress) > 500:  # bounded: drop the oldest settled ones
                for k in [k for k, p in c.progress.items() if p.booked >= p.exchange_filled][:100]:
                    del c.progress[k]
        return prog

    def _gone(self, c: CoinBook, client_id: str, order_id: str | None) -> None:
        c.open.pop(client_id, None)
        c.unsure.pop(client_id, None)
        if order_id:
            c.closed_ids.append(str(order_id))
            prog = c.progress.get(str(order_id))
            if prog is not None and prog.booked >= prog.exchange_filled:
                del c.progress[str(order_id)]  # settled: nothing on its way

    def created(self, symbol: str, o: LiveOrder) -> None:
        c = self.coins[symbol]
        c.unsure.pop(o.client_id, None)
        if o.order_id and o.order_id not in c.closed_ids:
            c.open[o.client_id] = o
            self._progress(c, o)

    def create_unknown(self, symbol: str, o: LiveOrder) -> None:
        """A create whose answer never came: it may rest (counted by the guard) until the
        next open-orders snapshot says."""
        self.coins[symbol].unsure[o.client_id] = o

    def forget(self, symbol: str, o: LiveOrder) -> None:
        """We cancelled it."""
        self._gone(self.coins[symbol], o.client_id, o.order_id)

    def vanished(self, symbol: str, o: LiveOrder) -> None:
        """The exchange does not know an order we believed open (a cancel answered "unknown
        order"): most likely it just filled and the fill is on its way. Counted as filled
        (the guard sees it) until its fills arrive or a snapshot settles it."""
        c = self.coins[symbol]
        if o.order_id:
            prog = self._progress(c, o)
            prog.exchange_filled = max(prog.exchange_filled, prog.booked + abs(o.qty))
        self._gone(c, o.client_id, o.order_id)

    def set_open_orders(self, symbol: str, orders: Iterable[LiveOrder]) -> None:
        """Our open orders as the exchange listed them (REST): the truth about what rests."""
        c = self.coins[symbol]
        old = c.open
        c.open = OpenOrders()
        c.unsure.clear()
        for o in orders:
            if o.client_id.startswith(PREFIX):
                prev = old.get(o.client_id)
                kind = prev.kind if prev is not None else 0
                c.open[o.client_id] = LiveOrder(
                    o.symbol, o.pside, o.qty, o.price, kind, 0, o.client_id, o.order_id
                )

    # ------------------------------------------------------------------ positions

    def position_report(self, p: PositionEvent) -> bool:
        """A position as the stream reported it; True if it changed the book (re-grid)."""
        c = self.coins.get(p.symbol)
        if c is None:
            return False
        j = 0 if p.pside > 0 else 1
        side = c.sides[j]
        side.report = (p.size, p.price if p.size else 0.0)
        side.report_time_ms = p.time_ms
        if p.reason in (ORDER, FUNDING):
            if abs(p.size - side.size) > c.qty_step / 2:
                self.resync_wanted = True  # fills on their way, or a change: check by REST
            return False
        # deleverage / ADL / manual adjustment: not a fill of ours
        return self._adopt(c, j, p.size, p.price, "the exchange reports")

    def apply_snapshot(self, balance: float, positions: dict[str, tuple], quiet: bool) -> int:
        """A consistent REST snapshot (no fill between it and the cursors): the truth.
        Returns how many positions it changed (outside changes the streams did not bring)."""
        self._new_balance(balance)
        changed = 0
        for s, c in self.coins.items():
            ex = positions.get(s, (0.0, 0.0, 0.0, 0.0))
            for j in range(2):
                side = c.sides[j]
                side.report = (ex[2 * j], ex[2 * j + 1])
                side.report_time_ms = -1
                silent = quiet and not c.saved
                if self._adopt(c, j, ex[2 * j], ex[2 * j + 1], "the exchange reports", silent):
                    changed += 0 if silent else 1
            for prog in c.progress.values():  # every fill so far is in the snapshot
                prog.exchange_filled = prog.booked
            c.saved = True
        self.resync_wanted = False
        return changed

    def report_snapshot(self, balance: float, positions: dict[str, tuple]) -> None:
        """A snapshot that may straddle a fill (not consistent with the cursors): not adopted,
        but the exchange's word on each position for the guard (the larger of it and the
        booked size bounds entries, the smaller bounds closes) until a consistent one."""
        self._new_balance(balance)
        for s, c in self.coins.items():
            ex = positions.get(s, (0.0, 0.0, 0.0, 0.0))
            for j in range(2):
                c.sides[j].report = (ex[2 * j], ex[2 * j + 1])
                c.sides[j].report_time_ms = -1

    def _adopt(
        self, c: CoinBook, j: int, size: float, price: float, why: str, silent: bool = False
    ) -> bool:
        side = c.sides[j]
        if abs(side.size - size) <= c.qty_step / 2:
            return False
        if not silent:
            if self._on_adopt is not None:
                self._on_adopt(c.symbol, j, side.size, size)
            log.warning(
                "%s %s: %s size %g, our fills give %g: the position changed without a fill of "
                "ours (deleverage / ADL / manual / reset); recomputing the grid from it",
                c.symbol, "long" if j == 0 else "short", why, size, side.size,
            )  # fmt: skip
        if 0.0 < size < side.size and abs(price - side.price) <= 1e-6 * side.price:
            # a reduction leaves the entry price as it was; the exchange reports it rounded
            # (to the price's decimals + 2): our exact average stays (the backtest's, to the bit)
            price = side.price
        side.size, side.price = size, (price if size > 0 else 0.0)
        self.changes += 1
        self.save(c)
        return True

    def reset(self, symbol: str, cursor: int, position: tuple[float, float, float, float]) -> None:
        """The exchange's account went backwards (its latest fill is older than our cursor):
        forget the fills we saw, restart the cursor from the exchange's and take the new
        account's ``position`` (long size, price, short size, price) at once: the old
        account's positions are gone, and a close sized from them would close nothing (or,
        without reduce-only, open the other way)."""
        c = self.coins[symbol]
        self._seen = {k for k in self._seen if k[0] != symbol}
        c.cursor, c.cursor_ids = cursor, []
        c.progress.clear()
        c.open.clear()
        c.unsure.clear()
        for j in range(2):
            size, price = position[2 * j], position[2 * j + 1]
            c.sides[j].report = (size, price if size else 0.0)
            c.sides[j].report_time_ms = -1
            self._adopt(c, j, size, price, "the reset account reports")
        c.saved = True
        self.save(c)

    def position(self, symbol: str, j: int) -> tuple[float, float]:
        """The position to size orders from: booked from our fills, corrected by every
        consistent snapshot and every outside change the exchange reported."""
        side = self.coins[symbol].sides[j]
        return side.size, side.price

    # ------------------------------------------------------------------ the pre-trade guard

    def on_the_way(self, symbol: str, pside: int) -> list[tuple[float, float]]:
        """Entries of ``pside`` that filled on the exchange but whose fills we have not
        booked: (qty, price) rows."""
        c = self.coins[symbol]
        out = []
        for prog in c.progress.values():
            adding = prog.sign * pside > 0
            missing = prog.exchange_filled - prog.booked
            if prog.pside == pside and adding and missing > c.qty_step / 2:
                out.append((missing, prog.price))
        return out

    def entry_room(
        self,
        symbol: str,
        pside: int,
        new: list[LiveOrder],
        wallet_exposure_limit: float,
        resting: Iterable[LiveOrder] = (),
    ) -> int:
        """How many of ``new`` (this side's entries, nearest first) may be sent now.

        With the largest position we believe in (booked, or the exchange's last report if
        larger), every fill on its way and every entry of that side that may rest (``resting``
        plus creates with no answer) filled, the wallet exposure must stay within the limit.
        """
        c = self.coins[symbol]
        j = 0 if pside > 0 else 1
        side = c.sides[j]
        size, price = side.size, side.price
        if side.report is not None and side.report[0] > size:
            size, price = side.report
        rest = [(abs(o.qty), o.price) for o in resting if o.pside == pside and o.qty * pside > 0]
        rest += [
            (abs(o.qty), o.price)
            for o in c.unsure.values()
            if o.pside == pside and o.qty * pside > 0
        ]
        rest += self.on_the_way(symbol, pside)
        rows = np.array(rest, dtype=np.float64).reshape(-1, 2)
        want = np.array([(abs(o.qty), o.price) for o in new], dtype=np.float64).reshape(-1, 2)
        n = int(
            entries_within_limit(
                pside, self.balance, size, price, rows, want, wallet_exposure_limit, c.qty_step
            )
        )
        if n < len(new):
            log.info(
                "%s %+d guard: position %g @ %g (booked %g, reported %s), balance %g, limit %g, "
                "resting or on the way %s, new %s",
                symbol, pside, size, price, side.size, side.report, self.balance,
                wallet_exposure_limit, rows.tolist(), want.tolist(),
            )  # fmt: skip
        return n

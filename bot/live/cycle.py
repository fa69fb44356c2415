"""One coin's order cycle: the core's ideal orders -> the pre-trade guard -> diff -> cancel and
create, and the task that runs it whenever the coin is woken.

The cycle decides nothing itself: every price and quantity comes from ``bot.core.ideal_orders``
with the inputs the backtester gives it. What it adds is the live bot's caution:
- while the book is in doubt (:attr:`Book.doubts`) no entry is sent; closes and cancels are;
- every entry passes :meth:`Book.entry_room` (the exposure limit with everything that may
  rest or be on its way filled) and closes never exceed the smaller of the booked and the
  exchange-reported position;
- no create goes out while a stale order may still rest (a cancel that failed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING

from bot.core import ideal_orders
from bot.core.params import (
    KIND_ENTRY_GRID,
    KIND_ENTRY_INITIAL,
    KIND_ENTRY_TRAILING,
    P_WALLET_EXPOSURE_LIMIT,
)
from bot.core.trailing import trail_reset
from bot.errors import (
    AuthenticationError,
    DuplicateOrderError,
    ExchangeError,
    InsufficientMarginError,
    OrderRejectedError,
    PositionModeError,
    RateLimitError,
    TransientExchangeError,
    UnknownOrderError,
)
from bot.live.coin import Coin
from bot.live.orders import LiveOrder, batches, diff_orders, orders_from_rows

if TYPE_CHECKING:
    from bot.live.bot import LiveBot

__all__ = ["CycleResult", "OrderCycle"]

log = logging.getLogger("gridbot.live.cycle")

_SIDES = (1, -1)
_ENTRY_KINDS = (KIND_ENTRY_INITIAL, KIND_ENTRY_GRID, KIND_ENTRY_TRAILING)
_MINUTE_MS = 60_000


class CycleResult(Enum):
    DONE = "done"  # the coin's orders equal the ideal ones (as far as the guard allows)
    WITHHELD = "withheld"  # entries held back while the book is in doubt: run again once trusted
    RETRY = "retry"  # something failed: run again soon


def _is_entry(o: LiveOrder) -> bool:
    # our own orders carry their kind; one read back from the exchange (kind 0) is an entry
    # when it adds to its position side
    if o.kind:
        return o.kind in _ENTRY_KINDS
    return o.qty * o.pside > 0


class OrderCycle:
    def __init__(self, bot: LiveBot) -> None:
        self.bot = bot
        self.book = bot.book
        self.adapter = bot.adapter
        self.cycles = 0
        self.guard_blocks = 0  # entries the guard refused (each one logged)
        self._backoff_s = 0.0
        self._backoff_until = 0.0
        self._aligned_ts = -1  # the latest minute every coin's kline was in for

    # ------------------------------------------------------------------ the ideal orders

    def ideal(self, c: Coin) -> list[LiveOrder]:
        """The orders ``c`` should have open now, from the core."""
        bot = self.bot
        # the forager, as the backtester: eligible by the open of the candle the orders rest in
        # (the slots of every coin, computed once for the minute: bot.live.minute_inputs)
        now_ms = c.last_kline_ts + _MINUTE_MS
        out: list[LiveOrder] = []
        # bid = ask = the latest trade price (in lockstep: the closed kline's close, which is
        # the backtester's previous close)
        price = c.last_price
        # a vault sizes from its balance less the cash buffer (bot.live.vault_sizing)
        frac = bot.vault_sizing.sizing_fraction
        balance, peak = bot.strategy_balance() * frac, bot.strategy_balance_peak() * frac
        # the equity hard stop's tier (bot.live.hard_stop): red places nothing (its closes
        # are market orders of its own); orange opens nothing new, tp_only adds nothing
        may_open_new, may_add, halted = bot.hard_stop.permissions()
        if halted:
            return []
        for j, side in enumerate(_SIDES):
            may_open = bot.minute.may_open(c.symbol, j, now_ms) and may_open_new
            size, pprice = bot.strategy_position(c.symbol, j)
            if (size, pprice) != tuple(c.trail_pos[j]):
                self._trail_reset(c, j, (size, pprice))
            rows = ideal_orders(
                side, balance, peak, size, pprice, price, price, c.emas[j], c.market,
                bot.params[j], may_open, c.trails[j],
            )  # fmt: skip
            orders = orders_from_rows(c.symbol, side, rows)
            out += orders if may_add else [o for o in orders if not _is_entry(o)]
        ids = self.adapter.client_ids
        return [replace(o, client_id=ids.on_wire(o.client_id)) for o in out]

    async def klines_aligned(self, ts: int, timeout_seconds: float = 3.0) -> None:
        """Until every coin's kline of minute ``ts`` is in (the ranking compares them all,
        as the backtester does at that candle), at most ``timeout_seconds``."""
        if ts <= self._aligned_ts and self.bot.minute.cached:
            return  # every coin had it (a kline's time only moves forward): once a minute
        end = time.monotonic() + timeout_seconds
        while time.monotonic() < end and not self.bot.stopping:
            if all(x.last_kline_ts >= ts for x in self.bot.coins.values()):
                self._aligned_ts = max(self._aligned_ts, ts)
                return
            await asyncio.sleep(0.005)

    def _trail_reset(self, c: Coin, j: int, pos: tuple[float, float]) -> None:
        """The position changed: its trailing extremes start again from the kline after the
        one it changed in (the latest fill's minute; without a fill, e.g. an exchange's
        deleverage, the latest closed kline), as the backtester's do."""
        pside = _SIDES[j]
        since = c.last_kline_ts
        for f in reversed(self.book.fills[-50:]):
            if f.symbol == c.symbol and f.pside == pside:
                since = max(since, f.time_ms - f.time_ms % _MINUTE_MS)
                break
        trail_reset(c.trails[j])
        c.trail_pos[j] = pos
        c.trail_since_ms[j] = since
        self.bot.state.set_many(self.bot.feeds.trail_state(c))

    # ------------------------------------------------------------------ the guard

    def _guarded(
        self, c: Coin, to_create: list[LiveOrder], kept: list[LiveOrder]
    ) -> tuple[list[LiveOrder], bool]:
        """(what may be created, whether entries were held back for doubt)."""
        entries = [o for o in to_create if _is_entry(o)]
        closes = [o for o in to_create if not _is_entry(o)]
        withheld = False
        if entries and self.book.doubts:
            log.debug("%s: entries held back: %s", c.symbol, ", ".join(sorted(self.book.doubts)))
            entries, withheld = [], True
        entries = self.bot.vault_sizing.allowed_entries(self.bot, c.symbol, entries)
        allowed: list[LiveOrder] = []
        for j, side in enumerate(_SIDES):
            mine = [o for o in entries if o.pside == side]
            if mine:
                wel = float(self.bot.params[j][P_WALLET_EXPOSURE_LIMIT])
                n = self.book.entry_room(c.symbol, side, mine, wel, kept)
                if n < len(mine):
                    self.guard_blocks += len(mine) - n
                    o = mine[n]
                    log.warning(
                        "%s %s: guard refused entry %g @ %g (and %d farther): with what rests "
                        "and what may be on its way the exposure would pass its limit; "
                        "reconciling with the exchange",
                        c.symbol, o.position_side, abs(o.qty), o.price, len(mine) - n - 1,
                    )  # fmt: skip
                    self.bot.want_sync()
                allowed += mine[:n]
            allowed += self._closes_within_position(c, j, side, closes, kept)
        return sorted(allowed, key=lambda o: to_create.index(o)), withheld

    def _closes_within_position(
        self, c: Coin, j: int, side: int, closes: list[LiveOrder], kept: list[LiveOrder]
    ) -> list[LiveOrder]:
        """Closes of this side, nearest first, while their total stays within the smaller of
        the booked and the exchange-reported position (never close what may not be there)."""
        mine = [o for o in closes if o.pside == side]
        if not mine:
            return []
        sb = self.book.coins[c.symbol].sides[j]
        have = sb.size if sb.report is None else min(sb.size, sb.report[0])
        used = sum(abs(o.qty) for o in kept if o.pside == side and not _is_entry(o))
        out = []
        for o in mine:
            used += abs(o.qty)
            if used > have + c.spec.qty_step / 2:
                break
            out.append(o)
        return out

    # ------------------------------------------------------------------ one cycle

    async def run(self, c: Coin) -> CycleResult:
        """Reconcile ``c``'s open orders to the ideal ones."""
        book = self.book
        if book.balance != book.balance or c.last_price != c.last_price:  # nan: not ready
            return CycleResult.RETRY
        if self.bot.forager_ranks:
            await self.klines_aligned(c.last_kline_ts)
        # the equity hard stop's sample of this minute (once, account-wide) and, when red,
        # its market closes: before this coin's orders, which its tier governs
        await self.bot.hard_stop.before_cycle(c.last_kline_ts)
        if not self.bot.active.needs_cycle(c):
            return CycleResult.DONE  # flat, no order, not the forager's: nothing to do
        async with c.lock:
            self.cycles += 1
            cb = book.coins[c.symbol]
            live = self.bot.live
            tol = self.bot.pacing.order_tolerances(
                live.price_distance_threshold, live.qty_distance_threshold
            )
            ideal = self.ideal(c)
            to_cancel, to_create = diff_orders(list(cb.open.values()), ideal, c.last_price, *tol)
            gone = {o.client_id for o in to_cancel}
            kept = [o for o in cb.open.values() if o.client_id not in gone]
            to_create, withheld = self._guarded(c, to_create, kept)
            ok = await self._cancel(c, to_cancel)
            if not ok:
                return CycleResult.RETRY  # never create while stale orders may still rest
            ok = await self._create(c, to_create)
            self.bot.save_client_ids()
            if not ok:
                return CycleResult.RETRY
            return CycleResult.WITHHELD if withheld else CycleResult.DONE

    async def cancel_all(self, c: Coin) -> bool:
        """Cancel every order of ours on ``c`` (the hard stop's red; the caller holds the
        coin's lock)."""
        return await self._cancel(c, list(self.book.coins[c.symbol].open.values()))

    async def _cancel(self, c: Coin, orders: list[LiveOrder]) -> bool:
        ok = True
        for batch in batches(orders, self.bot.live.max_orders_per_batch):
            results = await self.adapter.run_batch(self.adapter.cancel_order, batch)
            for o, r in zip(batch, results, strict=True):
                if isinstance(r, UnknownOrderError):
                    # gone already, most likely filled a moment ago: counted as filled until
                    # its fill or a snapshot says; this cycle creates nothing (its ideal was
                    # computed without that fill); re-sync
                    self.book.vanished(c.symbol, o)
                    self.adapter.client_ids.retire(o.client_id)
                    self.bot.want_sync()
                    ok = False
                elif isinstance(r, BaseException):
                    ok = self._on_error(c, "cancel", o, r) and ok
                else:
                    self._forget(c, o)
                    self._report("cancelled", o)
        return ok

    async def _create(self, c: Coin, orders: list[LiveOrder]) -> bool:
        ok = True
        dups: list[LiveOrder] = []
        for batch in batches(orders, self.bot.live.max_orders_per_batch):
            results = await self.adapter.run_batch(self.adapter.create_order, batch)
            for o, r in zip(batch, results, strict=True):
                if isinstance(r, LiveOrder):
                    self.book.created(c.symbol, r)
                    self._report("created", r)
                elif isinstance(r, DuplicateOrderError) and not self.adapter.client_ids.reusable:
                    dups.append(o)
                    ok = False
                else:
                    if isinstance(r, TransientExchangeError) and not isinstance(r, RateLimitError):
                        self.book.create_unknown(c.symbol, o)  # it may have landed
                    ok = self._on_error(c, "create", o, r) and ok
        if dups:
            await self._resolve_duplicates(c, dups)
        return ok

    def _report(self, what: str, o: LiveOrder) -> None:
        # the monitor logs each one at INFO in the log file (bot.live.monitor)
        log.debug(
            "%s %s %s %s %g @ %g (%s)",
            what, o.symbol, o.side, o.position_side, abs(o.qty), o.price, o.kind_name,
        )  # fmt: skip
        self.bot.notify(f"order_{what}", order=o)

    def _forget(self, c: Coin, o: LiveOrder) -> None:
        self.book.forget(c.symbol, o)
        self.adapter.client_ids.retire(o.client_id)

    async def _resolve_duplicates(self, c: Coin, dups: list[LiveOrder]) -> None:
        """Bybit refused client ids as used: rests one of them (a create that landed after a
        timeout)? Track it. Otherwise the id belongs to an ended order: move to a new one."""
        opens = {
            o.client_id: o for o in await self.bot.rest(self.adapter.fetch_open_orders, c.symbol)
        }
        for o in dups:
            have = opens.get(o.client_id)
            if have is not None:
                self.book.created(c.symbol, replace(o, order_id=have.order_id))
            else:
                self.adapter.client_ids.retire(o.client_id)

    def _on_error(self, c: Coin, what: str, o: LiveOrder, exc: BaseException) -> bool:
        """Classify an order error; returns False (retry the cycle) or raises (stop)."""
        text = f"{c.symbol} {what} {o.side} {o.position_side} {abs(o.qty):g} @ {o.price:g}: {exc}"
        if isinstance(exc, AuthenticationError):
            raise exc
        if isinstance(exc, PositionModeError):
            log.warning("position mode: %s", text)
            self.bot.position_mode_suspect()
        elif isinstance(exc, RateLimitError):
            self._backoff_s = min(max(self._backoff_s * 2, 0.5), 60.0)
            self._backoff_until = time.monotonic() + self._backoff_s
            log.warning("rate limited, backing off %.1f s: %s", self._backoff_s, text)
        elif isinstance(exc, InsufficientMarginError):
            log.warning("insufficient margin, re-syncing: %s", text)
            self.bot.want_sync()
        elif isinstance(exc, DuplicateOrderError):
            log.info("order already exists, re-syncing: %s", text)  # a create that landed
            self.bot.want_sync()
        elif isinstance(exc, TransientExchangeError | OrderRejectedError | ExchangeError):
            log.warning("%s", text)
        else:
            raise exc
        self.bot.errors.append(text)
        self.bot.notify("order_error", symbol=c.symbol, text=text)
        return False

    # ------------------------------------------------------------------ the coin's task

    async def loop(self, c: Coin) -> None:
        """Run a cycle whenever ``c`` is woken, until the bot stops."""
        bot = self.bot
        last_cycle = 0.0
        failures = 0
        while not bot.stopping:
            await c.wake.wait()
            c.busy = True  # until this wake's cycle is over (lockstep waits for it)
            try:
                c.wake.clear()
                await bot.pacing.space_cycles(last_cycle, bot.live.execution_delay_seconds)
                wait = self._backoff_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                target = c.last_kline_ts
                last_cycle = time.monotonic()
                try:
                    result = await self.run(c)
                    bot.active.after_cycle(c)
                except AuthenticationError as exc:
                    bot.errors.append(str(exc))
                    log.error("authentication refused: %s; stopping", exc)
                    raise
                if result is CycleResult.RETRY:
                    failures += 1
                    if failures > bot.max_rest_retries:
                        raise ExchangeError(f"{c.symbol}: {failures} failed cycles in a row")
                    await asyncio.sleep(min(0.05 * failures, 1.0))
                    c.wake.set()
                    continue
                failures = 0
                self._backoff_s = 0.0
                # withheld entries go out when the doubt clears (every coin is woken then);
                # the candle is done as far as the bot can take it now
                await bot.mark_done(c, target)
            finally:
                c.busy = False

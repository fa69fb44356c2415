"""Reconciliation: the book made equal to the exchange's truth, by REST.

When: at start, after every (re)connect or stream silence, every ``rest_sync_interval_seconds``,
and whenever an event disagrees with the book. How:

1. our open orders, as the exchange lists them (first: an order that fills after this call is
   still counted as resting, never as gone with its fill unbooked);
2. a consistent snapshot: the fills since each coin's cursor, the balance and positions, then
   the fills again; when the second catch-up finds nothing (and no stream event came), the
   snapshot is exactly as new as the book and is applied (:meth:`Book.apply_snapshot`);
3. watermarks checked: an exchange whose latest fill is older than our cursor went backwards
   (an account reset, a new account behind the same key): the positions are adopted at once,
   the cursor restarts from the exchange's and hedge mode is verified again.

While it runs the book is in doubt ("reconciling"): no new entries, closes still go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from bot.errors import ExchangeError, TransientExchangeError
from bot.exchange.base import AccountSnapshot
from bot.live.coin import Coin

if TYPE_CHECKING:
    from bot.live.bot import LiveBot

__all__ = ["Reconciler"]

log = logging.getLogger("gridbot.live.reconcile")


class Reconciler:
    def __init__(self, bot: LiveBot) -> None:
        self.bot = bot
        self.book = bot.book
        self.adapter = bot.adapter
        self.sync_wanted = asyncio.Event()
        self.synced_ts = -1  # candle snapshots: the last candle taken
        self.last_sync_monotonic = 0.0
        self.resets = 0
        self.running = 0  # syncs in progress or waiting (lockstep waits for them to settle)
        self._one_at_a_time = asyncio.Lock()

    async def catch_up_trades(self, c: Coin) -> int:
        """Book the fills missed since the cursor (REST); returns how many were new."""
        cb = self.book.coins[c.symbol]
        if cb.cursor < 0:  # a first start: our fills begin now
            cb.cursor = await self.bot.rest(self.adapter.latest_fill_cursor, c.symbol)
            self.book.save(cb)
            return 0
        fills = await self.bot.rest(self.adapter.fetch_fills, c.symbol, cb.cursor)
        new = 0
        for f in fills:
            new += self.bot.book_fill(f)
        return new

    async def catch_up_all(self) -> int:
        """Every coin's missed fills: in one query where the exchange serves all coins at once
        (each coin's fills still taken from its own cursor), else coin by coin."""
        coins = list(self.bot.coins.values())
        started = all(self.book.coins[c.symbol].cursor >= 0 for c in coins)
        if not (self.adapter.fills_in_one_query and started and len(coins) > 1):
            new = 0
            for c in coins:
                async with c.lock:
                    new += await self.catch_up_trades(c)
            return new
        async with contextlib.AsyncExitStack() as locks:  # every coin's, in one fixed order
            for c in coins:
                await locks.enter_async_context(c.lock)
            cursors = {c.symbol: self.book.coins[c.symbol].cursor for c in coins}
            fills = await self.bot.rest(self.adapter.fetch_fills_many, cursors)
            return sum(self.bot.book_fill(f) for c in coins for f in fills.get(c.symbol, []))

    async def consistent_snapshot(self, tries: int = 3) -> tuple[AccountSnapshot, int, bool]:
        """(the last balance-and-positions snapshot, fills booked, whether it is consistent).

        Catch up our fills, take the snapshot, catch up again: when the second catch-up finds
        nothing and no fill or position change was booked from the stream meanwhile, no fill
        happened around the snapshot, so it is exactly as new as our book. Otherwise it may
        be older or newer than our fills and adopting its positions would double or drop a
        fill: try again (``tries`` times in all).
        """
        booked = 0
        snap = None
        for _ in range(tries):
            booked += await self.catch_up_all()
            changes = self.book.changes
            snap = await self.bot.rest(self.adapter.fetch_account, self.bot.symbols)
            late = await self.catch_up_all()
            booked += late
            if late == 0 and self.book.changes == changes:
                return snap, booked, True
            log.debug(
                "snapshot not consistent: %d late fills, %d changes booked during it",
                late, self.book.changes - changes - late,
            )  # fmt: skip
        assert snap is not None  # tries >= 1
        return snap, booked, False

    async def _open_orders(self) -> None:
        for c in self.bot.coins.values():
            async with c.lock:
                for _ in range(3):
                    seq = self.book.user_seq
                    orders = await self.bot.rest(self.adapter.fetch_open_orders, c.symbol)
                    if seq == self.book.user_seq:
                        break
                self.book.set_open_orders(c.symbol, orders)

    async def _watermarks(self) -> list[str]:
        """Symbols whose exchange history went backwards (latest fill older than our cursor)."""
        out = []
        for s, cb in self.book.coins.items():
            if cb.cursor <= 0:
                continue
            latest = await self.bot.rest(self.adapter.latest_fill_cursor, s)
            if latest < cb.cursor:
                out.append((s, latest))
        if out:
            await self._reset(dict(out))
        return [s for s, _ in out]

    async def _reset(self, latest: dict[str, int]) -> None:
        """The account behind the key is another one: its positions replace the book's at
        once (not at the end of the sync: the cycles go on meanwhile, and would place closes
        for positions the exchange no longer has). The cursor is read after the positions: a
        fill between the two is left to the consistent snapshot that follows (the book is
        then smaller than the account, never larger: no close of what is not there)."""
        snap = await self.bot.rest(self.adapter.fetch_account, self.bot.symbols)
        cursors = {s: await self.bot.rest(self.adapter.latest_fill_cursor, s) for s in latest}
        async with contextlib.AsyncExitStack() as locks:  # no cycle halfway through its orders
            for c in self.bot.coins.values():
                await locks.enter_async_context(c.lock)
            for s in latest:
                log.error(
                    "%s: the exchange's latest fill (%d) is older than our cursor (%d): the "
                    "account was reset or replaced; adopting the exchange's positions and "
                    "orders as they are, and checking the position mode again",
                    s, latest[s], self.book.coins[s].cursor,
                )  # fmt: skip
                self.book.reset(s, cursors[s], snap.positions.get(s, (0.0, 0.0, 0.0, 0.0)))
                self.resets += 1

    async def sync(self, *, quiet: bool = False) -> bool:
        """Open orders, then a consistent snapshot; True when the book now equals the
        exchange (False: no consistent snapshot this time, the book stays in doubt)."""
        book = self.book
        book.doubt("reconciling")
        self.running += 1
        try:
            async with self._one_at_a_time:
                try:
                    return await self._sync(quiet)
                finally:
                    self.last_sync_monotonic = asyncio.get_running_loop().time()
        finally:
            self.running -= 1
            if not self.running:
                book.resolve("reconciling")

    async def _sync(self, quiet: bool) -> bool:
        book = self.book
        reset = await self._watermarks()
        if reset:
            # a new account behind the key: its user stream is a new one too
            self.bot.feeds.restart_streams("the exchange account was reset")
            await self.bot.verify_position_mode()
        await self._open_orders()
        snap, _, consistent = await self.consistent_snapshot()
        if not consistent:
            # every fill up to now is booked (caught up by cursor), and the exchange's
            # positions bound the guard; an outside change waits for a consistent one
            assert snap is not None
            book.report_snapshot(snap.balance, snap.positions)
            book.resolve("snapshot pending")
            return False
        missed = book.apply_snapshot(snap.balance, snap.positions, quiet=quiet)
        if missed and self.bot.feeds.user_stream_up():
            # the user stream was up and still did not bring it: it cannot be trusted (e.g.
            # connected on a listen key the exchange forgot): reconnect with a fresh one
            self.bot.feeds.restart_streams("the user stream missed a position change")
        if reset:  # another account's history: its balance peak starts now
            book.balance_peak = book.balance
            book.state.set("balance_peak", book.balance_peak)
        book.resolve("snapshot pending")
        self.last_sync_monotonic = asyncio.get_running_loop().time()
        self.bot.notify("reconciled")
        if reset:
            self.bot.notify("account_reset", symbols=reset)
        return True

    async def candle_state(self, ts: int) -> None:
        """Lockstep with a separate private socket (Bybit): candle ``ts``'s fills, balance and
        positions by REST, once per candle, before any coin's cycle.

        Why REST and not the private events: the venue books candle k before it sends its
        kline, so REST already holds all of candle k; the private socket may still be
        delivering it, with nothing to say when it is complete.
        """
        if ts <= self.synced_ts:
            return
        snap, new, consistent = await self.consistent_snapshot(tries=10)
        if not consistent:
            raise TransientExchangeError("no REST snapshot consistent with the fills")
        self.book.apply_snapshot(snap.balance, snap.positions, quiet=False)
        await self.bot.transfers.settle()  # a change the fills do not explain: the log says
        if new:  # the peak follows fills only
            self.book.raise_peak()
        self.synced_ts = ts

    async def loop(self) -> None:
        """Every ``rest_sync_interval_seconds``, or sooner when asked (coalesced)."""
        bot = self.bot
        failures = 0
        while not bot.stopping:
            try:
                await asyncio.wait_for(self.sync_wanted.wait(), bot.live.rest_sync_interval_seconds)
            except TimeoutError:
                pass
            self.sync_wanted.clear()
            if bot.stopping:
                break
            # asked again and again (a busy account): spaced, so the short doubt of each one
            # cannot hold entries back for good
            spacing = (
                self.last_sync_monotonic
                + bot.pacing.sync_spacing_seconds
                - asyncio.get_running_loop().time()
            )
            if spacing > 0:
                await asyncio.sleep(spacing)
            try:
                ok = await self.sync()
            except TransientExchangeError as exc:
                log.warning("REST sync failed: %s", exc)
                ok = False
            except ExchangeError as exc:
                bot.errors.append(str(exc))
                log.warning("REST sync failed: %s", exc)
                ok = False
            bot.wake_all()
            if not ok:  # again soon, backing off while the account keeps moving
                failures += 1
                self.sync_wanted.set()
                interval = bot.live.rest_sync_interval_seconds
                await asyncio.sleep(min(0.5 * 2 ** min(failures, 8), interval))
                continue
            failures = 0

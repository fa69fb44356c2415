"""Deposits and withdrawals learned from the exchange's account log, where its balance reports
give no reason (Bybit; :attr:`ExchangeAdapter.transfers_from_log`).

When the book finds a balance change its fills do not explain (:mod:`bot.live.book_balance`),
:class:`TransferLog` asks the adapter for the log's rows since its cursor (the last row seen:
its time and the ids at that time, saved in the state store) and books each ``TRANSFER_IN`` /
``TRANSFER_OUT`` as a transfer, with the log's own balances before and after it: the balance
peak scales and the hard stop's peak moves with the equity, as on Binance. The transfers and
the cursor are written in one transaction: a restart (even a kill) neither books one twice nor
misses one; at start-up the log is read from the saved cursor, so a transfer made while the
bot was down is booked then. Funding (``SETTLEMENT``) and fills (``TRADE``) explain a change
without moving any peak. A failed ask is retried (backing off) while the book stays in doubt.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bot.errors import ExchangeError
from bot.exchange.events import LedgerRow

if TYPE_CHECKING:
    from bot.live.bot import LiveBot

__all__ = ["STATE_KEY", "TransferLog"]

log = logging.getLogger("gridbot.live.transfers")

STATE_KEY = "transfer_log"  # {"time_ms": cursor (-1: none yet), "ids": [row ids at it]}
_MAX_IDS = 500
_MAX_BACKOFF_SECONDS = 30.0


class TransferLog:
    def __init__(self, bot: LiveBot) -> None:
        self.bot = bot
        self.enabled = bool(getattr(bot.adapter, "transfers_from_log", False))
        self.cursor_ms = -1
        self.cursor_ids: list[str] = []
        self.started = False
        self.booked: list[LedgerRow] = []  # transfers booked this session (tests, log)
        self.asks = 0  # successful asks this session
        self.failures = 0  # failed asks this session
        self._lock = asyncio.Lock()
        self._running = False
        self._again = False

    async def start(self) -> None:
        """At start-up, once the book and the hard stop are loaded: the transfers since the
        saved cursor. A first start takes the log's newest row as its cursor (the balance
        now already holds everything before it)."""
        if not self.enabled:
            return
        saved = self.bot.state.get(STATE_KEY)
        if saved is None:
            rows = await self.bot.rest(self.bot.adapter.fetch_ledger, -1)
            self._advance(rows)
            self.bot.state.set(STATE_KEY, self._saved())
            self.bot.book.explained()
        else:
            self.cursor_ms = int(saved.get("time_ms", -1))
            self.cursor_ids = [str(x) for x in saved.get("ids", [])]
            await self._ask_until_explained()
        self.started = True

    def want(self) -> None:
        """An unexplained balance change: ask the log (in the background, coalesced)."""
        if not self.enabled or not self.started or self.bot.stopping:
            return
        if self._running:
            self._again = True
            return
        self._running = True
        self.bot.background(self._run())

    async def settle(self) -> None:
        """Lockstep: ask now when a change is unexplained (the candle's cycle waits for it);
        a failure is left to the background retries."""
        if self.enabled and self.started and self.bot.book.unexplained:
            try:
                await self._ask_until_explained()
            except ExchangeError as exc:
                log.warning("account log: %s; retrying", exc)
                self.want()

    async def _run(self) -> None:
        failures = 0
        try:
            self._again = True
            while self._again and not self.bot.stopping:
                self._again = False
                try:
                    await self._ask_until_explained()
                    failures = 0
                except ExchangeError as exc:
                    failures += 1
                    self.failures += 1
                    delay = min(0.5 * 2**failures, _MAX_BACKOFF_SECONDS)
                    log.warning(
                        "account log: asking for transfers failed (%s); the balance change "
                        "stays unexplained (no new entries, no hard stop sample); again in "
                        "%.1f s", exc, delay,
                    )  # fmt: skip
                    self._again = True
                    await asyncio.sleep(delay)
        finally:
            self._running = False

    async def _ask_until_explained(self) -> None:
        async with self._lock:
            for _ in range(5):  # a change seen while asking: ask again (bounded)
                check = self.bot.book.balance_check
                seen = check.changes if check is not None else 0
                await self._ask()
                if check is None or check.changes == seen:
                    self.bot.book.explained()
                    return
            self._again = True

    async def _ask(self) -> None:
        bot = self.bot
        rows = await bot.rest(bot.adapter.fetch_ledger, self.cursor_ms)
        self.asks += 1
        new = [r for r in rows if self._is_new(r)]
        transfers = [r for r in new if r.is_transfer]
        with bot.state.transaction():  # the transfers and the cursor together
            for r in transfers:
                self._book(r)
            self._advance(new)
            bot.state.set(STATE_KEY, self._saved())
        for r in transfers:  # told once committed
            bot.notify("transfer", amount=r.change, time_ms=r.time_ms, row_id=r.row_id)

    def _is_new(self, r: LedgerRow) -> bool:
        if r.row_id in self.cursor_ids:
            return False
        return self.cursor_ms < 0 or r.time_ms >= self.cursor_ms

    def _book(self, r: LedgerRow) -> None:
        before = r.balance_after - r.change
        log.warning(
            "account log: %s of %.4f USDT at %d (balance %.4f -> %.4f): a transfer, not a "
            "trading result; the balance peak and the hard stop's peak move with it",
            "a deposit" if r.change > 0 else "a withdrawal", abs(r.change), r.time_ms,
            before, r.balance_after,
        )  # fmt: skip
        self.bot.book.transfer(before, r.balance_after)
        self.booked.append(r)

    def _advance(self, rows: list[LedgerRow]) -> None:
        for r in rows:
            if r.time_ms > self.cursor_ms:
                self.cursor_ms, self.cursor_ids = r.time_ms, [r.row_id]
            elif r.time_ms == self.cursor_ms or self.cursor_ms < 0:
                self.cursor_ids.append(r.row_id)
        self.cursor_ids = self.cursor_ids[-_MAX_IDS:]

    def _saved(self) -> dict:
        return {"time_ms": self.cursor_ms, "ids": self.cursor_ids}

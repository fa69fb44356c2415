"""The live bot's vault (``vault.enabled``): the ledger's requests turned into shares, and exits
into reduce-only orders.

The ledger (:mod:`bot.vault.ledger`, SQLite beside the bot's state) is shared with
``gridbot vault``: the CLI writes a deposit or withdrawal request in a transaction, the bot
applies it at its next pass, with the same core functions as ``gridbot stress``:

- a withdrawal burns the leaver's shares at the NAV of the strategy's equity now (their
  exposure stops there), the mode comes from :func:`bot.core.vault.exit_mode`, and the slice
  of every position from :func:`bot.core.vault.pro_rata_slice`; the request, the exit, its
  slice and its cash part are written in one transaction;
- the slice is unwound by taker closes (MARKET, reduce-only by position side): all of it in one
  tranche (pro-rata), or one tranche per closed candle advancing every position by the same
  fraction, capped by ``vault.max_participation_pct`` of that candle's volume
  (:func:`bot.core.vault.tranche_step`, :func:`bot.core.vault.tranche_target`);
- every order is written to the ledger before it is sent and its result booked once after
  (done quantity, progress, value so far = cash + pnl against the slice's entry price - fees at
  ``backtest.taker_fee``); after a kill the orders still marked sent are asked for by client id:
  one that filled is booked, one the exchange never took is marked missing and its quantity
  goes out again with the next tranche. Nothing is sent twice, nothing paid twice;
- an unwound exit is paid (recorded once) at ``vault.payout_delay_hours`` after the request.

Until an exit is paid, the strategy sizes from the account less what belongs to the leavers:
the slice still held (at its entry price) and their cash (:meth:`VaultExits.position`,
:meth:`VaultExits.balance`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bot.core.account import funding_payment
from bot.core.margin import stack_tiers
from bot.core.vault import (
    MODE_BUFFER,
    MODE_NAMES,
    exit_mode,
    pro_rata_slice,
    tranche_step,
    tranche_target,
)
from bot.errors import ExchangeError
from bot.live.market_close import ask_close, send_close
from bot.live.revisions import REVISIONS
from bot.vault.ledger import Ledger, LedgerError

if TYPE_CHECKING:
    from bot.live.bot import LiveBot

__all__ = ["VaultExits"]

log = logging.getLogger("gridbot.live.vault")

_OPEN = ("pending", "unwinding", "unwound")
_FUNDING_MS = 8 * 3_600_000  # exits whose slice or cash is still in the account


class VaultExits:
    def __init__(self, bot: LiveBot, path: str | Path) -> None:
        self.bot = bot
        self.cfg = bot.config.vault
        self.taker_fee = bot.config.backtest.taker_fee
        self.ledger = Ledger(path)
        self.held: dict[tuple[str, int], tuple[float, float]] = {}  # slice left, entry price
        self.cash = 0.0  # the leavers' cash (their cash part + what the unwind realized)
        self._tranche_ts: dict[int, int] = {}  # exit -> the candle of its last tranche
        self._seq = 0

    # ------------------------------------------------------------------ the strategy's view

    def refresh(self) -> None:
        """What belongs to exits not yet paid, from the ledger."""
        held: dict[tuple[str, int], tuple[float, float]] = {}
        cash = 0.0
        for ex in self.ledger.exits():
            if ex.status not in _OPEN:
                continue
            cash += ex.realized_value if ex.realized_value is not None else 0.0
            for r in self.ledger.slices(ex.id):
                left = r["qty"] - r["done"]
                if left <= 0.0:
                    continue
                q0, p0 = held.get((r["symbol"], r["side"]), (0.0, 0.0))
                held[(r["symbol"], r["side"])] = (
                    q0 + left,
                    (q0 * p0 + left * r["price"]) / (q0 + left),
                )
        self.held, self.cash = held, cash
        REVISIONS.slots += 1  # the strategy's positions: the minute's cached slots are stale

    def position(self, symbol: str, j: int) -> tuple[float, float]:
        """The strategy's position: the account's less the leavers' slice still held (the
        price that keeps the account's equity = the strategy's + the slice's at any price)."""
        size, price = self.bot.book.position(symbol, j)
        h, hp = self.held.get((symbol, j), (0.0, 0.0))
        if h <= 0.0:
            return size, price
        rest = size - h
        step = self.bot.coins[symbol].spec.qty_step
        if rest < step / 2:
            return 0.0, 0.0
        return rest, (size * price - h * hp) / rest

    def balance(self) -> float:
        return self.bot.book.balance - self.cash

    def balance_peak(self) -> float:
        return self.bot.book.balance_peak - self.cash

    def _books(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, float, float]:
        """(symbols, size (2, n), price (2, n), latest prices, balance, equity) of the strategy."""
        syms = list(self.bot.coins)
        size = np.zeros((2, len(syms)))
        price = np.zeros((2, len(syms)))
        for s, sym in enumerate(syms):
            for j in (0, 1):
                size[j, s], price[j, s] = self.position(sym, j)
        marks = np.array([self.bot.coins[s].last_price for s in syms], dtype=np.float64)
        bal = self.balance()
        sides = np.array([[1.0], [-1.0]])
        equity = bal + float((size * (marks[None, :] - price) * sides).sum())
        return syms, size, price, marks, bal, equity

    # ------------------------------------------------------------------ requests

    async def apply_requests(self, now_ms: int) -> None:
        exits = 0
        *_, equity_before = self._books()
        for req in self.ledger.pending_requests():
            try:
                if req["kind"] == "deposit":
                    self._deposit(req, now_ms)
                else:
                    self._withdraw(req, now_ms)
                    exits += 1
            except LedgerError as exc:
                self.ledger.settle_request(req["id"], "refused", str(exc))
                self._say(f"vault request {req['id']} refused: {exc}")
        self.refresh()
        if exits:  # the leavers' part left the strategy: its hard stop peak moves with it
            *_, equity_after = self._books()
            self.bot.hard_stop.transfer(equity_before, equity_after)
        if exits and self.bot.cycle is not None:
            # the strategy's resting closes shrink to its own part now, before any tranche and
            # before they can fill into the leavers' slice
            for c in self.bot.coins.values():
                await self.bot.cycle.run(c)

    def _deposit(self, req: dict, now_ms: int) -> None:
        *_, equity = self._books()
        with self.ledger._tx():
            shares = self.ledger.deposit(
                req["depositor"], req["amount"], equity - req["amount"], now_ms
            )
            self.ledger.settle_request(req["id"], "done", f"{shares:.8g} shares")
        self._say(
            f"vault: {req['depositor']} deposited {req['amount']:.2f} USDT, {shares:.6g} shares"
        )

    def _withdraw(self, req: dict, now_ms: int) -> None:
        syms, size, price, marks, bal, equity = self._books()
        total = self.ledger.total_shares()
        if not total > 0.0:
            raise LedgerError("the vault holds no shares")
        f = min(req["shares"] / total, 1.0)
        marked = req["shares"] * self.ledger.nav_per_share(equity)
        tiers = stack_tiers([self.bot.coins[s].spec.tiers for s in syms])
        cfg = self.cfg
        mode = exit_mode(
            f, marked, equity, bal, size, marks, tiers, cfg.controlled_unwind_threshold_pct,
            cfg.cash_buffer_pct, cfg.leverage_cap, cfg.margin_buffer_pct,
        )  # fmt: skip
        steps = np.array([self.bot.coins[s].spec.qty_step for s in syms], dtype=np.float64)
        sl = pro_rata_slice(size, f, steps) if mode != MODE_BUFFER else np.zeros_like(size)
        sides = np.array([[1.0], [-1.0]])
        cash = marked - float((sl * (marks[None, :] - price) * sides).sum())
        rows = [
            (sym, j, float(sl[j, s]), float(price[j, s]))
            for s, sym in enumerate(syms)
            for j in (0, 1)
            if sl[j, s] > 0.0
        ]
        delay_ms = int(round(cfg.payout_delay_hours * 3_600_000))
        with self.ledger._tx():  # the request, the exit, its slice: all or nothing
            ex = self.ledger.request_withdrawal(
                req["depositor"], req["shares"], equity, now_ms, MODE_NAMES[mode], delay_ms
            )
            self.ledger.set_slice(ex.id, cash, rows)
            self.ledger.settle_request(req["id"], "done", MODE_NAMES[mode], ex.id)
            self.ledger.record_progress(ex.id, 1.0 if not rows else 0.0, cash)
        self._say(
            f"vault exit {ex.id}: {req['depositor']} out with {f:.2%} of the shares, "
            f"{marked:.2f} USDT at mark, {MODE_NAMES[mode]}"
        )

    # ------------------------------------------------------------------ unwinding

    async def recover(self) -> None:
        """Orders written as sent and never booked (a kill between the two): ask the exchange."""
        for o in self.ledger.unwind_orders(status="sent"):
            filled, px = await ask_close(self.bot, o["symbol"], o["client_id"])
            self._book(o["client_id"], filled, px)
            log.info("vault: order %s found after a restart: filled %g", o["client_id"], filled)
        self.refresh()

    def _book(self, client_id: str, filled: float, px: float) -> None:
        self.ledger.order_result(client_id, filled, px, filled * px * self.taker_fee)

    def _exchange_ms(self) -> int:
        """The exchange's time: the close of the last closed kline (the wall clock, live; the
        replayed candles' time on the simulated venue)."""
        ts = [c.last_kline_ts for c in self.bot.coins.values()]
        return max(ts) + 60_000 if ts and min(ts) >= 0 else -1

    def _candle_ts(self) -> int:
        ts = [c.last_kline_ts for c in self.bot.coins.values()]
        return min(ts) if ts else -1

    async def unwind(self) -> None:
        """One tranche of every exit still unwinding, once per closed candle."""
        if self.ledger.unwind_orders(status="sent"):
            await self.recover()
        k_ts = self._candle_ts()
        for ex in self.ledger.exits():
            if ex.status not in ("pending", "unwinding") or k_ts < 0:
                continue
            if self._tranche_ts.get(ex.id, -1) >= k_ts:
                continue
            self._tranche_ts[ex.id] = k_ts
            rows = self.ledger.slices(ex.id)
            step = 1.0
            if ex.mode == "controlled_unwind":
                step = await self._step(rows, k_ts)
            cum = min(1.0, ex.progress + step)
            cum = 1.0 if cum > 1.0 - 1e-9 else cum
            self._settle_shortfall(ex.id, rows)
            rows = self.ledger.slices(ex.id)
            orders = []
            for r in rows:
                q_step = self.bot.coins[r["symbol"]].spec.qty_step
                q = tranche_target(r["qty"], cum, q_step) - r["done"]
                q = round(q / q_step) * q_step
                if q >= q_step / 2:
                    self._seq += 1
                    cid = f"gbv{ex.id}x{int(time.time() * 1000) % 10**10}n{self._seq}"
                    orders.append((cid, ex.id, r["symbol"], r["side"], q, cum))
            if orders:
                await self._send(orders)
            elif step > 0.0:
                self.ledger.record_progress(
                    ex.id, cum, self.ledger.exit(ex.id).realized_value or 0.0
                )
        self.refresh()

    def _settle_shortfall(self, exit_id: int, rows: list[dict]) -> None:
        """The account holds less than a slice still to close (the strategy's own closes
        filled into it before they were resized, or the exchange reduced it): that part is
        gone already; it is booked as closed at the last price (no order, no fee), so the
        unwind never waits for a position that is not there."""
        for r in rows:
            size, _ = self.bot.book.position(r["symbol"], r["side"])
            c = self.bot.coins[r["symbol"]]
            gone = round((r["qty"] - r["done"] - size) / c.spec.qty_step) * c.spec.qty_step
            if gone < c.spec.qty_step / 2:
                continue
            self._seq += 1
            cid = f"settled-{exit_id}-{r['symbol']}-{r['side']}-{self._seq}"
            self.ledger.order_sent([(cid, exit_id, r["symbol"], r["side"], gone, 0.0)], 0)
            self.ledger.order_result(cid, gone, c.last_price, 0.0)
            self._say(
                f"vault exit {exit_id}: {gone:g} {r['symbol']} of the slice no longer in the "
                f"account, booked closed at the last price {c.last_price:g}"
            )

    async def _step(self, rows: list[dict], k_ts: int) -> float:
        """The fraction the last closed candle's volume allows (every position the same)."""
        syms = list(self.bot.coins)
        qty = np.zeros((2, len(syms)))
        for r in rows:
            qty[r["side"], syms.index(r["symbol"])] = r["qty"]
        vols = np.zeros(len(syms))
        for s, sym in enumerate(syms):
            if qty[:, s].any():
                k = await self.bot.rest(self.bot.adapter.fetch_klines, sym, k_ts, k_ts, 1)
                vols[s] = float(k[0, 5]) if len(k) else 0.0
        return float(tranche_step(qty, vols, self.cfg.max_participation_pct))

    async def _send(self, orders: list[tuple[str, int, str, int, float, float]]) -> None:
        self.ledger.order_sent(orders, int(time.time() * 1000))
        for cid, exit_id, sym, j, q, _ in orders:
            got = await send_close(
                self.bot, sym, 1 if j == 0 else -1, q, cid, f"vault exit {exit_id}"
            )
            if got is None:
                # it may have landed: left as sent, the next pass asks for it by client id
                # (and for the rest of this batch, never sent: missing)
                return
            filled, px = got
            self._book(cid, filled, px)
            self._say(
                f"vault exit {exit_id}: closed {filled:g} {sym} {'long' if j == 0 else 'short'} @ {px:g}"
            )

    async def charge_funding(self, now_ms: int) -> None:
        """At each funding time, the slice still held pays its funding (the exchange charged
        the whole account): recorded once per exit and funding time, so the stayers do not pay
        the leavers' part."""
        boundary = now_ms - now_ms % _FUNDING_MS
        due = [
            ex for ex in self.ledger.exits()
            if ex.status in ("pending", "unwinding") and ex.requested_at < boundary
        ]  # fmt: skip
        if not due:
            return
        rates: dict[str, float] | None = None
        for ex in due:
            if self.ledger.unwind_orders(ex.id, "funding") and any(
                o["time_ms"] == boundary for o in self.ledger.unwind_orders(ex.id, "funding")
            ):
                continue
            if rates is None:
                rates = await self.bot.rest(
                    self.bot.adapter.fetch_funding_rates, list(self.bot.coins)
                )
            paid = 0.0
            for r in self.ledger.slices(ex.id):
                left = r["qty"] - r["done"]
                if left > 0.0:
                    c = self.bot.coins[r["symbol"]]
                    side = 1 if r["side"] == 0 else -1
                    paid += funding_payment(side, left, c.last_price, rates.get(r["symbol"], 0.0))
            if self.ledger.record_funding(ex.id, boundary, paid):
                self._say(f"vault exit {ex.id}: its slice paid {paid:.4f} USDT of funding")

    def pay_due(self, now_ms: int) -> None:
        for ex in self.ledger.exits("unwound"):
            if now_ms >= ex.due_at:
                paid = self.ledger.pay(ex.id, ex.realized_value or 0.0, now_ms)
                self._say(f"vault exit {ex.id}: {paid.paid_value:.2f} USDT due to {ex.depositor}")
        self.refresh()

    # ------------------------------------------------------------------ the task

    async def loop(self, poll_seconds: float = 1.0) -> None:
        """Apply requests, send tranches and record payouts until the bot stops."""
        bot = self.bot
        await self.recover()
        while not bot.stopping:
            try:
                now_ms = self._exchange_ms()
                if now_ms > 0 and all(c.last_price == c.last_price for c in bot.coins.values()):
                    await self.apply_requests(now_ms)
                    await self.charge_funding(now_ms)
                    await self.unwind()
                    self.pay_due(now_ms)
            except ExchangeError as exc:
                log.warning("vault: %s; again at the next pass", exc)
            try:
                await asyncio.wait_for(bot.stopped.wait(), poll_seconds)
            except TimeoutError:
                pass

    def _say(self, text: str) -> None:
        log.info("%s", text)
        self.bot.notify("vault_exit", text=text)

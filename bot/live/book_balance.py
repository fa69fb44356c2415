"""The book's balance and its peak (the unstuck loss allowance is measured from the peak).

- The peak follows fills only, as in the backtester: funding does not raise it, and a deposit
  or withdrawal scales it by the balance's factor (:func:`bot.core.book.transfer_peak`) and
  moves the hard stop's peak with the equity (``on_transfer``).
- Where the exchange's balance reports say why the balance changed (Binance's ``DEPOSIT`` /
  ``WITHDRAW``), a transfer is booked as it arrives. Where they do not (Bybit's wallet topic),
  :class:`BalanceCheck` compares each new balance with what the book's own fills explain
  (their realized pnl, less at most :data:`FEE_BOUND` of their notional in fees). A change they
  do not explain leaves the balance **unexplained**: the book is in doubt (no new entries), the
  peak is not raised, the hard stop skips its samples, and ``on_unexplained`` asks the
  exchange's account log (:mod:`bot.live.transfers`), which books each transfer it lists
  (:meth:`BalanceBook.transfer`) and then calls :meth:`BalanceBook.explained`.

No I/O but the state store; no clock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from bot.core.book import transfer_peak
from bot.exchange.events import ORDER, TRANSFER_REASONS, UNKNOWN_REASON, BalanceEvent
from bot.live.state import StateStore

__all__ = ["FEE_BOUND", "UNEXPLAINED", "BalanceBook", "BalanceCheck"]

log = logging.getLogger("gridbot.live.book")

UNEXPLAINED = "balance change unexplained"  # the doubt while the account log is asked
FEE_BOUND = 0.001  # fees are at most 0.1% of a fill's notional (Bybit's taker: 0.055%)
_TOLERANCE_USDT = 0.01  # below this a change is rounding, not news
_TOLERANCE_REL = 1e-6  # of the balance: the wire's decimals


class BalanceCheck:
    """What the book's own fills explain of the next balance change."""

    def __init__(self) -> None:
        self.pnl = 0.0  # realized pnl of the fills booked since the last balance
        self.fee_bound = 0.0  # the most their fees can be
        self.unexplained = 0.0  # sum of the changes not explained yet (USDT)
        self.changes = 0  # unexplained changes seen so far (an ask covers those before it)

    def on_fill(self, realized_pnl: float, notional: float) -> None:
        self.pnl += realized_pnl
        self.fee_bound += abs(notional) * FEE_BOUND

    def observe(self, before: float, after: float) -> float:
        """A new balance: the part of the change the fills do not explain (0.0 if within
        fees and rounding); the fills' sums start again."""
        residual = after - before - self.pnl
        bound = self.fee_bound + _TOLERANCE_USDT + _TOLERANCE_REL * abs(after)
        self.pnl = self.fee_bound = 0.0
        if abs(residual) <= bound:
            return 0.0
        self.unexplained += residual
        self.changes += 1
        return residual


class BalanceBook:
    """The balance half of :class:`bot.live.book.Book` (a mixin: the book's state is here)."""

    state: StateStore
    balance: float
    balance_peak: float
    balance_check: BalanceCheck | None  # set where the exchange's reports give no reason
    on_unexplained: Callable[[], None] | None  # asks the account log
    _fill_since_balance: bool
    _raise_when_explained: bool
    _on_transfer: Callable[[float, float], None] | None

    def doubt(self, reason: str) -> None:
        raise NotImplementedError

    def resolve(self, reason: str) -> None:
        raise NotImplementedError

    @property
    def unexplained(self) -> bool:
        """A balance change neither our fills nor a booked transfer explain yet."""
        return self.balance_check is not None and self.balance_check.unexplained != 0.0

    def _new_balance(self, balance: float) -> None:
        """Every balance the exchange reports (stream or REST) comes in here."""
        check = self.balance_check
        if check is not None and not math.isnan(balance) and not math.isnan(self.balance):
            residual = check.observe(self.balance, balance)
            if residual != 0.0:
                log.warning(
                    "balance %.4f -> %.4f: %+.4f USDT not explained by our fills (a transfer, "
                    "funding, a fee?); asking the exchange's account log, no new entries and "
                    "no hard stop sample until it answers",
                    self.balance, balance, residual,
                )  # fmt: skip
                self.doubt(UNEXPLAINED)
                if self.on_unexplained is not None:
                    self.on_unexplained()
        self.balance = balance

    def balance_report(self, b: BalanceEvent) -> None:
        if not math.isnan(b.balance):
            if b.reason in TRANSFER_REASONS and self.balance > 0:
                before, self.balance = self.balance, b.balance
                self.transfer(before, b.balance)
            else:
                self._new_balance(b.balance)
        # the peak follows fills only, as in the backtester (funding does not raise it); a
        # report that gives no reason: a fill booked since the last one decides
        fill_driven = b.reason == ORDER or (b.reason == UNKNOWN_REASON and self._fill_since_balance)
        self._fill_since_balance = False
        if fill_driven:
            self.raise_peak()

    def raise_peak(self) -> None:
        if self.unexplained:  # it may hold a deposit: raised once the log explained it
            self._raise_when_explained = True
            return
        if self.balance > self.balance_peak:
            self.balance_peak = self.balance
            self.state.set("balance_peak", self.balance_peak)

    def transfer(self, balance_before: float, balance_after: float) -> None:
        """A deposit or withdrawal took the balance from ``balance_before`` to
        ``balance_after`` (the exchange's numbers at that moment): the peak moves with the
        balance, as in the backtest, and the hard stop's with the equity."""
        self.balance_peak = transfer_peak(self.balance_peak, balance_before, balance_after)
        self.state.set("balance_peak", self.balance_peak)
        if self._on_transfer is not None:
            self._on_transfer(balance_before, balance_after)

    def explained(self) -> None:
        """The account log explained every change so far (its transfers are booked)."""
        if self.balance_check is not None:
            self.balance_check.unexplained = 0.0
        self.resolve(UNEXPLAINED)
        if self._raise_when_explained:
            self._raise_when_explained = False
            self.raise_peak()

"""The few exchange events the live bot understands, whichever exchange sent them.

Each exchange's wire messages (Binance USDT-M ``ORDER_TRADE_UPDATE`` / ``ACCOUNT_UPDATE`` /
``aggTrade`` / ``kline``; Bybit v5 ``execution`` / ``order`` / ``position`` / ``wallet`` /
``publicTrade`` / ``kline.1``) are parsed into these at the boundary (``bot.exchange.binance``,
``bot.exchange.bybit``), so :class:`bot.live.bot.LiveBot` never reads a venue's field names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "ADJUSTMENT",
    "ORDER",
    "TRANSFER_REASONS",
    "UNKNOWN_REASON",
    "BalanceEvent",
    "Event",
    "FillEvent",
    "KlineEvent",
    "LedgerRow",
    "OrderEvent",
    "PositionEvent",
    "PriceEvent",
    "StreamExpired",
]

# Why a balance or position changed: a fill of ours (or funding), versus anything else
# (deleverage, ADL, liquidation, a manual transfer or trade): the latter re-grids at once.
ORDER = "ORDER"
FUNDING = "FUNDING"
ADJUSTMENT = "ADJUSTMENT"
UNKNOWN_REASON = ""  # the report does not say why (Bybit's wallet topic)
# money moved in or out of the account (Binance ACCOUNT_UPDATE reasons): not trading results
TRANSFER_REASONS = frozenset(
    {
        "DEPOSIT", "WITHDRAW", "ADMIN_DEPOSIT", "ADMIN_WITHDRAW", "MARGIN_TRANSFER",
        "ASSET_TRANSFER", "COIN_SWAP_DEPOSIT", "COIN_SWAP_WITHDRAW",
    }
)  # fmt: skip


@dataclass(frozen=True)
class PriceEvent:
    """The latest traded price (Binance aggTrade, Bybit publicTrade)."""

    symbol: str
    price: float


@dataclass(frozen=True)
class KlineEvent:
    """A 1m kline; only ``closed`` ones move the EMAs."""

    symbol: str
    open_ms: int
    close: float
    closed: bool
    high: float = math.nan  # the range moves the trailing extremes (bot.core.trailing)
    low: float = math.nan
    volume: float = 0.0  # base asset; the forager ranks by it (bot.core.forager)


@dataclass(frozen=True)
class FillEvent:
    """A fill on the account: ``qty`` signed (+buy / -sell), ``pside`` +1 long / -1 short.

    ``trade_id`` is unique per symbol (Binance: an int, Bybit: the execId string);
    ``cursor`` orders fills for REST catch-up (Binance: the trade id, Bybit: the exec time).
    ``remaining`` is the order's quantity still open after this fill (None: not reported).
    """

    symbol: str
    pside: int
    qty: float
    price: float
    trade_id: int | str
    time_ms: int
    client_id: str = ""
    order_id: str = ""
    remaining: float | None = None
    cursor: int = -1


@dataclass(frozen=True)
class OrderEvent:
    """An order's new status: ``open`` (new / partly filled, ``qty`` = signed remaining) or not
    (filled, cancelled, expired, rejected)."""

    symbol: str
    client_id: str
    order_id: str
    open: bool
    pside: int = 0
    qty: float = 0.0
    price: float = 0.0
    filled: float | None = None  # the order's cumulative filled quantity (None: not reported)
    cancelled: bool = False  # ended without filling completely (cancelled, expired, rejected)


@dataclass(frozen=True)
class BalanceEvent:
    """The USDT wallet balance (unleveraged, realized); ``reason`` ORDER, FUNDING or other."""

    balance: float
    reason: str
    time_ms: int


@dataclass(frozen=True)
class PositionEvent:
    """One position side as the exchange reports it; ``reason`` ORDER-like or ADJUSTMENT."""

    symbol: str
    pside: int
    size: float  # >= 0
    price: float
    time_ms: int
    reason: str


@dataclass(frozen=True)
class LedgerRow:
    """One row of the exchange's account log (Bybit ``/v5/account/transaction-log``): why the
    balance moved. ``kind`` TRANSFER_IN / TRANSFER_OUT (money in or out), SETTLEMENT (funding),
    TRADE (a fill) or the exchange's other types; ``change`` signed USDT; ``balance_after`` the
    wallet balance right after it."""

    row_id: str
    time_ms: int
    kind: str
    change: float
    balance_after: float

    @property
    def is_transfer(self) -> bool:
        return self.kind in LEDGER_TRANSFERS


LEDGER_TRANSFERS = frozenset({"TRANSFER_IN", "TRANSFER_OUT"})


@dataclass(frozen=True)
class StreamExpired:
    """The user stream's credentials expired (Binance listenKeyExpired): reconnect."""


Event = (
    PriceEvent | KlineEvent | FillEvent | OrderEvent | BalanceEvent | PositionEvent | StreamExpired
)

"""What the live bot needs from an exchange: the adapter protocol and the account snapshot.

Every exchange package (:mod:`bot.exchange.binance`, :mod:`bot.exchange.bybit`) provides one
class with this face; :mod:`bot.exchange.registry` maps an exchange name to it. The live bot
and the CLI only ever see this protocol, in gridbot terms (:mod:`bot.exchange.events`,
:class:`bot.exchange.order.LiveOrder`, :class:`bot.markets.MarketSpec`, :mod:`bot.errors`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bot.exchange.client_ids import ClientIds
from bot.exchange.events import FillEvent, LedgerRow
from bot.exchange.order import LiveOrder
from bot.markets import MarketSpec

__all__ = ["AccountSnapshot", "ExchangeAdapter"]


@dataclass
class AccountSnapshot:
    """Wallet balance (USDT, unleveraged, realized) and hedge-mode positions by symbol:
    ``positions[symbol] = (long_size, long_price, short_size, short_price)``, sizes >= 0."""

    balance: float
    positions: dict[str, tuple[float, float, float, float]]

    @classmethod
    def from_rows(cls, balance: float, rows: dict[str, list[float]]) -> AccountSnapshot:
        """From rows [long_size, long_price, short_size, short_price] by symbol."""
        return cls(balance, {k: (r[0], r[1], r[2], r[3]) for k, r in rows.items()})


class ExchangeAdapter(Protocol):
    """One account on one exchange, spoken in gridbot terms; errors are :mod:`bot.errors`."""

    #: the exchange's name in the registry ("binance", "bybit")
    kind: str
    #: how fills are ordered for the REST catch-up: "trade_id" (exclusive) or "time" (inclusive)
    fill_cursor: str
    #: True when the private stream needs a REST listen key (Binance)
    uses_listen_key: bool
    #: (lowest, highest) of the exchange's published ADL rank; the highest is deleveraged first
    adl_scale: tuple[int, int]
    #: REST calls made (for tests and the log)
    requests: int
    #: our client ids on the wire (generations where the exchange never reuses an id)
    client_ids: ClientIds

    #: True when the balance stream gives no reason (Bybit): :meth:`fetch_ledger` tells
    #: deposits and withdrawals from trading results
    transfers_from_log: bool

    @staticmethod
    def market_id(symbol: str) -> str: ...

    async def fetch_ledger(self, since_ms: int) -> list[LedgerRow]:
        """The account log from ``since_ms`` (inclusive; < 0: the last day), oldest first."""
        ...

    async def close(self) -> None: ...

    async def list_markets(self) -> list[str]:
        """The USDT-margined linear perpetuals being traded now (ids, e.g. BTCUSDT)."""
        ...

    async def load_markets(self, symbols: Sequence[str]) -> dict[str, MarketSpec]: ...

    async def setup_account(self, symbols: Sequence[str], leverage: int) -> None: ...

    async def ensure_hedge_mode(self) -> bool: ...

    async def fetch_account(self, symbols: Sequence[str] | None = None) -> AccountSnapshot: ...

    async def fetch_adl_quantiles(self, symbol: str) -> dict[str, int | None]: ...

    async def latest_fill_cursor(self, symbol: str) -> int: ...

    async def fetch_fills(self, symbol: str, cursor: int) -> list[FillEvent]: ...

    #: True when :meth:`fetch_fills_many` takes every coin's fills in one query (Bybit)
    fills_in_one_query: bool

    async def fetch_fills_many(self, cursors: dict[str, int]) -> dict[str, list[FillEvent]]: ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[LiveOrder]: ...

    async def fetch_klines(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, limit: int = 500
    ) -> np.ndarray: ...

    async def fetch_last_prices(self, symbols: Sequence[str]) -> dict[str, float]: ...

    async def server_time_offset_ms(self) -> int: ...

    async def create_order(self, o: LiveOrder) -> LiveOrder: ...

    async def cancel_order(self, o: LiveOrder) -> None: ...

    async def create_market_close(
        self, symbol: str, pside: int, qty: float, client_id: str
    ) -> tuple[float, float]:
        """A reduce-only market close (a vault exit's tranche): (filled qty, average price)."""
        ...

    async def fetch_funding_rates(self, symbols: Sequence[str]) -> dict[str, float]:
        """The last funding rate of each symbol (a vault slice's funding during an unwind)."""
        ...

    async def query_order_fill(self, symbol: str, client_id: str) -> tuple[float, float] | None:
        """(filled qty, average price) of our order ``client_id``; None if the exchange has none."""
        ...

    async def run_batch(
        self, fn: Callable[[LiveOrder], Awaitable[Any]], orders: Sequence[LiveOrder]
    ) -> list[Any]: ...

    async def listen_key(self) -> str: ...

    async def keepalive_listen_key(self) -> None: ...

    async def close_listen_key(self) -> None: ...

    def ws_auth_args(self, expires_ms: int) -> list[Any]: ...

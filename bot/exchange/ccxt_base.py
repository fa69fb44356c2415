"""What every ccxt-spoken exchange shares: one place where ccxt's exceptions become
:mod:`bot.errors` (freqtrade's lesson: translate once, at the edge), the request plumbing, and
the number helpers of the wire.

Each exchange package subclasses :class:`CcxtBase` with its dialect (``_new_exchange`` and the
endpoint methods); the REST calls go through ccxt's implicit endpoint methods, so ccxt still
signs, throttles and maps error codes, and the bot gets the exchange's exact numbers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import ccxt

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
from bot.exchange.client_ids import ClientIds
from bot.exchange.order import LiveOrder
from bot.exchange.rewire import point_ccxt_at
from bot.redaction import redact

__all__ = ["CcxtBase", "num", "to_float", "translate"]

# "client order id already in use" codes: Binance -4116, Bybit 110072 (OrderLinkedID duplicate)
_DUPLICATE_CODES = ("-4116", "110072")
# "the account is not in the position mode of this order": Binance -4061, Bybit 10001 + text
_MODE_MISMATCH = ("-4061", "position idx not match position mode")
# "cannot switch position mode now": open orders (-4067 / 110028) or positions (-4068 / 110024)
_MODE_LOCKED = ("-4067", "-4068", "110028", "110024")
# "insufficient margin" codes ccxt may leave generic: Binance -2019, Bybit 110007/110012/110004
_MARGIN_CODES = ("-2019", "110007", "110012", "110004")
# ccxt's exception classes -> ours, checked in this order (after the code tables above)
_BY_CLASS: tuple[tuple[Any, type[Exception]], ...] = (
    (ccxt.RateLimitExceeded | ccxt.DDoSProtection, RateLimitError),
    (ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.AccountSuspended, AuthenticationError),
    (ccxt.InvalidNonce, TransientExchangeError),  # -1021 outside recvWindow: clock drift
    (ccxt.NetworkError, TransientExchangeError),  # RequestTimeout, ExchangeNotAvailable, ...
    (ccxt.InsufficientFunds, InsufficientMarginError),
    (ccxt.OrderNotFound, UnknownOrderError),
    (ccxt.InvalidOrder, OrderRejectedError),
)


def translate(exc: Exception) -> Exception:
    """A ccxt exception -> the matching :mod:`bot.errors` exception (others pass through)."""
    msg = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ccxt.BaseError):
        if any(c in msg for c in _DUPLICATE_CODES):
            return DuplicateOrderError(msg)
        if any(c in msg for c in _MODE_MISMATCH + _MODE_LOCKED):
            return PositionModeError(msg)
    for theirs, ours in _BY_CLASS:
        if isinstance(exc, theirs):
            return ours(msg)
    if isinstance(exc, ccxt.BaseError):
        if any(c in msg for c in _MARGIN_CODES):
            return InsufficientMarginError(msg)
        return ExchangeError(msg)
    if isinstance(exc, TimeoutError | OSError):
        return TransientExchangeError(msg)
    return exc


def to_float(x: Any) -> float:
    """A wire number (string, number, None or "") as a float; missing -> 0.0."""
    return float(x) if x not in (None, "") else 0.0


def num(x: float) -> str:
    """A float as a plain decimal string (no exponent): what both exchanges accept."""
    s = f"{x:.12f}".rstrip("0").rstrip(".")
    return s or "0"


class CcxtBase:
    """Thin async wrapper over one ccxt exchange for one account: the plumbing every dialect
    shares. Subclasses set the class attributes and ``_new_exchange``."""

    kind = ""
    fill_cursor = "trade_id"
    uses_listen_key = False
    #: Binance refuses a client id only while an order with it is open; Bybit forever
    client_ids_reusable = True

    def __init__(
        self,
        api_key: str = "",
        api_secret: str = "",
        *,
        base_url: str | None = None,
        throttle: bool = True,
        timeout_ms: int = 10_000,
    ) -> None:
        opts: dict[str, Any] = {
            "apiKey": api_key,
            "secret": api_secret,
            "enableRateLimit": throttle,
            "timeout": timeout_ms,
        }
        self.ex = self._new_exchange(opts)
        if base_url is not None:
            point_ccxt_at(self.ex, base_url)
        self.requests = 0  # for tests and the log: REST calls made
        self.client_ids = ClientIds(self.client_ids_reusable)

    def _new_exchange(self, opts: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        self.requests += 1
        try:
            return await fn(*args, **kw)
        except Exception as exc:  # translate once, here
            new = translate(exc)
            if new is exc:
                raise
            # exchanges echo the signed string (API key included) in signature errors
            text = redact(str(new), (self.ex.apiKey, self.ex.secret))
            raise type(new)(text) from None

    async def close(self) -> None:
        await self.ex.close()

    @staticmethod
    def market_id(symbol: str) -> str:
        """``BTC/USDT:USDT`` or ``btcusdt`` -> ``BTCUSDT``."""
        return symbol.upper().replace("/USDT:USDT", "USDT").replace("/", "")

    async def run_batch(
        self, fn: Callable[[LiveOrder], Awaitable[Any]], orders: Sequence[LiveOrder]
    ) -> list[Any]:
        """Run ``fn`` on a batch concurrently; results are values or bot.errors exceptions."""
        return list(await asyncio.gather(*(fn(o) for o in orders), return_exceptions=True))

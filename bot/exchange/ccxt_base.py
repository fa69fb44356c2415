"""What every ccxt-spoken exchange shares: one place where ccxt's exceptions become
:mod:`bot.errors` (freqtrade's lesson: translate once, at the edge), the request plumbing, and
the number helpers of the wire.

Each exchange package subclasses :class:`CcxtBase` with its dialect (``_new_exchange`` and the
endpoint methods); the REST calls go through ccxt's implicit endpoint methods, so ccxt still
signs, throttles and maps error codes, and the bot gets the exchange's exact numbers.
"""

from __future__ import annotations

import asyncio
import json
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
from bot.exchange.events import FillEvent, LedgerRow
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
    #: True when the balance stream does not say why a balance changed, so the account log
    #: (:meth:`fetch_ledger`) tells a transfer from a loss (Bybit); Binance's stream says
    transfers_from_log = False

    async def fetch_ledger(self, since_ms: int) -> list[LedgerRow]:
        """The account log's rows from ``since_ms`` (inclusive; < 0: the last day), oldest
        first. Only where :attr:`transfers_from_log`."""
        raise NotImplementedError(f"{self.kind}: transfers come with the balance stream")

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
            new = self._translated(exc)
            if new is exc:
                raise
            raise new from None

    def _translated(self, exc: Exception) -> Exception:
        """``exc`` in bot.errors terms, its text redacted (``exc`` itself if not ccxt's)."""
        new = translate(exc)
        if new is exc:
            return exc
        # exchanges echo the signed string (API key included) in signature errors
        return type(new)(redact(str(new), (self.ex.apiKey, self.ex.secret)))

    def _item_error(self, response: dict[str, Any], url: str) -> Exception:
        """One refused item of a batch answer (Binance ``{code, msg}``, Bybit ``{retCode,
        retMsg}``) as the error its single-order call would have raised: through ccxt's own
        error table for the exchange, then :func:`translate`."""
        body = json.dumps(response)
        try:
            self.ex.handle_errors(400, "Bad Request", url, "POST", {}, body, response, {}, "")
        except Exception as exc:
            return self._translated(exc)
        return ExchangeError(f"{self.kind}: batch item refused: {body}")

    async def close(self) -> None:
        await self.ex.close()

    @staticmethod
    def market_id(symbol: str) -> str:
        """``BTC/USDT:USDT`` or ``btcusdt`` -> ``BTCUSDT``."""
        return symbol.upper().replace("/USDT:USDT", "USDT").replace("/", "")

    #: True when one REST query returns every coin's fills (:meth:`fetch_fills_many`)
    fills_in_one_query = False

    async def fetch_fills(self, symbol: str, cursor: int) -> list[FillEvent]:
        raise NotImplementedError

    async def fetch_fills_many(self, cursors: dict[str, int]) -> dict[str, list[FillEvent]]:
        """Each symbol's fills since its cursor: one query per symbol here."""
        return {s: await self.fetch_fills(s, c) for s, c in cursors.items()}

    # ------------------------------------------------------------------ batches

    #: orders one batch request of the exchange takes (1: no batch endpoint)
    batch_create_max = 1
    batch_cancel_max = 1
    #: two or more creates / cancels go through the batch endpoints (False: a call per order)
    batch_endpoints = True

    async def run_batch(
        self, fn: Callable[[LiveOrder], Awaitable[Any]], orders: Sequence[LiveOrder]
    ) -> list[Any]:
        """Run ``fn`` on ``orders``; results, in order, are values or bot.errors exceptions.

        Creates and cancels of two or more orders go out as batch requests (per symbol, at
        most the exchange's batch size each), every item's refusal mapped as its single call's
        would be; a request that fails as a whole (timeout, 5xx, rate limit) fails each of its
        items with that error, so a timed-out create batch is "create unknown" item by item.
        """
        orders = list(orders)
        send, size = None, 1
        if self.batch_endpoints and len(orders) > 1:
            if fn == self.create_order:
                send, size = self._create_batch, self.batch_create_max
            elif fn == self.cancel_order:
                send, size = self._cancel_batch, self.batch_cancel_max
        if send is None or size < 2:
            return list(await asyncio.gather(*(fn(o) for o in orders), return_exceptions=True))
        by_symbol: dict[str, list[int]] = {}
        for i, o in enumerate(orders):
            by_symbol.setdefault(o.symbol, []).append(i)
        chunks = [idx[k : k + size] for idx in by_symbol.values() for k in range(0, len(idx), size)]
        parts = await asyncio.gather(
            *(self._send_chunk(fn, send, [orders[i] for i in c]) for c in chunks)
        )
        out: list[Any] = [None] * len(orders)
        for c, part in zip(chunks, parts, strict=True):
            for i, r in zip(c, part, strict=True):
                out[i] = r
        return out

    async def _send_chunk(
        self,
        fn: Callable[[LiveOrder], Awaitable[Any]],
        send: Callable[[list[LiveOrder]], Awaitable[list[Any]]],
        chunk: list[LiveOrder],
    ) -> list[Any]:
        if len(chunk) == 1:  # one order: the single-order endpoint
            return list(await asyncio.gather(fn(chunk[0]), return_exceptions=True))
        try:
            return await send(chunk)
        except Exception as exc:  # the request as a whole: every item shares its fate
            return [exc] * len(chunk)

    async def create_order(self, o: LiveOrder) -> LiveOrder:
        raise NotImplementedError

    async def cancel_order(self, o: LiveOrder) -> None:
        raise NotImplementedError

    async def _create_batch(self, orders: list[LiveOrder]) -> list[Any]:
        """Create ``orders`` (one symbol) in one request: per item a LiveOrder or an error."""
        raise NotImplementedError

    async def _cancel_batch(self, orders: list[LiveOrder]) -> list[Any]:
        """Cancel ``orders`` (one symbol) in one request: per item None or an error."""
        raise NotImplementedError

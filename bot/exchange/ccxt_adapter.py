"""The REST boundary: ccxt's async binanceusdm or bybit, translated into gridbot terms.

Every call goes through :meth:`CcxtAdapter._call`, the one place where ccxt's exceptions
become :mod:`bot.errors` (freqtrade's lesson: translate once, at the edge). Both exchanges are
spoken through ccxt's implicit endpoint methods (``fapiPrivatePostOrder``,
``privatePostV5OrderCreate`` ...): ccxt still signs, throttles and maps error codes, and the
bot gets the exchange's exact numbers (no unified re-parsing that could round a price).

``CcxtAdapter("bybit", ...)`` returns a :class:`bot.exchange.bybit_rest.BybitAdapter`: the same
methods, Bybit v5 (category linear, unified account, hedge mode) underneath.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import numpy as np

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
from bot.exchange.events import FillEvent
from bot.exchange.order import LiveOrder
from bot.markets import MarketSpec
from bot.redaction import redact

__all__ = ["AccountSnapshot", "CcxtAdapter", "translate"]

log = logging.getLogger("gridbot.live.exchange")

KLINE_LIMIT = 1500  # Binance's maximum per request
_MAX_KLINE_PAGES = 200  # bounded: 300k candles of history at most
_MAX_FILL_PAGES = 100  # bounded: 100 pages of fills per catch-up
# "client order id already in use" codes: Binance -4116, Bybit 110072 (OrderLinkedID duplicate)
_DUPLICATE_CODES = ("-4116", "110072")
# "the account is not in the position mode of this order": Binance -4061, Bybit 10001 + text
_MODE_MISMATCH = ("-4061", "position idx not match position mode")
# "cannot switch position mode now": open orders (-4067 / 110028) or positions (-4068 / 110024)
_MODE_LOCKED = ("-4067", "-4068", "110028", "110024")
# "insufficient margin" codes ccxt may leave generic: Binance -2019, Bybit 110007/110012/110004
_MARGIN_CODES = ("-2019", "110007", "110012", "110004")


def translate(exc: Exception) -> Exception:
    """A ccxt exception -> the matching :mod:`bot.errors` exception (others pass through)."""
    msg = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ccxt.BaseError) and any(c in msg for c in _DUPLICATE_CODES):
        return DuplicateOrderError(msg)
    if isinstance(exc, ccxt.BaseError) and any(c in msg for c in _MODE_MISMATCH + _MODE_LOCKED):
        return PositionModeError(msg)
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return RateLimitError(msg)
    if isinstance(exc, ccxt.AuthenticationError | ccxt.PermissionDenied | ccxt.AccountSuspended):
        return AuthenticationError(msg)
    if isinstance(exc, ccxt.InvalidNonce):  # -1021 timestamp outside recvWindow: clock drift
        return TransientExchangeError(msg)
    if isinstance(exc, ccxt.NetworkError):  # RequestTimeout, ExchangeNotAvailable, ...
        return TransientExchangeError(msg)
    if isinstance(exc, ccxt.InsufficientFunds):
        return InsufficientMarginError(msg)
    if isinstance(exc, ccxt.OrderNotFound):
        return UnknownOrderError(msg)
    if isinstance(exc, ccxt.InvalidOrder):
        return OrderRejectedError(msg)
    if isinstance(exc, ccxt.BaseError):
        if any(c in msg for c in _MARGIN_CODES):
            return InsufficientMarginError(msg)
        return ExchangeError(msg)
    if isinstance(exc, TimeoutError | OSError):
        return TransientExchangeError(f"{type(exc).__name__}: {exc}")
    return exc


@dataclass
class AccountSnapshot:
    """Wallet balance (USDT, unleveraged, realized) and hedge-mode positions by symbol:
    ``positions[symbol] = (long_size, long_price, short_size, short_price)``, sizes >= 0."""

    balance: float
    positions: dict[str, tuple[float, float, float, float]]


def _f(x: Any) -> float:
    return float(x) if x not in (None, "") else 0.0


class CcxtAdapter:
    """Thin async wrapper over one ccxt exchange for one account."""

    kind = "binance"
    #: how fills are ordered for REST catch-up: Binance by trade id (exclusive)
    fill_cursor = "trade_id"
    #: Binance refuses a client id only while an order with it is open; Bybit forever
    client_ids_reusable = True

    def __new__(cls, exchange: str = "binance", *args: Any, **kw: Any) -> CcxtAdapter:
        if cls is CcxtAdapter and exchange == "bybit":
            from bot.exchange.bybit_rest import BybitAdapter  # the Bybit dialect

            return super().__new__(BybitAdapter)
        return super().__new__(cls)

    def __init__(
        self,
        exchange: str = "binance",
        api_key: str = "",
        api_secret: str = "",
        *,
        base_url: str | None = None,
        throttle: bool = True,
        timeout_ms: int = 10_000,
    ) -> None:
        if exchange not in ("binance", "bybit", "sim"):
            raise ValueError(f"unknown exchange {exchange!r}")
        opts: dict[str, Any] = {
            "apiKey": api_key,
            "secret": api_secret,
            "enableRateLimit": throttle,
            "timeout": timeout_ms,
        }
        self.ex = self._new_exchange(opts)
        if base_url is not None:
            self._point_at(base_url)
        self.requests = 0  # for tests and the log: REST calls made
        self.client_ids = ClientIds(self.client_ids_reusable)

    def _new_exchange(self, opts: dict[str, Any]) -> Any:
        return ccxt_async.binanceusdm(opts)

    def _point_at(self, base_url: str) -> None:
        from bot.exchange.local import point_ccxt_at

        point_ccxt_at(self.ex, base_url)

    # ------------------------------------------------------------------ plumbing

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

    # ------------------------------------------------------------------ markets

    async def load_markets(self, symbols: Sequence[str]) -> dict[str, MarketSpec]:
        """Steps, minimums and leverage tiers of ``symbols`` (Binance ids, e.g. BTCUSDT)."""
        info = await self._call(self.ex.fapiPublicGetExchangeInfo)
        by_id = {s["symbol"]: s for s in info["symbols"]}
        brackets = await self._call(self.ex.fapiPrivateGetLeverageBracket)
        if isinstance(brackets, dict):
            brackets = [brackets]
        tiers_by_id = {b["symbol"]: b["brackets"] for b in brackets}
        out = {}
        for sym in symbols:
            sid = self.market_id(sym)
            if sid not in by_id:
                raise ExchangeError(f"{sid}: not a market on this exchange")
            filters = {f["filterType"]: f for f in by_id[sid]["filters"]}
            min_notional = filters.get("MIN_NOTIONAL", {})
            tiers = np.array(
                [
                    [
                        _f(t["notionalFloor"]),
                        _f(t["notionalCap"]),
                        _f(t["maintMarginRatio"]),
                        _f(t["initialLeverage"]),
                        _f(t.get("cum", 0.0)),
                    ]
                    for t in sorted(tiers_by_id.get(sid, []), key=lambda t: _f(t["notionalFloor"]))
                ],
                dtype=np.float64,
            ).reshape(-1, 5)
            out[sid] = MarketSpec(
                symbol=sid,
                qty_step=_f(filters["LOT_SIZE"]["stepSize"]),
                price_step=_f(filters["PRICE_FILTER"]["tickSize"]),
                min_qty=_f(filters["LOT_SIZE"]["minQty"]),
                min_cost=_f(min_notional.get("notional", min_notional.get("minNotional", 0.0))),
                tiers=tiers,
            )
        return out

    # ------------------------------------------------------------------ account

    async def setup_account(self, symbols: Sequence[str], leverage: int) -> None:
        """Hedge position mode, cross margin and ``leverage`` on every symbol.

        "No need to change" answers (-4046) mean it is already so.
        """
        await self.ensure_hedge_mode()
        for sym in symbols:
            sid = self.market_id(sym)
            try:
                await self._call(
                    self.ex.fapiPrivatePostMarginType, {"symbol": sid, "marginType": "CROSSED"}
                )
            except ExchangeError as exc:
                if "-4046" not in str(exc):
                    raise
            await self._call(
                self.ex.fapiPrivatePostLeverage, {"symbol": sid, "leverage": int(leverage)}
            )

    async def ensure_hedge_mode(self) -> bool:
        """Verify the account trades hedge mode, switching it if it does not; True if it had
        to be switched. Raises PositionModeError when the exchange will not switch (positions
        or orders open in the other mode)."""
        raw = await self._call(self.ex.fapiPrivateGetPositionSideDual)
        if str(raw.get("dualSidePosition")).lower() == "true":
            return False
        try:
            await self._call(self.ex.fapiPrivatePostPositionSideDual, {"dualSidePosition": "true"})
        except PositionModeError as exc:
            raise PositionModeError(
                "the account is in one-way position mode and the exchange will not switch it "
                f"to hedge mode now ({exc}): close its positions and orders, then restart"
            ) from None
        except ExchangeError as exc:
            if "-4059" in str(exc):  # "no need to change": switched meanwhile
                return False
            raise
        return True

    async def fetch_account(self, symbols: Sequence[str] | None = None) -> AccountSnapshot:
        """Wallet balance (``walletBalance`` of USDT) and hedge-mode positions, one request."""
        acct = await self._call(self.ex.fapiPrivateV2GetAccount)
        balance = 0.0
        for a in acct.get("assets", []):
            if a.get("asset") == "USDT":
                balance = _f(a.get("walletBalance"))
        positions: dict[str, list[float]] = {}
        for p in acct.get("positions", []):
            amt = _f(p.get("positionAmt"))
            sid = p["symbol"]
            if symbols is not None and sid not in symbols:
                continue
            row = positions.setdefault(sid, [0.0, 0.0, 0.0, 0.0])
            ps = p.get("positionSide", "BOTH")
            price = _f(p.get("entryPrice"))
            if ps == "LONG" or (ps == "BOTH" and amt > 0):
                row[0], row[1] = abs(amt), price if amt else 0.0
            elif ps == "SHORT" or (ps == "BOTH" and amt < 0):
                row[2], row[3] = abs(amt), price if amt else 0.0
        return AccountSnapshot(balance, {k: tuple(v) for k, v in positions.items()})

    async def latest_fill_cursor(self, symbol: str) -> int:
        """The cursor of the account's latest fill on ``symbol`` (0: none yet)."""
        raw = await self._call(
            self.ex.fapiPrivateGetUserTrades, {"symbol": self.market_id(symbol), "limit": 1}
        )
        return int(raw[-1]["id"]) if raw else 0

    async def fetch_fills(self, symbol: str, cursor: int) -> list[FillEvent]:
        """The account's fills on ``symbol`` after ``cursor`` (trade ids > cursor), oldest first."""
        sid = self.market_id(symbol)
        out: list[FillEvent] = []
        for _ in range(_MAX_FILL_PAGES):
            params = {"symbol": sid, "fromId": cursor + 1, "limit": 1000}
            raw = await self._call(self.ex.fapiPrivateGetUserTrades, params)
            for t in raw:
                sign = 1.0 if t["side"] == "BUY" else -1.0
                pside = 1 if t.get("positionSide") == "LONG" else -1
                tid = int(t["id"])
                out.append(
                    FillEvent(
                        sid,
                        pside,
                        sign * float(t["qty"]),
                        float(t["price"]),
                        tid,
                        int(t["time"]),
                        "",
                        str(t.get("orderId", "")),
                        None,
                        tid,
                    )  # fmt: skip
                )
                cursor = max(cursor, tid)
            if len(raw) < 1000:
                break
        return out

    async def fetch_open_orders(self, symbol: str | None = None) -> list[LiveOrder]:
        """Open limit orders (all symbols when ``symbol`` is None), ours and others'."""
        params = {"symbol": self.market_id(symbol)} if symbol else {}
        raw = await self._call(self.ex.fapiPrivateGetOpenOrders, params)
        return [self.parse_order(o) for o in raw if o.get("type") == "LIMIT"]

    @staticmethod
    def parse_order(o: dict) -> LiveOrder:
        remaining = _f(o["origQty"]) - _f(o.get("executedQty"))
        sign = 1.0 if o["side"] == "BUY" else -1.0
        ps = o.get("positionSide", "BOTH")
        pside = 1 if ps == "LONG" else -1 if ps == "SHORT" else (1 if sign > 0 else -1)
        return LiveOrder(
            symbol=o["symbol"],
            pside=pside,
            qty=sign * remaining,
            price=_f(o["price"]),
            kind=0,
            client_id=o.get("clientOrderId", ""),
            order_id=str(o["orderId"]),
        )

    async def fetch_klines(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, limit: int = 500
    ) -> np.ndarray:
        """Closed and open 1m klines as rows [open_time, o, h, l, c, v] (float64), oldest first.

        With ``start_ms``, pages forward (bounded) until ``end_ms`` or ``limit`` rows.
        """
        sid = self.market_id(symbol)
        rows: list[list[float]] = []
        if start_ms is None:
            params: dict[str, Any] = {"symbol": sid, "interval": "1m", "limit": min(limit, 1500)}
            if end_ms is not None:
                params["endTime"] = end_ms
            raw = await self._call(self.ex.fapiPublicGetKlines, params)
            rows = [[float(r[0]), *(float(x) for x in r[1:6])] for r in raw]
        else:
            since = int(start_ms)
            for _ in range(_MAX_KLINE_PAGES):
                params = {"symbol": sid, "interval": "1m", "startTime": since}
                params["limit"] = min(KLINE_LIMIT, limit - len(rows))
                if end_ms is not None:
                    params["endTime"] = end_ms
                raw = await self._call(self.ex.fapiPublicGetKlines, params)
                rows += [[float(r[0]), *(float(x) for x in r[1:6])] for r in raw]
                if len(raw) < params["limit"] or len(rows) >= limit:
                    break
                since = int(raw[-1][0]) + 60_000
        return np.array(rows, dtype=np.float64).reshape(-1, 6)

    async def fetch_last_prices(self, symbols: Sequence[str]) -> dict[str, float]:
        raw = await self._call(self.ex.fapiPublicGetTickerPrice)
        want = {self.market_id(s) for s in symbols}
        return {r["symbol"]: _f(r["price"]) for r in raw if r["symbol"] in want}

    async def server_time_offset_ms(self) -> int:
        raw = await self._call(self.ex.fapiPublicGetTime)
        return int(raw["serverTime"]) - int(time.time() * 1000)

    # ------------------------------------------------------------------ orders

    async def create_order(self, o: LiveOrder) -> LiveOrder:
        """Post-only (GTX) limit order in hedge mode; returns it with the exchange's order id."""
        params = {
            "symbol": self.market_id(o.symbol),
            "side": o.side,
            "positionSide": o.position_side,
            "type": "LIMIT",
            "timeInForce": "GTX",  # maker only: a price that moved through us is refused
            "quantity": _num(abs(o.qty)),
            "price": _num(o.price),
            "newClientOrderId": o.client_id,
        }
        raw = await self._call(self.ex.fapiPrivatePostOrder, params)
        return LiveOrder(
            o.symbol, o.pside, o.qty, o.price, o.kind, o.level, o.client_id, str(raw["orderId"])
        )

    async def create_market_close(
        self, symbol: str, pside: int, qty: float, client_id: str
    ) -> tuple[float, float]:
        """A taker close (MARKET, hedge mode) of ``qty`` of the ``pside`` position, as a vault
        exit's tranche sends it; returns (filled qty, average price)."""
        params = {
            "symbol": self.market_id(symbol),
            "side": "SELL" if pside > 0 else "BUY",
            "positionSide": "LONG" if pside > 0 else "SHORT",
            "type": "MARKET",
            "quantity": _num(qty),
            "newClientOrderId": client_id,
            "newOrderRespType": "RESULT",
        }
        raw = await self._call(self.ex.fapiPrivatePostOrder, params)
        return _f(raw.get("executedQty")), _f(raw.get("avgPrice"))

    async def fetch_funding_rates(self, symbols: Sequence[str]) -> dict[str, float]:
        """The last funding rate of each symbol (what its positions paid at the last funding
        time, per unit of notional)."""
        raw = await self._call(self.ex.fapiPublicGetPremiumIndex)
        want = {self.market_id(s) for s in symbols}
        return {r["symbol"]: _f(r.get("lastFundingRate")) for r in raw if r["symbol"] in want}

    async def query_order_fill(self, symbol: str, client_id: str) -> tuple[float, float] | None:
        """(filled qty, average price) of the order ``client_id``; None: the exchange never
        took it."""
        params = {"symbol": self.market_id(symbol), "origClientOrderId": client_id}
        try:
            raw = await self._call(self.ex.fapiPrivateGetOrder, params)
        except UnknownOrderError:
            return None
        return _f(raw.get("executedQty")), _f(raw.get("avgPrice"))

    async def cancel_order(self, o: LiveOrder) -> None:
        params: dict[str, Any] = {"symbol": self.market_id(o.symbol)}
        if o.order_id:
            params["orderId"] = o.order_id
        else:
            params["origClientOrderId"] = o.client_id
        await self._call(self.ex.fapiPrivateDeleteOrder, params)

    async def run_batch(
        self, fn: Callable[[LiveOrder], Awaitable[Any]], orders: Sequence[LiveOrder]
    ) -> list[Any]:
        """Run ``fn`` on a batch concurrently; results are values or bot.errors exceptions."""
        return list(await asyncio.gather(*(fn(o) for o in orders), return_exceptions=True))

    # ------------------------------------------------------------------ user data stream

    #: Binance's user stream needs a listen key (REST), kept alive every 30-60 min
    uses_listen_key = True

    async def listen_key(self) -> str:
        raw = await self._call(self.ex.fapiPrivatePostListenKey)
        return raw["listenKey"]

    async def keepalive_listen_key(self) -> None:
        await self._call(self.ex.fapiPrivatePutListenKey)

    async def close_listen_key(self) -> None:
        await self._call(self.ex.fapiPrivateDeleteListenKey)


def _num(x: float) -> str:
    """A float as a plain decimal string (no exponent): what Binance accepts."""
    s = f"{x:.12f}".rstrip("0").rstrip(".")
    return s or "0"

"""Binance USDT-M REST through ccxt's async ``binanceusdm``, in gridbot terms.

Spoken through ccxt's implicit endpoint methods (``fapiPrivatePostOrder`` ...); the shared
plumbing (error translation, request counting, redaction) is :class:`bot.exchange.ccxt_base.
CcxtBase`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import ccxt.async_support as ccxt_async
import numpy as np

from bot.errors import ExchangeError, PositionModeError, UnknownOrderError
from bot.exchange.base import AccountSnapshot
from bot.exchange.ccxt_base import CcxtBase
from bot.exchange.ccxt_base import num as _num
from bot.exchange.ccxt_base import to_float as _f
from bot.exchange.events import FillEvent
from bot.exchange.order import LiveOrder
from bot.markets import MarketSpec

__all__ = ["BinanceAdapter"]

KLINE_LIMIT = 1500  # Binance's maximum per request
_MAX_KLINE_PAGES = 200  # bounded: 300k candles of history at most
_MAX_FILL_PAGES = 100  # bounded: 100 pages of fills per catch-up


class BinanceAdapter(CcxtBase):
    """Binance USDT-M (hedge mode, cross margin) for one account."""

    kind = "binance"
    #: how fills are ordered for REST catch-up: Binance by trade id (exclusive)
    fill_cursor = "trade_id"
    #: Binance refuses a client id only while an order with it is open
    client_ids_reusable = True

    def _new_exchange(self, opts: dict[str, Any]) -> Any:
        return ccxt_async.binanceusdm(opts)

    # ------------------------------------------------------------------ markets

    async def list_markets(self) -> list[str]:
        """The USDT-margined perpetuals trading now (exchangeInfo: PERPETUAL, USDT, TRADING)."""
        info = await self._call(self.ex.fapiPublicGetExchangeInfo)
        return sorted(
            str(m["symbol"])
            for m in info.get("symbols") or []
            if m.get("contractType") == "PERPETUAL"
            and m.get("quoteAsset") == "USDT"
            and m.get("marginAsset", "USDT") == "USDT"
            and m.get("status") == "TRADING"
        )

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
                listed_ms=int(_f(by_id[sid].get("onboardDate", 0))),
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
        return AccountSnapshot.from_rows(balance, positions)

    #: the exchange's ADL number: (lowest, highest); the highest is deleveraged first
    adl_scale = (0, 4)

    async def fetch_adl_quantiles(self, symbol: str) -> dict[str, int | None]:
        """The exchange's published ADL quantile of the account's ``long`` and ``short`` on
        ``symbol`` (Binance ``GET /fapi/v1/adlQuantile``, 0..4); None: no position there."""
        sid = self.market_id(symbol)
        raw = await self._call(self.ex.fapiPrivateGetAdlQuantile, {"symbol": sid})
        q: dict[str, Any] = {}
        for r in raw if isinstance(raw, list) else [raw]:
            if r.get("symbol") == sid:
                q = r.get("adlQuantile") or {}
        # a side without a position reads 0 like the safest bucket: the position says which
        ls, _, ss, _ = (await self.fetch_account([sid])).positions.get(sid, (0.0,) * 4)
        if "BOTH" in q:  # one-way mode: one number, for the side it holds
            q = {"LONG": q["BOTH"], "SHORT": q["BOTH"]}
        return {
            "long": int(q.get("LONG", 0)) if ls > 0 else None,
            "short": int(q.get("SHORT", 0)) if ss > 0 else None,
        }

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

    @classmethod
    def _order_params(cls, o: LiveOrder) -> dict[str, Any]:
        """Post-only (GTX) limit order in hedge mode, as Binance's order parameters."""
        return {
            "symbol": cls.market_id(o.symbol),
            "side": o.side,
            "positionSide": o.position_side,
            "type": "LIMIT",
            "timeInForce": "GTX",  # maker only: a price that moved through us is refused
            "quantity": _num(abs(o.qty)),
            "price": _num(o.price),
            "newClientOrderId": o.client_id,
        }

    @staticmethod
    def _with_id(o: LiveOrder, order_id: Any) -> LiveOrder:
        return LiveOrder(
            o.symbol, o.pside, o.qty, o.price, o.kind, o.level, o.client_id, str(order_id)
        )

    async def create_order(self, o: LiveOrder) -> LiveOrder:
        """Post-only (GTX) limit order in hedge mode; returns it with the exchange's order id."""
        raw = await self._call(self.ex.fapiPrivatePostOrder, self._order_params(o))
        return self._with_id(o, raw["orderId"])

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

    #: POST /fapi/v1/batchOrders takes 5 orders, DELETE 10 (of one symbol)
    batch_create_max = 5
    batch_cancel_max = 10

    def _batch_url(self) -> str:
        return f"{self.ex.urls.get('api', {}).get('fapiPrivate', '')}/batchOrders"

    async def _create_batch(self, orders: list[LiveOrder]) -> list[Any]:
        params = {"batchOrders": [self._order_params(o) for o in orders]}
        raw = await self._call(self.ex.fapiPrivatePostBatchOrders, params)
        return [
            self._with_id(o, r["orderId"])
            if "orderId" in r
            else self._item_error(r, self._batch_url())
            for o, r in zip(orders, raw, strict=True)
        ]

    async def _cancel_batch(self, orders: list[LiveOrder]) -> list[Any]:
        """By order id where known, else by client id: one request for each kind (Binance
        takes one list or the other)."""
        sid = self.market_id(orders[0].symbol)
        out: list[Any] = [None] * len(orders)
        for key, ref in (("orderidlist", "order_id"), ("origclientorderidlist", "client_id")):
            idx = [i for i, o in enumerate(orders) if bool(o.order_id) == (ref == "order_id")]
            if not idx:
                continue
            ids = [getattr(orders[i], ref) for i in idx]
            try:
                raw = await self._call(
                    self.ex.fapiPrivateDeleteBatchOrders, {"symbol": sid, key: ids}
                )
            except Exception as exc:  # the request as a whole: its items share its fate
                raw = [exc] * len(idx)
            for i, r in zip(idx, raw, strict=True):
                if isinstance(r, Exception) or "code" in r and "orderId" not in r:
                    out[i] = (
                        r if isinstance(r, Exception) else self._item_error(r, self._batch_url())
                    )
        return out

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

    def ws_auth_args(self, expires_ms: int) -> list[Any]:
        raise NotImplementedError("binance: the user stream authenticates with a listen key")

"""The venue's Bybit v5 REST API (linear USDT perpetuals): the subset ccxt's ``bybit`` uses.

Served by the same aiohttp app as the Binance ``/fapi`` paths (everything under ``/v5/``), on
the same accounts (keyed by API key), matching engine and candles. Every answer is Bybit's
envelope ``{"retCode", "retMsg", "result", "retExtInfo", "time"}`` with HTTP 200, errors
included (ccxt maps ``retCode`` through its ``exceptions['exact']`` table), except the IP
limits: HTTP 403 (ccxt: RateLimitExceeded).

Signed requests: headers ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW``,
``X-BAPI-SIGN`` = hex HMAC-SHA256(secret, timestamp + key + recvWindow + (query string for GET
| raw body for POST)); the timestamp must lie in [now - recvWindow, now + 1000) of the wall
clock. The core's neutral refusals are translated to Bybit retCodes in :data:`RET_CODES`.

Deviations: a PostOnly order that would cross is accepted, then cancelled at once with
``rejectReason`` ``EC_PostOnlyWillTakeLiquidity`` (as Bybit does); the rate limit is one
shared IP budget (``VenueConfig.weight_limit_per_minute``, 1 per call) rather than Bybit's
per-UID/per-endpoint limits.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from ..host import VenueHost
from ..matching import Account, Order, Position
from ..refusals import Refusal, Refused
from ..wire import liquidation_price_of, wall_ms
from . import formats as bf
from .batch import WithExtInfo, add_batch_routes
from .errors import RET_CODES, BybitError, to_bybit_error
from .ledger import add_ledger_route

__all__ = ["RET_CODES", "BybitError", "BybitRestApi", "Ledger", "to_bybit_error"]

log = logging.getLogger("gridbot.venue.bybit")

Handler = Callable[[dict[str, Any], str], Any]

POST_ONLY_REJECT = "EC_PostOnlyWillTakeLiquidity"


def _envelope(result: Any, code: int = 0, msg: str = "OK") -> dict:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": wall_ms()}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _str(params: dict[str, Any], name: str) -> str | None:
    v = params.get(name)
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _required(params: dict[str, Any], name: str) -> str:
    v = _str(params, name)
    if v is None:
        raise BybitError(10001, f"params error: {name} is required")
    return v


def _float(params: dict[str, Any], name: str) -> float | None:
    v = _str(params, name)
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        raise BybitError(10001, f"params error: {name} invalid") from None


def _int(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    v = _str(params, name)
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        raise BybitError(10001, f"params error: {name} invalid") from None


def _bool(params: dict[str, Any], name: str) -> bool:
    return (_str(params, name) or "false").lower() == "true"


class Ledger:
    """Realised pnl per account and per position, summed incrementally from the fills."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._total: dict[str, float] = {}
        self._by_pos: dict[tuple[str, str, str], float] = {}

    def _update(self, acct: Account) -> None:
        n = self._seen.get(acct.api_key, 0)
        if n > len(acct.trades):  # never shrinks today; be safe anyway
            n = 0
        for f in acct.trades[n:]:
            pnl = f.realized_pnl - f.commission
            self._total[acct.api_key] = self._total.get(acct.api_key, 0.0) + pnl
            key = (acct.api_key, f.symbol, f.position_side)
            self._by_pos[key] = self._by_pos.get(key, 0.0) + pnl
        self._seen[acct.api_key] = len(acct.trades)

    def forget(self, api_key: str) -> None:
        """Drop an account's sums (its account was reset: its trade list starts again)."""
        self._seen.pop(api_key, None)
        self._total.pop(api_key, None)
        for key in [k for k in self._by_pos if k[0] == api_key]:
            del self._by_pos[key]

    def total(self, acct: Account) -> float:
        self._update(acct)
        return self._total.get(acct.api_key, 0.0)

    def position(self, acct: Account, symbol: str, position_side: str) -> float:
        self._update(acct)
        return self._by_pos.get((acct.api_key, symbol, position_side), 0.0)


class BybitRestApi:
    """Handlers for ``/v5/...`` on the venue's aiohttp app."""

    def __init__(self, venue: VenueHost) -> None:
        self.venue = venue
        self.eng = venue.engine
        self.ledger = Ledger()
        self.reject_reasons: dict[int, str] = {}  # order id -> rejectReason (post-only)
        self.reduce_only_ids: set[int] = set()  # hedge-mode reduceOnly orders (display only)
        self.routes: dict[tuple[str, str], tuple[Handler, str]] = {}
        r = self._route
        r("GET", "/v5/market/time", self.market_time)
        r("GET", "/v5/market/instruments-info", self.instruments)
        r("GET", "/v5/market/kline", self.kline)
        r("GET", "/v5/market/tickers", self.tickers)
        r("GET", "/v5/market/risk-limit", self.risk_limit)
        r("GET", "/v5/market/funding/history", self.funding_history)
        r("GET", "/v5/user/query-api", self.query_api, "signed")
        r("GET", "/v5/account/info", self.account_info, "signed")
        r("GET", "/v5/account/wallet-balance", self.wallet_balance, "signed")
        r("GET", "/v5/account/fee-rate", self.fee_rate, "signed")
        r("POST", "/v5/account/set-margin-mode", self.set_margin_mode, "signed")
        r("GET", "/v5/position/list", self.position_list, "signed")
        r("POST", "/v5/position/set-leverage", self.set_leverage, "signed")
        r("POST", "/v5/position/switch-mode", self.switch_mode, "signed")
        r("POST", "/v5/position/switch-isolated", self.switch_isolated, "signed")
        r("POST", "/v5/order/create", self.create_order, "signed")
        r("POST", "/v5/order/cancel", self.cancel_order, "signed")
        r("POST", "/v5/order/cancel-all", self.cancel_all, "signed")
        r("GET", "/v5/order/realtime", self.realtime_orders, "signed")
        r("GET", "/v5/order/history", self.order_history, "signed")
        r("GET", "/v5/execution/list", self.execution_list, "signed")
        add_batch_routes(self)  # /v5/order/create-batch, /v5/order/cancel-batch
        add_ledger_route(self)  # /v5/account/transaction-log

    def _route(self, method: str, path: str, handler: Handler, security: str = "none") -> None:
        self.routes[(method, path)] = (handler, security)

    # ------------------------------------------------------------------ pipeline

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        await self.venue.faults.before_request()
        body = await request.text() if request.can_read_body else ""
        text = f"{request.query_string}&{body}"  # what a fault may match (a client order id)
        forced = self.venue.faults.take_rest_fault(path, request.method, text)
        if forced is not None:
            return self._forced(forced)
        route = self.routes.get((request.method, path))
        if route is None:
            return web.Response(status=404, text="404 page not found", content_type="text/plain")
        if self.venue.ip_budget.charge(1) is not None:  # the venue's one IP budget
            return self._forced(403)
        handler, security = route
        try:
            params: dict[str, Any] = dict(
                urllib.parse.parse_qsl(request.query_string, keep_blank_values=True)
            )
            if request.method == "POST" and body.strip():
                try:
                    data = orjson.loads(body)
                except orjson.JSONDecodeError:
                    raise BybitError(10001, "params error: request body is not JSON") from None
                if not isinstance(data, dict):
                    raise BybitError(10001, "params error: request body is not an object")
                params.update(data)
            api_key = self._authenticate(request, body) if security == "signed" else ""
            result = handler(params, api_key)
            headers = {"X-Bapi-Limit": "20", "X-Bapi-Limit-Status": "19"} if api_key else None
            self.venue.flush_events()
            await self.venue.faults.before_answer(path, request.method, text)
            if isinstance(result, WithExtInfo):  # the batch endpoints' per-item codes
                env = _envelope(result.result)
                env["retExtInfo"] = result.ext_info
                return _json(env, headers=headers)
            return _json(_envelope(result), headers=headers)
        except Refused as err:
            e = to_bybit_error(err)
            return _json(_envelope({}, e.code, e.msg))
        except BybitError as err:
            return _json(_envelope({}, err.code, err.msg))
        finally:
            self.venue.flush_events()  # private-stream events of what this call changed

    def _forced(self, status: int) -> web.Response:
        if status == 429:  # Bybit's per-UID limit: HTTP 200, retCode 10006
            reset = str(wall_ms() + 1000)
            return _json(
                _envelope({}, 10006, "Too many visits!"),
                headers={
                    "X-Bapi-Limit": "10",
                    "X-Bapi-Limit-Status": "0",
                    "X-Bapi-Limit-Reset-Timestamp": reset,
                },
            )
        if status in (403, 418):  # the IP limit (ccxt's httpExceptions: 403 -> RateLimitExceeded)
            return web.Response(status=403, text="access too frequent", content_type="text/plain")
        return web.Response(status=status, text="Service Unavailable", content_type="text/plain")

    def _authenticate(self, request: web.Request, body: str) -> str:
        h = request.headers
        key = h.get("X-BAPI-API-KEY", "")
        ts_s = h.get("X-BAPI-TIMESTAMP", "")
        sign = h.get("X-BAPI-SIGN", "")
        recv_s = h.get("X-BAPI-RECV-WINDOW", "") or str(self.venue.config.recv_window_ms)
        if not key or not ts_s or not sign:
            raise BybitError(
                10001,
                f"empty value: apiTimestamp[{ts_s}] apiKey[{key}] apiSignature[{sign}]: "
                "openapi sign params error!",
            )
        acct = self.eng.accounts.get(key)
        if acct is None:
            raise BybitError(10003, "API key is invalid.")
        try:
            ts, recv = int(ts_s), int(recv_s)
        except ValueError:
            raise BybitError(10001, "params error: timestamp or recv_window invalid") from None
        payload = ts_s + key + recv_s + (body if request.method == "POST" else request.query_string)
        expected = hmac.new(acct.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sign.lower()):
            raise BybitError(10004, f"error sign! origin_string[{payload}]")
        now = wall_ms()
        if not (now - recv <= ts < now + 1000):
            raise BybitError(
                10002,
                "invalid request, please check your server timestamp or recv_window param. "
                f"req_timestamp[{ts}],server_timestamp[{now}],recv_window[{recv}]",
            )
        return key

    # ------------------------------------------------------------------ helpers

    def _category(self, params: dict[str, Any]) -> None:
        if _str(params, "category") != "linear":
            raise BybitError(10001, "params error: only category=linear is served here")

    def _symbol(self, params: dict[str, Any], *, required: bool = True) -> str | None:
        s = _str(params, "symbol")
        if s is None:
            if required:
                raise BybitError(10001, "params error: symbol is required")
            return None
        s = s.upper()
        if s not in self.eng.specs:
            raise BybitError(10001, "params error: symbol invalid")
        return s

    def _order_json(self, acct: Account, o: Order) -> dict:
        return bf.order_json(
            o,
            self.eng.specs[o.symbol],
            fee=bf.order_fee(acct, o),
            reduce_only=o.reduce_only or o.order_id in self.reduce_only_ids,
            reject_reason=self.reject_reasons.get(o.order_id),
        )

    def _find(self, acct: Account, symbol: str | None, params: dict[str, Any]) -> Order | None:
        oid = bf.parse_order_id(params.get("orderId"))
        link = _str(params, "orderLinkId")
        if oid is None and link is None:
            raise BybitError(10001, "params error: orderId or orderLinkId is required")
        o = acct.find_order(oid, None if oid is not None else link)
        if o is not None and symbol is not None and o.symbol != symbol:
            return None
        return o

    # ------------------------------------------------------------------ market

    def market_time(self, params: dict[str, Any], _: str) -> dict:
        now = wall_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def instruments(self, params: dict[str, Any], _: str) -> dict:
        self._category(params)
        want = self._symbol(params, required=False)
        status = _str(params, "status")
        rows = []
        if status in (None, "Trading"):  # no PreLaunch / Delivering / Closed markets here
            rows = [bf.instrument_json(m) for s, m in self.eng.specs.items() if want in (None, s)]
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    def kline(self, params: dict[str, Any], _: str) -> dict:
        self._category(params)
        symbol = self._symbol(params)
        c = self.venue.candles
        tf = int(c.timeframe_ms)
        if _required(params, "interval") != bf.interval_of(tf):
            raise BybitError(10001, "params error: invalid interval")
        limit = _int(params, "limit", 200) or 200
        if not 1 <= limit <= 1000:
            raise BybitError(10001, "params error: limit invalid")
        start, end = _int(params, "start"), _int(params, "end")
        ts = c.timestamps[: self.venue.index]  # closed candles only: the replay's past
        i1 = len(ts) if end is None else int(np.searchsorted(ts, end, side="right"))
        if start is not None:  # from the candle containing start, at most limit of them
            i0 = max(0, int(np.searchsorted(ts, start, side="right")) - 1)
            if i0 < len(ts) and int(ts[i0]) + tf <= start:
                i0 += 1
            i1 = min(i1, i0 + limit)
        else:
            i0 = max(0, i1 - limit)
        rows = bf.kline_rows(ts, c.ohlcv[c.symbols.index(symbol)], i0, max(i0, i1))
        return {"symbol": symbol, "category": "linear", "list": rows}

    def day_stats(self, symbol: str) -> tuple[float, float, float, float, float, float]:
        """(prev price 24h, high, low, volume, turnover, prev price 1h) over the closed candles."""
        c = self.venue.candles
        k = self.venue.index
        per_day = max(1, 86_400_000 // int(c.timeframe_ms))
        per_hour = max(1, 3_600_000 // int(c.timeframe_ms))
        data = c.ohlcv[c.symbols.index(symbol)]
        last = self.eng.prices[symbol]
        if k == 0:
            return (last, last, last, 0.0, 0.0, last)
        w = data[max(0, k - per_day) : k]
        return (
            float(w[0, 0]),
            float(w[:, 1].max()),
            float(w[:, 2].min()),
            float(w[:, 4].sum()),
            float((w[:, 4] * w[:, 3]).sum()),
            float(data[max(0, k - per_hour), 0]),
        )

    def ticker(self, symbol: str, tick_direction: str = "ZeroPlusTick") -> dict:
        now = self.eng.now_ms
        return bf.ticker_json(
            self.eng.specs[symbol],
            self.eng.prices[symbol],
            self.day_stats(symbol),
            self.eng.funding_rate,
            (now // 28_800_000 + 1) * 28_800_000,
            tick_direction,
        )

    def tickers(self, params: dict[str, Any], _: str) -> dict:
        self._category(params)
        want = self._symbol(params, required=False)
        rows = [self.ticker(s) for s in self.eng.symbols if want in (None, s)]
        return {"category": "linear", "list": rows}

    def risk_limit(self, params: dict[str, Any], _: str) -> dict:
        self._category(params)
        want = self._symbol(params, required=False)
        rows = []
        for s, spec in self.eng.specs.items():
            if want in (None, s):
                rows.extend(bf.risk_limit_json(spec))
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    def funding_history(self, params: dict[str, Any], _: str) -> dict:
        """The funding the venue charged (as ``GET /fapi/v1/fundingRate``), newest first."""
        self._category(params)
        symbol = self._symbol(params)
        assert symbol is not None  # required=True raised otherwise
        limit = _int(params, "limit", 200) or 200
        if not 1 <= limit <= 200:
            raise BybitError(10001, "params error: limit must be 1..200")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        rows = []
        for t in self.venue.candles.timestamps[: self.venue.index]:
            t = int(t)
            rate = self.eng.funding_due(t).get(symbol)
            if rate is not None and (start is None or t >= start) and (end is None or t <= end):
                rows.append({"symbol": symbol, "fundingRate": bf.fmt(rate, 8),
                             "fundingRateTimestamp": str(t)})  # fmt: skip
        return {"category": "linear", "list": rows[::-1][:limit]}

    # ------------------------------------------------------------------ account

    def query_api(self, params: dict[str, Any], key: str) -> dict:
        return {
            "id": str(abs(hash(key)) % 10**8),
            "note": "venue",
            "apiKey": key,
            "readOnly": 0,
            "secret": "",
            "permissions": {
                "ContractTrade": ["Order", "Position"],
                "Spot": [],
                "Wallet": ["AccountTransfer"],
                "Options": [],
                "Derivatives": [],
                "CopyTrading": [],
                "BlockTrade": [],
                "Exchange": [],
                "NFT": [],
                "Affiliate": [],
            },
            "ips": ["*"],
            "type": 1,
            "deadlineDay": -1,
            "expiredAt": "",
            "createdAt": "2024-01-01T00:00:00Z",
            "unified": 0,
            "uta": 1,  # a unified trading account (ccxt: enableUnifiedAccount)
            "userID": 1,
            "inviterID": 0,
            "vipLevel": "No VIP",
            "mktMakerLevel": "0",
            "affiliateID": 0,
            "rsaPublicKey": "",
            "isMaster": True,
            "parentUid": "0",
            "kycLevel": "LEVEL_DEFAULT",
            "kycRegion": "",
        }

    def account_info(self, params: dict[str, Any], key: str) -> dict:
        return {
            "unifiedMarginStatus": 6,  # UTA 2.0 pro
            "marginMode": "REGULAR_MARGIN",
            "isMasterTrader": False,
            "spotHedgingStatus": "OFF",
            "updatedTime": "1700000000000",
            "dcpStatus": "OFF",
            "timeWindow": 10,
            "smpGroup": 0,
        }

    def wallet_balance(self, params: dict[str, Any], key: str) -> dict:
        if _str(params, "accountType") != "UNIFIED":
            raise BybitError(10001, "accountType only support UNIFIED.")
        acct = self.eng.account(key)
        return {"list": [bf.wallet_json(self.eng, acct, cum_realised=self.ledger.total(acct))]}

    def fee_rate(self, params: dict[str, Any], key: str) -> dict:
        want = self._symbol(params, required=False)
        return {
            "list": [
                {
                    "symbol": s,
                    "baseCoin": "",
                    "takerFeeRate": bf.fmt(self.eng.taker_fee, 6),
                    "makerFeeRate": bf.fmt(self.eng.maker_fee, 6),
                }
                for s in self.eng.symbols
                if want in (None, s)
            ]
        }

    def set_margin_mode(self, params: dict[str, Any], key: str) -> dict:
        self.eng.account(key)
        mode = _required(params, "setMarginMode")
        if mode != "REGULAR_MARGIN":
            raise BybitError(3400045, "Set margin mode failed: the venue is cross margin only")
        return {"reasons": []}

    def switch_isolated(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        self._symbol(params)
        if _int(params, "tradeMode") != 0:
            raise BybitError(3400045, "Set margin mode failed: the venue is cross margin only")
        raise BybitError(110026, "Cross/isolated margin mode is not modified")

    # ------------------------------------------------------------------ positions

    def position_json(self, acct: Account, symbol: str, position_side: str) -> dict:
        p = acct.positions.get((symbol, position_side))
        if p is None:
            p = Position(symbol, position_side)
        row = bf.position_json(
            self.eng,
            acct,
            p,
            liq_price=liquidation_price_of(self.eng, acct, symbol),
            cum_realised=self.ledger.position(acct, symbol, position_side),
        )
        if p.amount != 0.0:  # 1..5 (5: deleveraged first) from the venue's ranking; 0: none
            from backtest.venue.risk_loop import adl_quantile

            side = 1 if p.amount > 0 else -1
            q = adl_quantile(self.venue, acct.api_key, symbol, side)[0]
            row["adlRankIndicator"] = q + 1
        return row

    def position_list(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        acct = self.eng.account(key)
        want = self._symbol(params, required=False)
        if want is None and _str(params, "settleCoin") is None:
            raise BybitError(10001, "params error: symbol or settleCoin is required")
        sides = ("LONG", "SHORT") if acct.hedge_mode else ("BOTH",)
        rows = []
        for s in self.eng.symbols:
            if want is not None and s != want:
                continue
            for ps in sides:
                p = acct.positions.get((s, ps))
                # Bybit: a symbol query lists its (possibly empty) slots; a settleCoin query
                # lists open positions only
                if want is not None or (p is not None and p.amount != 0.0):
                    rows.append(self.position_json(acct, s, ps))
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    def set_leverage(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        symbol = self._symbol(params)
        acct = self.eng.account(key)
        buy, sell = _float(params, "buyLeverage"), _float(params, "sellLeverage")
        if buy is None or sell is None:
            raise BybitError(10001, "params error: buyLeverage and sellLeverage are required")
        if buy != sell:
            raise BybitError(10001, "buy leverage must equal sell leverage in cross margin")
        if buy != int(buy):
            raise BybitError(10001, "leverage invalid: the venue takes whole leverages")
        assert symbol is not None
        if self.eng.leverage(acct, symbol) == int(buy) and symbol in acct.leverage:
            raise BybitError(110043, "leverage not modified")
        self.eng.set_leverage(key, symbol, int(buy))
        return {}

    def switch_mode(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        if _str(params, "symbol") is None and _str(params, "coin") is None:
            raise BybitError(10001, "params error: symbol or coin is required")
        if _str(params, "symbol") is not None:
            self._symbol(params)
        elif _str(params, "coin") != "USDT":
            raise BybitError(10001, "params error: coin invalid")
        mode = _int(params, "mode")
        if mode not in (0, 3):
            raise BybitError(10001, "params error: mode must be 0 (one-way) or 3 (hedge)")
        self.eng.set_position_mode(key, mode == 3)  # one mode per account here (Bybit: per coin)
        return {}

    # ------------------------------------------------------------------ orders

    def _order_terms(self, params: dict[str, Any]) -> tuple[str, str, float, float | None, str]:
        """side, orderType, qty, price (None for Market) and the engine's time in force."""
        side = _required(params, "side")
        if side not in ("Buy", "Sell"):
            raise BybitError(10001, "params error: side invalid")
        otype = _required(params, "orderType")
        if otype not in ("Limit", "Market"):
            raise BybitError(10001, "params error: orderType invalid")
        qty = _float(params, "qty")
        if qty is None:
            raise BybitError(10001, "params error: qty is required")
        price = _float(params, "price") if otype == "Limit" else None
        if otype == "Limit" and price is None:
            raise BybitError(10001, "params error: price is required for Limit orders")
        tif = _str(params, "timeInForce") or ("GTC" if otype == "Limit" else "IOC")
        engine_tif = {"GTC": "GTC", "PostOnly": "GTX", "IOC": "IOC", "FOK": "FOK"}.get(tif)
        if engine_tif is None:
            raise BybitError(10001, "params error: timeInForce invalid")
        return side, otype, qty, price, engine_tif

    @staticmethod
    def _link_id(params: dict[str, Any], acct: Account) -> str | None:
        link = _str(params, "orderLinkId")
        if link is not None:
            if len(link) > 36:
                raise BybitError(10001, "params error: orderLinkId is too long")
            # Bybit: an orderLinkId is unique among all the account's orders, not only open ones
            if link in acct.closed_client_ids:
                raise BybitError(110072, "OrderLinkedID is duplicate")
        return link

    def create_order(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        symbol = self._symbol(params)
        assert symbol is not None
        acct = self.eng.account(key)
        side, otype, qty, price, engine_tif = self._order_terms(params)
        idx = _int(params, "positionIdx", 0)
        if idx not in (0, 1, 2) or (idx == 0) == acct.hedge_mode:
            raise BybitError(10001, "position idx not match position mode")
        ps = ("BOTH", "LONG", "SHORT")[idx or 0]
        reduce_only = _bool(params, "reduceOnly")
        link = self._link_id(params, acct)
        hedge_reduce = False
        if reduce_only and acct.hedge_mode:
            # Bybit accepts reduceOnly in hedge mode on the closing side of the idx's position;
            # the engine caps hedge closes at the position itself, so book it as a plain close
            closing = (ps == "LONG") == (side == "Sell")
            pos = acct.positions.get((symbol, ps))
            if not closing or pos is None or pos.amount == 0.0:
                raise BybitError(
                    110017, "current position is zero, cannot fix reduce-only order qty"
                )
            reduce_only, hedge_reduce = False, True
        last = self.eng.prices[symbol]
        try:
            o = self.eng.place_order(
                key,
                symbol,
                side.upper(),
                otype.upper(),
                qty,
                price,
                time_in_force=engine_tif,
                reduce_only=reduce_only,
                position_side=ps,
                client_order_id=link,
            )
        except Refused as err:
            if err.reason != Refusal.POST_ONLY_WOULD_TAKE:
                raise
            o = self._post_only_cancelled(acct, symbol, side, qty, price or last, ps, link)
        if hedge_reduce:
            self.reduce_only_ids.add(o.order_id)
        return {"orderId": bf.order_id(o.order_id), "orderLinkId": bf.link_id(o)}

    def _post_only_cancelled(
        self,
        acct: Account,
        symbol: str,
        side: str,
        qty: float,
        price: float,
        ps: str,
        link: str | None,
    ) -> Order:
        """Bybit accepts a crossing PostOnly order, then cancels it (EC_PostOnlyWillTakeLiquidity)."""
        o = self.eng.cancel_at_once(acct, symbol, side, ps, qty, price, link)
        self.reject_reasons[o.order_id] = POST_ONLY_REJECT
        return o

    def cancel_order(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        symbol = self._symbol(params)
        assert symbol is not None
        acct = self.eng.account(key)
        o = self._find(acct, symbol, params)
        if o is None or o.order_id not in acct.open_orders:
            raise BybitError(110001, "order not exists or too late to cancel")
        self.eng.cancel_order(key, symbol, o.order_id)
        return {"orderId": bf.order_id(o.order_id), "orderLinkId": bf.link_id(o)}

    def cancel_all(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        acct = self.eng.account(key)
        want = self._symbol(params, required=False)
        if want is None and _str(params, "settleCoin") is None:
            raise BybitError(10001, "params error: symbol or settleCoin is required")
        out = []
        for o in [o for o in acct.open_orders.values() if want in (None, o.symbol)]:
            self.eng.cancel_order(key, o.symbol, o.order_id)
            out.append({"orderId": bf.order_id(o.order_id), "orderLinkId": bf.link_id(o)})
        return {"list": out, "success": "1"}

    def _page(self, rows: list, params: dict[str, Any], default: int, cap: int) -> tuple[list, str]:
        limit = min(max(_int(params, "limit", default) or default, 1), cap)
        start = _int(params, "cursor", 0) or 0
        page = rows[start : start + limit]
        nxt = str(start + limit) if start + limit < len(rows) else ""
        return page, nxt

    def realtime_orders(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        acct = self.eng.account(key)
        want = self._symbol(params, required=False)
        if params.get("orderId") or params.get("orderLinkId"):
            # by id, Bybit answers open and recent closed orders alike (ccxt's fetchOrder)
            o = self._find(acct, want, params)
            rows = [self._order_json(acct, o)] if o is not None else []
            return {"category": "linear", "list": rows, "nextPageCursor": ""}
        if want is None and _str(params, "settleCoin") is None and not params.get("baseCoin"):
            raise BybitError(10001, "params error: symbol, baseCoin or settleCoin is required")
        orders = list(acct.open_orders.values())
        if _int(params, "openOnly", 0):
            orders += list(acct.closed_orders.values())[-500:]
        orders = [o for o in orders if want in (None, o.symbol)]
        orders.sort(key=lambda o: (o.time_ms, o.order_id), reverse=True)  # newest first
        page, nxt = self._page(orders, params, 20, 50)
        return {
            "category": "linear",
            "list": [self._order_json(acct, o) for o in page],
            "nextPageCursor": nxt,
        }

    def order_history(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        acct = self.eng.account(key)
        want = self._symbol(params, required=False)
        if params.get("orderId") or params.get("orderLinkId"):
            o = self._find(acct, want, params)
            rows = [o] if o is not None else []
        else:
            rows = [o for o in acct.closed_orders.values() if want in (None, o.symbol)]
            rows += [o for o in acct.open_orders.values() if want in (None, o.symbol)]
            start, end = _int(params, "startTime"), _int(params, "endTime")
            rows = [
                o
                for o in rows
                if (start is None or o.time_ms >= start) and (end is None or o.time_ms <= end)
            ]
            status = _str(params, "orderStatus")
            if status is not None:
                rows = [o for o in rows if bf.order_status(o) == status]
        rows.sort(key=lambda o: (o.time_ms, o.order_id), reverse=True)
        page, nxt = self._page(rows, params, 20, 50)
        return {
            "category": "linear",
            "list": [self._order_json(acct, o) for o in page],
            "nextPageCursor": nxt,
        }

    def execution_list(self, params: dict[str, Any], key: str) -> dict:
        self._category(params)
        acct = self.eng.account(key)
        want = self._symbol(params, required=False)
        exec_type = _str(params, "execType")
        if exec_type not in (None, "Trade", "BustTrade", "AdlTrade"):
            return {"category": "linear", "list": [], "nextPageCursor": ""}
        oid = bf.parse_order_id(params.get("orderId"))
        link = _str(params, "orderLinkId")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        rows = []
        for f in reversed(acct.trades):  # newest first, as Bybit
            if start is not None and f.time_ms < start:
                break  # booked in time order: every older one is before the start too
            if want not in (None, f.symbol):
                continue
            if end is not None and f.time_ms > end:
                continue
            if oid is not None and f.order_id != oid:
                continue
            if link is not None and f.client_order_id != link:
                continue
            o = acct.open_orders.get(f.order_id) or acct.closed_orders.get(f.order_id)
            if exec_type is not None and bf.exec_type(o) != exec_type:
                continue
            rows.append((f, o))
        page, nxt = self._page(rows, params, 50, 100)
        out = []
        for f, o in page:
            rate = self.eng.maker_fee if f.maker else self.eng.taker_fee
            out.append(
                bf.execution_json(f, self.eng.specs[f.symbol], o, self.eng.prices[f.symbol], rate)
            )
        return {"category": "linear", "list": out, "nextPageCursor": nxt}

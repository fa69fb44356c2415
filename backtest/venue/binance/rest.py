"""The venue's REST API: the subset of Binance USDT-M ``/fapi`` that ccxt's binanceusdm uses.

Clock: ``/fapi/v1/time`` and the signed-request window (``timestamp``/``recvWindow``) use the
wall clock, as a client's clock is the wall clock; every time inside a body (order and trade
times, klines) is replay time. Klines are served from the loaded candles up to the replay
time (closed candles only).

Request pipeline: injected faults (delay, forced status) -> request weight (429 -1003, then 418
when a client keeps going) -> API key and HMAC-SHA256 signature -> handler. Errors answer
Binance's ``{"code": ..., "msg": ...}`` with Binance's HTTP status.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from bot.core.params import T_CAP, T_MAX_LEVERAGE

from ..host import VenueHost
from ..ratelimit import Limited
from ..refusals import Refused
from ..wire import wall_ms
from . import formats
from .batch import add_batch_routes
from .errors import ApiError, to_api_error

__all__ = ["RestApi"]

log = logging.getLogger("gridbot.venue.rest")

Handler = Callable[[dict[str, str], str], Any]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _error(err: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"code": err.code, "msg": err.msg}, err.http_status, headers)


def _int(params: dict[str, str], name: str, default: int | None = None) -> int | None:
    v = params.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        ) from None


def _float(params: dict[str, str], name: str) -> float | None:
    v = params.get(name)
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'.") from None


def _required(params: dict[str, str], name: str) -> str:
    v = params.get(name)
    if not v:
        raise ApiError(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return v


def _bool(params: dict[str, str], name: str) -> bool:
    return params.get(name, "false").lower() == "true"


def _kline_weight(limit: int) -> int:
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class RestApi:
    """aiohttp application serving ``/fapi`` for a :class:`Venue`."""

    def __init__(self, venue: VenueHost) -> None:
        self.venue = venue
        self.eng = venue.engine
        # (method, path) -> (handler, weight, security) ; security: none / key / signed
        self.routes: dict[tuple[str, str], tuple[Handler, int, str]] = {}
        r = self._route
        r("GET", "/fapi/v1/ping", lambda p, k: {}, 1)
        r("GET", "/fapi/v1/time", lambda p, k: {"serverTime": wall_ms()}, 1)
        r("GET", "/fapi/v1/exchangeInfo", self.exchange_info, 1)
        r("GET", "/fapi/v1/klines", self.klines, 0)  # weight by limit, see _weight
        r("GET", "/fapi/v1/ticker/price", self.ticker_price, 1)
        r("GET", "/fapi/v2/ticker/price", self.ticker_price, 1)
        r("GET", "/fapi/v1/ticker/bookTicker", self.book_ticker, 2)
        r("GET", "/fapi/v1/premiumIndex", self.premium_index, 1)
        r("GET", "/fapi/v1/fundingRate", self.funding_rate_history, 1)
        r("GET", "/fapi/v1/depth", self.depth, 2)
        r("GET", "/fapi/v1/leverageBracket", self.leverage_bracket, 1, "signed")
        r("GET", "/fapi/v2/account", self.account, 5, "signed")
        r("GET", "/fapi/v3/account", self.account, 5, "signed")
        r("GET", "/fapi/v2/balance", self.balance, 5, "signed")
        r("GET", "/fapi/v3/balance", self.balance, 5, "signed")
        r("GET", "/fapi/v2/positionRisk", self.position_risk, 5, "signed")
        r("GET", "/fapi/v1/adlQuantile", self.adl_quantile, 5, "signed")
        r("GET", "/fapi/v3/positionRisk", self.position_risk, 5, "signed")
        r("POST", "/fapi/v1/order", self.new_order, 1, "signed")
        r("GET", "/fapi/v1/order", self.query_order, 1, "signed")
        r("DELETE", "/fapi/v1/order", self.cancel_order, 1, "signed")
        r("GET", "/fapi/v1/openOrder", self.query_open_order, 1, "signed")
        r("GET", "/fapi/v1/openOrders", self.open_orders, 1, "signed")
        r("GET", "/fapi/v1/allOrders", self.all_orders, 5, "signed")
        r("DELETE", "/fapi/v1/allOpenOrders", self.cancel_all, 1, "signed")
        r("GET", "/fapi/v1/userTrades", self.user_trades, 5, "signed")
        r("POST", "/fapi/v1/leverage", self.set_leverage, 1, "signed")
        r("POST", "/fapi/v1/marginType", self.set_margin_type, 1, "signed")
        r("GET", "/fapi/v1/positionSide/dual", self.get_position_mode, 30, "signed")
        r("POST", "/fapi/v1/positionSide/dual", self.set_position_mode, 1, "signed")
        r("GET", "/fapi/v1/income", lambda p, k: [], 30, "signed")
        r("GET", "/fapi/v1/commissionRate", self.commission_rate, 20, "signed")
        r(
            "GET",
            "/fapi/v1/multiAssetsMargin",
            lambda p, k: {"multiAssetsMargin": False},
            30,
            "signed",
        )
        r("POST", "/fapi/v1/listenKey", self.listen_key_new, 1, "key")
        r("PUT", "/fapi/v1/listenKey", self.listen_key_keepalive, 1, "key")
        r("DELETE", "/fapi/v1/listenKey", self.listen_key_close, 1, "key")
        add_batch_routes(self)  # POST/DELETE /fapi/v1/batchOrders

    def _route(
        self, method: str, path: str, handler: Handler, weight: int, security: str = "none"
    ) -> None:
        self.routes[(method, path)] = (handler, weight, security)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

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
        params = dict(urllib.parse.parse_qsl(request.query_string, keep_blank_values=True))
        params.update(urllib.parse.parse_qsl(body, keep_blank_values=True))
        if route is None:
            if any(p == path for _, p in self.routes):
                return _json({"code": -1000, "msg": "Method not allowed."}, 405)
            return web.Response(
                status=404,
                text="<html><body><h2>404 Not found</h2></body></html>",
                content_type="text/html",
            )
        handler, weight, security = route
        if path.endswith("/klines"):
            weight = _kline_weight(_int(params, "limit", 500) or 500)
        elif path.endswith("/openOrders") and "symbol" not in params:
            weight = 40
        limited = self.venue.ip_budget.charge(weight)
        if limited is not None:
            return self._limited(limited)
        try:
            api_key = ""
            if security != "none":
                api_key = self._authenticate(request, params, body, signed=security == "signed")
            result = handler(params, api_key)
            if asyncio.iscoroutine(result):
                result = await result
            used = self.venue.ip_budget.used_weight()
            self.venue.flush_events()
            await self.venue.faults.before_answer(path, request.method, text)
            return _json(result, headers={"X-MBX-USED-WEIGHT-1M": str(used)})
        except ApiError as err:
            return _error(err)
        except Refused as err:
            return _error(to_api_error(err))
        finally:
            self.venue.flush_events()  # user-stream events of what this call changed

    def _forced(self, status: int) -> web.Response:
        if status == 429:
            return _json(
                {
                    "code": -1003,
                    "msg": "Too many requests; current limit of IP(127.0.0.1) is exceeded.",
                },
                429,
                {"Retry-After": "1"},
            )
        if status == 418:
            until = wall_ms() + 1000
            return _json(
                {
                    "code": -1003,
                    "msg": f"Way too many requests; IP(127.0.0.1) banned until {until}.",
                },
                418,
                {"Retry-After": "1"},
            )
        return web.Response(status=status, text="Service Unavailable", content_type="text/plain")

    def _limited(self, limited: Limited) -> web.Response:
        """The IP budget's refusal in Binance's terms: 418 while banned, else 429 (-1003)."""
        retry = {"Retry-After": str(limited.retry_after_seconds)}
        if limited.banned:
            msg = (
                f"Way too many requests; IP(127.0.0.1) banned until {limited.banned_until_ms}. "
                "Please use the websocket for live updates to avoid bans."
            )
            return _json({"code": -1003, "msg": msg}, 418, retry)
        limit = self.venue.config.weight_limit_per_minute
        msg = (
            f"Too many requests; current limit of IP(127.0.0.1) is {limit} requests per "
            "minute. Please use the websocket for live updates to avoid polling the API."
        )
        return _json({"code": -1003, "msg": msg}, 429, retry)

    def reset_rate_limit(self) -> None:
        self.venue.ip_budget.reset()

    def _authenticate(
        self, request: web.Request, params: dict[str, str], body: str, *, signed: bool
    ) -> str:
        key = request.headers.get("X-MBX-APIKEY", "")
        if not key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        acct = self.eng.accounts.get(key)
        if acct is None:
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        if not signed:
            return key
        signature = params.get("signature")
        if not signature:
            raise ApiError(
                -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
        ts = _int(params, "timestamp")
        if ts is None:
            raise ApiError(
                -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
            )
        recv = _int(params, "recvWindow", self.venue.config.recv_window_ms) or 0
        if recv > 60_000 or recv <= 0:
            raise ApiError(-1131, "recvWindow must be less than 60000")

        def strip(raw: str) -> str:
            return "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))

        total = strip(request.rel_url.raw_query_string) + strip(body)  # as sent: query, body
        expected = hmac.new(acct.api_secret.encode(), total.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(-1022, "Signature for this request is not valid.")
        now = wall_ms()
        if not (ts < now + 1000 and now - ts <= recv):
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
        return key

    # ------------------------------------------------------------------ public

    def _symbol(self, params: dict[str, str]) -> str:
        s = _required(params, "symbol").upper()
        if s not in self.eng.specs:
            raise ApiError(-1121, "Invalid symbol.")
        return s

    def exchange_info(self, params: dict[str, str], _: str) -> dict:
        return formats.exchange_info_json(
            self.eng.specs, wall_ms(), self.venue.config.weight_limit_per_minute
        )

    def klines(self, params: dict[str, str], _: str) -> list:
        symbol = self._symbol(params)
        c = self.venue.candles
        tf = c.timeframe_ms
        interval = _required(params, "interval")
        if interval != ("1m" if tf == 60_000 else f"{tf // 60_000}m"):
            raise ApiError(-1120, "Invalid interval.")
        limit = _int(params, "limit", 500) or 500
        if not 1 <= limit <= 1500:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        ts = c.timestamps[: self.venue.index]  # closed candles only: the replay's past
        if start is not None:
            i0 = int(np.searchsorted(ts, start, side="left"))
            i1 = min(i0 + limit, len(ts))
            if end is not None:
                i1 = min(i1, int(np.searchsorted(ts, end, side="right")))
        else:
            i1 = len(ts) if end is None else int(np.searchsorted(ts, end, side="right"))
            i0 = max(0, i1 - limit)
        row = c.symbols.index(symbol)
        pd = formats.decimals(self.eng.specs[symbol].price_step)
        data = c.ohlcv[row]
        rows = []
        for i in range(i0, max(i0, i1)):
            o, h, lo, cl, v = (float(x) for x in data[i][:5])
            rows.append(formats.kline_row(int(ts[i]), o, h, lo, cl, v, tf, pd))
        return rows

    def _symbols(self, params: dict[str, str]) -> list[str]:
        return [self._symbol(params)] if params.get("symbol") else list(self.eng.symbols)

    def ticker_price(self, params: dict[str, str], _: str) -> Any:
        out = [
            {
                "symbol": s,
                "price": formats.fmt(
                    self.eng.prices[s], formats.decimals(self.eng.specs[s].price_step)
                ),
                "time": self.eng.now_ms,
            }
            for s in self._symbols(params)
        ]
        return out[0] if params.get("symbol") else out

    def book_ticker(self, params: dict[str, str], _: str) -> Any:
        out = []
        for s in self._symbols(params):
            p = formats.fmt(self.eng.prices[s], formats.decimals(self.eng.specs[s].price_step))
            out.append(
                {
                    "symbol": s,
                    "bidPrice": p,
                    "bidQty": "1000",
                    "askPrice": p,
                    "askQty": "1000",
                    "time": self.eng.now_ms,
                    "lastUpdateId": self.eng.now_ms,
                }
            )
        return out[0] if params.get("symbol") else out

    def depth(self, params: dict[str, str], _: str) -> dict:
        s = self._symbol(params)
        p = formats.fmt(self.eng.prices[s], formats.decimals(self.eng.specs[s].price_step))
        return {
            "lastUpdateId": self.eng.now_ms,
            "E": self.eng.now_ms,
            "T": self.eng.now_ms,
            "bids": [[p, "1000"]],
            "asks": [[p, "1000"]],
        }

    def funding_rate_history(self, params: dict[str, str], _: str) -> list:
        """``GET /fapi/v1/fundingRate``: the funding the venue charged (its funding table, else
        the constant rate every 8 h) at the candles already replayed, oldest first."""
        symbol = self._symbol(params)
        limit = _int(params, "limit", 100) or 100
        if not 1 <= limit <= 1000:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = _int(params, "startTime"), _int(params, "endTime")
        ts = self.venue.candles.timestamps[: self.venue.index]
        rows = []
        for t in ts:
            t = int(t)
            if (start is not None and t < start) or (end is not None and t > end):
                continue
            rate = self.eng.funding_due(t).get(symbol)
            if rate is not None:
                rows.append((t, rate))
        rows = rows[:limit] if start is not None else rows[-limit:]
        c = self.venue.candles
        row = list(c.symbols).index(symbol)
        pd = formats.decimals(self.eng.specs[symbol].price_step)
        k_of = {int(t): k for k, t in enumerate(ts)}
        return [
            {"symbol": symbol, "fundingTime": t, "fundingRate": formats.fmt(r, 8),
             "markPrice": formats.fmt(float(c.ohlcv[row, k_of[t], 0]), pd + 2)}
            for t, r in rows
        ]  # fmt: skip

    def premium_index(self, params: dict[str, str], _: str) -> Any:
        nxt = (self.eng.now_ms // 28_800_000 + 1) * 28_800_000
        out = []
        for s in self._symbols(params):
            p = formats.fmt(self.eng.prices[s], formats.decimals(self.eng.specs[s].price_step) + 2)
            out.append(
                {
                    "symbol": s,
                    "markPrice": p,
                    "indexPrice": p,
                    "estimatedSettlePrice": p,
                    "lastFundingRate": formats.fmt(self.eng.funding_rate),
                    "interestRate": "0.00010000",
                    "nextFundingTime": nxt,
                    "time": self.eng.now_ms,
                }
            )
        return out[0] if params.get("symbol") else out

    # ------------------------------------------------------------------ private

    def leverage_bracket(self, params: dict[str, str], _: str) -> Any:
        if params.get("symbol"):
            return formats.leverage_bracket_json(self.eng.specs[self._symbol(params)])
        return [formats.leverage_bracket_json(self.eng.specs[s]) for s in self.eng.symbols]

    def account(self, params: dict[str, str], key: str) -> dict:
        return formats.account_json(self.eng, self.eng.account(key))

    def balance(self, params: dict[str, str], key: str) -> list:
        acct = self.eng.account(key)
        a = formats.account_json(self.eng, acct)["assets"][0]
        return [
            {
                "accountAlias": "venue",
                "asset": "USDT",
                "balance": a["walletBalance"],
                "crossWalletBalance": a["crossWalletBalance"],
                "crossUnPnl": a["crossUnPnl"],
                "availableBalance": a["availableBalance"],
                "maxWithdrawAmount": a["maxWithdrawAmount"],
                "marginAvailable": True,
                "updateTime": a["updateTime"],
            }
        ]

    def position_risk(self, params: dict[str, str], key: str) -> list:
        acct = self.eng.account(key)
        want = self._symbol(params) if params.get("symbol") else None
        out = []
        for p in acct.positions.values():
            if (want is None or p.symbol == want) and p.amount != 0.0:
                out.append(formats.position_risk_json(self.eng, acct, p))
        return out

    def adl_quantile(self, params: dict[str, str], key: str) -> list:
        """Binance's ADL quantile (0..4, 4 = deleveraged first) of each symbol with a position,
        from the venue's ranking (:func:`.risk_loop.adl_quantile`)."""
        from backtest.venue.risk_loop import binance_adl_quantile

        acct = self.eng.account(key)
        want = self._symbol(params) if params.get("symbol") else None
        return binance_adl_quantile(self.venue, acct, key, want)

    def new_order(self, params: dict[str, str], key: str) -> dict:
        symbol = self._symbol(params)
        qty = _float(params, "quantity")
        if qty is None:
            raise ApiError(
                -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."
            )
        order = self.eng.place_order(
            key,
            symbol,
            _required(params, "side"),
            _required(params, "type"),
            qty,
            _float(params, "price"),
            time_in_force=params.get("timeInForce"),
            reduce_only=_bool(params, "reduceOnly"),
            position_side=params.get("positionSide"),
            client_order_id=params.get("newClientOrderId") or None,
        )
        return formats.order_json(order, self.eng.specs[symbol], with_time=False)

    def _order_ref(self, params: dict[str, str]) -> tuple[str, int | None, str | None]:
        return (
            self._symbol(params),
            _int(params, "orderId"),
            params.get("origClientOrderId") or None,
        )

    def query_order(self, params: dict[str, str], key: str) -> dict:
        symbol, oid, cid = self._order_ref(params)
        return formats.order_json(
            self.eng.query_order(key, symbol, oid, cid), self.eng.specs[symbol]
        )

    def query_open_order(self, params: dict[str, str], key: str) -> dict:
        symbol, oid, cid = self._order_ref(params)
        o = self.eng.query_order(key, symbol, oid, cid)
        if o.order_id not in self.eng.account(key).open_orders:
            raise ApiError(-2013, "Order does not exist.")
        return formats.order_json(o, self.eng.specs[symbol])

    def cancel_order(self, params: dict[str, str], key: str) -> dict:
        symbol, oid, cid = self._order_ref(params)
        return formats.order_json(
            self.eng.cancel_order(key, symbol, oid, cid), self.eng.specs[symbol], with_time=False
        )

    def cancel_all(self, params: dict[str, str], key: str) -> dict:
        symbol = self._symbol(params)
        for o in [o for o in self.eng.account(key).open_orders.values() if o.symbol == symbol]:
            self.eng.cancel_order(key, symbol, o.order_id)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def open_orders(self, params: dict[str, str], key: str) -> list:
        want = self._symbol(params) if params.get("symbol") else None
        return [
            formats.order_json(o, self.eng.specs[o.symbol])
            for o in self.eng.account(key).open_orders.values()
            if want is None or o.symbol == want
        ]

    def all_orders(self, params: dict[str, str], key: str) -> list:
        symbol = self._symbol(params)
        acct = self.eng.account(key)
        orders = sorted(
            (
                o
                for o in [*acct.closed_orders.values(), *acct.open_orders.values()]
                if o.symbol == symbol
            ),
            key=lambda o: o.order_id,
        )
        start, end = _int(params, "startTime"), _int(params, "endTime")
        from_id = _int(params, "orderId")
        orders = [
            o for o in orders
            if (start is None or o.time_ms >= start) and (end is None or o.time_ms <= end)
            and (from_id is None or o.order_id >= from_id)
        ]  # fmt: skip
        limit = min(_int(params, "limit", 500) or 500, 1000)
        return [formats.order_json(o, self.eng.specs[symbol]) for o in orders[-limit:]]

    def user_trades(self, params: dict[str, str], key: str) -> list:
        symbol = self._symbol(params)
        start, end = _int(params, "startTime"), _int(params, "endTime")
        from_id = _int(params, "fromId")
        limit = min(_int(params, "limit", 500) or 500, 1000)
        trades = [
            f for f in self.eng.account(key).trades
            if f.symbol == symbol and (start is None or f.time_ms >= start)
            and (end is None or f.time_ms <= end) and (from_id is None or f.trade_id >= from_id)
        ]  # fmt: skip
        trades = trades[:limit] if (from_id is not None or start is not None) else trades[-limit:]
        return [formats.trade_json(f, self.eng.specs[symbol]) for f in trades]

    def set_leverage(self, params: dict[str, str], key: str) -> dict:
        symbol = self._symbol(params)
        lev = _int(params, "leverage")
        if lev is None:
            raise ApiError(
                -1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed."
            )
        lev = self.eng.set_leverage(key, symbol, lev)
        spec = self.eng.specs[symbol]
        cap = max(
            (float(r[T_CAP]) for r in spec.tiers if r[T_MAX_LEVERAGE] >= lev),
            default=float(spec.tiers[0, T_CAP]),
        )
        return {"leverage": lev, "maxNotionalValue": formats.fmt(cap, 0), "symbol": symbol}

    def set_margin_type(self, params: dict[str, str], key: str) -> dict:
        self.eng.set_margin_type(key, self._symbol(params), _required(params, "marginType"))
        return {"code": 200, "msg": "success"}

    def get_position_mode(self, params: dict[str, str], key: str) -> dict:
        return {"dualSidePosition": self.eng.account(key).hedge_mode}

    def set_position_mode(self, params: dict[str, str], key: str) -> dict:
        self.eng.set_position_mode(key, _required(params, "dualSidePosition").lower() == "true")
        return {"code": 200, "msg": "success"}

    def commission_rate(self, params: dict[str, str], key: str) -> dict:
        return {
            "symbol": self._symbol(params),
            "makerCommissionRate": formats.fmt(self.eng.maker_fee, 6),
            "takerCommissionRate": formats.fmt(self.eng.taker_fee, 6),
        }

    def listen_key_new(self, params: dict[str, str], key: str) -> dict:
        return {"listenKey": self.venue.listen_key_for(key)}

    def listen_key_keepalive(self, params: dict[str, str], key: str) -> dict:
        lk = self.venue.listen_key_for(key, create=False)
        if lk is None:
            raise ApiError(-1125, "This listenKey does not exist.")
        return {"listenKey": lk}

    def listen_key_close(self, params: dict[str, str], key: str) -> dict:
        self.venue.close_listen_key(key)
        return {}

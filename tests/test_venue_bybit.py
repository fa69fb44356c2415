"""The venue's Bybit v5 face: REST through the real ccxt ``bybit`` class and websockets through
the ``websockets`` client, on 127.0.0.1 (ephemeral ports), sharing the Binance side's engine."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import ccxt
import ccxt.async_support
import numpy as np
import pytest
from websockets.asyncio.client import connect

from backtest.data import load_candles
from backtest.venue.matching import candle_trades
from backtest.venue.server import Venue, VenueConfig, VenueThread
from bot.exchange.rewire import point_ccxt_at

KEY, SECRET = "bybit-key", "bybit-secret"
ONEWAY_KEY, ONEWAY_SECRET = "bybit-oneway", "bybit-oneway-secret"
T0 = 1_620_604_800_000  # 2021-05-10 00:00 UTC
SAMPLE = "data/sample/binance_spot_1m"
HISTORY = 300
BTC = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def venue_thread():
    candles = load_candles(SAMPLE, ["BTCUSDT", "ETHUSDT"], end_ms=T0 + 2_000 * 60_000)
    venue = Venue(candles, VenueConfig(start_index=HISTORY, funding_rate=0.0001))
    venue.add_account(KEY, SECRET, 10_000.0, hedge_mode=True)
    venue.add_account(ONEWAY_KEY, ONEWAY_SECRET, 10_000.0)
    vt = VenueThread(venue)
    vt.start()
    yield vt
    vt.stop()


@pytest.fixture
def vt(venue_thread):
    yield venue_thread
    venue_thread.call(venue_thread.venue.clear_faults)


def client(venue, cls=ccxt.bybit, **kw):
    ex = cls({"apiKey": KEY, "secret": SECRET, "timeout": 5_000, "enableRateLimit": False, **kw})
    point_ccxt_at(ex, venue.rest_url)
    return ex


async def on_venue(vt, fn, *args):
    """Run fn on the venue's loop from a test's own event loop."""

    async def runner():
        r = fn(*args)
        return await r if asyncio.iscoroutine(r) else r

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runner(), vt.loop))


async def skip_to_falling_candle(vt):
    """Advance until the next BTC candle trades at least 0.3 below the last close."""
    venue = vt.venue
    for _ in range(50):
        if venue.candles.ohlcv[0, venue.index, 2] + 0.3 < venue.engine.prices["BTCUSDT"]:
            return
        await on_venue(vt, venue.advance)
    raise AssertionError("no falling candle found")


# ---------------------------------------------------------------------------- REST


def test_load_markets_time_ohlcv_tickers_and_tiers(vt):
    venue = vt.venue
    ex = client(venue)
    markets = ex.load_markets()
    assert sorted(markets) == [BTC, "ETH/USDT:USDT"]  # linear only, no currencies asked
    m = markets[BTC]
    assert m["id"] == "BTCUSDT" and m["swap"] and m["linear"] and m["settle"] == "USDT"
    assert m["precision"] == {"amount": 0.001, "price": 0.1}
    assert m["limits"]["amount"]["min"] == 0.001 and m["limits"]["cost"]["min"] == 100
    assert m["limits"]["leverage"]["max"] == 125
    assert abs(ex.fetch_time() - time.time() * 1000) < 5_000
    c = venue.candles
    first = ex.fetch_ohlcv(BTC, "1m", since=int(c.timestamps[0]), limit=200)
    assert [r[0] for r in first] == list(c.timestamps[:200])
    np.testing.assert_allclose([r[1:6] for r in first], c.ohlcv[0, :200], rtol=1e-12)
    raw = ex.publicGetV5MarketKline(
        {"category": "linear", "symbol": "BTCUSDT", "interval": "1", "limit": 1000}
    )["result"]["list"]
    assert len(raw) == venue.index and len(raw[0]) == 7
    assert int(raw[0][0]) == c.timestamps[venue.index - 1]  # newest first, closed candles only
    t = ex.fetch_ticker(BTC)
    assert t["last"] == venue.engine.prices["BTCUSDT"] and t["info"]["fundingRate"] == "0.000100"
    assert sorted(ex.fetch_tickers()) == [BTC, "ETH/USDT:USDT"]
    tiers = ex.fetch_leverage_tiers([BTC])[BTC]
    assert tiers[0]["maxLeverage"] == 125 and tiers[0]["maintenanceMarginRate"] == 0.004
    assert tiers[1]["minNotional"] == tiers[0]["maxNotional"]


def signed(venue, method, path, params, *, secret=SECRET, key=KEY, ts=None, recv="5000"):
    ts = str(int(time.time() * 1000) if ts is None else ts)
    if method == "GET":
        payload, url, body = urllib.parse.urlencode(params), "", None
        url = f"{venue.rest_url}{path}?{payload}"
    else:
        payload = json.dumps(params)
        url, body = f"{venue.rest_url}{path}", payload.encode()
    sign = hmac.new(secret.encode(), (ts + key + recv + payload).encode(), hashlib.sha256)
    headers = {
        "X-BAPI-API-KEY": key,
        "X-BAPI-TIMESTAMP": ts,
        "X-BAPI-RECV-WINDOW": recv,
        "X-BAPI-SIGN": sign.hexdigest(),
        "Content-Type": "application/json",
    }
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, json.loads(r.read())


def test_signatures_timestamp_window_and_uta_account(vt):
    venue = vt.venue
    status, body = signed(venue, "GET", "/v5/account/wallet-balance", {"accountType": "UNIFIED"})
    assert (status, body["retCode"]) == (200, 0)
    coin = body["result"]["list"][0]["coin"][0]
    assert body["result"]["list"][0]["accountType"] == "UNIFIED" and coin["coin"] == "USDT"
    assert float(coin["walletBalance"]) > 0 and float(coin["equity"]) > 0
    bad = signed(venue, "GET", "/v5/account/wallet-balance", {"accountType": "UNIFIED"}, secret="x")
    assert bad[1]["retCode"] == 10004
    stale = signed(
        venue,
        "GET",
        "/v5/position/list",
        {"category": "linear"},
        ts=int(time.time() * 1000) - 10_000,
    )
    assert stale[1]["retCode"] == 10002
    assert signed(venue, "GET", "/v5/user/query-api", {}, key="nope")[1]["retCode"] == 10003
    assert signed(venue, "GET", "/v5/user/query-api", {})[1]["result"]["uta"] == 1
    assert signed(venue, "GET", "/v5/account/info", {})[1]["result"]["unifiedMarginStatus"] == 6
    body = signed(venue, "POST", "/v5/position/switch-mode", {"category": "linear", "coin": "USDT",
                                                              "mode": 3})[1]  # fmt: skip
    assert body["retCode"] == 110025  # already hedge mode
    with pytest.raises(ccxt.AuthenticationError):
        client(venue, secret="not-the-secret").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError):
        client(venue, apiKey="unknown").fetch_balance()
    # without the preset, ccxt asks query-api + account/info and still sees a UTA account
    ex = client(venue)
    ex.options["enableUnifiedAccount"] = ex.options["enableUnifiedMargin"] = None
    assert ex.fetch_balance()["USDT"]["total"] > 0 and ex.options["enableUnifiedAccount"] is True


def test_orders_through_ccxt(vt):
    venue = vt.venue
    ex = client(venue)
    ex.load_markets()
    price = float(venue.engine.prices["BTCUSDT"])
    buy = round(price * 0.9, 1)
    h = {"hedged": True}
    o = ex.create_order(BTC, "limit", "buy", 0.01, buy, {**h, "clientOrderId": "by-1"})
    assert o["clientOrderId"] == "by-1" and len(o["id"]) == 36  # a UUID, as Bybit's
    got = ex.fetch_order(o["id"], BTC)
    assert (got["status"], got["amount"], got["price"], got["side"]) == ("open", 0.01, buy, "buy")
    assert got["info"]["positionIdx"] == 1 and got["info"]["orderStatus"] == "New"
    assert [x["id"] for x in ex.fetch_open_orders(BTC)] == [o["id"]]
    with pytest.raises(ccxt.InvalidOrder):  # orderLinkId reused: 110072
        ex.create_order(BTC, "limit", "buy", 0.01, buy, {**h, "clientOrderId": "by-1"})
    assert ex.cancel_order(o["id"], BTC)["id"] == o["id"]
    assert ex.fetch_order(o["id"], BTC)["status"] == "canceled"
    with pytest.raises(ccxt.InvalidOrder):  # 110072 still: unique among ended orders too
        ex.create_order(BTC, "limit", "buy", 0.01, buy, {**h, "clientOrderId": "by-1"})
    with pytest.raises(ccxt.OrderNotFound):  # 110001
        ex.cancel_order(o["id"], BTC)
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order("00000000-0000-0000-0000-000000000999", BTC)
    with pytest.raises(ccxt.InsufficientFunds):  # 110007: 5 BTC at 20x is beyond 10k USDT
        ex.create_order(BTC, "limit", "buy", 5, buy, h)
    with pytest.raises(ccxt.BadRequest):  # 10001: qty off the step
        ex.privatePostV5OrderCreate({"category": "linear", "symbol": "BTCUSDT", "side": "Buy",
                                     "orderType": "Limit", "qty": "0.0015", "price": str(buy),
                                     "positionIdx": 1})  # fmt: skip
    with pytest.raises(ccxt.BadRequest):  # hedge mode wants positionIdx 1/2
        ex.create_order(BTC, "limit", "buy", 0.01, buy)
    # a crossing PostOnly order is accepted, then cancelled (as Bybit does)
    po = ex.create_order(BTC, "limit", "buy", 0.01, round(price * 1.01, 1), {**h, "postOnly": True})
    got = ex.fetch_order(po["id"], BTC)
    assert got["status"] == "canceled"
    assert got["info"]["rejectReason"] == "EC_PostOnlyWillTakeLiquidity"
    assert got["info"]["timeInForce"] == "PostOnly"
    assert ex.fetch_open_orders(BTC) == []


def test_rate_limit_and_gateway_faults(vt):
    ex = client(vt.venue)
    vt.call(vt.venue.rate_limit_next, 1, 1)
    with pytest.raises(ccxt.RateLimitExceeded) as e1:  # HTTP 200, retCode 10006
        ex.fetch_time()
    assert "10006" in str(e1.value)
    with pytest.raises(ccxt.RateLimitExceeded):  # HTTP 403: the IP limit
        ex.fetch_time()
    vt.call(vt.venue.fail_rest, 503, 1, path="/v5/")
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.fetch_time()
    assert ex.fetch_time() > 0


def test_async_ccxt_fill_in_hedge_mode_shows_in_trades_and_positions(vt):
    async def main():
        ex = client(vt.venue, ccxt.async_support.bybit)
        try:
            await ex.load_markets()
            await skip_to_falling_candle(vt)
            buy = round(float(vt.venue.candles.ohlcv[0, vt.venue.index, 2]) + 0.1, 1)
            o = await ex.create_order(BTC, "limit", "buy", 0.002, buy, {"hedged": True})
            await on_venue(vt, vt.venue.advance)
            got = await ex.fetch_order(o["id"], BTC)
            assert got["status"] == "closed" and got["filled"] == 0.002 and got["average"] == buy
            t = (await ex.fetch_my_trades(BTC))[-1]
            assert t["order"] == o["id"] and t["price"] == buy and t["takerOrMaker"] == "maker"
            assert t["fee"]["cost"] == pytest.approx(buy * 0.002 * 0.0002, rel=1e-6)
            pos = {p["side"]: p for p in await ex.fetch_positions([BTC])}
            assert pos["long"]["contracts"] == pytest.approx(0.002)
            assert pos["long"]["entryPrice"] == buy and pos["long"]["hedged"] is True
            assert pos["short"]["contracts"] == 0
            await ex.create_order(BTC, "market", "sell", 0.002, None, {"hedged": True,
                                                                        "reduceOnly": True})  # fmt: skip
            pos = {p["side"]: p for p in await ex.fetch_positions([BTC])}
            assert pos["long"]["contracts"] == 0
            with pytest.raises(ccxt.InvalidOrder):  # nothing left to reduce: 110017
                await ex.create_order(
                    BTC, "market", "sell", 0.002, None, {"positionIdx": 1, "reduceOnly": True}
                )
        finally:
            await ex.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- websockets


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_topic(ws, topic, n=50):
    for _ in range(n):
        msg = await recv_json(ws)
        if msg.get("topic") == topic:
            return msg
    raise AssertionError(f"no {topic} message")


def test_public_subscribe_ping_trades_tickers_and_kline(vt):
    venue = vt.venue

    async def main():
        async with connect(f"{venue.ws_url}/v5/public/linear") as ws:
            await ws.send(json.dumps({"op": "ping", "req_id": "p1"}))
            pong = await recv_json(ws)
            assert pong["success"] and pong["ret_msg"] == "pong" and pong["op"] == "ping"
            topics = ["publicTrade.BTCUSDT", "tickers.BTCUSDT", "kline.1.BTCUSDT"]
            await ws.send(json.dumps({"op": "subscribe", "req_id": "s1", "args": topics}))
            ack = await recv_json(ws)
            assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "s1"
            assert ack["ret_msg"] == "" and ack["conn_id"]
            snap = await recv_json(ws)
            assert snap["topic"] == "tickers.BTCUSDT" and snap["type"] == "snapshot"
            d = snap["data"]
            assert float(d["lastPrice"]) == venue.engine.prices["BTCUSDT"]
            assert {"bid1Price", "ask1Price", "markPrice", "indexPrice", "fundingRate",
                    "nextFundingTime", "volume24h", "turnover24h"} <= set(d)  # fmt: skip
            await ws.send(json.dumps({"op": "subscribe", "args": ["tickers.NOPE"]}))
            assert (await recv_json(ws))["success"] is False
            k = venue.index
            await on_venue(vt, venue.advance)
            o, h, lo, c, v = venue.candles.ohlcv[0, k]
            trades = [await recv_json(ws) for _ in range(4)]
            assert [t["topic"] for t in trades] == ["publicTrade.BTCUSDT"] * 4
            assert [float(t["data"][0]["p"]) for t in trades] == list(candle_trades(o, h, lo, c))
            tr = trades[1]["data"][0]
            assert tr["s"] == "BTCUSDT" and tr["S"] in ("Buy", "Sell") and tr["BT"] is False
            assert {"T", "v", "L", "i"} <= set(tr) and trades[0]["data"][0]["T"] == T0_of(venue, k)
            kl = await recv_json(ws)
            assert kl["topic"] == "kline.1.BTCUSDT"
            bar = kl["data"][0]
            assert bar["confirm"] is True and bar["start"] == T0_of(venue, k)
            assert [float(bar[x]) for x in ("open", "high", "low", "close")] == [o, h, lo, c]
            delta = await recv_json(ws)
            assert delta["topic"] == "tickers.BTCUSDT" and delta["type"] == "delta"
            assert delta["cs"] > snap["cs"] and delta["ts"] == T0_of(venue, k) + 59_999
            assert float(delta["data"]["lastPrice"]) == c
            assert "fundingRate" not in delta["data"]  # unchanged fields are left out

    asyncio.run(main())


def T0_of(venue, k):
    return int(venue.candles.timestamps[k])


def ws_auth(secret=SECRET, key=KEY, expires_in=10_000):
    expires = int(time.time() * 1000) + expires_in
    sign = hmac.new(secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256)
    return json.dumps({"op": "auth", "args": [key, expires, sign.hexdigest()]})


def test_private_auth_and_order_execution_position_wallet_on_a_fill(vt):
    venue = vt.venue

    async def main():
        url = f"{venue.ws_url}/v5/private"
        async with connect(url) as bad:
            await bad.send(json.dumps({"op": "subscribe", "args": ["order"]}))
            assert (await recv_json(bad))["success"] is False  # not authenticated yet
            await bad.send(ws_auth(secret="wrong"))
            r = await recv_json(bad)
            assert r["success"] is False and r["op"] == "auth"
            await bad.send(ws_auth(expires_in=-1_000))
            assert (await recv_json(bad))["success"] is False
        ex = client(venue, ccxt.async_support.bybit)
        try:
            await ex.load_markets()
            async with connect(url) as ws:
                await ws.send(ws_auth())
                r = await recv_json(ws)
                assert r["success"] is True and r["op"] == "auth" and r["conn_id"]
                args = ["order", "execution", "position", "wallet"]
                await ws.send(json.dumps({"op": "subscribe", "req_id": "x", "args": args}))
                assert (await recv_json(ws))["success"] is True
                await ws.send(json.dumps({"op": "ping", "req_id": "pp"}))
                assert (await recv_json(ws))["op"] == "pong"
                await skip_to_falling_candle(vt)
                buy = round(float(venue.candles.ohlcv[0, venue.index, 2]) + 0.1, 1)
                o = await ex.create_order(
                    BTC, "limit", "buy", 0.003, buy, {"hedged": True, "clientOrderId": "ws-1"}
                )
                new = await recv_topic(ws, "order")
                od = new["data"][0]
                assert (od["orderId"], od["orderLinkId"], od["orderStatus"]) == (
                    o["id"], "ws-1", "New"
                )  # fmt: skip
                assert od["category"] == "linear" and od["positionIdx"] == 1
                await on_venue(vt, venue.advance)
                ex_msg = await recv_json(ws)
                assert ex_msg["topic"] == "execution"
                e = ex_msg["data"][0]
                assert (e["orderId"], e["execType"], e["side"], e["isMaker"]) == (
                    o["id"], "Trade", "Buy", True
                )  # fmt: skip
                assert float(e["execPrice"]) == buy and float(e["execQty"]) == 0.003
                assert float(e["execFee"]) == pytest.approx(buy * 0.003 * 0.0002, rel=1e-6)
                filled = await recv_json(ws)
                assert filled["topic"] == "order"
                fd = filled["data"][0]
                assert fd["orderStatus"] == "Filled" and float(fd["cumExecQty"]) == 0.003
                assert float(fd["leavesQty"]) == 0 and float(fd["avgPrice"]) == buy
                pos = await recv_json(ws)
                assert pos["topic"] == "position"
                p = pos["data"][0]
                assert (p["symbol"], p["side"], p["positionIdx"]) == ("BTCUSDT", "Buy", 1)
                assert float(p["size"]) >= 0.003 and float(p["entryPrice"]) > 0
                wallet = await recv_json(ws)
                assert wallet["topic"] == "wallet"
                w = wallet["data"][0]
                assert w["accountType"] == "UNIFIED" and w["coin"][0]["coin"] == "USDT"
                bal = venue.engine.accounts[KEY].balance
                assert float(w["coin"][0]["walletBalance"]) == pytest.approx(bal, abs=1e-6)
        finally:
            await ex.close()

    asyncio.run(main())

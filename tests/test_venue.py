"""The simulated exchange: matching rules on hand-made candles, then REST and websockets through
real ccxt and a real websockets client on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.parse
import urllib.request

import ccxt
import ccxt.async_support
import numpy as np
import pytest

from backtest.venue.binance.errors import to_api_error
from backtest.venue.matching import (
    AccountUpdate,
    MatchingEngine,
    OrderUpdate,
    candle_trades,
)
from backtest.venue.refusals import Refused
from bot.core.margin import maintenance_margin
from bot.markets import market_spec

KEY, SECRET = "test-key", "test-secret"
H8 = 8 * 3600 * 1000
T0 = 1_620_604_800_000  # 2021-05-10 00:00 UTC, a funding time


def engine(balance: float = 10_000.0, *, hedge: bool = False, price: float = 50_000.0, **kw):
    eng = MatchingEngine(["BTCUSDT"], funding_rate=kw.pop("funding_rate", 0.0), **kw)
    eng.add_account(KEY, SECRET, balance, hedge_mode=hedge)
    eng.set_prices({"BTCUSDT": price}, T0 + 60_000)
    return eng


def candle(eng, o, h, lo, c, ts=T0 + 60_000):
    return eng.apply_candle(ts, {"BTCUSDT": (o, h, lo, c)})


# ---------------------------------------------------------------------------- matching


def test_touch_does_not_fill_strict_cross_does_at_order_price_with_maker_fee():
    eng = engine()
    o = eng.place_order(KEY, "BTCUSDT", "BUY", "LIMIT", 0.01, 49_000.0, time_in_force="GTC")
    assert candle(eng, 50_000, 50_100, 49_000, 49_500) == []  # low == price: a touch
    fills = candle(eng, 49_500, 49_600, 48_999.9, 49_200, ts=T0 + 120_000)
    assert [(f.order_id, f.price, f.qty, f.maker) for f in fills] == [
        (o.order_id, 49_000.0, 0.01, True)
    ]
    assert fills[0].commission == pytest.approx(49_000 * 0.01 * 0.0002)
    acct = eng.accounts[KEY]
    assert acct.balance == pytest.approx(10_000 - 49_000 * 0.01 * 0.0002)
    assert acct.positions[("BTCUSDT", "BOTH")].amount == pytest.approx(0.01)
    assert eng.query_order(KEY, "BTCUSDT", o.order_id).status == "FILLED"


def test_path_order_and_several_levels_in_one_candle():
    eng = engine(hedge=True)
    ids = {}
    for p in (49_500.0, 49_000.0, 48_000.0):
        ids[p] = eng.place_order(
            KEY, "BTCUSDT", "BUY", "LIMIT", 0.01, p, time_in_force="GTC", position_side="LONG"
        ).order_id
    sell = eng.place_order(
        KEY, "BTCUSDT", "SELL", "LIMIT", 0.01, 50_500.0, time_in_force="GTC", position_side="SHORT"
    )
    # open 50000, low 48500 is nearer than high 52000: buys (nearest first), then the sell
    fills = candle(eng, 50_000, 52_000, 48_500, 50_200)
    assert [f.order_id for f in fills] == [ids[49_500.0], ids[49_000.0], sell.order_id]
    assert ids[48_000.0] in eng.accounts[KEY].open_orders
    # high nearer than low: sells first
    eng2 = engine(hedge=True)
    b = eng2.place_order(
        KEY, "BTCUSDT", "BUY", "LIMIT", 0.01, 49_000.0, time_in_force="GTC", position_side="LONG"
    )
    s = eng2.place_order(
        KEY, "BTCUSDT", "SELL", "LIMIT", 0.01, 50_100.0, time_in_force="GTC", position_side="SHORT"
    )
    fills = candle(eng2, 50_000, 50_200, 48_000, 49_000)
    assert [f.order_id for f in fills] == [s.order_id, b.order_id]
    assert candle_trades(50_000, 50_200, 48_000, 49_000) == (50_000, 50_200, 48_000, 49_000)


def test_trade_stream_fills_the_same_orders_as_the_candle_rule():
    def place(eng):
        for p in (49_900.0, 49_000.0, 48_000.0):
            eng.place_order(KEY, "BTCUSDT", "BUY", "LIMIT", 0.01, p, time_in_force="GTC")
        eng.place_order(KEY, "BTCUSDT", "SELL", "LIMIT", 0.005, 50_300.0, time_in_force="GTC")

    o, h, lo, c = 50_000.0, 50_400.0, 48_999.0, 50_100.0
    a, b = engine(), engine()
    place(a)
    place(b)
    fa = candle(a, o, h, lo, c)
    fb = []
    for i, p in enumerate(candle_trades(o, h, lo, c)):
        fb += b.apply_trade("BTCUSDT", p, T0 + 60_000 + i * 15_000)
    assert [(f.price, f.qty) for f in fa] == [(f.price, f.qty) for f in fb]
    assert a.accounts[KEY].balance == pytest.approx(b.accounts[KEY].balance)


def test_funding_longs_pay_when_rate_positive_at_the_open_before_fills():
    eng = engine(funding_rate=0.0001, hedge=True)
    eng.place_order(KEY, "BTCUSDT", "BUY", "MARKET", 0.1, position_side="LONG")
    eng.place_order(KEY, "BTCUSDT", "SELL", "MARKET", 0.05, position_side="SHORT")
    bal = eng.accounts[KEY].balance
    eng.drain_events()
    candle(eng, 50_000, 50_100, 49_900, 50_000, ts=T0 + 60_000)  # not a funding time
    assert eng.accounts[KEY].balance == pytest.approx(bal)
    candle(eng, 40_000, 50_100, 39_900, 50_000, ts=T0 + H8)  # funding at the open, 40000
    paid = 0.1 * 40_000 * 0.0001 - 0.05 * 40_000 * 0.0001
    assert eng.accounts[KEY].balance == pytest.approx(bal - paid)
    reasons = [e.reason for e in eng.drain_events() if isinstance(e, AccountUpdate)]
    assert reasons == ["FUNDING"]


def test_over_levered_long_is_liquidated_in_a_crash_candle():
    eng = engine(balance=1_000.0)
    eng.place_order(KEY, "BTCUSDT", "BUY", "MARKET", 0.2, None)  # 10x the balance
    acct = eng.accounts[KEY]
    taker = 0.2 * 50_000 * 0.0005
    assert acct.balance == pytest.approx(1_000 - taker)
    eng.place_order(KEY, "BTCUSDT", "SELL", "LIMIT", 0.2, 60_000.0, time_in_force="GTC")
    eng.drain_events()
    candle(eng, 50_000, 50_010, 40_000, 41_000)
    assert acct.positions[("BTCUSDT", "BOTH")].amount == 0.0
    assert acct.open_orders == {}
    assert acct.liquidated
    assert acct.balance == pytest.approx(0.0, abs=1e-6)
    liq = [
        e
        for e in eng.drain_events()
        if isinstance(e, OrderUpdate) and e.execution_type == "CALCULATED"
    ]
    assert len(liq) == 1
    f = liq[0].fill
    # equity at the liquidation price equals the maintenance margin; the exchange books it at
    # the nearest tick (0.1), and the fee is that margin, capped at what the balance has left
    p_exact = (0.2 * 50_000 - (1_000 - taker)) / (0.2 * (1 - 0.004))
    assert f.price == pytest.approx(round(p_exact, 1), abs=1e-9)
    left = 1_000 - taker + 0.2 * (f.price - 50_000)
    mm = maintenance_margin(0.2 * f.price, market_spec("BTCUSDT").tiers)
    assert f.commission == pytest.approx(min(mm, left))
    assert f.realized_pnl == pytest.approx(0.2 * (f.price - 50_000))
    assert acct.balance == pytest.approx(left - f.commission, abs=1e-9)


def test_order_rejections():
    eng = engine(balance=100.0)
    cases = [
        (
            dict(side="BUY", type_="LIMIT", quantity=0.0015, price=49_000.0, time_in_force="GTC"),
            -1111,
        ),
        (
            dict(side="BUY", type_="LIMIT", quantity=0.001, price=49_000.05, time_in_force="GTC"),
            -1111,
        ),
        (
            dict(side="BUY", type_="LIMIT", quantity=0.001, price=49_000.0, time_in_force="GTC"),
            -4164,
        ),
        (dict(side="BUY", type_="LIMIT", quantity=0.1, price=49_000.0, time_in_force="GTC"), -2019),
        (
            dict(side="BUY", type_="LIMIT", quantity=0.003, price=50_100.0, time_in_force="GTX"),
            -5022,
        ),
        (
            dict(
                side="SELL",
                type_="LIMIT",
                quantity=0.003,
                price=50_100.0,
                time_in_force="GTC",
                reduce_only=True,
            ),
            -2022,
        ),
        (
            dict(
                side="BUY",
                type_="LIMIT",
                quantity=0.003,
                price=49_000.0,
                time_in_force="GTC",
                position_side="LONG",
            ),
            -4061,
        ),
    ]
    for kw, code in cases:
        with pytest.raises(Refused) as exc:
            eng.place_order(KEY, "BTCUSDT", **kw)
        assert to_api_error(exc.value).code == code, kw
    eng.place_order(
        KEY, "BTCUSDT", "BUY", "LIMIT", 0.003, 49_000.0, time_in_force="GTC", client_order_id="x1"
    )
    with pytest.raises(Refused) as exc:
        eng.place_order(
            KEY,
            "BTCUSDT",
            "BUY",
            "LIMIT",
            0.003,
            48_000.0,
            time_in_force="GTC",
            client_order_id="x1",
        )
    assert to_api_error(exc.value).code == -4116
    eng.reject_next_order_margin(KEY)
    with pytest.raises(Refused) as exc:
        eng.place_order(KEY, "BTCUSDT", "BUY", "LIMIT", 0.003, 48_000.0, time_in_force="GTC")
    assert to_api_error(exc.value).code == -2019
    with pytest.raises(Refused) as exc:
        eng.cancel_order(KEY, "BTCUSDT", order_id=12345)
    assert to_api_error(exc.value).code == -2011


def test_hooks_partial_fill_and_change_position():
    eng = engine(hedge=True)
    o = eng.place_order(
        KEY, "BTCUSDT", "BUY", "LIMIT", 0.01, 49_000.0, time_in_force="GTC", position_side="LONG"
    )
    eng.partial_fill(KEY, o.order_id, 0.004)
    assert o.status == "PARTIALLY_FILLED" and o.executed_qty == pytest.approx(0.004)
    eng.change_position(KEY, "BTCUSDT", "LONG", 0.001, 50_000.0)  # exchange deleverage
    pos = eng.accounts[KEY].positions[("BTCUSDT", "LONG")]
    assert pos.amount == pytest.approx(0.001)
    ev = [e for e in eng.drain_events() if isinstance(e, AccountUpdate)]
    assert ev[-1].reason == "ADJUSTMENT"
    assert ev[-1].balance_change == pytest.approx(0.003 * 1_000.0)


# ---------------------------------------------------------------------------- REST through ccxt

from backtest.data import load_candles  # noqa: E402
from backtest.venue.server import Venue, VenueConfig, VenueThread  # noqa: E402
from bot.exchange.rewire import point_ccxt_at  # noqa: E402

SAMPLE = "data/sample/binance_spot_1m"
HISTORY = 300  # candles before the replay starts (served as klines)


@pytest.fixture(scope="module")
def venue_thread():
    candles = load_candles(SAMPLE, ["BTCUSDT", "ETHUSDT"], end_ms=T0 + 2_000 * 60_000)
    venue = Venue(candles, VenueConfig(start_index=HISTORY, funding_rate=0.0001))
    venue.add_account(KEY, SECRET, 10_000.0)
    vt = VenueThread(venue)
    vt.start()
    yield vt
    vt.stop()


@pytest.fixture
def venue(venue_thread):
    yield venue_thread.venue
    venue_thread.call(venue_thread.venue.clear_faults)


def client(venue, cls=ccxt.binanceusdm, **kw):
    ex = cls({"apiKey": KEY, "secret": SECRET, "timeout": 5_000, "enableRateLimit": False, **kw})
    point_ccxt_at(ex, venue.rest_url)
    return ex


def test_load_markets_through_ccxt(venue):
    ex = client(venue)
    markets = ex.load_markets()
    m = markets["BTC/USDT:USDT"]
    assert m["id"] == "BTCUSDT" and m["swap"] and m["linear"] and m["settle"] == "USDT"
    assert m["precision"]["amount"] == 0.001 and m["precision"]["price"] == 0.1
    assert m["limits"]["amount"]["min"] == 0.001 and m["limits"]["cost"]["min"] == 100
    assert markets["ETH/USDT:USDT"]["precision"]["price"] == 0.01
    assert abs(ex.fetch_time() - time.time() * 1000) < 5_000
    tiers = ex.fetch_leverage_tiers(["BTC/USDT:USDT"])["BTC/USDT:USDT"]
    assert tiers[0]["maxLeverage"] == 125 and tiers[0]["maintenanceMarginRate"] == 0.004


def test_fetch_ohlcv_pages_over_the_replayed_history(venue):
    ex = client(venue)
    c = venue.candles
    first = ex.fetch_ohlcv("BTC/USDT:USDT", "1m", since=int(c.timestamps[0]), limit=200)
    assert len(first) == 200
    assert first[0][0] == c.timestamps[0] and first[-1][0] == c.timestamps[199]
    rest = ex.fetch_ohlcv("BTC/USDT:USDT", "1m", since=first[-1][0] + 60_000, limit=1000)
    seen = first + rest
    assert len(rest) == venue.index - 200  # nothing beyond the replay time
    assert [r[0] for r in seen] == list(c.timestamps[: venue.index])
    np.testing.assert_allclose([r[1:6] for r in seen], c.ohlcv[0, : venue.index], rtol=1e-12)
    raw = ex.fapiPublicGetKlines({"symbol": "ETHUSDT", "interval": "1m", "limit": 1500})
    assert len(raw) == venue.index and len(raw[0]) == 12


def signed_get(venue, path, params, secret=SECRET):
    query = urllib.parse.urlencode(params)
    sig = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        f"{venue.rest_url}{path}?{query}&signature={sig}", headers={"X-MBX-APIKEY": KEY}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_signatures_and_timestamp_window(venue):
    now = int(time.time() * 1000)
    assert signed_get(venue, "/fapi/v3/account", {"timestamp": now})[0] == 200
    assert signed_get(venue, "/fapi/v3/account", {"timestamp": now}, secret="wrong") == (
        400,
        {"code": -1022, "msg": "Signature for this request is not valid."},
    )
    status, body = signed_get(venue, "/fapi/v3/account", {"timestamp": now - 10_000})
    assert (status, body["code"]) == (400, -1021)
    status, body = signed_get(
        venue, "/fapi/v3/account", {"timestamp": now - 10_000, "recvWindow": 20_000}
    )
    assert status == 200
    ex = client(venue, secret="not-the-secret")
    with pytest.raises(ccxt.AuthenticationError):
        ex.fetch_balance()
    ex = client(venue, apiKey="unknown")
    with pytest.raises(ccxt.AuthenticationError):
        ex.fetch_balance()


def test_orders_through_ccxt(venue):
    ex = client(venue)
    ex.load_markets()
    bal = ex.fetch_balance()
    assert bal["USDT"]["total"] == pytest.approx(10_000.0, abs=1e-6) or bal["USDT"]["total"] > 0
    assert ex.set_leverage(10, "BTC/USDT:USDT")["leverage"] == 10
    price = float(venue.engine.prices["BTCUSDT"])
    buy = round(price * 0.9, 1)
    o = ex.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, buy, {"clientOrderId": "grid-1"})
    assert o["status"] == "open" and o["price"] == buy and o["clientOrderId"] == "grid-1"
    assert ex.fetch_order(o["id"], "BTC/USDT:USDT")["amount"] == 0.01
    assert [x["id"] for x in ex.fetch_open_orders("BTC/USDT:USDT")] == [o["id"]]
    with pytest.raises(ccxt.InvalidOrder):  # the same clientOrderId twice: -4116
        ex.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, buy, {"clientOrderId": "grid-1"})
    assert ex.cancel_order(o["id"], "BTC/USDT:USDT")["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(o["id"], "BTC/USDT:USDT")
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("999", "BTC/USDT:USDT")
    with pytest.raises(ccxt.InvalidOrder):  # post-only that would cross: -5022
        ex.create_order(
            "BTC/USDT:USDT", "limit", "buy", 0.01, round(price * 1.01, 1), {"postOnly": True}
        )
    venue_call(venue, venue.reject_next_order_margin, KEY)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, buy)
    with pytest.raises(ccxt.InsufficientFunds):  # 5 BTC at 10x is far beyond 10k USDT
        ex.create_order("BTC/USDT:USDT", "limit", "buy", 5, buy)
    assert ex.fetch_open_orders("BTC/USDT:USDT") == []


def venue_call(venue, fn, *args, **kw):
    for vt in _THREADS:
        if vt.venue is venue:
            return vt.call(fn, *args, **kw)
    raise AssertionError("venue not running")


_THREADS: list = []


@pytest.fixture(autouse=True)
def _register(request):
    if "venue_thread" in request.fixturenames:
        vt = request.getfixturevalue("venue_thread")
        if vt not in _THREADS:
            _THREADS.append(vt)
    yield


def test_rate_limit_and_ban_map_to_ccxt_errors(venue):
    ex = client(venue)
    venue_call(venue, venue.rate_limit_next, 1, 1)
    with pytest.raises(ccxt.DDoSProtection) as e429:
        ex.fetch_time()
    assert "429" in str(e429.value)
    with pytest.raises(ccxt.DDoSProtection) as e418:
        ex.fetch_time()
    assert "418" in str(e418.value)
    venue_call(venue, venue.fail_rest, 503, 1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        ex.fetch_time()
    assert ex.fetch_time() > 0


def test_request_weight_budget_gives_429_then_418(venue):
    old = venue.config.weight_limit_per_minute
    venue.config.weight_limit_per_minute = 3
    try:
        venue_call(venue, venue.rest.reset_rate_limit)
        ex = client(venue)
        codes = []
        for _ in range(7):
            try:
                ex.fetch_time()
                codes.append(200)
            except ccxt.DDoSProtection as exc:
                codes.append(418 if " 418 " in str(exc) else 429)
        assert codes == [200, 200, 200, 429, 429, 429, 418]
    finally:
        venue.config.weight_limit_per_minute = old
        venue_call(venue, venue.rest.reset_rate_limit)


async def on_venue(venue, fn, *args):
    """Run fn on the venue's loop from a test's own event loop."""

    async def runner():
        r = fn(*args)
        return await r if asyncio.iscoroutine(r) else r

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runner(), _THREADS[0].loop))


async def skip_to_falling_candle(venue):
    """Advance until the next BTC candle trades at least 0.3 below the last close."""
    ohlcv = venue.candles.ohlcv[0]
    for _ in range(50):
        k = venue.index
        if ohlcv[k, 2] + 0.3 < venue.engine.prices["BTCUSDT"]:
            return
        await on_venue(venue, venue.advance)
    raise AssertionError("no falling candle found")


def test_async_ccxt_fill_shows_in_trades_and_positions(venue):
    async def main():
        ex = client(venue, ccxt.async_support.binanceusdm)
        try:
            await ex.load_markets()
            await skip_to_falling_candle(venue)
            low = float(venue.candles.ohlcv[0, venue.index, 2])
            buy = round(low + 0.1, 1)
            o = await ex.create_order("BTC/USDT:USDT", "limit", "buy", 0.002, buy)
            await on_venue(venue, venue.advance)
            got = await ex.fetch_order(o["id"], "BTC/USDT:USDT")
            assert got["status"] == "closed" and got["filled"] == 0.002
            trades = await ex.fetch_my_trades("BTC/USDT:USDT")
            t = trades[-1]
            assert t["order"] == o["id"] and t["price"] == buy and t["takerOrMaker"] == "maker"
            assert t["fee"]["cost"] == pytest.approx(buy * 0.002 * 0.0002, rel=1e-6)
            positions = await ex.fetch_positions(["BTC/USDT:USDT"])
            assert (
                positions[0]["contracts"] == pytest.approx(0.002) and positions[0]["side"] == "long"
            )
            await ex.create_order(
                "BTC/USDT:USDT", "market", "sell", 0.002, None, {"reduceOnly": True}
            )
            assert await ex.fetch_positions(["BTC/USDT:USDT"]) == []
        finally:
            await ex.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------- websockets

import websockets  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, pred, n=50, timeout=5.0):
    for _ in range(n):
        msg = await recv_json(ws, timeout)
        if pred(msg):
            return msg
    raise AssertionError("message not received")


def test_market_streams_raw_combined_and_subscribe(venue):
    async def main():
        url = venue.ws_url
        async with (
            connect(f"{url}/ws/btcusdt@aggTrade") as raw,
            connect(f"{url}/stream?streams=btcusdt@kline_1m/ethusdt@bookTicker") as comb,
            connect(f"{url}/market/ws") as sub,
        ):
            await sub.send(
                json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@kline_1m"], "id": 1})
            )
            assert await recv_json(sub) == {"result": None, "id": 1}
            k = venue.index
            await on_venue(venue, venue.advance)
            o, h, lo, c, v = venue.candles.ohlcv[0, k]
            trades = [await recv_json(raw) for _ in range(4)]
            assert [t["e"] for t in trades] == ["aggTrade"] * 4
            assert [float(t["p"]) for t in trades] == list(candle_trades(o, h, lo, c))
            assert all(t["s"] == "BTCUSDT" and set(t) >= set("EsapqflTm") for t in trades)
            assert trades[0]["T"] == venue.candles.timestamps[k]
            kl = await recv_json(comb)
            assert kl["stream"] == "btcusdt@kline_1m"
            kk = kl["data"]["k"]
            assert kl["data"]["e"] == "kline" and kk["x"] is True and kk["i"] == "1m"
            assert kk["t"] == venue.candles.timestamps[k] and kk["T"] == kk["t"] + 59_999
            assert [float(kk[x]) for x in "ohlc"] == [o, h, lo, c]
            bt = await recv_json(comb)
            assert bt["stream"] == "ethusdt@bookTicker" and bt["data"]["e"] == "bookTicker"
            assert float(bt["data"]["b"]) == venue.candles.ohlcv[1, k, 3]
            ek = await recv_json(sub)
            assert ek["e"] == "kline" and ek["s"] == "ETHUSDT"

    asyncio.run(main())


def test_user_stream_gets_order_trade_update_on_fill(venue):
    async def main():
        ex = client(venue, ccxt.async_support.binanceusdm)
        try:
            await ex.load_markets()
            lk = (await ex.fapiPrivatePostListenKey())["listenKey"]
            async with connect(f"{venue.ws_url}/ws/{lk}") as user:
                await skip_to_falling_candle(venue)
                buy = round(float(venue.candles.ohlcv[0, venue.index, 2]) + 0.1, 1)
                o = await ex.create_order(
                    "BTC/USDT:USDT", "limit", "buy", 0.002, buy, {"clientOrderId": "u1"}
                )
                new = await recv_json(user)
                assert (
                    new["e"] == "ORDER_TRADE_UPDATE"
                    and new["o"]["x"] == "NEW"
                    and new["o"]["c"] == "u1"
                )
                await on_venue(venue, venue.advance)
                trade = await recv_json(user)
                od = trade["o"]
                assert trade["e"] == "ORDER_TRADE_UPDATE"
                assert (od["x"], od["X"], od["i"], od["S"], od["ps"]) == (
                    "TRADE",
                    "FILLED",
                    int(o["id"]),
                    "BUY",
                    "BOTH",
                )
                assert float(od["L"]) == buy and float(od["l"]) == 0.002 and od["m"] is True
                assert float(od["n"]) == pytest.approx(buy * 0.002 * 0.0002, rel=1e-6)
                acc = await recv_json(user)
                assert acc["e"] == "ACCOUNT_UPDATE" and acc["a"]["m"] == "ORDER"
                assert acc["a"]["P"][0]["s"] == "BTCUSDT" and float(acc["a"]["P"][0]["pa"]) > 0
                assert acc["a"]["B"][0]["a"] == "USDT"
                # a deleverage behind the bot's back
                await on_venue(venue, venue.change_position, KEY, "BTCUSDT", "BOTH", 0.0)
                adj = await recv_until(user, lambda m: m["e"] == "ACCOUNT_UPDATE")
                assert adj["a"]["m"] == "ADJUSTMENT" and float(adj["a"]["P"][0]["pa"]) == 0.0
        finally:
            await ex.close()

    asyncio.run(main())


def test_websocket_faults_drop_close_and_silence(venue):
    async def main():
        url = f"{venue.ws_url}/ws/btcusdt@aggTrade"
        async with connect(url) as ws:
            await asyncio.sleep(0.05)
            assert await on_venue(venue, venue.drop_ws) >= 1
            with pytest.raises(websockets.ConnectionClosedError) as exc:
                await asyncio.wait_for(ws.recv(), 5)
            assert exc.value.rcvd is None  # no close frame: abnormal closure (1006)
        async with connect(url) as ws:
            await asyncio.sleep(0.05)
            await on_venue(venue, venue.close_ws, 1008, "policy violation")
            with pytest.raises(websockets.ConnectionClosed) as exc:
                await asyncio.wait_for(ws.recv(), 5)
            assert exc.value.rcvd.code == 1008
        async with connect(url) as ws:
            await on_venue(venue, venue.set_ws_silent, True)
            await on_venue(venue, venue.advance)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)
            await on_venue(venue, venue.set_ws_silent, False)
            await on_venue(venue, venue.advance)
            assert (await recv_json(ws))["e"] == "aggTrade"

    asyncio.run(main())


# ---------------------------------------------------------------------------- replay modes and CLI


def test_trades_mode_and_candle_mode_book_the_same_fills():
    candles = load_candles(SAMPLE, ["BTCUSDT"], end_ms=T0 + 400 * 60_000)
    results = []
    for mode in ("candle", "trades"):
        venue = Venue(candles, VenueConfig(start_index=10, fill_mode=mode))
        venue.add_account(KEY, SECRET, 100_000.0)
        eng = venue.engine
        for _ in range(10, 400):
            last = eng.prices["BTCUSDT"]
            eng.place_order(
                KEY, "BTCUSDT", "BUY", "LIMIT", 0.01, round(last - 20, 1), time_in_force="GTC"
            )
            eng.place_order(
                KEY, "BTCUSDT", "SELL", "LIMIT", 0.01, round(last + 20, 1), time_in_force="GTC"
            )
            asyncio.run(venue.advance())
        acct = eng.accounts[KEY]
        results.append(([(f.order_id, f.price) for f in acct.trades], acct.balance))
    assert len(results[0][0]) > 50
    assert results[0][0] == results[1][0]
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-12)


def test_cli_venue_runs_a_short_replay_and_hides_the_secret(tmp_path, capsys, monkeypatch):
    from bot.cli import main

    monkeypatch.delenv("GRIDBOT_API_KEY", raising=False)
    monkeypatch.delenv("GRIDBOT_API_SECRET", raising=False)
    args = ["venue", "--data", SAMPLE, "--symbols", "BTCUSDT,ETHUSDT", "--port", "0", "--ws-port", "0",
            "--speed", "30000", "--start", "2021-05-10T01:00", "--end", "2021-05-10T01:20",
            "--results", str(tmp_path)]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    err = capsys.readouterr().err
    key_file = tmp_path / "venue_api_key.json"
    assert str(key_file) in err and "replay finished after 20 candles" in err
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(key_file.read_text())["secret"] not in err

"""The live bot on Bybit v5 (linear, hedge mode): wire messages normalized at the boundary
(recorded-format messages), the REST adapter against the venue's Bybit face, the start-up
refusals, secrets, the lockstep replay that must match the backtester fill for fill, and
``gridbot live --exchange bybit --dry-run``."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backtest.replay import replay, round_to_ticks
from backtest.venue.server import Venue, VenueConfig
from bot.errors import AuthenticationError, DuplicateOrderError
from bot.exchange.binance.streams import binance_events
from bot.exchange.bybit import format as bf
from bot.exchange.bybit.rest import BybitAdapter, tiers_from_risk_limits
from bot.exchange.bybit.streams import BybitPrivateStream, bybit_auth_args
from bot.exchange.ccxt_base import translate
from bot.exchange.events import (
    ADJUSTMENT,
    ORDER,
    BalanceEvent,
    FillEvent,
    KlineEvent,
    OrderEvent,
    PositionEvent,
    PriceEvent,
)
from bot.exchange.registry import make_adapter
from bot.live.bot import LiveBot, StartupRefused
from bot.live.credentials import install_redaction
from bot.live.orders import LiveOrder
from bot.markets import market_spec
from tests.test_live_replay import TIGHT_GRID_SIDE, sample, trading_config

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET = "bybit-key-0123456789abcdef", "bybit-secret-fedcba9876543210"

# ---------------------------------------------------------------- recorded-format messages

EXECUTION = {
    "id": "592324803b2785-26fa-4214-9963-bdd4727f07be",
    "topic": "execution",
    "creationTime": 1672364174455,
    "data": [
        {
            "category": "linear",
            "symbol": "BTCUSDT",
            "execFee": "0.0012",
            "execId": "7e2ae69c-4edf-5800-a352-893d52b446aa",
            "execPrice": "20000.5",
            "execQty": "0.003",
            "execType": "Trade",
            "execValue": "60.0015",
            "isMaker": True,
            "feeRate": "0.0002",
            "leavesQty": "0",
            "orderId": "f6e324ff-99c2-4e89-9739-3086e47f9381",
            "orderLinkId": "gbSc00abcdef0123456789abcdef01",
            "orderPrice": "20000.5",
            "orderQty": "0.003",
            "orderType": "Limit",
            "side": "Buy",
            "execTime": "1672364174443",
            "closedSize": "0.003",
            "seq": 4688002127,
        },
        {  # someone else's fill that opened a long; and a funding settlement (not a fill)
            "category": "linear",
            "symbol": "BTCUSDT",
            "execId": "8e2ae69c-4edf-5800-a352-893d52b446ab",
            "execPrice": "20001",
            "execQty": "0.001",
            "execType": "Trade",
            "leavesQty": "0.001",
            "orderId": "a",
            "orderLinkId": "",
            "side": "Buy",
            "execTime": "1672364174444",
            "closedSize": "0",
        },
        {
            "category": "linear",
            "symbol": "BTCUSDT",
            "execId": "9",
            "execPrice": "20001",
            "execQty": "0.001",
            "execType": "Funding",
            "side": "Buy",
            "execTime": "1672364174445",
        },
    ],
}

ORDER_MSG = {
    "id": "5923240c6880ab-c59f-420b-9adb-3639adc9dd90",
    "topic": "order",
    "creationTime": 1672364262474,
    "data": [
        {
            "category": "linear",
            "symbol": "DOGEUSDT",
            "orderId": "5cf98598-39a7-459e-97bf-76ca765ee020",
            "orderLinkId": "gbLi00aa",
            "side": "Buy",
            "positionIdx": 1,
            "orderStatus": "PartiallyFilled",
            "timeInForce": "PostOnly",
            "price": "0.07",
            "qty": "300",
            "leavesQty": "200",
            "cumExecQty": "100",
            "orderType": "Limit",
        },
        {
            "category": "linear",
            "symbol": "DOGEUSDT",
            "orderId": "6",
            "orderLinkId": "gbSc00bb",
            "side": "Buy",
            "positionIdx": 2,
            "orderStatus": "Cancelled",
            "price": "0.06",
            "qty": "100",
            "leavesQty": "0",
            "cumExecQty": "0",
            "orderType": "Limit",
        },
    ],
}

POSITION_MSG = {
    "id": "1003076014fb7eedb-c7e6-45d6-a8c1-270f0169171a",
    "topic": "position",
    "creationTime": 1697682317044,
    "data": [
        {
            "positionIdx": 2,
            "tradeMode": 0,
            "symbol": "BTCUSDT",
            "side": "Sell",
            "size": "0.01",
            "entryPrice": "30000.5",
            "updatedTime": "1697682317038",
            "positionStatus": "Normal",
            "category": "linear",
        },
        {
            "positionIdx": 1,
            "symbol": "BTCUSDT",
            "side": "",
            "size": "0",
            "entryPrice": "0",
            "updatedTime": "1697682317038",
            "positionStatus": "Adl",
            "category": "linear",
        },
    ],
}

WALLET_MSG = {
    "id": "592324d2bce751-ad38-48eb-8f42-4671d1fb4d4e",
    "topic": "wallet",
    "creationTime": 1700034722104,
    "data": [
        {
            "accountType": "UNIFIED",
            "coin": [
                {"coin": "BTC", "walletBalance": "1"},
                {"coin": "USDT", "walletBalance": "1234.5678", "equity": "1300"},
            ],
        }
    ],
}


def test_private_messages_normalize_to_bot_events():
    fills = bf.parse_private(EXECUTION)
    assert fills == [
        FillEvent(
            "BTCUSDT", -1, 0.003, 20000.5, "7e2ae69c-4edf-5800-a352-893d52b446aa",
            1672364174443, "gbSc00abcdef0123456789abcdef01",
            "f6e324ff-99c2-4e89-9739-3086e47f9381", 0.0, 1672364174443,
        ),  # ours: a buy that closes our short (the side is in our client id)
        FillEvent(
            "BTCUSDT", 1, 0.001, 20001.0, "8e2ae69c-4edf-5800-a352-893d52b446ab",
            1672364174444, "", "a", 0.001, 1672364174444,
        ),  # not ours, closedSize 0: it opened a long; the Funding row is no fill
    ]  # fmt: skip
    assert bf.parse_private(ORDER_MSG) == [
        OrderEvent("DOGEUSDT", "gbLi00aa", "5cf98598-39a7-459e-97bf-76ca765ee020", True, 1, 200.0, 0.07, 100.0),
        OrderEvent("DOGEUSDT", "gbSc00bb", "6", False, -1, 0.0, 0.06, 0.0, cancelled=True),
    ]  # fmt: skip
    assert bf.parse_private(POSITION_MSG) == [
        PositionEvent("BTCUSDT", -1, 0.01, 30000.5, 1697682317038, ORDER),
        PositionEvent("BTCUSDT", 1, 0.0, 0.0, 1697682317038, ADJUSTMENT),
    ]
    assert bf.parse_private(WALLET_MSG) == [
        BalanceEvent(1234.5678, bf.UNKNOWN_REASON, 1700034722104)
    ]
    for reply in (
        {"success": True, "ret_msg": "", "op": "auth", "conn_id": "x"},
        {"op": "pong", "args": ["1675418560633"], "conn_id": "x"},
    ):
        assert bf.parse_private(reply) == []


def test_public_messages_normalize_to_prices_and_klines():
    trades = {
        "topic": "publicTrade.BTCUSDT",
        "type": "snapshot",
        "ts": 1672304486868,
        "data": [
            {"T": 1672304486865, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "16578.50",
             "L": "PlusTick", "i": "20f43950-d8dd-5b31-9112-a178eb6023af", "BT": False},
        ],
    }  # fmt: skip
    kline = {
        "topic": "kline.1.BTCUSDT",
        "type": "snapshot",
        "ts": 1672324988882,
        "data": [
            {"start": 1672324980000, "end": 1672325039999, "interval": "1", "open": "16649.5",
             "close": "16677", "high": "16677", "low": "16608", "volume": "2.081",
             "turnover": "34666.4005", "confirm": True, "timestamp": 1672324988882},
        ],
    }  # fmt: skip
    assert bf.parse_public(trades) == [PriceEvent("BTCUSDT", 16578.5)]
    # the range and volume too: trailing and the forager read them
    assert bf.parse_public(kline) == [
        KlineEvent("BTCUSDT", 1672324980000, 16677.0, True, 16677.0, 16608.0, 2.081)
    ]
    assert bf.parse_public({"success": True, "ret_msg": "pong", "op": "ping"}) == []


def test_binance_messages_normalize_to_the_same_events():
    update = {
        "e": "ORDER_TRADE_UPDATE",
        "T": 5,
        "o": {"s": "BTCUSDT", "c": "gbLi00x", "S": "BUY", "x": "TRADE", "X": "FILLED",
              "i": 7, "l": "0.002", "L": "20000", "t": 11, "T": 5, "ps": "LONG", "q": "0.002",
              "z": "0.002", "p": "20000"},
    }  # fmt: skip
    assert binance_events("ORDER_TRADE_UPDATE", update) == [
        FillEvent("BTCUSDT", 1, 0.002, 20000.0, 11, 5, "gbLi00x", "7", None, 11),
        # the order's status says how much of it filled: a fill still on its way is counted
        OrderEvent("BTCUSDT", "gbLi00x", "7", False, 1, 0.0, 20000.0, filled=0.002),
    ]
    acct = {"e": "ACCOUNT_UPDATE", "T": 9, "a": {"m": "ADL", "B": [{"a": "USDT", "wb": "99"}],
            "P": [{"s": "BTCUSDT", "pa": "-0.5", "ep": "100", "ps": "SHORT"}]}}  # fmt: skip
    assert binance_events("ACCOUNT_UPDATE", acct) == [
        BalanceEvent(99.0, "ADL", 9),
        PositionEvent("BTCUSDT", -1, 0.5, 100.0, 9, "ADL"),
    ]


def test_private_auth_signature_and_tiers_and_duplicates():
    args = bybit_auth_args("k", "s", 1662350400000)
    want = hmac.new(b"s", b"GET/realtime1662350400000", hashlib.sha256).hexdigest()
    assert args == ["k", 1662350400000, want]
    tiers = tiers_from_risk_limits(
        [
            {"riskLimitValue": "4000000", "maintenanceMargin": "0.01", "maxLeverage": "50.00",
             "mmDeduction": "10000"},
            {"riskLimitValue": "2000000", "maintenanceMargin": "0.005", "maxLeverage": "100.00",
             "mmDeduction": ""},
        ]
    )  # fmt: skip
    np.testing.assert_allclose(tiers, [[0, 2e6, 0.005, 100, 0], [2e6, 4e6, 0.01, 50, 10_000]])
    import ccxt

    dup = ccxt.InvalidOrder('bybit {"retCode":110072,"retMsg":"OrderLinkedID is duplicate"}')
    assert isinstance(translate(dup), DuplicateOrderError)
    assert isinstance(make_adapter("bybit", "k", "s"), BybitAdapter)


# ---------------------------------------------------------------- against the venue


async def _with_venue(fn, hours: float = 0.2):
    venue = Venue(round_to_ticks(sample(hours)), VenueConfig(start_index=60))
    venue.add_account(KEY, SECRET, 1000.0)
    await venue.start()
    try:
        return await fn(venue)
    finally:
        await venue.stop()


def test_adapter_reads_bybit_markets_account_and_places_post_only_hedge_orders():
    async def go(venue):
        ad = make_adapter("bybit", KEY, SECRET, base_url=venue.rest_url, throttle=False)
        try:
            specs = await ad.load_markets(["BTCUSDT"])
            await ad.setup_account(["BTCUSDT"], 10)
            await ad.setup_account(["BTCUSDT"], 10)  # "not modified" answers are fine
            snap = await ad.fetch_account(["BTCUSDT"])
            klines = await ad.fetch_klines("BTCUSDT", limit=30)
            price = float(klines[-1, 4])
            o = LiveOrder("BTCUSDT", -1, -0.003, round(price * 1.05, 1), 1, 0, "gbSi00test")
            placed = await ad.create_order(o)
            with pytest.raises(DuplicateOrderError):
                await ad.create_order(o)
            opens = await ad.fetch_open_orders("BTCUSDT")
            await ad.cancel_order(placed)
            return specs, snap, klines, placed, opens, await ad.fetch_open_orders("BTCUSDT")
        finally:
            await ad.close()

    specs, snap, klines, placed, opens, after = asyncio.run(_with_venue(go))
    ref = market_spec("BTCUSDT")
    assert (specs["BTCUSDT"].qty_step, specs["BTCUSDT"].price_step, specs["BTCUSDT"].min_cost) == (
        ref.qty_step,
        ref.price_step,
        ref.min_cost,
    )
    np.testing.assert_allclose(specs["BTCUSDT"].tiers[:, 2:4], ref.tiers[:, 2:4])
    assert snap.balance == pytest.approx(1000.0)
    assert klines.shape == (30, 6) and np.all(np.diff(klines[:, 0]) == 60_000)
    assert placed.order_id
    assert [(o.client_id, o.pside, o.qty) for o in opens] == [("gbSi00test", -1, -0.003)]
    assert after == []


def test_leverage_check_refuses_on_bybit_too(tmp_path):
    config = trading_config(leverage=2, state_dir=str(tmp_path))  # needs > 1.0 + 1.0

    async def go(venue):
        ad = make_adapter("bybit", KEY, SECRET, base_url=venue.rest_url, throttle=False)
        bot = LiveBot(config, ad, ws_url=venue.ws_url, symbols=["BTCUSDT", "DOGEUSDT"])
        try:
            with pytest.raises(StartupRefused) as exc:
                await bot.run()
        finally:
            await ad.close()
        return str(exc.value), venue.engine.accounts[KEY]

    reason, acct = asyncio.run(_with_venue(go))
    assert "leverage 2 must exceed" in reason
    assert acct.open_orders == {} and acct.closed_orders == {}
    assert acct.leverage == {}  # refused before changing anything on the account


def test_bybit_keys_never_logged_and_bad_signatures_refused(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    uninstall = install_redaction([KEY, SECRET])
    config = trading_config(state_dir=str(tmp_path))

    async def go(venue):
        good = make_adapter("bybit", KEY, SECRET, base_url=venue.rest_url, throttle=False)
        bad = make_adapter("bybit", KEY, "not-the-secret", base_url=venue.rest_url, throttle=False)
        try:
            with pytest.raises(AuthenticationError) as exc:
                await bad.fetch_account()
            # the private websocket refuses a bad signature too (bounded: 2 attempts)
            stop = asyncio.Event()
            ws = BybitPrivateStream(venue.ws_url, bad.ws_auth_args, lambda evs: None)
            client = ws.build()
            client.max_failures = 1
            client.backoff_base_seconds = 0.01
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(client.run(stop), 20)
            bot = LiveBot(config, good, ws_url=venue.ws_url, symbols=["BTCUSDT"])
            task = asyncio.create_task(bot.run())
            await bot.wait_ready()
            for _ in range(200):  # bounded: until the first orders rest and streams are up
                if venue.engine.accounts[KEY].open_orders and bot.streams_ready():
                    break
                await asyncio.sleep(0.05)
            ready = bot.streams_ready()
            logging.getLogger("gridbot.live.test").info("a careless message with %s", SECRET)
            bot.stop()
            await asyncio.wait_for(task, 10)
            return str(exc.value), client.stats.last_error, ready, venue.engine.accounts[KEY]
        finally:
            await good.close()
            await bad.close()

    try:
        message, ws_error, ready, acct = asyncio.run(_with_venue(go))
    finally:
        uninstall()
    assert "10004" in message or "sign" in message.lower()
    assert "auth refused" in ws_error
    assert ready and acct.open_orders  # the bot's signed requests and ws auth were accepted
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, message, ws_error):
        assert KEY not in text and SECRET not in text
    assert "a careless message with ***" in caplog.text


@pytest.mark.slow
def test_bybit_replay_one_day_every_fill_matches_the_backtester():
    result = asyncio.run(replay(trading_config(), sample(24), exchange="bybit"))
    assert len(result.fills_backtest) >= 20, "the config should trade often"
    assert result.mismatches == []
    assert result.first_divergence is None, result.first_divergence  # in order, fees, balance
    assert result.matched == len(result.fills_live) == len(result.fills_backtest)
    assert result.open_orders_ok
    assert result.bot_errors == []


@pytest.mark.slow
def test_gridbot_replay_cli_on_bybit(tmp_path):
    cfg = tmp_path / "c.hjson"
    side = TIGHT_GRID_SIDE
    conf = {
        "bot": {"long": side, "short": {**side, "enabled": True}},
        "live": {"leverage": 10},
        "backtest": {"symbols": ["BTCUSDT"], "starting_balance": 1000},
    }
    cfg.write_text(json.dumps(conf))
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "replay", str(cfg), "--data", "data/sample/binance_spot_1m",
         "--start", "2021-05-18", "--end", "2021-05-18T04:00", "--exchange", "bybit"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bybit" in proc.stderr and "mismatches 0" in proc.stderr


@pytest.mark.slow
def test_dry_run_on_bybit_trades_and_stops_cleanly():
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "live", "configs/default.hjson", "--dry-run",
         "--exchange", "bybit", "--speed", "3000", "--max-minutes", "0.25"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "leverage 10" in proc.stderr
    m = re.search(r"stopped cleanly; (\d+) fills this session", proc.stderr)
    assert m and int(m.group(1)) > 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr

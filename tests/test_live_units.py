"""Pure pieces of the live bot: order diff and client ids, exception translation, Bybit v5
ticker snapshot+delta merge (on messages in Bybit's recorded format)."""

from __future__ import annotations

import ccxt
import numpy as np

from bot.errors import (
    InsufficientMarginError,
    OrderRejectedError,
    RateLimitError,
    TransientExchangeError,
    UnknownOrderError,
)
from bot.exchange.binance.streams import parse_binance
from bot.exchange.bybit.streams import BybitTickers, parse_bybit
from bot.exchange.ccxt_base import translate
from bot.live.orders import PREFIX, LiveOrder, client_order_id, diff_orders, orders_from_rows


def test_client_ids_are_deterministic_prefixed_and_binance_sized():
    a = client_order_id("BTCUSDT", 1, 2, 3, 49_000.1, 0.004)
    assert a == client_order_id("BTCUSDT", 1, 2, 3, 49_000.1, 0.004)
    assert a != client_order_id("BTCUSDT", 1, 2, 3, 49_000.2, 0.004)
    assert a.startswith(PREFIX) and len(a) <= 36


def test_diff_keeps_matches_ignores_foreign_orders_nearest_first():
    rows = np.array([[0.002, 49_000.0, 1], [0.002, 48_000.0, 2], [-0.002, 51_000.0, 3]])
    ideal = orders_from_rows("BTCUSDT", 1, rows)
    foreign = LiveOrder("BTCUSDT", 1, 0.5, 10_000.0, 0, client_id="manual-1", order_id="9")
    stale = LiveOrder("BTCUSDT", 1, 0.002, 47_000.0, 2, client_id=PREFIX + "x", order_id="8")
    keep = ideal[0]
    cancel, create = diff_orders([foreign, stale, keep], ideal, 50_000.0)
    assert cancel == [stale]
    assert [o.price for o in create] == [51_000.0, 48_000.0]  # nearest to 50000 first
    # tolerances: a 0.1% price difference is kept at 0.2%, replaced at 0
    near = LiveOrder("BTCUSDT", 1, 0.002, 49_049.0, 1, client_id=PREFIX + "y")
    assert diff_orders([near], ideal[:1], 50_000.0, 0.002, 0.01) == ([], [])
    assert diff_orders([near], ideal[:1], 50_000.0)[0] == [near]


def test_ccxt_exceptions_translate_once():
    assert isinstance(translate(ccxt.RateLimitExceeded("x")), RateLimitError)
    assert isinstance(translate(ccxt.DDoSProtection("418")), RateLimitError)
    assert isinstance(translate(ccxt.RequestTimeout("x")), TransientExchangeError)
    assert isinstance(translate(ccxt.ExchangeNotAvailable("x")), TransientExchangeError)
    assert isinstance(translate(ccxt.InsufficientFunds("-2019")), InsufficientMarginError)
    assert isinstance(translate(ccxt.OrderNotFound("x")), UnknownOrderError)
    assert isinstance(translate(ccxt.InvalidOrder("x")), OrderRejectedError)


def test_binance_combined_and_raw_frames():
    raw = {"e": "aggTrade", "s": "BTCUSDT", "p": "1.0"}
    assert parse_binance({"stream": "btcusdt@aggTrade", "data": raw}) == ("aggTrade", raw)
    assert parse_binance(raw) == ("aggTrade", raw)
    assert parse_binance({"result": None, "id": 1}) is None


def test_bybit_ticker_snapshot_then_delta_merge():
    snapshot = {
        "topic": "tickers.BTCUSDT",
        "type": "snapshot",
        "data": {
            "symbol": "BTCUSDT",
            "tickDirection": "PlusTick",
            "lastPrice": "17216.00",
            "markPrice": "17217.33",
            "bid1Price": "17215.50",
            "ask1Price": "17216.00",
            "fundingRate": "-0.000212",
        },
        "cs": 24987956059,
        "ts": 1673272861686,
    }
    delta = {
        "topic": "tickers.BTCUSDT",
        "type": "delta",
        "data": {"symbol": "BTCUSDT", "bid1Price": "17215.00", "markPrice": "17216.21"},
        "cs": 24987956060,
        "ts": 1673272861786,
    }
    book = BybitTickers()
    [(ev, t)] = parse_bybit(snapshot, book)
    assert ev == "ticker" and t["lastPrice"] == "17216.00"
    [(_, t)] = parse_bybit(delta, book)
    assert t["bid1Price"] == "17215.00" and t["markPrice"] == "17216.21"
    assert t["lastPrice"] == "17216.00" and t["ask1Price"] == "17216.00"  # kept from snapshot
    trades = {
        "topic": "publicTrade.BTCUSDT",
        "type": "snapshot",
        "ts": 1672304486868,
        "data": [
            {"T": 1672304486865, "s": "BTCUSDT", "S": "Buy", "v": "0.001", "p": "16578.50",
             "L": "PlusTick", "i": "20f43950-d8dd-5b31-9112-a178eb6023af", "BT": False},
        ],
    }  # fmt: skip
    assert parse_bybit(trades, book) == [
        ("trade", {"symbol": "BTCUSDT", "price": 16578.5, "ts": 1672304486865})
    ]
    assert parse_bybit({"op": "pong", "success": True}, book) == []

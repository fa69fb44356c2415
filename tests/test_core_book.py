"""The one booking path (bot.core.book): fills, the within-candle order, liquidations, events,
worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.core.book import (
    E_FRACTION,
    E_KIND,
    E_PRICE,
    E_SIDE,
    E_SYMBOL,
    E_VALUE,
    EV_DEPOSIT,
    EV_REDUCE,
    EV_REDUCE_ALL,
    EV_WITHDRAW,
    N_E,
    N_R,
    R_BALANCE,
    R_FEE,
    R_PNL,
    R_PRICE,
    R_QTY,
    R_SIDE,
    R_SYMBOL,
    apply_event,
    book_fill,
    book_liquidation,
    book_market_closes,
    candle_fill_order,
    liquidation_prices,
    transfer_peak,
)
from bot.core.margin import maintenance_margin, stack_tiers
from bot.markets import market_spec

BTC = market_spec("BTCUSDT")
TIERS = stack_tiers([BTC.tiers, BTC.tiers])


def test_book_fill_adds_reduces_and_never_passes_zero():
    size, price, booked, pnl, fee = book_fill(1, 1.0, 100.0, 1.0, 50.0, 0.001)
    assert (size, price, booked, pnl) == (2.0, 75.0, 1.0, 0.0)
    assert fee == pytest.approx(0.05)
    # a close larger than the position books what is left of it
    size, price, booked, pnl, fee = book_fill(1, 2.0, 75.0, -3.0, 80.0, 0.001)
    assert (size, price, booked) == (0.0, 0.0, 2.0)
    assert pnl == pytest.approx(10.0) and fee == pytest.approx(2 * 80 * 0.001)
    # a short: a buy reduces, pnl when the price fell
    size, price, booked, pnl, _ = book_fill(-1, 2.0, 100.0, 0.5, 90.0, 0.0)
    assert (size, price, booked, pnl) == (1.5, 100.0, 0.5, 5.0)


def fill_order(qtys, prices, psides, o, h, lo):
    out = np.zeros(len(qtys), dtype=np.int64)
    n = candle_fill_order(
        np.array(qtys, float), np.array(prices, float), np.array(psides, float), o, h, lo, out
    )
    return list(out[:n])


def test_fill_order_follows_the_price_path():
    #          0 long buy  1 short buy  2 long sell 3 short sell 4 long buy (not reached)
    qtys = [1.0, 1.0, -1.0, -1.0, 1.0]
    prices = [99.0, 99.5, 101.0, 100.5, 90.0]
    psides = [1, -1, 1, -1, 1]
    # open nearer the low: down first (buys, highest first), then up (sells, lowest first)
    assert fill_order(qtys, prices, psides, 100.0, 102.0, 98.0) == [1, 0, 3, 2]
    # open nearer the high: sells first
    assert fill_order(qtys, prices, psides, 101.5, 102.0, 98.0) == [3, 2, 1, 0]
    # a touch is not a fill
    assert fill_order([1.0], [98.0], [1], 100.0, 102.0, 98.0) == []


def test_fill_order_ties_long_first_then_given_order():
    qtys = [1.0, 1.0, 1.0, 1.0]
    prices = [99.0, 99.0, 99.0, 99.0]
    psides = [-1, 1, -1, 1]
    assert fill_order(qtys, prices, psides, 100.0, 100.0, 98.0) == [1, 3, 0, 2]


def test_liquidation_prices_are_on_the_tick():
    size = np.array([[1.0, 0.0], [0.0, 0.0]])
    pprice = np.array([[20_000.0, 0.0], [0.0, 0.0]])
    refs = np.array([20_000.0, 1.0])
    lows = np.array([18_000.0, 1.0])
    highs = np.array([20_000.0, 1.0])
    steps = np.array([0.1, 0.1])
    liq = liquidation_prices(1000.0, size, pprice, refs, lows, highs, TIERS, steps)
    exact = (20_000.0 - 1000.0) / (1 - 0.004)  # balance + (p - 20000) = 0.004 p
    assert liq[0] == pytest.approx(round(exact, 1), abs=1e-9)
    assert liquidation_prices(1000.0, size, pprice, refs, refs, refs, TIERS, steps).size == 0


def test_book_liquidation_caps_fees_and_reports_the_deficit():
    rows = np.zeros((4, N_R))
    # long 1 @ 20000 closed at 19076.3: pnl -923.7, margin 76.3052, 76.3 left: fee 76.3
    size = np.array([[1.0, 0.0], [0.0, 0.0]])
    pprice = np.array([[20_000.0, 0.0], [0.0, 0.0]])
    bal, deficit, n = book_liquidation(1000.0, size, pprice, np.array([19_076.3, 1.0]), TIERS, rows)
    assert n == 1 and deficit == 0.0
    assert rows[0, R_QTY] == -1.0 and rows[0, R_PRICE] == 19_076.3
    assert rows[0, R_PNL] == pytest.approx(-923.7)
    assert maintenance_margin(19_076.3, BTC.tiers) > 76.3
    assert rows[0, R_FEE] == pytest.approx(76.3)
    assert bal == pytest.approx(0.0, abs=1e-9) and size[0, 0] == 0.0
    # a gap through bankruptcy: the balance goes below zero, nothing is left for a fee, the
    # insurance fund takes the deficit; a long and a short close coin by coin, long first
    size = np.array([[1.0, 0.0], [0.5, 0.0]])
    pprice = np.array([[20_000.0, 0.0], [19_000.0, 0.0]])
    bal, deficit, n = book_liquidation(100.0, size, pprice, np.array([18_000.0, 1.0]), TIERS, rows)
    # long: -2000 -> -1900, no fee; short: +500 -> -1400, no fee
    assert n == 2 and rows[0, R_QTY] == -1.0 and rows[1, R_QTY] == 0.5
    assert rows[0, R_FEE] == 0.0 and rows[1, R_FEE] == 0.0
    assert deficit == pytest.approx(1400.0) and bal == 0.0 and rows[1, R_BALANCE] == 0.0


def test_market_closes_close_everything_at_the_prices_with_the_taker_fee():
    rows = np.zeros((4, N_R))
    # long BTC 0.003 @ 50000, long DOGE 100 @ 0.3, short DOGE 50 @ 0.4; last prices
    # 40000.04 / 0.350004 (spot data off the futures tick): the closes fill on the tick,
    # 40000.0 (tick 0.1) and 0.35 (tick 0.00001)
    size = np.array([[0.003, 100.0], [0.0, 50.0]])
    pprice = np.array([[50_000.0, 0.3], [0.0, 0.4]])
    steps = np.array([0.1, 0.00001])
    last = np.array([40_000.04, 0.350004])
    bal, n = book_market_closes(1000.0, size, pprice, last, steps, 0.0005, rows)
    assert n == 3 and not size.any() and not pprice.any()
    # coin by coin, long before short
    assert rows[:n, R_SYMBOL].tolist() == [0, 1, 1] and rows[:n, R_SIDE].tolist() == [1, 1, -1]
    assert rows[:n, R_QTY].tolist() == [-0.003, -100.0, 50.0]
    assert rows[:n, R_PRICE] == pytest.approx([40_000.0, 0.35, 0.35], abs=1e-12)
    assert rows[:n, R_PNL] == pytest.approx([-30.0, 5.0, 2.5])
    assert rows[:n, R_FEE] == pytest.approx([0.06, 0.0175, 0.00875])
    assert bal == pytest.approx(1000.0 - 30.0 + 5.0 + 2.5 - 0.06 - 0.0175 - 0.00875)
    assert rows[n - 1, R_BALANCE] == bal
    # nothing open: nothing booked, the balance unchanged
    assert book_market_closes(bal, size, pprice, last, steps, 0.0005, rows) == (bal, 0)


def event(kind, value=0.0, symbol=-1, side=0, price=math.nan, fraction=0.0):
    e = np.zeros(N_E)
    e[E_KIND], e[E_VALUE], e[E_SYMBOL], e[E_SIDE] = kind, value, symbol, side
    e[E_PRICE], e[E_FRACTION] = price, fraction
    return e


def book():
    size = np.array([[0.003, 100.0], [0.0, 50.0]])  # long BTC and DOGE, short DOGE
    pprice = np.array([[50_000.0, 0.3], [0.0, 0.4]])
    return size, pprice


REFS = np.array([40_000.0, 0.35])
STEPS = np.array([0.001, 1.0])


def test_deposit_and_withdraw_scale_the_peak():
    size, pprice = book()
    rows = np.zeros((4, N_R))
    bal, peak, n = apply_event(
        event(EV_DEPOSIT, 500.0), 1000.0, 1200.0, size, pprice, REFS, STEPS, rows
    )
    assert (bal, n) == (1500.0, 0) and peak == pytest.approx(1800.0)
    bal, peak, _ = apply_event(event(EV_WITHDRAW, 0.0, fraction=0.5), 1000.0, 1200.0, size, pprice, REFS, STEPS, rows)  # fmt: skip
    assert bal == 500.0 and peak == pytest.approx(600.0)
    bal, _, _ = apply_event(event(EV_WITHDRAW, 5000.0), 1000.0, 1200.0, size, pprice, REFS, STEPS, rows)  # fmt: skip
    assert bal == 0.0  # never more than the balance
    assert transfer_peak(100.0, -10.0, 40.0) == 150.0  # nothing to scale: moved by the amount


def test_reduce_books_without_a_fee_at_the_price_or_the_reference():
    size, pprice = book()
    rows = np.zeros((4, N_R))
    bal, peak, n = apply_event(
        event(EV_REDUCE, 0.001, symbol=0, side=1, price=45_000.0), 1000.0, 1200.0, size, pprice,
        REFS, STEPS, rows,
    )  # fmt: skip
    assert n == 1 and peak == 1200.0
    assert size[0, 0] == pytest.approx(0.002) and pprice[0, 0] == 50_000.0
    assert rows[0, R_QTY] == pytest.approx(-0.001) and rows[0, R_FEE] == 0.0
    assert rows[0, R_PNL] == pytest.approx(-5.0) and bal == pytest.approx(995.0)
    # no price: the reference (previous close); more than the position: all of it
    bal, _, n = apply_event(
        event(EV_REDUCE, 80.0, symbol=1, side=-1), 1000.0, 1200.0, size, pprice, REFS, STEPS, rows
    )
    assert n == 1 and size[1, 1] == 0.0 and rows[0, R_QTY] == pytest.approx(50.0)
    assert rows[0, R_PRICE] == 0.35 and bal == pytest.approx(1000.0 + 50 * 0.05)


def test_reduce_all_rounds_each_position_to_its_step():
    size, pprice = book()
    rows = np.zeros((4, N_R))
    bal, _, n = apply_event(
        event(EV_REDUCE_ALL, fraction=0.5), 1000.0, 1000.0, size, pprice, REFS, STEPS, rows
    )
    # BTC 0.003 x 0.5 = 0.0015 -> 0.002 (nearest step, half to even); DOGE long 50, short 25
    assert n == 3
    assert list(rows[:n, R_QTY]) == pytest.approx([-0.002, -50.0, 25.0])
    assert size[0, 0] == pytest.approx(0.001) and size[0, 1] == 50.0 and size[1, 1] == 25.0
    pnl = 0.002 * (40_000 - 50_000) + 50 * (0.35 - 0.3) + 25 * (0.4 - 0.35)
    assert bal == pytest.approx(1000.0 + pnl)
    _, _, n = apply_event(
        event(EV_REDUCE_ALL, fraction=1.0), 1000.0, 1000.0, size, pprice, REFS, STEPS, rows
    )
    assert n == 3 and not size.any()

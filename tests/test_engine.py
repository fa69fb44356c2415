"""Backtest engine: known answers worked by hand, and invariants on the real bundled candles."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from backtest.data import Candles, load_candles, parse_date_ms
from backtest.engine import F_BALANCE, F_FEE, F_KIND, F_PNL, F_POS_PRICE, F_POS_SIZE, F_PRICE, F_QTY
from backtest.runner import run_backtest
from bot.config import parse_config
from bot.core import bankruptcy_price, unrealized_pnl
from bot.core.params import KIND_CLOSE_GRID, KIND_ENTRY_GRID, KIND_ENTRY_INITIAL, KIND_LIQUIDATION
from bot.markets import market_spec

SAMPLE = "data/sample/binance_spot_1m"
T0 = parse_date_ms("2021-01-01")


def make_candles(rows: list[tuple[float, float, float, float]], symbol: str = "BTCUSDT") -> Candles:
    """One symbol, 1m candles from (open, high, low, close) rows."""
    ohlc = np.array(rows, dtype=float)
    ohlcv = np.concatenate([ohlc, np.ones((len(rows), 1))], axis=1)[None, :, :].copy()
    ts = T0 + 60_000 * np.arange(len(rows), dtype=np.int64)
    return Candles((symbol,), ts, ohlcv, 60_000, {symbol: 0}, {symbol: "test"})


def long_only(**long: float) -> dict:
    base = {
        "total_wallet_exposure_limit": 1.0,
        "n_positions": 1,
        "entry_initial_qty_pct": 0.1,
        "entry_initial_ema_dist": 0.0,
        "entry_grid_spacing_pct": 0.02,
        "entry_grid_spacing_weight": 0.0,
        "entry_grid_double_down_factor": 1.0,
        "close_grid_min_markup": 0.012,
        "close_grid_markup_range": 0.0,
        "close_grid_qty_pct": 1.0,
        "unstuck_close_pct": 0.0,
        "ema_span_0": 10,
        "ema_span_1": 20,
    }
    base.update(long)
    return {
        "bot": {"long": base, "short": {"enabled": False}},
        "backtest": {
            "symbols": ["BTCUSDT"],
            "starting_balance": 10_000.0,
            "maker_fee": 0.0002,
            "funding_rate_8h": 0.0,
            "warmup_minutes": 0,
        },
    }


def test_entry_reentry_and_take_profit_worked_by_hand():
    candles = make_candles(
        [
            (1000, 1000, 1000, 1000),  # EMAs start at 1000
            (1000, 1000, 999, 999),  # initial entry: min(bid 1000, ema 1000) = 1000, low 999 < 1000
            (999, 1000, 975, 990),  # re-entry at 1000 * (1 - 0.02) = 980 fills; 970.1 does not
            (990, 1005, 988, 1000),  # take-profit at 989.99500 * 1.012 -> 1001.9 fills
            (1000, 1000, 1000, 1000),  # flat again; the new initial entry is not reached
        ]
    )
    run = run_backtest(parse_config(long_only()), candles)
    f = run.output.fills
    assert [int(k) for k in f[:, F_KIND]] == [KIND_ENTRY_INITIAL, KIND_ENTRY_GRID, KIND_CLOSE_GRID]
    # initial: qty = 10000 * WEL 1.0 * 0.1 / 1000 = 1.0 at 1000; fee = 1000 * 0.0002 = 0.2
    assert f[0, F_QTY] == pytest.approx(1.0) and f[0, F_PRICE] == pytest.approx(1000.0)
    assert f[0, F_FEE] == pytest.approx(0.2)
    assert f[0, F_BALANCE] == pytest.approx(9999.8)
    # re-entry at 980: qty = max(1.0 * ddf 1, the initial qty at the book's price (the previous
    # close, 999, as Passivbot): round(9999.8 * 0.1 / 999, 0.001) = 1.001) = 1.001
    assert f[1, F_QTY] == pytest.approx(1.001) and f[1, F_PRICE] == pytest.approx(980.0)
    assert f[1, F_FEE] == pytest.approx(1.001 * 980 * 0.0002)
    assert f[1, F_POS_SIZE] == pytest.approx(2.001)
    assert f[1, F_POS_PRICE] == pytest.approx(1980.98 / 2.001)
    # bankruptcy price of that position: (2.001 * 989.995 - 9999.6) / 2.001 < 0 -> 0
    assert bankruptcy_price(f[1, F_BALANCE], 2.001, f[1, F_POS_PRICE], 0.0, 0.0) == 0.0
    # take-profit (markup range 0: all at the minimum markup): 989.995 * 1.012 = 1001.87494
    # -> 1001.9 (BTCUSDT's 0.1 step, up); pnl = 2.001 * 1001.9 - 1980.98 = 23.8219
    assert f[2, F_QTY] == pytest.approx(-2.001) and f[2, F_PRICE] == pytest.approx(1001.9)
    assert f[2, F_PNL] == pytest.approx(23.8219)
    fees = 0.2 + 1.001 * 980 * 0.0002 + 2.001 * 1001.9 * 0.0002
    assert run.output.fees_paid == pytest.approx(fees)
    assert run.output.balance[-1] == pytest.approx(10_000 + 23.8219 - fees)
    assert run.output.equity[-1] == pytest.approx(run.output.balance[-1])
    assert run.output.liquidated_k == -1


def test_touching_a_price_does_not_fill():
    candles = make_candles([(1000, 1000, 1000, 1000), (1000, 1001, 1000, 1000)] * 1)
    run = run_backtest(parse_config(long_only()), candles)
    assert len(run.output.fills) == 0


def test_liquidation_at_the_tiered_liquidation_price_worked_by_hand():
    # WE 4 at once: qty = 10000 * 4 * 1.0 / 1000 = 40 BTC-like coins at 1000 (tier 0 of BTCUSDT:
    # notional 40000 < 50000, maint rate 0.004, maint amount 0). Fee 40000 * 0.0002 = 8.
    candles = make_candles(
        [
            (1000, 1000, 1000, 1000),
            (1000, 1000, 999, 1000),
            (1000, 1000, 700, 720),
            (720, 730, 710, 720),
        ]
    )
    cfg = long_only(total_wallet_exposure_limit=4.0, entry_initial_qty_pct=1.0)
    run = run_backtest(parse_config(cfg), candles)
    out = run.output
    assert out.liquidated_k == 2
    entry, liq = out.fills[0], out.fills[-1]
    assert entry[F_QTY] == pytest.approx(40.0)
    balance = 10_000 - 8.0
    # bankruptcy: 1000 * (1 - 1/WE) with WE = 40000 / 9992 -> (40000 - 9992) / 40 = 750.2
    assert bankruptcy_price(balance, 40.0, 1000.0, 0.0, 0.0) == pytest.approx(750.2)
    # liquidation: balance + 40 (p - 1000) = 40 p * 0.004 -> p = (40000 - 9992) / (40 * 0.996)
    p_liq = (40_000 - 9992) / (40 * 0.996)
    assert int(liq[F_KIND]) == KIND_LIQUIDATION
    # booked at the nearest tick (BTCUSDT's 0.1): 753.2128... -> 753.2
    assert liq[F_PRICE] == pytest.approx(round(p_liq, 1), abs=1e-9)
    assert liq[F_QTY] == pytest.approx(-40.0)
    # the fee is the maintenance margin (40 x 753.2 x 0.004 = 120.512), capped at what is left
    # after the close's pnl: 9992 + 40 x (753.2 - 1000) = 120
    assert liq[F_PNL] == pytest.approx(40 * (753.2 - 1000))
    assert liq[F_FEE] == pytest.approx(120.0)
    assert out.balance[-1] == pytest.approx(0.0, abs=1e-6)
    assert out.insurance_deficit == 0.0
    assert out.equity[-1] >= -1e-6  # never silently negative
    assert len(out.fills) == 2  # no trading after the liquidation


@pytest.fixture(scope="module")
def sample() -> Candles:
    return load_candles(SAMPLE)


DEFAULTISH = {
    "bot": {
        "long": {"total_wallet_exposure_limit": 1.5, "n_positions": 3},
        "short": {"enabled": True, "total_wallet_exposure_limit": 0.6, "n_positions": 3},
    }
}


def test_real_data_entries_never_pass_the_limit_and_books_add_up(sample: Candles):
    cfg = parse_config(DEFAULTISH)
    run = run_backtest(cfg, sample)
    out = run.output
    f = out.fills
    assert len(f) > 100
    assert out.liquidated_k == -1
    for side_idx, side in ((0, cfg.bot.long), (1, cfg.bot.short)):
        sign = 1 if side_idx == 0 else -1
        entries = f[
            (f[:, 2] == sign) & np.isin(f[:, F_KIND], [KIND_ENTRY_INITIAL, KIND_ENTRY_GRID])
        ]
        assert len(entries) > 10
        for row in entries:
            k, s = int(row[0]), int(row[1])
            step = market_spec(sample.symbols[s]).qty_step
            sizing_balance = out.balance[k - 1]  # orders of candle k were sized after k-1
            notional = row[F_POS_SIZE] * row[F_POS_PRICE]
            limit = side.wallet_exposure_limit * sizing_balance
            assert notional <= limit + step * row[F_PRICE] + 1e-9, (row, limit)
    # final equity = starting balance + realized pnl - fees - funding + unrealized pnl
    last = out.positions[-1]
    closes = sample.ohlcv[:, -1, 3]
    upnl = sum(
        unrealized_pnl(1, last[i, 0], last[i, 1], closes[i])
        + unrealized_pnl(-1, last[i, 2], last[i, 3], closes[i])
        for i in range(len(sample.symbols))
    )
    expected = cfg.backtest.starting_balance + out.realized_pnl - out.fees_paid - out.funding_paid
    assert out.balance[-1] == pytest.approx(expected, rel=1e-9)
    assert out.equity[-1] == pytest.approx(expected + upnl, rel=1e-9)
    assert out.fills[:, F_PNL].sum() == pytest.approx(out.realized_pnl)
    assert out.fills[:, F_FEE].sum() == pytest.approx(out.fees_paid)
    assert out.funding_paid != 0.0  # funding was charged at 8h marks


def over_levered(twel: float) -> dict:
    return {
        "backtest": {"symbols": ["BTCUSDT"]},
        "bot": {
            "long": {
                "total_wallet_exposure_limit": twel,
                "n_positions": 1,
                "entry_grid_spacing_pct": 0.005,
                "entry_initial_qty_pct": 0.05,
            }
        },
    }


def test_over_levered_config_is_liquidated_in_the_crash_and_half_exposure_is_not():
    btc = load_candles(SAMPLE, ["BTCUSDT"], start_ms=parse_date_ms("2021-05-17"))
    run = run_backtest(parse_config(over_levered(8.0)), btc)
    k = run.output.liquidated_k
    assert k >= 0
    when = datetime.fromtimestamp(btc.timestamps[k] / 1000, UTC)
    assert when.date().isoformat() == "2021-05-19"
    assert run.output.equity[k:].min() >= -1e-6
    safe = run_backtest(parse_config(over_levered(0.5)), btc)
    assert safe.output.liquidated_k == -1
    # WE 0.5 through a ~30% fall: about a 15% drawdown, nowhere near bankruptcy
    assert safe.output.equity.min() > 0.8 * 10_000


def test_n_positions_caps_open_positions_per_side(sample: Candles):
    cfg = parse_config({"bot": {"long": {"total_wallet_exposure_limit": 1.0, "n_positions": 1}}})
    out = run_backtest(cfg, sample).output
    open_long = (out.positions[:, :, 0] > 0).sum(axis=1)
    assert open_long.max() == 1

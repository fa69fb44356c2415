"""Backtest metrics: hand-worked answers on hand-made engine outputs, and bookkeeping on the
bundled sample."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from backtest.data import Candles, format_ms, load_candles, parse_date_ms
from backtest.engine import N_F, EngineInputs, EngineOutput
from backtest.metrics import EXTRA_METRICS, compute_metrics, daily_returns, longest_runs
from backtest.runner import BacktestRun
from bot.config import KNOWN_METRICS, parse_config, side_params_array
from bot.core.params import (
    KIND_CLOSE_GRID,
    KIND_ENTRY_GRID,
    KIND_ENTRY_INITIAL,
    KIND_LIQUIDATION,
    N_MARKET,
    P_UNSTUCK_THRESHOLD,
    P_WALLET_EXPOSURE_LIMIT,
)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "binance_spot_1m"
T0 = 1_621_296_000_000  # 2021-05-18T00:00:00Z
HOUR = 3_600_000


def make_run(
    *,
    n: int,
    n_symbols: int = 1,
    tf_ms: int = HOUR,
    equity: np.ndarray | None = None,
    balance: np.ndarray | None = None,
    positions: np.ndarray | None = None,
    ohlcv: np.ndarray | None = None,
    fills: list[list[float]] | None = None,
    starting_balance: float = 100.0,
    trade_start: int = 0,
    liquidated_k: int = -1,
    wel: tuple[float, float] = (1.0, 1.0),
    unstuck_threshold: tuple[float, float] = (0.8, 0.8),
    symbols: tuple[str, ...] | None = None,
) -> BacktestRun:
    """A BacktestRun built by hand: EngineOutput-like arrays whose metrics can be worked out."""
    symbols = symbols or tuple(["BTCUSDT", "ETHUSDT", "DOGEUSDT"][:n_symbols])
    ts = T0 + np.arange(n, dtype=np.int64) * tf_ms
    if ohlcv is None:
        ohlcv = np.full((n_symbols, n, 5), 100.0)
        ohlcv[:, :, 1] = 101.0
        ohlcv[:, :, 2] = 99.0
    bal = np.full(n, starting_balance) if balance is None else np.asarray(balance, float)
    eq = bal.copy() if equity is None else np.asarray(equity, float)
    pos = np.zeros((n, n_symbols, 4)) if positions is None else positions
    config = parse_config({})
    params = [side_params_array(config.bot.long), side_params_array(config.bot.short)]
    for j in range(2):
        params[j][P_WALLET_EXPOSURE_LIMIT] = wel[j]
        params[j][P_UNSTUCK_THRESHOLD] = unstuck_threshold[j]
    f = np.zeros((0, N_F)) if not fills else np.array(fills, dtype=float)
    candles = Candles(
        symbols=symbols,
        timestamps=ts,
        ohlcv=ohlcv,
        timeframe_ms=tf_ms,
        filled_candles=dict.fromkeys(symbols, 0),
        sources=dict.fromkeys(symbols, "hand-made"),
    )
    inputs = EngineInputs(
        timestamps=ts,
        ohlcv=ohlcv,
        markets=np.zeros((n_symbols, N_MARKET)),
        tiers=np.zeros((n_symbols, 1, 5)),
        params_long=params[0],
        params_short=params[1],
        n_positions_long=1,
        n_positions_short=1,
        starting_balance=starting_balance,
        maker_fee=0.0002,
        funding_rate=0.0,
        trade_start=trade_start,
    )
    fees = float(f[:, 5].sum()) if len(f) else 0.0
    pnl = float(f[:, 6].sum()) if len(f) else 0.0
    output = EngineOutput(f, bal, eq, pos, liquidated_k, fees, 0.0, pnl)
    return BacktestRun(config, candles, inputs, output)


def fill_row(k: int, pnl: float = 0.0, kind: int = KIND_CLOSE_GRID, **kw: float) -> list[float]:
    row = [0.0] * N_F
    row[0], row[6], row[9] = k, pnl, kind
    row[1] = kw.get("symbol", 0)
    row[2] = kw.get("side", 1)
    row[3] = kw.get("qty", -1.0)
    row[4] = kw.get("price", 100.0)
    row[5] = kw.get("fee", 0.01)
    row[7] = kw.get("balance", 100.0)
    row[8] = kw.get("we", 0.0)
    row[10] = kw.get("pos_size", 0.0)
    row[11] = kw.get("pos_price", 0.0)
    return row


# --------------------------------------------------------------------------- shape


def test_keys_are_known_metrics_plus_extras_and_json_safe():
    m = compute_metrics(make_run(n=10))
    assert list(m) == [*KNOWN_METRICS, *EXTRA_METRICS]
    json.dumps(m, allow_nan=False)  # raises on NaN / inf
    assert m["liquidated"] is False and m["liquidation_time"] is None
    assert m["bankruptcy_distance_min_pct"] is None  # never in a position
    assert m["n_fills"] == 0 and m["loss_profit_ratio"] == 0.0
    assert m["gain"] == 1.0 and m["drawdown_worst"] == 0.0 and m["calmar_ratio"] == 0.0
    assert m["wallet_exposure_max"] == 0.0 and m["hours_stuck_max"] == 0.0


def test_nan_and_inf_become_none():
    n = 3
    pos = np.zeros((n, 1, 4))
    pos[1:, 0, 0:2] = (1.0, 100.0)
    run = make_run(n=n, positions=pos, balance=[100.0, 0.0, 0.0], equity=[100.0, 0.0, 0.0])
    m = compute_metrics(run)
    json.dumps(m, allow_nan=False)
    assert m["wallet_exposure_max"] is None  # open position on a zero balance: inf


# --------------------------------------------------------------------------- returns, drawdown


def test_drawdown_worst_per_candle_against_running_max():
    # peaks 100, 110, 110, 120, 120 -> worst 1 - 90/120
    run = make_run(n=5, equity=[100, 110, 99, 120, 90], balance=[100] * 5)
    assert compute_metrics(run)["drawdown_worst"] == pytest.approx(0.25)


def test_drawdown_counts_from_the_starting_balance():
    run = make_run(n=3, equity=[95, 97, 96], balance=[100] * 3)
    assert compute_metrics(run)["drawdown_worst"] == pytest.approx(0.05)


def test_daily_gains_on_three_days():
    # 1h candles, 3 UTC days; equity at each day's last candle: 110, 99, 108.9
    eq = np.full(72, 100.0)
    eq[23], eq[24:47], eq[47] = 110.0, 104.0, 99.0
    eq[48:71], eq[71] = 103.0, 108.9
    m = compute_metrics(make_run(n=72, equity=eq))
    # daily returns +10 %, -10 %, +10 %: arithmetic mean 0.1 / 3
    assert m["daily_gain_mean"] == pytest.approx(0.1 / 3)
    # Passivbot's adg is geometric: 1.089 ** (1/3) - 1 = 0.0288276 (1.1 x 0.9 x 1.1 = 1.089)
    assert m["adg"] == pytest.approx(1.089 ** (1 / 3) - 1)
    assert m["adg"] == pytest.approx(0.0288276, abs=1e-7)
    assert m["mdg"] == pytest.approx(0.1)
    assert m["sharpe_ratio"] == pytest.approx((0.1 / 3) / math.sqrt(0.08 / 9))
    assert m["sortino_ratio"] == pytest.approx((0.1 / 3) / math.sqrt(0.01 / 3))
    assert m["drawdown_worst"] == pytest.approx(1 - 99 / 110)
    assert m["calmar_ratio"] == pytest.approx((1.089 ** (1 / 3) - 1) / (1 - 99 / 110))
    assert m["n_days"] == pytest.approx(3.0)
    assert m["gain"] == pytest.approx(1.089)


def test_two_days_of_equal_gain_have_zero_deviation():
    eq = np.r_[np.full(24, 110.0), np.full(24, 121.0)]
    m = compute_metrics(make_run(n=48, equity=eq))
    assert m["adg"] == pytest.approx(0.1) and m["mdg"] == pytest.approx(0.1)
    assert m["daily_gain_mean"] == pytest.approx(0.1)  # equal days: both means agree
    assert m["sharpe_ratio"] == 0.0  # std 0: defined as 0
    assert m["sortino_ratio"] == 0.0  # no losing day: defined as 0


def test_warmup_days_are_not_counted():
    # day 0 is EMA warm-up (flat), day 1 +10 %, day 2 -5 %
    eq = np.r_[np.full(24, 100.0), np.full(24, 110.0), np.full(24, 104.5)]
    m = compute_metrics(make_run(n=72, equity=eq, trade_start=24))
    assert m["n_days"] == pytest.approx(2.0)
    assert m["daily_gain_mean"] == pytest.approx((0.10 - 0.05) / 2)
    assert m["adg"] == pytest.approx(1.045**0.5 - 1)  # 1.1 x 0.95 over 2 days


def test_adg_of_a_big_gain_over_minutes_is_undefined_not_a_crash():
    from backtest.metrics import geometric_daily_gain

    assert geometric_daily_gain(1.65, 1 / 1440) == math.inf  # 1.65 ** 1440: past any float
    assert geometric_daily_gain(1.65, 1.0) == pytest.approx(0.65)
    assert geometric_daily_gain(1.0, 0.0) == 0.0


def test_adg_of_a_total_loss_is_minus_one():
    eq = np.r_[np.full(24, 50.0), np.full(24, -5.0)]
    m = compute_metrics(make_run(n=48, equity=eq))
    assert m["adg"] == -1.0
    assert m["daily_gain_mean"] == pytest.approx((-0.5 + -1.1) / 2)


def test_daily_returns_split_on_utc_midnight():
    ts = T0 + np.array([0, 23, 24, 47, 48]) * HOUR
    r = daily_returns(ts, np.array([1.0, 2.0, 3.0, 4.0, 2.0]), 1.0)
    assert r == pytest.approx([1.0, 1.0, -0.5])


# --------------------------------------------------------------------------- fills


def test_loss_profit_ratio():
    fills = [
        fill_row(1, 10.0),
        fill_row(2, -3.0),
        fill_row(3, 0.0, KIND_ENTRY_GRID),
        fill_row(4, -2.0),
    ]
    assert compute_metrics(make_run(n=5, fills=fills))["loss_profit_ratio"] == pytest.approx(0.5)
    only_losses = [fill_row(1, -3.0)]
    m = compute_metrics(make_run(n=5, fills=only_losses))
    assert m["loss_profit_ratio"] is None  # infinite: losses and no profit
    assert m["n_fills"] == 1


def test_liquidation_flag_and_time():
    run = make_run(n=5, liquidated_k=3, fills=[fill_row(3, -50.0, KIND_LIQUIDATION)])
    m = compute_metrics(run)
    assert m["liquidated"] is True
    assert m["liquidation_time"] == format_ms(T0 + 3 * HOUR) == "2021-05-18T03:00:00Z"


# --------------------------------------------------------------------------- exposure, stuck, held


def test_wallet_exposure_hours_stuck_and_held():
    # 1h candles, balance 1000, position price 100: WE = size / 10.
    # coin 0 long, WEL 0.5, unstuck threshold 0.8 -> stuck at WE >= 0.4
    we0 = np.array([0, 0.2, 0.4, 0.45, 0.3, 0.5, 0.5, 0.5, 0, 0])
    # coin 1 short, WEL 1.0, threshold 0.5 -> stuck at WE >= 0.5: its 0.45 for 4 h is not
    # stuck (it would be with the long side's limit), but held 4 h
    we1 = np.array([0, 0, 0, 0, 0, 0.45, 0.45, 0.45, 0.45, 0])
    pos = np.zeros((10, 2, 4))
    pos[:, 0, 0], pos[:, 0, 1] = we0 * 10, np.where(we0 > 0, 100.0, 0.0)
    pos[:, 1, 2], pos[:, 1, 3] = we1 * 10, np.where(we1 > 0, 100.0, 0.0)
    run = make_run(
        n=10,
        n_symbols=2,
        positions=pos,
        balance=np.full(10, 1000.0),
        starting_balance=1000.0,
        wel=(0.5, 1.0),
        unstuck_threshold=(0.8, 0.5),
    )
    m = compute_metrics(run)
    assert m["hours_stuck_max"] == pytest.approx(3.0)  # candles 5, 6, 7
    assert m["position_held_hours_max"] == pytest.approx(7.0)  # coin 0: candles 1..7
    assert m["wallet_exposure_max"] == pytest.approx(0.5)
    assert m["wallet_exposure_mean"] == pytest.approx((2.85 + 4 * 0.45) / 11)


def test_hours_stuck_use_the_candle_length():
    pos = np.zeros((6, 1, 4))
    pos[1:5, 0] = (1.0, 100.0, 0.0, 0.0)  # WE 1.0 at WEL 1.0 for 4 candles
    run = make_run(n=6, tf_ms=5 * 60_000, positions=pos)
    m = compute_metrics(run)
    assert m["hours_stuck_max"] == pytest.approx(4 * 5 / 60)
    assert m["position_held_hours_max"] == pytest.approx(4 * 5 / 60)


def test_longest_runs():
    mask = np.array([[1, 1, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 0, 0]], dtype=bool)
    assert longest_runs(mask) == 4
    assert longest_runs(np.zeros((2, 5), dtype=bool)) == 0
    assert longest_runs(np.ones((1, 5), dtype=bool)) == 5  # a run to the end counts


# --------------------------------------------------------------------------- bankruptcy


def _bankruptcy_run(short_coin: bool) -> BacktestRun:
    n = 3
    ns = 2 if short_coin else 1
    ohlcv = np.zeros((ns, n, 5))
    ohlcv[0, :, :4] = (95.0, 96.0, 80.0, 90.0)  # open, high, low, close
    pos = np.zeros((n, ns, 4))
    pos[:, 0, 0:2] = (2.0, 100.0)  # long 2 @ 100 on a balance of 100: WE 2
    if short_coin:
        ohlcv[1, :, :4] = (11.0, 15.0, 10.0, 12.0)
        pos[:, 1, 2:4] = (1.0, 10.0)  # short 1 @ 10, upnl at close 12: -2
    return make_run(n=n, n_symbols=ns, ohlcv=ohlcv, positions=pos, balance=np.full(n, 100.0))


def test_bankruptcy_distance_single_long():
    # p = (2*100 - 100) / 2 = 50 (WE 2: 50 % below the position price); low 80
    m = compute_metrics(_bankruptcy_run(short_coin=False))
    assert m["bankruptcy_distance_min_pct"] == pytest.approx((80 - 50) / 80 * 100)


def test_bankruptcy_distance_cross_margin_with_other_coin():
    # coin 0: p = (200 - (100 - 2)) / 2 = 51, low 80 -> 36.25 %
    # coin 1 (net short): p = (0 - 10 - (100 + 2*(90-100))) / -1 = 90, high 15 -> 500 %
    m = compute_metrics(_bankruptcy_run(short_coin=True))
    assert m["bankruptcy_distance_min_pct"] == pytest.approx((80 - 51) / 80 * 100)


def test_bankruptcy_distance_short_only():
    n = 2
    ohlcv = np.zeros((1, n, 5))
    ohlcv[0, :, :4] = (100.0, 120.0, 99.0, 110.0)
    pos = np.zeros((n, 1, 4))
    pos[:, 0, 2:4] = (1.0, 100.0)  # short 1 @ 100, balance 50: bankrupt at 150
    m = compute_metrics(make_run(n=n, ohlcv=ohlcv, positions=pos, balance=np.full(n, 50.0)))
    assert m["bankruptcy_distance_min_pct"] == pytest.approx((150 - 120) / 120 * 100)


def test_bankruptcy_distance_checks_the_position_entering_the_candle():
    # a position closed during candle 2 still faced candle 2's low
    ohlcv = np.zeros((1, 3, 5))
    ohlcv[0, :, :4] = [(100, 101, 99, 100), (100, 101, 99, 100), (90, 95, 70, 95)]
    pos = np.zeros((3, 1, 4))
    pos[1, 0, 0:2] = (2.0, 100.0)  # held at candle 1's close, closed in candle 2
    m = compute_metrics(make_run(n=3, ohlcv=ohlcv, positions=pos, balance=np.full(3, 100.0)))
    assert m["bankruptcy_distance_min_pct"] == pytest.approx((70 - 50) / 70 * 100)


# --------------------------------------------------------------------------- the real engine


@pytest.fixture(scope="module")
def sample_run() -> BacktestRun:
    from backtest.runner import run_backtest

    config = parse_config({"backtest": {"data": str(SAMPLE)}})
    candles = load_candles(
        SAMPLE,
        config.backtest.symbols,
        start_ms=parse_date_ms("2021-05-15"),
        end_ms=parse_date_ms("2021-05-20T12:00"),
    )
    return run_backtest(config, candles)


@pytest.mark.slow  # numba compiles the engine when its cache is stale (~15 s)
def test_bookkeeping_on_the_sample(sample_run: BacktestRun):
    m = compute_metrics(sample_run)
    out = sample_run.output
    closes = sample_run.candles.ohlcv[:, -1, 3]
    pos = out.positions[-1]
    upnl = float((pos[:, 0] * (closes - pos[:, 1]) - pos[:, 2] * (closes - pos[:, 3])).sum())
    expected = m["starting_balance"] + m["realized_pnl"] - m["fees_paid"] - m["funding_paid"] + upnl
    assert m["final_equity"] == pytest.approx(expected, rel=1e-6)
    assert m["final_balance"] == pytest.approx(expected - upnl, rel=1e-6)
    assert m["n_fills"] > 0
    assert m["wallet_exposure_max"] > 0
    json.dumps(m, allow_nan=False)


@pytest.mark.slow
def test_metrics_are_fast_on_the_sample(sample_run: BacktestRun):
    compute_metrics(sample_run)
    times = []
    for _ in range(7):
        t = time.perf_counter()
        compute_metrics(sample_run)
        times.append(time.perf_counter() - t)
    # ~5 ms on 7.9k candles x 3 coins; generous for a busy CI machine
    assert sorted(times)[3] < 0.05


def test_fill_kinds_do_not_count_as_pnl():
    fills = [fill_row(1, 0.0, KIND_ENTRY_INITIAL), fill_row(2, 4.0)]
    assert compute_metrics(make_run(n=3, fills=fills))["loss_profit_ratio"] == 0.0

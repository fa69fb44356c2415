"""The equity hard stop loss in the backtester, on the bundled sample (BTC, ETH, DOGE through the
crash of 2021-05-19): the stop fires where the score (recomputed here with plain numpy from the
equity the engine records) first reaches red, closes every position at that candle's close with
the taker fee, rests nothing while red, and restarts after exactly the cooldown; orange keeps
only what its mode allows; a withdrawal is not a loss."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from backtest.data import Candles, format_ms, load_candles, parse_date_ms
from backtest.engine import F_FEE, F_K, F_KIND, F_PNL, F_POS_SIZE, F_PRICE, F_QTY, EngineOutput
from backtest.events import OutsideEvent
from backtest.metrics import compute_metrics, hard_stop_stops
from backtest.runner import run_backtest
from bot.config import config_to_dict, load_config, parse_config
from bot.core.hard_stop import TIER_GREEN, TIER_ORANGE, TIER_RED
from bot.core.params import (
    KIND_ENTRY_GRID,
    KIND_ENTRY_INITIAL,
    KIND_ENTRY_TRAILING,
    KIND_HARD_STOP,
)

SAMPLE = "data/sample/binance_spot_1m"
ENTRIES = (KIND_ENTRY_INITIAL, KIND_ENTRY_GRID, KIND_ENTRY_TRAILING)


@cache
def candles() -> Candles:
    bt = load_config("configs/default.hjson").backtest
    start = parse_date_ms(bt.start_date) if bt.start_date else None
    end = parse_date_ms(bt.end_date) if bt.end_date else None
    return load_candles(SAMPLE, bt.symbols, start_ms=start, end_ms=end)


def run(events: tuple[OutsideEvent, ...] = (), **hsl: object):  # noqa: ANN201
    raw = config_to_dict(load_config("configs/default.hjson"))
    if hsl:
        raw["bot"]["common"]["equity_hard_stop_loss"] = {"enabled": True, **hsl}
    return run_backtest(parse_config(raw), candles(), events)


def scores(out: EngineOutput, k0: int, starting_balance: float, span_minutes: float) -> np.ndarray:
    """The hard stop's score at each candle from k0 on, from the recorded equity alone: peak
    from the starting balance, raw drawdown, its EMA seeded by the first sample, the min."""
    eq = out.equity[k0:]
    peak = np.maximum.accumulate(np.r_[starting_balance, eq])[1:]
    raw = 1.0 - eq / peak
    alpha = 2.0 / (span_minutes + 1.0)
    ema = np.empty_like(raw)
    ema[0] = raw[0]
    for i in range(1, len(raw)):
        ema[i] = ema[i - 1] + alpha * (raw[i] - ema[i - 1])
    return np.minimum(raw, ema)


def entry_fills_after(out: EngineOutput, tier: int) -> np.ndarray:
    """Fills of an entry order in a candle that the previous candle's tier governed."""
    f = out.fills
    k = f[:, F_K].astype(int)
    return f[(out.hard_stop_tier[k - 1] == tier) & np.isin(f[:, F_KIND], ENTRIES)]


def opened_from_flat(fills: np.ndarray) -> np.ndarray:
    before = fills[:, F_POS_SIZE] - np.abs(fills[:, F_QTY])
    return fills[(fills[:, F_KIND] == KIND_ENTRY_INITIAL) & (before <= 1e-12)]


RED = 0.1
SPAN = 60.0
COOLDOWN = 600


def test_red_fires_where_the_score_first_reaches_it_and_closes_at_that_close():
    r = run(red_threshold=RED, ema_span_minutes=SPAN, cooldown_minutes_after_red=COOLDOWN)
    out, k0, taker = r.output, r.inputs.trade_start, r.config.backtest.taker_fee
    tier = out.hard_stop_tier
    assert (tier[:k0] == -1).all()
    score = scores(out, k0, r.config.backtest.starting_balance, SPAN)
    fired = k0 + int(np.argmax(score >= RED))
    assert score.max() >= RED and int(np.argmax(tier == TIER_RED)) == fired
    # before it, the tiers follow the same score (yellow at half, orange at 3/4 of red)
    expect = np.select([score >= RED, score >= 0.75 * RED, score >= 0.5 * RED], [3, 2, 1], 0)
    np.testing.assert_array_equal(tier[k0 : fired + 1], expect[: fired - k0 + 1])
    assert (tier[k0:fired] == TIER_ORANGE).any(), "orange comes before red in this crash"

    # every open position closes in the next candle at the close of the firing candle
    stops = out.fills[out.fills[:, F_KIND] == KIND_HARD_STOP]
    held = out.positions[fired][:, [0, 2]]
    assert len(stops) == int((held > 0.0).sum()) >= 2
    assert (stops[:, F_K] == fired + 1).all()
    closes = candles().ohlcv[:, fired, 3]
    np.testing.assert_array_equal(stops[:, F_PRICE], closes[stops[:, 1].astype(int)])
    np.testing.assert_allclose(stops[:, F_FEE], np.abs(stops[:, F_QTY]) * stops[:, F_PRICE] * taker)
    assert not out.positions[fired + 1].any()

    # nothing else fills while red; trading resumes after exactly the cooldown from the first
    # close seen flat (fired + 1)
    restart = fired + 1 + COOLDOWN
    assert (tier[fired:restart] == TIER_RED).all() and tier[restart] == TIER_GREEN
    k = out.fills[:, F_K]
    assert ((k > fired + 1) & (k <= restart)).sum() == 0
    assert (k > restart).any(), "it trades again after the restart"


def test_a_cooldown_of_zero_never_restarts():
    out = run(red_threshold=RED, ema_span_minutes=SPAN, cooldown_minutes_after_red=0.0).output
    fired = int(np.argmax(out.hard_stop_tier == TIER_RED))
    assert fired > 0 and (out.hard_stop_tier[fired:] == TIER_RED).all()
    assert (out.fills[:, F_K] <= fired + 1).all()
    assert out.equity[-1] == out.equity[fired + 1], "flat from the stop to the end"


# a wide orange band (from 10% of red) keeps the account orange for hundreds of candles
ORANGE = {"red_threshold": 0.3, "tier_ratios": {"yellow": 0.05, "orange": 0.1}}


def test_orange_tp_only_places_no_entry_but_still_takes_profits():
    out = run(**ORANGE, orange_tier_mode="tp_only_with_active_entry_cancellation").output
    assert (out.hard_stop_tier == TIER_ORANGE).sum() > 100
    assert (out.hard_stop_tier != TIER_RED).all()
    assert len(entry_fills_after(out, TIER_ORANGE)) == 0
    k = out.fills[:, F_K].astype(int)
    assert (out.hard_stop_tier[k - 1] == TIER_ORANGE).any(), "closes still fill in orange"
    # without the stop, entries fill in those candles
    off = run().output
    k_off = off.fills[:, F_K].astype(int)
    assert np.isin(off.fills[:, F_KIND], ENTRIES)[
        out.hard_stop_tier[k_off - 1] == TIER_ORANGE
    ].any()


def test_orange_graceful_stop_opens_nothing_new_but_keeps_re_entering():
    out = run(**ORANGE, orange_tier_mode="graceful_stop").output
    in_orange = entry_fills_after(out, TIER_ORANGE)
    assert len(opened_from_flat(in_orange)) == 0
    assert (in_orange[:, F_KIND] == KIND_ENTRY_GRID).sum() > 5, "open positions re-enter"
    # without the stop, new positions open in those candles
    off = run().output
    k_off = off.fills[:, F_K].astype(int)
    assert len(opened_from_flat(off.fills[out.hard_stop_tier[k_off - 1] == TIER_ORANGE])) > 0


def test_a_withdrawal_is_not_a_drawdown():
    # half the balance out two days in: equity halves, the score does not move
    when = parse_date_ms("2021-05-12")
    events = (OutsideEvent(time_ms=when, kind="withdraw", fraction=0.5),)
    r = run(events, red_threshold=RED, ema_span_minutes=SPAN, cooldown_minutes_after_red=COOLDOWN)
    out = r.output
    kw = int(np.searchsorted(candles().timestamps, when))
    assert out.equity[kw] < 0.6 * out.equity[kw - 1], "the withdrawal took half the equity"
    assert out.transfers < 0.0
    assert (out.hard_stop_tier[kw : kw + 120] == TIER_GREEN).all()
    # it still fires in the crash, where the equity really falls
    fired = int(np.argmax(out.hard_stop_tier == TIER_RED))
    assert fired > kw + 1000


@pytest.mark.parametrize("bad", [{"red_threshold": 0.0}, {"panic_close_order_type": "limit"}])
def test_a_bad_hard_stop_key_is_named(bad: dict):
    raw = config_to_dict(load_config("configs/default.hjson"))
    raw["bot"]["common"]["equity_hard_stop_loss"] = bad
    with pytest.raises(Exception, match=next(iter(bad))):
        parse_config(raw)


def test_the_metrics_and_the_report_line_say_what_the_stop_did():
    r = run(red_threshold=RED, ema_span_minutes=SPAN, cooldown_minutes_after_red=COOLDOWN)
    m = compute_metrics(r)
    out, k0 = r.output, r.inputs.trade_start
    fired = int(np.argmax(out.hard_stop_tier == TIER_RED))
    stops = out.fills[out.fills[:, F_KIND] == KIND_HARD_STOP]
    loss = -float((stops[:, F_PNL] - stops[:, F_FEE]).sum())
    assert m["hard_stop_triggers"] == 1 and m["hard_stop_restarts"] == 1
    assert m["hard_stop_panic_close_loss_sum"] == pytest.approx(loss) and loss > 0.0
    # red from the firing close to the restart: one candle more than the cooldown
    assert m["hard_stop_duration_minutes_max"] == COOLDOWN + 1
    n = len(out.equity) - k0
    assert m["hard_stop_time_in_red_pct"] == pytest.approx((COOLDOWN + 1) / n * 100.0)
    assert RED <= m["hard_stop_trigger_drawdown_mean"] < 1.5 * RED
    (stop,) = hard_stop_stops(r)
    ts = candles().timestamps
    assert stop["fired_at"] == format_ms(int(ts[fired]) + 60_000)
    assert stop["restarted_at"] == format_ms(int(ts[fired + 1 + COOLDOWN]) + 60_000)
    assert stop["closes"] == len(stops) and stop["close_loss"] == pytest.approx(loss)
    # off: every hard-stop metric is zero
    off = compute_metrics(run())
    assert all(v == 0 for k, v in off.items() if k.startswith("hard_stop_"))

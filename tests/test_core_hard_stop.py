"""The equity hard stop's arithmetic (bot.core.hard_stop), worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bot.config import hard_stop_params_array, parse_config
from bot.core import hard_stop as H

MIN = 60_000


def _params(**hsl) -> np.ndarray:
    cfg = {"enabled": True, **hsl}
    return hard_stop_params_array(parse_config({"bot": {"common": {"equity_hard_stop_loss": cfg}}}))


def _state(equity: float = 1000.0) -> np.ndarray:
    h = np.zeros(H.N_H)
    H.hsl_init(h, equity)
    return h


def _run(h, hp, equities, start_ms=0, flat=False):  # noqa: ANN001, ANN202
    return [H.hsl_sample(h, hp, e, float(start_ms + i * MIN), flat) for i, e in enumerate(equities)]


def test_tiers_climb_with_the_ema_of_the_drawdown():
    # span 3: alpha 0.5; red 0.25, yellow at 0.125, orange at 0.1875
    hp = _params(ema_span_minutes=3.0, red_threshold=0.25)
    h = _state()
    tiers = _run(h, hp, [1000.0, 700.0, 700.0, 700.0])
    # raw 0 seeds the EMA at 0; then raw 0.3 each minute: EMA 0.15, 0.225, 0.2625
    assert tiers == [H.TIER_GREEN, H.TIER_YELLOW, H.TIER_ORANGE, H.TIER_RED]
    assert h[H.H_EMA] == pytest.approx(0.2625)
    assert h[H.H_TRIGGER_SCORE] == pytest.approx(0.2625)
    assert h[H.H_HALTED] == 1.0 and h[H.H_TRIGGERS] == 1.0
    assert h[H.H_TERMINAL] == 0.0  # no_restart_drawdown_threshold 1.0


def test_a_wick_that_recovers_does_not_stop_the_bot():
    # span 9: alpha 0.2; a one-minute 50% drop: raw 0.5 but EMA 0.1 -> score 0.1 (green)
    hp = _params(ema_span_minutes=9.0, red_threshold=0.25)
    h = _state()
    assert _run(h, hp, [1000.0, 500.0, 1000.0]) == [H.TIER_GREEN] * 3
    # and back at the peak the score is the raw drawdown, 0, whatever the EMA still holds
    assert h[H.H_SCORE] == 0.0 and h[H.H_EMA] > 0.0


def test_the_peak_follows_new_highs():
    hp = _params(ema_span_minutes=1.0, red_threshold=0.25)  # alpha 1: the EMA is the raw
    h = _state()
    _run(h, hp, [1000.0, 1200.0, 1000.0])
    assert h[H.H_PEAK] == 1200.0
    assert h[H.H_SCORE] == pytest.approx(1.0 - 1000.0 / 1200.0)


def test_red_waits_for_flat_then_the_cooldown_then_restarts_at_the_equity():
    hp = _params(ema_span_minutes=1.0, red_threshold=0.2, cooldown_minutes_after_red=5.0)
    h = _state()
    assert _run(h, hp, [1000.0, 750.0]) == [H.TIER_GREEN, H.TIER_RED]
    # the panic closes have not all filled: red, no cooldown yet
    assert H.hsl_sample(h, hp, 740.0, 2.0 * MIN, False) == H.TIER_RED
    assert h[H.H_FLAT_SINCE_MS] == -1.0
    # flat at the close of the candle opening at minute 3 (its close: minute 4)
    assert H.hsl_sample(h, hp, 740.0, 3.0 * MIN, True) == H.TIER_RED
    assert h[H.H_FLAT_SINCE_MS] == 4.0 * MIN
    # closes at minutes 5..8 are less than 5 minutes after: still red
    for m in range(4, 8):
        assert H.hsl_sample(h, hp, 740.0, float(m * MIN), True) == H.TIER_RED
    # the close at minute 9 is 5 minutes after: a fresh start, the peak at the equity then
    assert H.hsl_sample(h, hp, 730.0, 8.0 * MIN, True) == H.TIER_GREEN
    assert h[H.H_PEAK] == 730.0 and h[H.H_HALTED] == 0.0 and h[H.H_RESTARTS] == 1.0
    # a loss measured from the new peak: 730 -> 600 is 17.8%, under 20%
    assert H.hsl_sample(h, hp, 600.0, 9.0 * MIN, False) == H.TIER_ORANGE


def test_a_position_appearing_during_the_cooldown_restarts_the_wait():
    hp = _params(ema_span_minutes=1.0, red_threshold=0.2, cooldown_minutes_after_red=3.0)
    h = _state()
    _run(h, hp, [1000.0, 700.0])
    H.hsl_sample(h, hp, 700.0, 2.0 * MIN, True)
    assert h[H.H_FLAT_SINCE_MS] == 3.0 * MIN
    assert H.hsl_sample(h, hp, 700.0, 3.0 * MIN, False) == H.TIER_RED  # someone opened one
    assert h[H.H_FLAT_SINCE_MS] == -1.0
    H.hsl_sample(h, hp, 700.0, 4.0 * MIN, True)
    assert h[H.H_FLAT_SINCE_MS] == 5.0 * MIN


@pytest.mark.parametrize(
    ("cooldown", "no_restart"),
    [(0.0, 1.0), (5.0, 0.1)],  # no cooldown; a no-restart threshold below red counts as red
)
def test_a_halt_that_never_ends_by_itself(cooldown, no_restart):
    hp = _params(
        ema_span_minutes=1.0,
        red_threshold=0.2,
        cooldown_minutes_after_red=cooldown,
        no_restart_drawdown_threshold=no_restart,
    )
    h = _state()
    _run(h, hp, [1000.0, 700.0])
    tiers = [H.hsl_sample(h, hp, 700.0, float(m * MIN), True) for m in range(2, 500)]
    assert set(tiers) == {H.TIER_RED} and h[H.H_RESTARTS] == 0.0


def test_a_transfer_is_not_a_drawdown():
    hp = _params(ema_span_minutes=1.0, red_threshold=0.2)
    h = _state()
    _run(h, hp, [1000.0])
    H.hsl_transfer(h, 1000.0, 400.0)  # withdraw 600
    assert h[H.H_PEAK] == pytest.approx(400.0)
    assert H.hsl_sample(h, hp, 400.0, 1.0 * MIN, False) == H.TIER_GREEN


def test_one_sample_per_minute_and_off_when_disabled():
    hp = _params(ema_span_minutes=1.0, red_threshold=0.2)
    h = _state()
    _run(h, hp, [1000.0])
    assert H.hsl_sample(h, hp, 100.0, 0.0, False) == H.TIER_GREEN  # same minute: ignored
    assert h[H.H_PEAK] == 1000.0 and h[H.H_SCORE] == 0.0
    off = hard_stop_params_array(parse_config({}))
    assert H.hsl_sample(_state(), off, 1.0, 0.0, False) == H.TIER_GREEN
    # equity at or below zero is a full drawdown
    assert H.hsl_sample(h, hp, -5.0, 1.0 * MIN, False) == H.TIER_RED


def test_what_each_tier_allows():
    tp_only = _params()
    graceful = _params(orange_tier_mode="graceful_stop")
    assert H.hsl_permissions(H.TIER_GREEN, tp_only) == (True, True, False)
    assert H.hsl_permissions(H.TIER_YELLOW, tp_only) == (True, True, False)
    assert H.hsl_permissions(H.TIER_ORANGE, graceful) == (False, True, False)
    assert H.hsl_permissions(H.TIER_ORANGE, tp_only) == (False, False, False)
    assert H.hsl_permissions(H.TIER_RED, graceful) == (False, False, True)


def test_bad_hard_stop_settings_are_named():
    from bot.errors import ConfigError

    for bad, word in [
        ({"panic_close_order_type": "limit"}, "only 'market'"),
        ({"tier_ratios": {"yellow": 0.9, "orange": 0.8}}, "must not be above orange"),
        ({"red_threshold": 0.0}, "red_threshold"),
        ({"ema_span_minutes": 0.5}, "ema_span_minutes"),
    ]:
        with pytest.raises(ConfigError, match=word):
            parse_config({"bot": {"common": {"equity_hard_stop_loss": bad}}})

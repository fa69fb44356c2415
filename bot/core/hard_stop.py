"""The equity hard stop loss: Passivbot's ``bot.common.equity_hard_stop_loss``, account-wide.

One sample per closed 1m candle (the backtester at each candle's close, the live bot at each
closed kline once every coin's kline of that minute is in), of the account's equity at the
closes (balance + unrealized pnl):

- ``peak`` is the highest equity since the start (or the last restart); a deposit or a
  withdrawal scales it as it scales the equity (:func:`hsl_transfer`): a transfer is neither
  a gain nor a loss;
- ``raw`` = 1 - equity / peak (1 when equity is at or below zero), ``ema`` its EMA over
  ``ema_span_minutes`` (alpha 2 / (span + 1), seeded by the first sample); the score is
  ``min(raw, ema)``: a one-candle wick does not stop the bot, a recovery lifts it at once;
- tiers from ``red_threshold``: yellow at ``tier_ratios.yellow`` x red (a warning), orange at
  ``tier_ratios.orange`` x red (``graceful_stop``: no new positions; ``tp_only_with_active_
  entry_cancellation``: entries cancelled, closes only), red at ``red_threshold``: every
  position is closed at market at once and the bot halts (no orders at all);
- a halted account that is flat (seen flat at a candle's close) waits
  ``cooldown_minutes_after_red`` and starts again with the peak at its equity then; a
  cooldown of 0, or a trigger score at or above ``no_restart_drawdown_threshold``, never
  restarts by itself (the operator does, README "Equity hard stop loss").

Pure arithmetic on two small float arrays (params ``HP_*``, state ``H_*``); the caller keeps
and persists the state. Nothing here knows about orders: :func:`hsl_permissions` says what the
tier allows and the caller applies it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "HP_COOLDOWN_MINUTES",
    "HP_EMA_ALPHA",
    "HP_ENABLED",
    "HP_NO_RESTART_DRAWDOWN",
    "HP_ORANGE_MODE",
    "HP_ORANGE_RATIO",
    "HP_RED_THRESHOLD",
    "HP_YELLOW_RATIO",
    "H_EMA",
    "H_FLAT_SINCE_MS",
    "H_HALTED",
    "H_LAST_MS",
    "H_PEAK",
    "H_RESTARTS",
    "H_SCORE",
    "H_SEEDED",
    "H_TERMINAL",
    "H_TIER",
    "H_TRIGGER_SCORE",
    "H_TRIGGERS",
    "N_H",
    "N_HP",
    "ORANGE_GRACEFUL_STOP",
    "ORANGE_TP_ONLY",
    "TIER_GREEN",
    "TIER_NAMES",
    "TIER_ORANGE",
    "TIER_RED",
    "TIER_YELLOW",
    "hsl_init",
    "hsl_permissions",
    "hsl_sample",
    "hsl_transfer",
]

TIER_GREEN = 0
TIER_YELLOW = 1
TIER_ORANGE = 2
TIER_RED = 3
TIER_NAMES = {TIER_GREEN: "green", TIER_YELLOW: "yellow", TIER_ORANGE: "orange", TIER_RED: "red"}

ORANGE_GRACEFUL_STOP = 0.0
ORANGE_TP_ONLY = 1.0

# Parameters: hp[...]
HP_ENABLED = 0
HP_RED_THRESHOLD = 1
HP_EMA_ALPHA = 2  # 2 / (ema_span_minutes + 1)
HP_COOLDOWN_MINUTES = 3  # 0: never restart by itself
HP_NO_RESTART_DRAWDOWN = 4  # a trigger score at or above it never restarts by itself
HP_YELLOW_RATIO = 5
HP_ORANGE_RATIO = 6
HP_ORANGE_MODE = 7  # ORANGE_GRACEFUL_STOP or ORANGE_TP_ONLY
N_HP = 8

# State: h[...]
H_PEAK = 0
H_EMA = 1
H_SEEDED = 2  # 1 once the EMA has its first sample
H_TIER = 3  # the tier in force until the next sample
H_HALTED = 4  # 1 from a red trigger until a restart
H_TERMINAL = 5  # 1: the halt never ends by itself
H_FLAT_SINCE_MS = 6  # close time of the first candle the halted account was seen flat at; -1
H_TRIGGER_SCORE = 7  # the score of the latest red trigger
H_LAST_MS = 8  # open time of the last sampled candle (-1: none): one sample per minute
H_SCORE = 9  # the latest score
H_TRIGGERS = 10  # red triggers so far
H_RESTARTS = 11  # restarts after a cooldown so far
N_H = 12

_MINUTE_MS = 60_000.0


@njit(cache=True)
def hsl_init(h: np.ndarray, equity: float) -> None:
    """A fresh state: the peak at ``equity``, green, nothing sampled."""
    h[:] = 0.0
    h[H_PEAK] = equity
    h[H_FLAT_SINCE_MS] = -1.0
    h[H_LAST_MS] = -1.0


@njit(cache=True)
def hsl_transfer(h: np.ndarray, equity_before: float, equity_after: float) -> None:
    """A deposit or withdrawal moved the equity: scale the peak by the same factor."""
    if equity_before > 0.0 and equity_after > 0.0:
        h[H_PEAK] *= equity_after / equity_before


@njit(cache=True)
def _tier_of(score: float, hp: np.ndarray) -> int:
    red = hp[HP_RED_THRESHOLD]
    if score >= red:
        return TIER_RED
    if score >= hp[HP_ORANGE_RATIO] * red:
        return TIER_ORANGE
    if score >= hp[HP_YELLOW_RATIO] * red:
        return TIER_YELLOW
    return TIER_GREEN


@njit(cache=True)
def _restart(h: np.ndarray, equity: float) -> None:
    h[H_PEAK] = equity
    h[H_EMA] = 0.0
    h[H_SEEDED] = 0.0
    h[H_TIER] = TIER_GREEN
    h[H_HALTED] = 0.0
    h[H_FLAT_SINCE_MS] = -1.0
    h[H_SCORE] = 0.0
    h[H_RESTARTS] += 1.0


@njit(cache=True)
def _halted_sample(
    h: np.ndarray, hp: np.ndarray, equity: float, close_ms: float, flat: bool
) -> int:
    if not flat:
        h[H_FLAT_SINCE_MS] = -1.0  # panic closes still to fill (or a position appeared)
        return TIER_RED
    if h[H_FLAT_SINCE_MS] < 0.0:
        h[H_FLAT_SINCE_MS] = close_ms
    cooldown_ms = hp[HP_COOLDOWN_MINUTES] * _MINUTE_MS
    if h[H_TERMINAL] == 0.0 and cooldown_ms > 0.0 and close_ms - h[H_FLAT_SINCE_MS] >= cooldown_ms:
        _restart(h, equity)
        return TIER_GREEN
    return TIER_RED


@njit(cache=True)
def hsl_sample(h: np.ndarray, hp: np.ndarray, equity: float, open_ms: float, flat: bool) -> int:
    """Sample the equity at the close of the candle opening at ``open_ms``; ``flat``: no
    position is open. Returns the tier in force until the next sample (a second sample of
    the same minute changes nothing)."""
    if hp[HP_ENABLED] == 0.0:
        return TIER_GREEN
    if open_ms <= h[H_LAST_MS]:
        return int(h[H_TIER])
    h[H_LAST_MS] = open_ms
    if h[H_HALTED] != 0.0:
        tier = _halted_sample(h, hp, equity, open_ms + _MINUTE_MS, flat)
        if tier != TIER_RED:
            return _sample(h, hp, equity)
        h[H_TIER] = tier
        return tier
    return _sample(h, hp, equity)


@njit(cache=True)
def _sample(h: np.ndarray, hp: np.ndarray, equity: float) -> int:
    if equity > h[H_PEAK]:
        h[H_PEAK] = equity
    raw = 1.0
    if equity > 0.0 and h[H_PEAK] > 0.0:
        raw = 1.0 - equity / h[H_PEAK]
    if h[H_SEEDED] == 0.0:
        h[H_EMA] = raw
        h[H_SEEDED] = 1.0
    else:
        h[H_EMA] += hp[HP_EMA_ALPHA] * (raw - h[H_EMA])
    score = min(raw, h[H_EMA])
    h[H_SCORE] = score
    tier = _tier_of(score, hp)
    if tier == TIER_RED:
        h[H_HALTED] = 1.0
        h[H_TRIGGER_SCORE] = score
        h[H_TRIGGERS] += 1.0
        h[H_FLAT_SINCE_MS] = -1.0
        no_restart = max(hp[HP_NO_RESTART_DRAWDOWN], hp[HP_RED_THRESHOLD])
        h[H_TERMINAL] = 1.0 if score >= no_restart else 0.0
    h[H_TIER] = tier
    return tier


@njit(cache=True)
def hsl_permissions(tier: int, hp: np.ndarray) -> tuple[bool, bool, bool]:
    """(may open a new position, may add to an open one, close everything at market now).

    Green and yellow allow everything; orange ``graceful_stop`` opens nothing new but keeps
    each open position's whole grid, orange ``tp_only`` keeps only the closes; red closes
    everything and places nothing."""
    if tier == TIER_RED:
        return False, False, True
    if tier == TIER_ORANGE:
        return False, hp[HP_ORANGE_MODE] == ORANGE_GRACEFUL_STOP, False
    return True, True, False

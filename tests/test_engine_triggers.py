"""The engine asks the core for a side's orders only when a candle can reach its cached nearest
orders, and those hold over a window of balances (backtest.triggers): a fill on one coin no
longer recomputes every other coin's nearest orders. Neither shortcut may change a fill: here
the engine runs with the window, with a window of zero width (every balance change recomputes
every trigger) and asking the core for every side on every candle (the reference), on many
coins that trade a lot, through the crash, and every output must be identical to the last bit. The cases include every
feature that shares the candle loop with the cache: trailing on one side (that side asks the
core every candle, the other still uses the cache), the forager ranking coins into fewer slots,
enforce_exposure_limit, positions that fall back to Passivbot's partial initial entry
(the nearest entry then follows the EMAs), and the equity hard stop (its tiers drop entries,
close everything and halt, then restart)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backtest.engine import F_K, F_KIND, F_POS_SIZE, F_QTY, run_engine
from backtest.runner import build_inputs
from backtest.triggers import BALANCE_WINDOW, window_orders
from benchmarks.coins import many_coins
from bot.config import config_to_dict, parse_config
from bot.core.hard_stop import H_RESTARTS, H_TRIGGERS, TIER_ORANGE, TIER_RED
from bot.core.params import (
    KIND_CLOSE_TRAILING,
    KIND_ENTRY_INITIAL,
    KIND_ENTRY_TRAILING,
    KIND_EXPOSURE_LIMIT,
    KIND_HARD_STOP,
    MAX_ORDERS,
)
from bot.markets import market_spec


def _config(n_coins: int, **long_overrides: object) -> object:
    short = long_overrides.pop("short", {})
    return parse_config(
        {
            "bot": {
                "long": {"total_wallet_exposure_limit": 1.5, "n_positions": n_coins}
                | long_overrides,
                "short": {
                    "enabled": True,
                    "total_wallet_exposure_limit": 0.6,
                    "n_positions": n_coins,
                }
                | short,
            },
            "backtest": {"symbols": ["BTCUSDT"], "starting_balance": 10_000.0 * n_coins},
        }
    )


def _same(a: object, b: object) -> None:
    for name in (
        "fills", "balance", "equity", "positions", "entries_blocked", "hard_stop_tier",
        "hard_stop_state",
    ):  # fmt: skip
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("liquidated_k", "fees_paid", "funding_paid", "realized_pnl"):
        assert getattr(a, name) == getattr(b, name), name


_FORAGER = {"filter_volume_rolling_window": 60.0, "filter_volatility_rolling_window": 30.0}
# a large initial entry and small closes: remainders below 0.8 x the initial qty re-post the
# rest of the initial entry at the EMA price (Passivbot's partial initial rule)
_PARTIAL = {"entry_initial_qty_pct": 0.3, "close_grid_qty_pct": 0.05}


def _partial_refills(fills: np.ndarray) -> int:
    """Initial-entry fills on a position that already held something."""
    before = fills[:, F_POS_SIZE] - np.abs(fills[:, F_QTY])
    return int(np.sum((fills[:, F_KIND] == KIND_ENTRY_INITIAL) & (before > 1e-12)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"unstuck_threshold": 0.5, "unstuck_close_pct": 0.1, "entry_grid_spacing_pct": 0.01},
        {
            "entry_trailing_grid_ratio": 0.5, "entry_trailing_threshold_pct": 0.01,
            "entry_trailing_retracement_pct": 0.005, "close_trailing_grid_ratio": -0.5,
            "close_trailing_threshold_pct": 0.01, "close_trailing_retracement_pct": 0.003,
        },
        {"n_positions": 3, **_FORAGER, "short": {"n_positions": 2, **_FORAGER}},
        {"enforce_exposure_limit": True, "short": {"enforce_exposure_limit": True}},
        {**_PARTIAL, "short": _PARTIAL},
    ],
    ids=["busy", "tight grid with unstuck", "long trails", "forager", "exposure limit", "partial"],
)  # fmt: skip
def test_the_balance_window_never_changes_a_fill(overrides: dict):
    inputs = build_inputs(_config(6, **overrides), many_coins(6))
    windowed = run_engine(inputs)
    exact = run_engine(inputs, ask_every_candle=True)
    assert len(exact.fills) > 2_000, "the case should trade a lot"
    kinds = exact.fills[:, F_KIND]
    if "entry_initial_qty_pct" in overrides:
        assert _partial_refills(exact.fills) > 10, "the case should re-post partial entries"
    if "entry_trailing_grid_ratio" in overrides:
        assert np.isin(kinds, (KIND_ENTRY_TRAILING, KIND_CLOSE_TRAILING)).sum() > 100
    if "enforce_exposure_limit" in overrides:
        assert (kinds == KIND_EXPOSURE_LIMIT).any(), "the limit should be enforced at least once"
    if "filter_volume_rolling_window" in overrides:
        assert ((exact.positions[:, :, 0] > 0.0).sum(axis=1) <= 3).all(), "3 long slots"
    _same(windowed, exact)
    _same(run_engine(inputs, balance_window=0.0), exact)
    # the vault's sizing fraction and leverage cap go through the same triggers
    vault = replace(inputs, sizing_fraction=0.9, leverage_cap=1.5)
    _same(run_engine(vault), run_engine(vault, ask_every_candle=True))


@pytest.mark.slow
@pytest.mark.parametrize("orange_mode", ["tp_only_with_active_entry_cancellation", "graceful_stop"])
def test_the_hard_stop_changes_no_fill_between_cached_and_asked_orders(orange_mode: str):
    raw = config_to_dict(_config(6))
    raw["bot"]["common"]["equity_hard_stop_loss"] = {
        "enabled": True, "red_threshold": 0.06, "ema_span_minutes": 30.0,
        "cooldown_minutes_after_red": 300.0, "orange_tier_mode": orange_mode,
    }  # fmt: skip
    inputs = build_inputs(parse_config(raw), many_coins(6))
    exact = run_engine(inputs, ask_every_candle=True)
    tier = exact.hard_stop_tier
    assert (tier == TIER_ORANGE).any() and (tier == TIER_RED).any(), "orange and red should happen"
    assert exact.hard_stop_state[H_TRIGGERS] >= 2 and exact.hard_stop_state[H_RESTARTS] >= 1
    stops = exact.fills[exact.fills[:, F_KIND] == KIND_HARD_STOP]
    assert len(stops) > 0
    assert (exact.fills[:, F_K] > stops[-1, F_K] + 300).any(), "it trades again after a restart"
    _same(run_engine(inputs), exact)
    _same(run_engine(inputs, balance_window=0.0), exact)


def test_a_window_bounds_the_nearest_orders_at_every_balance_inside():
    market = market_spec("BTCUSDT").as_array()
    params = build_inputs(_config(1), many_coins(1)).params_long
    buf = np.zeros((MAX_ORDERS, 3))
    emas = np.full(3, 50_000.0)
    # from a small position to a full one (WE 1.5 at 10k): the full one has no entry at 10k
    for size in (0.004, 0.05, 0.2, 0.3):
        entry, close, bound, part, lo, hi = window_orders(
            1, 10_000.0, BALANCE_WINDOW, size, 50_000.0, emas, market, params, buf
        )
        assert lo <= 10_000.0 <= hi
        exact = window_orders(1, 10_000.0, 0.0, size, 50_000.0, emas, market, params, buf)
        assert close == exact[1], "the close is exact at the balance asked"
        for balance in np.linspace(lo, hi, 41):
            e, c, _, p, *_ = window_orders(
                1, balance, 0.0, size, 50_000.0, emas, market, params, buf
            )
            # a long's nearer entry is higher, its nearer close lower
            assert e <= entry and c >= bound and p <= part

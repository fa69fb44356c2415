"""The engine's cached triggers hold over a window of balances (backtest.triggers): a fill on
one coin no longer recomputes every other coin's nearest orders. That shortcut must never
change a fill: here the engine runs with the window and with a window of zero width (every
balance change recomputes every trigger, as before) on many coins that trade a lot, through
the crash, and every output must be identical to the last bit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backtest.engine import run_engine
from backtest.runner import build_inputs
from backtest.triggers import BALANCE_WINDOW, window_orders
from benchmarks.coins import many_coins
from bot.config import parse_config
from bot.core.params import MAX_ORDERS
from bot.markets import market_spec


def _config(n_coins: int, **long_overrides: object) -> object:
    return parse_config(
        {
            "bot": {
                "long": {"total_wallet_exposure_limit": 1.5, "n_positions": n_coins}
                | long_overrides,
                "short": {
                    "enabled": True,
                    "total_wallet_exposure_limit": 0.6,
                    "n_positions": n_coins,
                },
            },
            "backtest": {"symbols": ["BTCUSDT"], "starting_balance": 10_000.0 * n_coins},
        }
    )


def _same(a: object, b: object) -> None:
    for name in ("fills", "balance", "equity", "positions", "entries_blocked"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("liquidated_k", "fees_paid", "funding_paid", "realized_pnl"):
        assert getattr(a, name) == getattr(b, name), name


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [{}, {"unstuck_threshold": 0.5, "unstuck_close_pct": 0.1, "entry_grid_spacing_pct": 0.01}],
    ids=["busy", "tight grid with unstuck"],
)
def test_the_balance_window_never_changes_a_fill(overrides: dict):
    inputs = build_inputs(_config(6, **overrides), many_coins(6))
    windowed = run_engine(inputs)
    exact = run_engine(inputs, balance_window=0.0)
    assert len(exact.fills) > 2_000, "the case should trade a lot"
    _same(windowed, exact)
    # the vault's sizing fraction and leverage cap go through the same triggers
    vault = replace(inputs, sizing_fraction=0.9, leverage_cap=1.5)
    _same(run_engine(vault), run_engine(vault, balance_window=0.0))


def test_a_window_bounds_the_nearest_orders_at_every_balance_inside():
    market = market_spec("BTCUSDT").as_array()
    params = build_inputs(_config(1), many_coins(1)).params_long
    buf = np.zeros((MAX_ORDERS, 3))
    emas = np.full(3, 50_000.0)
    # from a small position to a full one (WE 1.5 at 10k): the full one has no entry at 10k
    for size in (0.004, 0.05, 0.2, 0.3):
        entry, close, lo, hi = window_orders(
            1, 10_000.0, BALANCE_WINDOW, size, 50_000.0, emas, market, params, buf
        )
        assert lo <= 10_000.0 <= hi
        for balance in np.linspace(lo, hi, 41):
            e, c, *_ = window_orders(1, balance, 0.0, size, 50_000.0, emas, market, params, buf)
            assert e <= entry and c >= close  # a long's nearer entry is higher, close lower

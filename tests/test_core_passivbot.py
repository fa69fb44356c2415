"""Same name, same meaning: Passivbot's v7 grid rules (trailing off), worked by hand.

Each test is a state a trader can picture and the orders Passivbot's rules give for it, long
and short mirrored. Where we deliberately differ (README "Differences from Passivbot"), the test
says so and pins our behaviour.
"""

from __future__ import annotations

import numpy as np

from bot.config import SideConfig, side_params_array
from bot.core import close_grid, entry_grid, ideal_orders, unstuck_order
from bot.core.params import (
    KIND_CLOSE_GRID,
    KIND_ENTRY_GRID,
    KIND_ENTRY_INITIAL,
    KIND_EXPOSURE_LIMIT,
    KIND_UNSTUCK,
    LONG,
    MAX_ORDERS,
    SHORT,
)

# qty step 0.001, price step 0.01, min qty 0.001, min cost $5
FINE = np.array([0.001, 0.01, 0.001, 5.0])


def params_of(**kw: float) -> np.ndarray:
    return side_params_array(SideConfig(**{"total_wallet_exposure_limit": 1.0, **kw}))


def closes(side: int, balance: float, size: float, bid: float, ask: float, **kw: float):
    params = params_of(**{"close_grid_min_markup": 0.005, "close_grid_markup_range": 0.01, **kw})
    out = np.zeros((MAX_ORDERS, 3))
    n = close_grid(side, balance, size, 100.0, bid, ask, FINE, params, out, 0)
    assert np.all(out[:n, 2] == KIND_CLOSE_GRID)
    return [(round(abs(q), 9), p) for q, p, _ in out[:n]]


# ---------------------------------------------------------------------------------------------
# Close grid: each close at start + (end - start) x min(1, WE / WEL), sized qty_pct of a full
# position (+ any excess), repeated on the reduced position.


def test_close_grid_worked_example_long() -> None:
    # Balance 1000, WEL 1, long 10 @ 100 (WE 1): start 100.50, end 101.50, qty 25% of 10 = 2.5.
    # WE 1.0 -> 101.50; 7.5 left, WE 0.75 -> 101.25; 5 -> 101.00; 2.5 -> 100.75 (nearest first).
    got = closes(LONG, 1000.0, 10.0, 99.99, 100.0)
    assert got == [(2.5, 100.75), (2.5, 101.0), (2.5, 101.25), (2.5, 101.5)]
    # A small position takes profit near the minimum markup: 0.2 coins, WE 0.02 ->
    # 100.50 + 1.00 x 0.02 = 100.52, the whole position (less than 2.5).
    assert closes(LONG, 1000.0, 0.2, 99.99, 100.0) == [(0.2, 100.52)]


def test_close_grid_worked_example_short() -> None:
    # Mirrored: start 99.50, end 98.50; WE 1 -> 98.50, 0.75 -> 98.75, 0.5 -> 99.00, 0.25 -> 99.25.
    got = closes(SHORT, 1000.0, 10.0, 100.0, 100.01)
    assert got == [(2.5, 99.25), (2.5, 99.0), (2.5, 98.75), (2.5, 98.5)]
    assert closes(SHORT, 1000.0, 0.2, 100.0, 100.01) == [(0.2, 99.48)]


def test_close_grid_takes_the_excess_over_the_limit_first() -> None:
    # Long 12 @ 100 (WE 1.2, full position 10): the first close is 2.5 + the 2 coins past the
    # limit at the top (ratio capped at 1); then 7.5, 5, 2.5 left as in the worked example.
    got = closes(LONG, 1000.0, 12.0, 99.99, 100.0)
    assert got == [(2.5, 100.75), (2.5, 101.0), (2.5, 101.25), (4.5, 101.5)]
    got = closes(SHORT, 1000.0, 12.0, 100.0, 100.01)
    assert got == [(2.5, 99.25), (2.5, 99.0), (2.5, 98.75), (4.5, 98.5)]


def test_close_grid_never_crosses_the_book_and_merges_equal_prices() -> None:
    # Ask 101.10: the closes at 101.00 and 100.75 are lifted to the ask and become one order.
    got = closes(LONG, 1000.0, 10.0, 101.09, 101.1)
    assert got == [(5.0, 101.1), (2.5, 101.25), (2.5, 101.5)]
    got = closes(SHORT, 1000.0, 10.0, 98.9, 98.91)
    assert got == [(5.0, 98.9), (2.5, 98.75), (2.5, 98.5)]


def test_close_grid_qty_pct_and_zero_range() -> None:
    # qty_pct 0.5: 5 coins at WE 1 -> 101.50, then 5 at WE 0.5 -> 101.00.
    assert closes(LONG, 1000.0, 10.0, 99.99, 100.0, close_grid_qty_pct=0.5) == [
        (5.0, 101.0),
        (5.0, 101.5),
    ]
    # No markup range: everything at the minimum markup, one order.
    assert closes(LONG, 1000.0, 10.0, 99.99, 100.0, close_grid_markup_range=0.0) == [(10.0, 100.5)]


def test_close_remainder_below_the_exchange_minimum_joins_the_close_before_it() -> None:
    # Deliberate difference. Long 2.54 @ 100 (WE 0.254): 2.5 at 100.50 + 0.254 = 100.754 ->
    # 100.76 leaves 0.04 coins, $4.02 at 100.51: under the $5 minimum. Passivbot posts it
    # alone (the exchange rejects it); we close it with the 2.5.
    assert closes(LONG, 1000.0, 2.54, 99.99, 100.0) == [(2.54, 100.76)]
    # Short 2.54: 99.50 - 0.254 = 99.246 -> 99.24; 0.04 left at 99.49 is $3.98 < $5.
    assert closes(SHORT, 1000.0, 2.54, 100.0, 100.01) == [(2.54, 99.24)]


# ---------------------------------------------------------------------------------------------
# Next entry: the rest of a partly filled initial entry; the re-entry floor; a repeated price
# ends the ladder.

EMAS = np.array([100.0, 100.0, 100.0])


def entries(side: int, size: float, pos_price: float, bid: float, ask: float, **kw: float):
    base = dict(
        entry_initial_qty_pct=0.1,
        entry_initial_ema_dist=0.0,
        entry_grid_spacing_pct=0.1,
        entry_grid_spacing_weight=1.0,
        entry_grid_double_down_factor=2.0,
    )
    params = params_of(**{**base, **kw})
    out = np.zeros((MAX_ORDERS, 3))
    stop = 0.0 if side > 0 else np.inf
    n = entry_grid(side, 1000.0, size, pos_price, bid, ask, EMAS, FINE, params, out, 0, stop)
    return [(round(abs(q), 9), p, int(k)) for q, p, k in out[:n]]


def test_partly_filled_initial_entry_is_reposted() -> None:
    # Balance 1000, WEL 1, initial 10% -> 1.0 coin at min(bid 100, EMA 100) = 100.
    # Holding 0.5 (< 0.8 x 1.0): the next entry is the other 0.5 at the initial price.
    got = entries(LONG, 0.5, 100.0, 100.0, 100.01)
    assert got[0] == (0.5, 100.0, KIND_ENTRY_INITIAL)
    # Then the grid from 1.0 @ 100 (WE 0.1): 100 x (1 - 0.1 x 1.1) = 89.00, qty 2 x 1.0 = 2.0.
    assert got[1] == (2.0, 89.0, KIND_ENTRY_GRID)
    # Holding 0.85 (>= 0.8 x 1.0): straight to the grid, WE 0.085 -> 100 x (1 - 0.1085) = 89.15,
    # qty max(2 x 0.85, initial 1.0) = 1.7.
    assert entries(LONG, 0.85, 100.0, 100.0, 100.01)[0] == (1.7, 89.15, KIND_ENTRY_GRID)
    # Short: initial 1.0 at max(ask 100.01, EMA 100) = 100.01 (1000 x 0.1 / 100.01 = 0.9999
    # -> 1.0); holding 0.5 -> 0.5 more at 100.01; holding 0.85 -> the grid at
    # 100 x (1 + 0.1085) = 110.85.
    assert entries(SHORT, 0.5, 100.0, 100.0, 100.01)[0] == (0.5, 100.01, KIND_ENTRY_INITIAL)
    assert entries(SHORT, 0.85, 100.0, 100.0, 100.01)[0] == (1.7, 110.85, KIND_ENTRY_GRID)


def test_reentry_floor_is_the_initial_qty_at_the_previous_levels_price() -> None:
    # double_down_factor 0.1 so the floor decides. Long 1.0 @ 100, bid 100:
    # level 1 at 89.00, qty max(0.1 x 1.0, $100 / 100 (the bid) = 1.0) = 1.0 (not 100/89).
    got = entries(LONG, 1.0, 100.0, 100.0, 100.01, entry_grid_double_down_factor=0.1)
    assert got[0] == (1.0, 89.0, KIND_ENTRY_GRID)
    # Level 2: 2.0 @ 94.50, WE 0.189 -> 94.5 x (1 - 0.1189) = 83.26395 -> 83.26; its floor is
    # the initial qty at the previous level's price: $100 / 89 = 1.1236 -> 1.124.
    assert got[1] == (1.124, 83.26, KIND_ENTRY_GRID)
    # Short 1.0 @ 100, ask 100: level 1 at 110.00 (WE 0.1 -> 100 x 1.11 = 111.00), qty 1.0;
    got = entries(SHORT, 1.0, 100.0, 99.99, 100.0, entry_grid_double_down_factor=0.1)
    assert got[0] == (1.0, 111.0, KIND_ENTRY_GRID)
    # level 2: 2.0 @ 105.50, WE 0.211 -> 105.5 x 1.1211 = 118.27605 -> 118.28 (rounded up);
    # floor $100 / 111 = 0.9009 -> 0.901.
    assert got[1] == (0.901, 118.28, KIND_ENTRY_GRID)


def test_a_ladder_stops_when_a_price_repeats_at_the_book() -> None:
    # Long 2.0 @ 100 (WE 0.2) with the bid far below the grid (50): level 1 at the bid, qty
    # max(2 x 2.0, $100 / 50 = 2.0) = 4.0 -> 6.0 @ 66.67 (WE 0.4); level 2 would be
    # min(66.67 x 0.86 = 57.33, the book now at 50) = 50 again: the ladder ends (we used to
    # step one tick lower each time).
    assert entries(LONG, 2.0, 100.0, 50.0, 50.01) == [(4.0, 50.0, KIND_ENTRY_GRID)]
    # (Holding only 1.0 there, the position is under 0.8 x the initial qty at 50 (2.0): the
    # next entry is the rest of the initial entry, 1.0 @ 50.)
    assert entries(LONG, 1.0, 100.0, 50.0, 50.01)[0] == (1.0, 50.0, KIND_ENTRY_INITIAL)
    # Short 1.0 @ 100, ask 150: 2 x 1.0 vs $100 / 150 = 0.667 -> 2.0 at 150; then 3.0 @ 133.33
    # -> max(133.33 x 1.14, 150) = 151.998.. -> 152.00: a new price, so a second level...
    got = entries(SHORT, 1.0, 100.0, 149.99, 150.0)
    assert got[0] == (2.0, 150.0, KIND_ENTRY_GRID)
    assert got[1][1] == 152.0
    # ... while a far ask (200) repeats: 3.0 @ 166.67 (WE 0.5) x (1 + 0.1 x 1.5) = 191.67,
    # below the book at 200: the ladder ends.
    assert entries(SHORT, 1.0, 100.0, 199.99, 200.0) == [(2.0, 200.0, KIND_ENTRY_GRID)]


def test_reentry_inflated_when_the_next_would_be_a_sliver() -> None:
    # Short 1.0 @ 100, ask 300: level 1 wants 2.0 at 300 -> 3.0 @ 233.33 (WE 0.7); the next
    # level (at the book, 300) wants 6.0 but only (1000 - 700) / 300 = 1.0 fits: 1.0 / 3.0 is
    # under a quarter of double_down_factor 2, so level 1 takes the room to the limit now:
    # (1000 - 100) / 300 = 3.0 coins, and the position is full.
    assert entries(SHORT, 1.0, 100.0, 299.99, 300.0) == [(3.0, 300.0, KIND_ENTRY_GRID)]
    # Long 2.0 @ 100, bid 80: level 1 wants max(4.0, 100 / 80 = 1.25) = 4.0 at 80 -> 6.0 @
    # 86.67 (WE 0.52); the next (min(86.67 x 0.848 = 73.49, 80) = 73.49) wants 12.0, only
    # (1000 - 520) / 73.49 = 6.531 fit, 6.531 / 6 >= 0.5: not a sliver, no inflation.
    assert entries(LONG, 2.0, 100.0, 80.0, 80.01)[0] == (4.0, 80.0, KIND_ENTRY_GRID)
    # double_down_factor 5: level 1 wants max(10.0, 1.25) = 10 at 80, and 2 x 100 + 10 x 80 =
    # 1000 is exactly the limit: the ladder is that one order.
    got = entries(LONG, 2.0, 100.0, 80.0, 80.01, entry_grid_double_down_factor=5.0)
    assert got == [(10.0, 80.0, KIND_ENTRY_GRID)]


def test_last_entry_never_passes_the_limit() -> None:
    # Deliberate difference: Passivbot crops at 1.01 x WEL and lets the exchange minimum push
    # past it; every ladder here ends on the limit, never past it.
    for side, bid, ask in ((LONG, 100.0, 100.01), (SHORT, 99.99, 100.0)):
        got = entries(side, 0.0, 0.0, bid, ask)
        notional = sum(q * p for q, p, _ in got)
        assert notional <= 1000.0
        assert 1000.0 - notional < 0.001 * got[-1][1]  # within one qty step of it


# ---------------------------------------------------------------------------------------------
# Unstuck: fires when the ask reaches upper EMA x (1 + dist), at the ask; strict threshold;
# loss allowance unstuck_loss_allowance_pct x total_wallet_exposure_limit.


def unstuck(side: int, balance: float, peak: float, size: float, bid: float, ask: float,
            emas: float, **kw: float) -> tuple[float, float]:  # fmt: skip
    base = dict(
        unstuck_threshold=0.8,
        unstuck_close_pct=0.05,
        unstuck_loss_allowance_pct=0.02,
        unstuck_ema_dist=0.0,
    )
    params = params_of(**{**base, **kw})
    return unstuck_order(side, balance, peak, size, 100.0, bid, ask, np.full(3, emas), FINE, params)


def test_unstuck_fires_when_the_book_reaches_the_band_and_is_priced_there() -> None:
    # Long 10 @ 100, balance 1000, WEL 1 (WE 1 > 0.8), upper EMA 90: the ask at 89.99 has not
    # reached it -> nothing resting at the band (we used to rest at 90).
    assert unstuck(LONG, 1000.0, 1000.0, 10.0, 89.98, 89.99, 90.0) == (0.0, 0.0)
    # Ask 90.50 >= 90: at the ask, 5% of a full position: 1000 x 1 x 0.05 / 90.5 = 0.55249
    # -> 0.553 (rounded up); loss 9.5 x 0.553 = 5.25 < allowance 1000 - 1000 x 0.98 = 20.
    assert unstuck(LONG, 1000.0, 1000.0, 10.0, 90.49, 90.5, 90.0) == (0.553, 90.5)
    # unstuck_ema_dist 0.01: the trigger is 90 x 1.01 = 90.90, so 90.50 is not there yet.
    assert unstuck(LONG, 1000.0, 1000.0, 10.0, 90.49, 90.5, 90.0, unstuck_ema_dist=0.01)[0] == 0
    # Short 10 @ 100, lower EMA 110: the bid at 110.01 has not come down to it; at 109.5 it has.
    assert unstuck(SHORT, 1000.0, 1000.0, 10.0, 110.01, 110.02, 110.0) == (0.0, 0.0)
    # 1000 x 0.05 / 109.5 = 0.45662 -> 0.457 at the bid.
    assert unstuck(SHORT, 1000.0, 1000.0, 10.0, 109.5, 109.51, 110.0) == (0.457, 109.5)


def test_unstuck_can_close_a_position_already_in_profit() -> None:
    # Long 10 @ 100, WE 1, EMAs 105 and ask 105: a stuck position above water is unstuck too,
    # 50 / 105 = 0.476 -> 0.477, a profit (no allowance needed).
    assert unstuck(LONG, 1000.0, 1000.0, 10.0, 104.99, 105.0, 105.0) == (0.477, 105.0)
    assert unstuck(SHORT, 1000.0, 1000.0, 10.0, 95.0, 95.01, 95.0) == (0.527, 95.0)


def test_unstuck_threshold_is_strict() -> None:
    # WE exactly 0.8 x WEL (8 coins @ 100) is not stuck; 8.001 coins is.
    assert unstuck(LONG, 1000.0, 1000.0, 8.0, 90.49, 90.5, 90.0)[0] == 0.0
    assert unstuck(LONG, 1000.0, 1000.0, 8.001, 90.49, 90.5, 90.0)[0] == 0.553
    assert unstuck(SHORT, 1000.0, 1000.0, 8.0, 109.5, 109.51, 110.0)[0] == 0.0
    assert unstuck(SHORT, 1000.0, 1000.0, 8.001, 109.5, 109.51, 110.0)[0] == 0.457


def test_unstuck_loss_allowance_scales_with_the_total_limit() -> None:
    # Peak 1015, allowance pct 0.02, TWEL 1: 1000 - 1015 x 0.98 = 5.30; the close of 0.553
    # coins loses 0.553 x 9.5 = 5.25, within it.
    assert unstuck(LONG, 1000.0, 1015.0, 10.0, 90.49, 90.5, 90.0) == (0.553, 90.5)
    # Peak 1025 and TWEL 1: 1000 - 1025 x 0.98 = -4.5 -> no allowance, nothing.
    assert unstuck(LONG, 1000.0, 1025.0, 10.0, 90.49, 90.5, 90.0) == (0.0, 0.0)
    # Peak 1025, TWEL 2 over 2 positions (WEL 1 each): 1000 - 1025 x (1 - 0.04) = 16 allowed.
    two = dict(total_wallet_exposure_limit=2.0, n_positions=2)
    assert unstuck(LONG, 1000.0, 1025.0, 10.0, 90.49, 90.5, 90.0, **two) == (0.553, 90.5)
    # Peak 1040, TWEL 2: 1000 - 1040 x 0.96 = 1.6 -> 1.6 / 9.5 = 0.168 coins (cropped).
    assert unstuck(LONG, 1000.0, 1040.0, 10.0, 90.49, 90.5, 90.0, **two) == (0.168, 90.5)
    # Short mirrored: loss 9.5 per coin at 109.5 -> 0.168 too.
    assert unstuck(SHORT, 1000.0, 1040.0, 10.0, 109.5, 109.51, 110.0, **two) == (0.168, 109.5)


def test_ideal_orders_unstuck_then_the_close_grid_over_the_rest() -> None:
    params = params_of(
        unstuck_threshold=0.8, unstuck_close_pct=0.05, unstuck_loss_allowance_pct=0.02,
        close_grid_min_markup=0.005, close_grid_markup_range=0.01,
    )  # fmt: skip
    rows = ideal_orders(LONG, 1000.0, 1000.0, 10.0, 100.0, 90.49, 90.5, np.full(3, 90.0),
                        FINE, params)  # fmt: skip
    kinds = rows[:, 2].tolist()
    assert kinds.count(KIND_UNSTUCK) == 1
    u = rows[rows[:, 2] == KIND_UNSTUCK][0]
    assert (u[0], u[1]) == (-0.553, 90.5)
    c = rows[rows[:, 2] == KIND_CLOSE_GRID]
    # 9.447 left (WE 0.9447): 2.5 @ 100.5 + 0.9447 = 101.4447 -> 101.45, 6.947 -> 101.20 (.1947
    # up), 4.447 -> 100.95 (.9447), 1.947 -> 100.70 (.6947)
    assert c[:, 1].tolist() == [100.70, 100.95, 101.2, 101.45]
    assert round(-c[:, 0].sum(), 9) == 9.447


# ---------------------------------------------------------------------------------------------
# enforce_exposure_limit: a position more than 1% past its WEL is brought back to it.


def test_exposure_limit_enforced_at_the_book() -> None:
    from bot.core.enforce import exposure_close

    on = params_of(enforce_exposure_limit=True)
    off = params_of()
    # Balance fell to 900 under long 10 @ 100 (WE 1.111 > 1.01 x WEL 1): 10 - 900 / 100 = 1.0
    # coin closes at the ask.
    assert exposure_close(LONG, 900.0, 10.0, 100.0, 95.0, 95.01, FINE, on) == (1.0, 95.01)
    assert exposure_close(SHORT, 900.0, 10.0, 100.0, 105.0, 105.01, FINE, on) == (1.0, 105.0)
    # Off (the default), or within the 1% tolerance (balance 992: WE 1.008): nothing.
    assert exposure_close(LONG, 900.0, 10.0, 100.0, 95.0, 95.01, FINE, off) == (0.0, 0.0)
    assert exposure_close(LONG, 992.0, 10.0, 100.0, 95.0, 95.01, FINE, on) == (0.0, 0.0)
    # 10 - 985 / 100 = 0.15 past at WE 1.0152: rounded up to the qty step, 0.15.
    assert exposure_close(LONG, 985.0, 10.0, 100.0, 95.0, 95.01, FINE, on) == (0.15, 95.01)
    # In the order set: the exposure close first, then the close grid over the 9 coins left.
    rows = ideal_orders(
        LONG, 900.0, 900.0, 10.0, 100.0, 95.0, 95.01, np.full(3, 100.0), FINE, on
    )  # fmt: skip
    kinds = rows[:, 2].tolist()
    assert KIND_EXPOSURE_LIMIT in kinds
    assert not any(k in (KIND_ENTRY_INITIAL, KIND_ENTRY_GRID) for k in kinds)
    closes_left = rows[rows[:, 2] == KIND_CLOSE_GRID]
    assert round(-closes_left[:, 0].sum(), 9) == 9.0

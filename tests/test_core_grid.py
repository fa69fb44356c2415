"""The sizing core's grids, as a trader sees them: no ladder ever takes a position past its
wallet exposure limit, every order is one the exchange accepts, entries and closes sit on the
right side of the book in the right order, and closes add up to the position exactly.

Also the bookkeeping the backtester shares with the venue (apply_fill, funding, the candle fill
model) and the EMAs the grids key off.
"""

from __future__ import annotations

import math
from decimal import Decimal

import annotated_types as at
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import SideConfig, side_params_array
from bot.core import (
    apply_fill,
    candle_low_first,
    close_grid,
    ema_alphas,
    ema_seed,
    ema_update,
    funding_payment,
    ideal_orders,
    initial_entry_price,
    order_fills,
    round_dn,
    round_up,
    unrealized_pnl,
    unstuck_order,
)
from bot.core.params import (
    KIND_CLOSE_GRID,
    KIND_ENTRY_GRID,
    KIND_ENTRY_INITIAL,
    KIND_EXPOSURE_LIMIT,
    KIND_UNSTUCK,
    LONG,
    M_MIN_COST,
    M_MIN_QTY,
    M_PRICE_STEP,
    M_QTY_STEP,
    MAX_ORDERS,
    SHORT,
)
from bot.markets import load_markets

PROPS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
ENTRY_KINDS = (KIND_ENTRY_INITIAL, KIND_ENTRY_GRID)
CLOSE_KINDS = (KIND_CLOSE_GRID, KIND_UNSTUCK, KIND_EXPOSURE_LIMIT)
REL = 1e-9  # float noise allowed on money comparisons


def market(qty_step: float, price_step: float, min_qty: float, min_cost: float) -> np.ndarray:
    return np.array([qty_step, price_step, min_qty, min_cost], dtype=np.float64)


def steps_of(x: float, step: float) -> int:
    return round(x / step)


def on_step(x: float, step: float) -> bool:
    # What the exchange sees is the decimal text of the float: it must be a whole multiple of
    # the step's decimal text (x / step in floats carries noise that grows with x / step).
    return Decimal(repr(float(x))) % Decimal(repr(float(step))) == 0


# ---------------------------------------------------------------------------------------------
# Strategies: every SideConfig range, read from the config model itself so they cannot drift.


def _field_floats(name: str) -> st.SearchStrategy[float]:
    lo = hi = None
    excl_lo = False
    for m in SideConfig.model_fields[name].metadata:
        if isinstance(m, at.Ge):
            lo = float(m.ge)
        elif isinstance(m, at.Gt):
            lo, excl_lo = float(m.gt), True
        elif isinstance(m, at.Le):
            hi = float(m.le)
    assert lo is not None and hi is not None, name
    return st.floats(lo, hi, exclude_min=excl_lo, allow_nan=False)


@st.composite
def side_configs(draw: st.DrawFn) -> SideConfig:
    kw: dict = {}
    for name, field in SideConfig.model_fields.items():
        if name == "enabled":
            kw[name] = draw(st.sampled_from([True, True, True, False]))
        elif name == "enforce_exposure_limit":
            kw[name] = draw(st.booleans())
        elif name == "n_positions":
            kw[name] = draw(st.one_of(st.integers(1, 10), st.integers(1, 1000)))
        elif name.endswith("_trailing_grid_ratio"):
            kw[name] = 0.0  # the grid's properties; trailing has its own (test_core_trailing)
        elif name.startswith("filter_"):
            kw[name] = 0.0  # the forager picks coins, not orders (test_forager)
        elif name == "total_wallet_exposure_limit":
            # Mostly realistic limits, sometimes anything the config allows.
            kw[name] = draw(st.one_of(st.floats(0.05, 5.0), _field_floats(name)))
        elif field.annotation is float:
            kw[name] = draw(_field_floats(name))
    return SideConfig(**kw)


BUNDLED = sorted(load_markets())


@st.composite
def markets_and_prices(draw: st.DrawFn) -> tuple[np.ndarray, float]:
    """A market (bundled or random, with steps in proportion to the price) and a price on it."""
    price = 10.0 ** draw(st.floats(-4.0, 5.0))
    if draw(st.booleans()):
        spec = load_markets()[draw(st.sampled_from(BUNDLED))]
        m = spec.as_array()
        price = max(price, 1000.0 * spec.price_step)  # a price the market could quote
    else:
        mag = math.floor(math.log10(price))
        price_step = 10.0 ** (mag - draw(st.integers(1, 6)))
        qty_step = 10.0 ** (-mag + draw(st.integers(-2, 2)))
        min_qty = qty_step * draw(st.integers(1, 10))
        min_cost = draw(st.sampled_from([0.0, 1.0, 5.0, 10.0, 100.0]))
        m = market(qty_step, price_step, min_qty, min_cost)
    return m, round_dn(price, m[M_PRICE_STEP])


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    side = draw(st.sampled_from([LONG, SHORT]))
    cfg = draw(side_configs())
    params = side_params_array(cfg)
    m, price = draw(markets_and_prices())
    balance = 10.0 ** draw(st.floats(1.0, 7.0))
    bid = price
    ask = round(price + m[M_PRICE_STEP], 12)
    emas = price * (1.0 + np.array(draw(st.lists(st.floats(-0.05, 0.05), min_size=3, max_size=3))))
    wel = cfg.wallet_exposure_limit
    state = draw(st.sampled_from(["flat", "partial", "at", "past"]))
    # Long positions are mostly underwater (average above the price), shorts mirrored.
    pos_price = price * (1.0 + side * draw(st.floats(-0.1, 0.5)))
    frac = {
        "flat": 0.0,
        "partial": draw(st.floats(0.01, 0.99)),
        "at": 1.0,
        "past": draw(st.floats(1.0, 3.0)),
    }[state]
    qstep = m[M_QTY_STEP]
    # A position the exchange reports: a clean multiple of the step (as decimal text).
    size = float(
        Decimal(round(frac * wel * balance / pos_price / qstep)) * Decimal(repr(float(qstep)))
    )
    if size <= 0.0:
        pos_price = 0.0
        size = 0.0
    peak = balance * (1.0 + draw(st.floats(0.0, 0.5)))
    return dict(
        side=side,
        cfg=cfg,
        params=params,
        market=m,
        balance=balance,
        peak=peak,
        size=size,
        pos_price=pos_price,
        bid=bid,
        ask=ask,
        emas=emas,
    )


def orders_of(s: dict) -> np.ndarray:
    return ideal_orders(
        s["side"],
        s["balance"],
        s["peak"],
        s["size"],
        s["pos_price"],
        s["bid"],
        s["ask"],
        s["emas"],
        s["market"],
        s["params"],
    )


# ---------------------------------------------------------------------------------------------
# Properties over wide random parameters, long and short.


@PROPS
@given(scenarios())
def test_entry_ladder_never_passes_the_wallet_exposure_limit(s: dict) -> None:
    side, balance, m = s["side"], s["balance"], s["market"]
    wel = s["cfg"].wallet_exposure_limit
    orders = orders_of(s)
    entries = orders[np.isin(orders[:, 2], ENTRY_KINDS)]
    we0 = s["size"] * s["pos_price"] / balance
    if we0 >= wel * (1 - REL):
        assert len(entries) == 0, "a position at or past its limit must get no entry"
        return
    size, pos_price = s["size"], s["pos_price"]
    one_step = 0.0
    for qty, price, _ in entries:
        size, pos_price, pnl = apply_fill(side, size, pos_price, qty, price)
        assert pnl == 0.0
        one_step = max(one_step, m[M_QTY_STEP] * price / balance)
        assert size * pos_price / balance <= wel * (1 + REL) + one_step


@PROPS
@given(scenarios())
def test_every_order_is_on_the_exchange_steps_and_minimums(s: dict) -> None:
    m = s["market"]
    orders = orders_of(s)
    assert len(orders) < MAX_ORDERS
    n_closes = int((orders[:, 2] == KIND_CLOSE_GRID).sum())
    for qty, price, kind in orders:
        assert price > 0.0, f"non-positive price {price} ({kind=})"
        assert qty != 0.0
        assert on_step(price, m[M_PRICE_STEP]), (price, m[M_PRICE_STEP])
        assert on_step(abs(qty), m[M_QTY_STEP]), (qty, m[M_QTY_STEP])
        # Exempt: a close of the whole remainder, too small to split (the whole position, or
        # all that the unstuck close leaves to the close grid).
        whole_remainder = (kind == KIND_CLOSE_GRID and n_closes == 1) or (
            kind in CLOSE_KINDS
            and steps_of(abs(qty), m[M_QTY_STEP]) == steps_of(s["size"], m[M_QTY_STEP])
        )
        if not whole_remainder:
            assert abs(qty) >= m[M_MIN_QTY] * (1 - REL), (qty, kind)
            assert abs(qty) * price >= m[M_MIN_COST] * (1 - REL), (qty, price, kind)


@PROPS
@given(scenarios())
def test_entries_and_closes_sit_on_the_right_side_in_order(s: dict) -> None:
    side, m = s["side"], s["market"]
    orders = orders_of(s)
    entries = orders[np.isin(orders[:, 2], ENTRY_KINDS)]
    closes = orders[orders[:, 2] == KIND_CLOSE_GRID]
    # the unstuck and exposure-limit closes, both at the book
    unstuck = orders[np.isin(orders[:, 2], (KIND_UNSTUCK, KIND_EXPOSURE_LIMIT))]
    assert len(entries) + len(closes) + len(unstuck) == len(orders)
    # Entries add to the position (long buys, short sells), closes reduce it.
    assert np.all(np.sign(entries[:, 0]) == side)
    assert np.all(np.sign(closes[:, 0]) == -side)
    assert np.all(np.sign(unstuck[:, 0]) == -side)
    assert len(unstuck) <= 2
    ep, cp = entries[:, 1], closes[:, 1]
    if side == LONG:
        assert np.all(ep <= s["bid"])
        assert np.all(np.diff(ep) < 0), "long entries must be strictly decreasing"
        assert np.all(cp >= s["ask"])
        assert np.all(np.diff(cp) > 0), "long closes must be strictly increasing"
    else:
        assert np.all(ep >= s["ask"])
        assert np.all(np.diff(ep) > 0), "short entries must be strictly increasing"
        assert np.all(cp <= s["bid"])
        assert np.all(np.diff(cp) < 0), "short closes must be strictly decreasing"
    if len(entries):
        # Flat: the initial entry first. With a position, the first may be the rest of a partly
        # filled initial entry (Passivbot's rule, known-answer tests in test_core_passivbot.py).
        if s["size"] == 0.0:
            assert entries[0, 2] == KIND_ENTRY_INITIAL
        assert np.all(entries[1:, 2] == KIND_ENTRY_GRID)
    # The closes (with the unstuck close) add up to the position, exactly in qty steps.
    qstep = m[M_QTY_STEP]
    closed = sum(steps_of(abs(q), qstep) for q in np.concatenate([closes, unstuck])[:, 0])
    assert closed == steps_of(s["size"], qstep)


@PROPS
@given(scenarios())
def test_disabled_side_places_no_entries_but_still_closes(s: dict) -> None:
    params = s["params"].copy()
    params[0] = 0.0  # P_ENABLED
    orders = orders_of({**s, "params": params})
    assert not np.isin(orders[:, 2], ENTRY_KINDS).any()
    qstep = s["market"][M_QTY_STEP]
    closed = sum(steps_of(abs(q), qstep) for q in orders[:, 0])
    assert closed == steps_of(s["size"], qstep)


@PROPS
@given(scenarios())
def test_initial_entry_price_keys_off_the_ema_band(s: dict) -> None:
    side, m, emas, cfg = s["side"], s["market"], s["emas"], s["cfg"]
    dist = cfg.entry_initial_ema_dist
    p = initial_entry_price(side, s["bid"], s["ask"], emas, m, s["params"])
    if side == LONG:
        assert p == round_dn(min(s["bid"], emas.min() * (1 - dist)), m[M_PRICE_STEP])
    else:
        assert p == round_up(max(s["ask"], emas.max() * (1 + dist)), m[M_PRICE_STEP])
    orders = orders_of({**s, "size": 0.0, "pos_price": 0.0})
    if len(orders):
        assert orders[0, 2] == KIND_ENTRY_INITIAL
        assert orders[0, 1] == p


@PROPS
@given(scenarios())
def test_unstuck_only_when_stuck_and_within_the_loss_allowance(s: dict) -> None:
    side, cfg, balance = s["side"], s["cfg"], s["balance"]
    qty, price = unstuck_order(
        side,
        balance,
        s["peak"],
        s["size"],
        s["pos_price"],
        s["bid"],
        s["ask"],
        s["emas"],
        s["market"],
        s["params"],
    )
    if qty == 0.0:
        return
    we = s["size"] * s["pos_price"] / balance
    assert we > cfg.unstuck_threshold * cfg.wallet_exposure_limit * (1 - REL)
    assert 0.0 < qty <= s["size"]
    _, _, pnl = apply_fill(side, s["size"], s["pos_price"], -side * qty, price)
    # Passivbot's allowance: unstuck_loss_allowance_pct x total_wallet_exposure_limit.
    loss_pct = cfg.unstuck_loss_allowance_pct * cfg.total_wallet_exposure_limit
    allowance = balance - s["peak"] * (1 - loss_pct)
    assert -pnl <= allowance * (1 + REL) + 1e-9
    # It fires at the book, once the book has reached the EMA band (+ unstuck_ema_dist).
    m, dist = s["market"], cfg.unstuck_ema_dist
    if side == LONG:
        assert price == s["ask"]
        assert price >= round_up(s["emas"].max() * (1 + dist), m[M_PRICE_STEP])
    else:
        assert price == s["bid"]
        assert price <= round_dn(s["emas"].min() * (1 - dist), m[M_PRICE_STEP])


# ---------------------------------------------------------------------------------------------
# Worked examples.

FINE = market(0.001, 0.01, 0.001, 5.0)  # qty step 0.001, price step 0.01, min 0.001 / $5


def params_of(**kw: float) -> np.ndarray:
    return side_params_array(SideConfig(**kw))


def test_default_ladder_ends_on_the_limit_within_one_qty_step() -> None:
    # balance 10000, TWEL 1.5 over 3 positions -> WEL 0.5 -> $5000 of BTC at most.
    spec = load_markets()["BTCUSDT"]
    m = spec.as_array()
    params = params_of(total_wallet_exposure_limit=1.5, n_positions=3)
    emas = np.array([60000.0, 60000.0, 60000.0])
    for side in (LONG, SHORT):
        orders = ideal_orders(side, 10000.0, 10000.0, 0.0, 0.0, 60000.0, 60000.1, emas, m, params)
        assert len(orders) >= 3
        size = pos_price = 0.0
        for qty, price, _ in orders:
            size, pos_price, _ = apply_fill(side, size, pos_price, qty, price)
        we = size * pos_price / 10000.0
        assert 0.5 - 0.001 * 60000.0 * 1.5 / 10000.0 < we <= 0.5


def test_short_closes_with_markups_past_100pct_stay_positive() -> None:
    # Markups up to 0.5 + 5.0: the far short take-profits would be below zero.
    params = params_of(
        close_grid_min_markup=0.5, close_grid_markup_range=5.0, close_grid_qty_pct=0.1
    )
    m = market(0.001, 0.01, 0.001, 0.0)
    out = np.zeros((MAX_ORDERS, 3))
    n = close_grid(SHORT, 100.0, 1.0, 100.0, 99.99, 100.0, m, params, out, 0)
    assert np.all(out[:n, 1] > 0.0)
    assert round(out[:n, 0].sum(), 9) == 1.0


@pytest.mark.parametrize("side", [LONG, SHORT])
def test_closes_at_an_off_tick_book_are_put_on_the_tick(side: int) -> None:
    # A book one float ulp off the 0.0001 tick (found by the property above): the exposure-limit
    # close and the unstuck close, both priced at the book, must still be on the tick.
    params = params_of(
        total_wallet_exposure_limit=0.5, n_positions=1, enforce_exposure_limit=True,
        unstuck_threshold=0.5, unstuck_close_pct=0.1, unstuck_ema_dist=0.0,
        unstuck_loss_allowance_pct=0.5,
    )  # fmt: skip
    m = market(1.0, 0.0001, 1.0, 5.0)
    price = 31622.7766
    bid, ask = (price, 31622.776700000006) if side == LONG else (31622.776599999994, price)
    emas = np.array([price, price, price])
    orders = ideal_orders(side, 1e5, 1e5, 2.0, price, bid, ask, emas, m, params)
    kinds = {int(k) for k in orders[:, 2]}
    assert {KIND_EXPOSURE_LIMIT, KIND_UNSTUCK} <= kinds, orders
    for _, p, kind in orders:
        assert on_step(p, 0.0001), (p, kind)
    at_book = orders[np.isin(orders[:, 2], (KIND_EXPOSURE_LIMIT, KIND_UNSTUCK)), 1]
    # the book's own tick: the noise is dropped, the price is not moved a tick
    assert np.all(at_book == (31622.7767 if side == LONG else 31622.7766))


# ---------------------------------------------------------------------------------------------
# Bookkeeping: fills, pnl, funding, the candle fill model.


def test_apply_fill_long_by_hand() -> None:
    # Buy 1 @ 100, buy 1 @ 80 -> 2 @ 90.
    size, price, pnl = apply_fill(LONG, 0.0, 0.0, 1.0, 100.0)
    assert (size, price, pnl) == (1.0, 100.0, 0.0)
    size, price, pnl = apply_fill(LONG, size, price, 1.0, 80.0)
    assert (size, price, pnl) == (2.0, 90.0, 0.0)
    # Sell 0.5 @ 110: realizes 0.5*(110-90) = 10, average unchanged.
    size, price, pnl = apply_fill(LONG, size, price, -0.5, 110.0)
    assert (size, price, pnl) == (1.5, 90.0, 10.0)
    # Sell 1.5 @ 85: realizes 1.5*(85-90) = -7.5 and leaves the position flat.
    size, price, pnl = apply_fill(LONG, size, price, -1.5, 85.0)
    assert (size, price, pnl) == (0.0, 0.0, -7.5)


def test_apply_fill_short_by_hand() -> None:
    # Sell 2 @ 100, sell 1 @ 130 -> 3 @ (200 + 130)/3 = 110.
    size, price, pnl = apply_fill(SHORT, 0.0, 0.0, -2.0, 100.0)
    size, price, pnl = apply_fill(SHORT, size, price, -1.0, 130.0)
    assert size == 3.0 and price == pytest.approx(110.0, rel=1e-15) and pnl == 0.0
    # Buy 1 @ 90: a short gains 1*(110-90) = 20.
    size, price, pnl = apply_fill(SHORT, size, price, 1.0, 90.0)
    assert size == 2.0 and price == pytest.approx(110.0) and pnl == pytest.approx(20.0)
    # A buy beyond the position is reduce-only: 5 @ 120 closes the 2 left, loss 2*10 = 20.
    size, price, pnl = apply_fill(SHORT, size, price, 5.0, 120.0)
    assert (size, price) == (0.0, 0.0) and pnl == pytest.approx(-20.0)
    assert unrealized_pnl(SHORT, 2.0, 110.0, 100.0) == pytest.approx(20.0)
    assert unrealized_pnl(LONG, 2.0, 110.0, 100.0) == pytest.approx(-20.0)


def test_funding_sign_long_pays_when_rate_positive() -> None:
    # 0.1 BTC at mark 50000, rate 0.01% -> 5000 * 0.0001 = 0.5 USDT.
    assert funding_payment(LONG, 0.1, 50000.0, 0.0001) == pytest.approx(0.5)
    assert funding_payment(SHORT, 0.1, 50000.0, 0.0001) == pytest.approx(-0.5)
    assert funding_payment(LONG, 0.1, 50000.0, -0.0001) == pytest.approx(-0.5)
    assert funding_payment(SHORT, 0.1, 50000.0, -0.0001) == pytest.approx(0.5)


def test_candle_fill_model() -> None:
    # The nearer extreme to the open comes first; a tie goes to the low.
    assert candle_low_first(100.0, 110.0, 95.0)
    assert not candle_low_first(100.0, 102.0, 90.0)
    assert candle_low_first(100.0, 105.0, 95.0)
    # Strict: a touch does not fill.
    assert not order_fills(1.0, 100.0, 105.0, 100.0)
    assert order_fills(1.0, 100.0, 105.0, 99.99)
    assert not order_fills(-1.0, 100.0, 100.0, 95.0)
    assert order_fills(-1.0, 100.0, 100.01, 95.0)
    # A buy above the whole candle fills; a sell above the high does not.
    assert order_fills(1.0, 120.0, 110.0, 105.0)
    assert not order_fills(-1.0, 120.0, 110.0, 105.0)


# ---------------------------------------------------------------------------------------------
# EMAs.


def test_ema_alphas_use_the_geometric_mean_span() -> None:
    a = ema_alphas(240.0, 720.0)
    mid = math.sqrt(240.0 * 720.0)  # 415.69 minutes
    assert a.tolist() == pytest.approx([2 / 241, 2 / 721, 2 / (mid + 1)], rel=1e-15)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(1e-4, 1e5), min_size=1, max_size=300),
    st.floats(1.0, 1000.0),
    st.floats(1.0, 1000.0),
)
def test_ema_seed_matches_a_hand_loop(closes: list[float], s0: float, s1: float) -> None:
    alphas = ema_alphas(s0, s1)
    expected = [closes[0]] * 3
    for c in closes[1:]:
        expected = [e * (1 - a) + c * a for e, a in zip(expected, alphas, strict=True)]
    got = ema_seed(np.array(closes), alphas)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    # Seeding then updating is the same as seeding the longer series.
    ema_update(got, alphas, 42.0)
    assert got.tolist() == pytest.approx(
        ema_seed(np.array([*closes, 42.0]), alphas).tolist(), rel=1e-12
    )

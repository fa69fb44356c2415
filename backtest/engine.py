"""The candle loop: one account, several coins, long and short, numba-compiled.

Every order comes from ``bot.core.ideal_orders`` and every fill is booked by
``bot.core.account``, the same functions the live bot and the simulated venue call. The loop
only decides *when* to ask: the order grid of a position depends on its size, price and the
balance, so its nearest orders are cached until its position changes or the balance leaves the
window they hold for (``backtest.triggers``), and a candle that cannot reach them costs a few
comparisons. A flat side's initial entry follows the EMAs, so its price is computed every
candle (one cheap call); a side that trails asks the core every candle.

Fill model (DESIGN.md, README "The fill model"): orders computed from the state after candle
k-1 (bid = ask = close of k-1, EMAs through k-1) rest through candle k. At the top of candle k
the outside events due by its open are applied (``bot.core.book.apply_event``: deposit,
withdraw, reduce, reduce_all, deleverage; numba's cache of this module does not see a change
in a callee elsewhere, so a change there touches this docstring), then funding
(at the open of each candle whose open time is a multiple of 8 hours), then the liquidation
check with the positions held; then the candle's fills in the order of
``bot.core.book.candle_fill_order`` (buys when low < price, sells when high > price, at the
order's price with the maker fee), each booked by ``bot.core.book.book_fill``; then the
liquidation check again (``liquidation_prices`` / ``book_liquidation``). Orders created by a
fill in candle k rest from candle k+1. Trailing orders (``bot.core.trailing``) follow each
position's price extremes through candle k-1 since the candle it last changed in (a grid
ratio's first phase hands over when its share has no room left, ``bot.core.grid._entries``).
The simulated venue runs the same sequence through the same functions.

The equity hard stop (``bot.core.hard_stop``, off by default) samples the equity at each
trading candle's close, after everything of the candle; the tier it returns governs the next
candle (``hsl_permissions``): orange opens nothing new (and, in tp_only mode, drops every
entry), red closes every position at the top of the next candle, before its outside events and
funding, at the previous closes with the taker fee (``bot.core.book.book_market_closes``), and
rests no order at all until the cooldown restarts it. Deposits and withdrawals scale its peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from backtest.triggers import BALANCE_WINDOW, reached, window_orders
from bot.core.account import funding_payment, unrealized_pnl
from bot.core.book import (
    E_KIND,
    E_TIME,
    EV_DEPOSIT,
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
)
from bot.core.ema import ema_alphas, ema_step
from bot.core.enforce import exposure_close
from bot.core.forager import N_FORAGE, candle_values, forager_alphas, forager_slots, forager_update
from bot.core.grid import ideal_orders_into, initial_entry_price, unstuck_order
from bot.core.hard_stop import (
    H_SCORE,
    HP_ENABLED,
    N_H,
    N_HP,
    TIER_GREEN,
    hsl_init,
    hsl_permissions,
    hsl_sample,
    hsl_transfer,
)
from bot.core.margin import account_at_risk
from bot.core.params import (
    KIND_HARD_STOP,
    KIND_LIQUIDATION,
    KIND_OUTSIDE,
    M_PRICE_STEP,
    M_QTY_STEP,
    MAX_ORDERS,
    N_MARKET,
    P_CLOSE_TRAILING_GRID_RATIO,
    P_EMA_SPAN_0,
    P_EMA_SPAN_1,
    P_ENABLED,
    P_ENTRY_TRAILING_GRID_RATIO,
    P_FILTER_VOLATILITY_WINDOW,
    P_FILTER_VOLUME_DROP_PCT,
    P_FILTER_VOLUME_WINDOW,
)
from bot.core.trailing import N_TRAIL, trail_reset, trail_update
from bot.core.vault import entries_blocked, entry_over_cap

__all__ = ["EngineInputs", "EngineOutput", "run_engine", "F_COLUMNS"]

# Columns of the fills array.
F_K = 0  # candle index
F_SYMBOL = 1  # coin index
F_SIDE = 2  # 1 long, -1 short
F_QTY = 3  # signed: + buy, - sell
F_PRICE = 4
F_FEE = 5
F_PNL = 6  # realized pnl (gross of fee)
F_BALANCE = 7  # balance after the fill
F_WE = 8  # wallet exposure of this position after the fill
F_KIND = 9  # bot.core.params KIND_*
F_POS_SIZE = 10
F_POS_PRICE = 11
N_F = 12
F_COLUMNS = (
    "k", "symbol", "side", "qty", "price", "fee", "pnl", "balance", "wallet_exposure", "kind",
    "pos_size", "pos_price",
)  # fmt: skip

FUNDING_INTERVAL_MS = 8 * 3600 * 1000


@dataclass(frozen=True)
class EngineInputs:
    """Everything the kernel needs, as arrays (built by ``backtest.runner``)."""

    timestamps: np.ndarray  # int64 (n,)
    ohlcv: np.ndarray  # float64 (n_symbols, n, 5)
    markets: np.ndarray  # float64 (n_symbols, N_MARKET)
    tiers: np.ndarray  # float64 (n_symbols, depth, 5), see bot.core.margin.stack_tiers
    params_long: np.ndarray  # float64 (N_PARAMS,)
    params_short: np.ndarray
    n_positions_long: int
    n_positions_short: int
    starting_balance: float
    maker_fee: float
    funding_rate: float
    trade_start: int  # candles before this only warm up the EMAs
    # outside events, (n_events, bot.core.book.N_E) sorted by time; backtest.events builds them
    events: np.ndarray = field(default_factory=lambda: np.zeros((0, N_E)))
    # the funding rate charged at the top of each candle, (n_symbols, n), 0: none
    # (backtest.funding: the exchange's history); None: funding_rate every 8 h
    funding: np.ndarray | None = None
    # A vault's risk-aware sizing (`gridbot stress`; the defaults change nothing): the core
    # sizes from balance x sizing_fraction (the cash buffer kept out), and new entries are
    # blocked (never resized) while total notional / equity at the previous closes exceeds
    # leverage_cap (0: no cap) or (equity - maintenance margin) / equity is below
    # margin_buffer_pct.
    sizing_fraction: float = 1.0
    leverage_cap: float = 0.0
    margin_buffer_pct: float = 0.0
    # the forager (bot.core.forager): per coin, the first candle open time (ms) at which it may
    # open a position (approved, not ignored, old enough); None: every coin from the start
    eligible_from_ms: np.ndarray | None = None
    # the equity hard stop's params (bot.config.hard_stop_params_array; None: off) and the fee
    # its market closes pay
    hard_stop: np.ndarray | None = None
    taker_fee: float = 0.0


@dataclass(frozen=True)
class EngineOutput:
    fills: np.ndarray  # (n_fills, N_F)
    balance: np.ndarray  # (n,) balance at each candle's close
    equity: np.ndarray  # (n,) equity at each candle's close
    positions: np.ndarray  # (n, n_symbols, 4): long size, long price, short size, short price
    liquidated_k: int  # candle index of the liquidation, -1 when none
    fees_paid: float
    funding_paid: float
    realized_pnl: float
    transfers: float = 0.0  # net deposits (negative: withdrawn) by outside events
    insurance_deficit: float = 0.0  # what a liquidation left below zero (the fund's loss)
    # (n,) True where the vault's leverage cap or margin buffer blocked new entries
    entries_blocked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    # (n,) int8 the hard stop's tier sampled at each candle's close (bot.core.hard_stop TIER_*;
    # 0 while it is off), -1 on candles not sampled (warm-up, after a liquidation)
    hard_stop_tier: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    # the hard stop's state after the last candle (bot.core.hard_stop H_*)
    hard_stop_state: np.ndarray = field(default_factory=lambda: np.zeros(N_H))
    # (n,) its score (min of the drawdown from the peak and its EMA) at each sampled close; nan
    # where not sampled; the trigger's score while halted; 0 while off
    hard_stop_score: np.ndarray = field(default_factory=lambda: np.zeros(0))


@njit(cache=True)
def _record(fills, nf, k, s, side, qty, price, fee, pnl, balance, size, pos_price, kind):  # noqa: ANN001, ANN202
    if nf < fills.shape[0]:
        fills[nf, F_K] = k
        fills[nf, F_SYMBOL] = s
        fills[nf, F_SIDE] = side
        fills[nf, F_QTY] = qty
        fills[nf, F_PRICE] = price
        fills[nf, F_FEE] = fee
        fills[nf, F_PNL] = pnl
        fills[nf, F_BALANCE] = balance
        fills[nf, F_WE] = size * pos_price / balance if size > 0.0 and balance > 0.0 else 0.0
        if size > 0.0 and balance <= 0.0:
            fills[nf, F_WE] = np.inf
        fills[nf, F_KIND] = kind
        fills[nf, F_POS_SIZE] = size
        fills[nf, F_POS_PRICE] = pos_price
    return nf + 1


@njit(cache=True)
def _book_rows(fills, nf, k, rows, n_rows, size, pprice, kind):  # noqa: ANN001, ANN202
    """Record rows booked by the core (liquidation closes, outside reductions) as fills."""
    for r in range(n_rows):
        s = int(rows[r, R_SYMBOL])
        j = 0 if rows[r, R_SIDE] > 0 else 1
        nf = _record(
            fills, nf, k, s, int(rows[r, R_SIDE]), rows[r, R_QTY], rows[r, R_PRICE],
            rows[r, R_FEE], rows[r, R_PNL], rows[r, R_BALANCE], size[j, s], pprice[j, s], kind,
        )  # fmt: skip
    return nf


@njit(cache=True)
def _with_room(fills: np.ndarray, nf: int, more: int) -> np.ndarray:
    """``fills`` with room for ``more`` rows after the first ``nf`` (doubled when full, so a
    busy run grows its buffer a few times instead of running twice)."""
    if nf + more <= fills.shape[0]:
        return fills
    bigger = np.zeros((max(2 * fills.shape[0], nf + more), fills.shape[1]))
    bigger[:nf] = fills[:nf]
    return bigger


@njit(cache=True)
def _kernel(  # noqa: PLR0913, PLR0915, C901 -- the njit candle loop: one compiled function keeps it fast
    timestamps: np.ndarray,
    ohlcv: np.ndarray,
    markets: np.ndarray,
    tiers: np.ndarray,
    params_long: np.ndarray,
    params_short: np.ndarray,
    n_positions_long: int,
    n_positions_short: int,
    starting_balance: float,
    maker_fee: float,
    funding: np.ndarray,
    trade_start: int,
    events: np.ndarray,
    fills: np.ndarray,
    sizing_fraction: float,
    leverage_cap: float,
    margin_buffer_pct: float,
    eligible_from: np.ndarray,
    balance_window: float,
    ask_every_candle: bool,
    hsl_params: np.ndarray,
    taker_fee: float,
):  # noqa: ANN202
    n_sym = ohlcv.shape[0]
    n = ohlcv.shape[1]
    balance = starting_balance
    balance_peak = starting_balance
    fees_paid = 0.0
    funding_paid = 0.0
    realized = 0.0
    transfers = 0.0
    deficit = 0.0
    nf = 0
    liquidated_k = -1
    n_ev = events.shape[0]
    ei = 0

    # per side (0 long, 1 short) and coin: rows are contiguous arrays for the margin checks
    size = np.zeros((2, n_sym))
    pprice = np.zeros((2, n_sym))
    # views made once: making them per candle costs more than the check they feed
    size_l, size_s, pprice_l, pprice_s = size[0], size[1], pprice[0], pprice[1]
    # the positions the resting orders were sized from (differ only after an outside event)
    ord_size = np.zeros((2, n_sym))
    ord_pprice = np.zeros((2, n_sym))
    sides = np.array([1, -1])
    enabled = np.array([params_long[P_ENABLED] != 0.0, params_short[P_ENABLED] != 0.0])
    alphas = np.empty((2, 3))
    alphas[0] = ema_alphas(params_long[P_EMA_SPAN_0], params_long[P_EMA_SPAN_1])
    alphas[1] = ema_alphas(params_short[P_EMA_SPAN_0], params_short[P_EMA_SPAN_1])
    emas = np.empty((n_sym, 2, 3))
    for s in range(n_sym):
        emas[s, 0, :] = ohlcv[s, 0, 3]
        emas[s, 1, :] = ohlcv[s, 0, 3]
    # the forager's EMAs of volume and range per coin and side, and who may open when: slots
    # follow the ranking every candle once any side ranks or any coin waits to be eligible
    prms = (params_long, params_short)
    f_alphas = np.empty((2, N_FORAGE))
    f_on = np.zeros(2, dtype=np.bool_)
    for j in range(2):
        f_alphas[j] = forager_alphas(
            prms[j][P_FILTER_VOLUME_WINDOW], prms[j][P_FILTER_VOLATILITY_WINDOW]
        )
        f_on[j] = prms[j][P_FILTER_VOLUME_WINDOW] > 0.0 or prms[j][P_FILTER_VOLATILITY_WINDOW] > 0.0
    fema = np.empty((n_sym, 2, N_FORAGE))
    for s in range(n_sym):
        candle_values(ohlcv[s, 0, 1], ohlcv[s, 0, 2], ohlcv[s, 0, 3], ohlcv[s, 0, 4], fema[s, 0])
        fema[s, 1, :] = fema[s, 0, :]
    slots_every_candle = f_on[0] or f_on[1] or np.any(eligible_from > timestamps[0])
    elig = np.ones(n_sym, dtype=np.bool_)
    price_steps = np.ascontiguousarray(markets[:, M_PRICE_STEP])
    qty_steps = np.ascontiguousarray(markets[:, M_QTY_STEP])
    # cached nearest orders (backtest.triggers): valid for the position they were computed
    # from and for sizing balances in [trig_lo, trig_hi]; the close is exact at trig_bal only
    entry_trig = np.zeros((n_sym, 2))
    close_trig = np.zeros((n_sym, 2))
    close_bound = np.zeros((n_sym, 2))
    part_trig = np.zeros((n_sym, 2))
    trig_size = np.full((n_sym, 2), -1.0)
    trig_pprice = np.zeros((n_sym, 2))
    trig_bal = np.zeros((n_sym, 2))
    trig_lo = np.zeros((n_sym, 2))
    trig_hi = np.zeros((n_sym, 2))
    dirty = True
    # trailing: each position's price extremes since it last changed (bot.core.trailing); a
    # side that trails asks the core every candle (its orders follow the previous close)
    trails = np.zeros((n_sym, 2, N_TRAIL))
    for s in range(n_sym):
        trail_reset(trails[s, 0])
        trail_reset(trails[s, 1])
    trailing = np.array(
        [
            params_long[P_ENTRY_TRAILING_GRID_RATIO] != 0.0
            or params_long[P_CLOSE_TRAILING_GRID_RATIO] != 0.0,
            params_short[P_ENTRY_TRAILING_GRID_RATIO] != 0.0
            or params_short[P_CLOSE_TRAILING_GRID_RATIO] != 0.0,
        ]
    )
    use_trail = trailing[0] or trailing[1]
    sz0 = np.zeros((2, n_sym))
    pp0 = np.zeros((2, n_sym))

    out_balance = np.empty(n)
    out_equity = np.empty(n)
    out_pos = np.zeros((n, n_sym, 4))
    out_blocked = np.zeros(n, dtype=np.bool_)
    check_block = leverage_cap > 0.0 or margin_buffer_pct > 0.0
    lows = np.empty(n_sym)
    highs = np.empty(n_sym)
    refs = np.empty(n_sym)
    may_open = np.ones((n_sym, 2), dtype=np.bool_)
    buf = np.zeros((MAX_ORDERS, 3))
    em = np.empty(3)  # one coin side's EMAs
    prm = np.empty(params_long.shape[0])  # one side's params
    mk = np.empty(N_MARKET)  # one coin's market
    hit_side = np.zeros(2, dtype=np.bool_)
    no_liq = np.empty(0)
    ol = np.zeros((MAX_ORDERS, 3))
    osh = np.zeros((MAX_ORDERS, 3))
    # one candle's resting orders of both sides, for the core's fill order
    c_qty = np.zeros(2 * MAX_ORDERS)
    c_price = np.zeros(2 * MAX_ORDERS)
    c_pside = np.zeros(2 * MAX_ORDERS)
    c_kind = np.zeros(2 * MAX_ORDERS)
    c_order = np.zeros(2 * MAX_ORDERS, dtype=np.int64)
    rows = np.zeros((2 * n_sym, N_R))
    # the equity hard stop: its state, the tier in force and what that tier allows
    hsl_on = hsl_params[HP_ENABLED] != 0.0
    hsl = np.zeros(N_H)
    hsl_init(hsl, starting_balance)
    hsl_tier = TIER_GREEN
    hsl_new, hsl_add, hsl_panic = True, True, False
    out_tier = np.full(n, -1, dtype=np.int8)
    out_score = np.full(n, np.nan)

    for k in range(n):
        if k > 0:
            for s in range(n_sym):
                # a disabled side never opens a position in a backtest: its EMAs go unused
                c = ohlcv[s, k - 1, 3]
                for j in range(2):
                    if enabled[j]:
                        for i in range(3):  # scalars: a view per coin and candle costs more
                            emas[s, j, i] = ema_step(emas[s, j, i], alphas[j, i], c)
                    if f_on[j]:
                        forager_update(
                            fema[s, j], f_alphas[j], ohlcv[s, k - 1, 1], ohlcv[s, k - 1, 2], c,
                            ohlcv[s, k - 1, 4],
                        )  # fmt: skip
        trading = k >= trade_start and k > 0 and liquidated_k < 0
        # Orders resting in candle k were sized from the state after candle k-1.
        ord_balance = balance * sizing_fraction
        ord_peak = balance_peak * sizing_fraction
        # the resting orders' positions: ord_size / ord_pprice after an outside event
        after_event = False
        # Cached nearest orders and position slots are refreshed on the first trading candle
        # and after anything changed (a fill, funding, an event); warm-up candles leave them.
        recompute = dirty and trading
        if trading:
            dirty = False
            if use_trail:
                sz0[:, :] = size
                pp0[:, :] = pprice
        if trading and hsl_panic:
            # the hard stop fired at the previous close: every position closes at that close
            # by a market order (taker fee), before anything else of this candle
            for s in range(n_sym):
                refs[s] = ohlcv[s, k - 1, 3]
            balance, n_rows = book_market_closes(balance, size, pprice, refs, taker_fee, rows)
            for r in range(n_rows):
                fees_paid += rows[r, R_FEE]
                realized += rows[r, R_PNL]
            if balance > balance_peak:
                balance_peak = balance
            if n_rows > 0:
                fills = _with_room(fills, nf, n_rows)
                nf = _book_rows(fills, nf, k, rows, n_rows, size, pprice, KIND_HARD_STOP)
                dirty = True
        if trading and ei < n_ev and events[ei, E_TIME] <= timestamps[k]:
            # Outside events due by this candle's open, at the previous closes; the orders
            # resting in this candle stay as they were placed (sized before the events).
            ord_size[:, :] = size
            ord_pprice[:, :] = pprice
            after_event = True
            for s in range(n_sym):
                refs[s] = ohlcv[s, k - 1, 3]
            while ei < n_ev and events[ei, E_TIME] <= timestamps[k]:
                before = balance
                balance, balance_peak, n_rows = apply_event(
                    events[ei], balance, balance_peak, size, pprice, refs, qty_steps, rows
                )
                kind_ev = int(events[ei, E_KIND])
                if kind_ev == EV_DEPOSIT or kind_ev == EV_WITHDRAW:
                    transfers += balance - before
                    if hsl_on:  # a transfer is no gain or loss: the peak moves with the equity
                        upnl = 0.0
                        for s in range(n_sym):
                            upnl += unrealized_pnl(1, size[0, s], pprice[0, s], refs[s])
                            upnl += unrealized_pnl(-1, size[1, s], pprice[1, s], refs[s])
                        hsl_transfer(hsl, before + upnl, balance + upnl)
                for r in range(n_rows):
                    realized += rows[r, R_PNL]
                fills = _with_room(fills, nf, n_rows)
                nf = _book_rows(fills, nf, k, rows, n_rows, size, pprice, KIND_OUTSIDE)
                ei += 1
            dirty = True
        if trading:
            for s in range(n_sym):
                if funding[s, k] == 0.0:
                    continue
                for j in range(2):
                    if size[j, s] > 0.0:
                        pay = funding_payment(sides[j], size[j, s], ohlcv[s, k, 0], funding[s, k])
                        balance -= pay
                        funding_paid += pay
                        dirty = True
        if trading:
            # liquidation with the positions held coming into the candle
            for s in range(n_sym):
                lows[s] = ohlcv[s, k, 2]
                highs[s] = ohlcv[s, k, 1]
                refs[s] = ohlcv[s, k - 1, 3]  # the last price before the candle
            blocked = False
            if check_block:
                blocked = entries_blocked(
                    balance, size, pprice, refs, tiers, leverage_cap, margin_buffer_pct
                )
                out_blocked[k] = blocked
            if not hsl_add:
                blocked = True  # the hard stop's orange tp_only (and red): entries dropped
            liq = no_liq
            if account_at_risk(balance, size_l, pprice_l, size_s, pprice_s, lows, highs, tiers):
                liq = liquidation_prices(
                    balance, size, pprice, refs, lows, highs, tiers, price_steps
                )
            if liq.shape[0] == 0:
                nf_candle = nf
                if recompute or slots_every_candle:
                    osz = ord_size if after_event else size
                    for s in range(n_sym):
                        elig[s] = timestamps[k] >= eligible_from[s]
                    sl = forager_slots(
                        osz[0], n_positions_long, elig, fema[:, 0, :],
                        params_long[P_FILTER_VOLUME_WINDOW], params_long[P_FILTER_VOLATILITY_WINDOW],
                        params_long[P_FILTER_VOLUME_DROP_PCT],
                    )  # fmt: skip
                    ss = forager_slots(
                        osz[1], n_positions_short, elig, fema[:, 1, :],
                        params_short[P_FILTER_VOLUME_WINDOW],
                        params_short[P_FILTER_VOLATILITY_WINDOW],
                        params_short[P_FILTER_VOLUME_DROP_PCT],
                    )  # fmt: skip
                    for s in range(n_sym):
                        may_open[s, 0] = sl[s]
                        may_open[s, 1] = ss[s]
                for s in range(n_sym):
                    if hsl_panic:
                        break  # the hard stop is red: no order rests at all
                    prev_close = ohlcv[s, k - 1, 3]
                    o = ohlcv[s, k, 0]
                    hi = ohlcv[s, k, 1]
                    lo = ohlcv[s, k, 2]
                    hit_side[0] = False
                    hit_side[1] = False
                    # scratch copies, not views: a view per coin and candle costs more than this
                    for i in range(N_MARKET):
                        mk[i] = markets[s, i]
                    for j in range(2):
                        side = sides[j]
                        for i in range(3):
                            em[i] = emas[s, j, i]
                        for i in range(prm.shape[0]):  # cheaper than an array variable per side
                            prm[i] = params_long[i] if j == 0 else params_short[i]
                        pos_sz = ord_size[j, s] if after_event else size[j, s]
                        pos_pp = ord_pprice[j, s] if after_event else pprice[j, s]
                        if pos_sz == 0.0:
                            if blocked or not (enabled[j] and may_open[s, j] and hsl_new):
                                continue
                            # the core places an initial entry at or beyond the bid / ask (a
                            # tick of slack: its rounding tolerates float noise)
                            if (
                                (lo >= prev_close + mk[M_PRICE_STEP])
                                if side > 0
                                else (hi <= prev_close - mk[M_PRICE_STEP])
                            ) and not ask_every_candle:
                                continue
                            p0 = initial_entry_price(side, prev_close, prev_close, em, mk, prm)
                            if (side > 0 and lo < p0) or (side < 0 and hi > p0):
                                hit_side[j] = True
                            continue
                        if trailing[j] or ask_every_candle:
                            hit_side[j] = True
                            continue
                        if not (
                            trig_size[s, j] == pos_sz
                            and trig_pprice[s, j] == pos_pp
                            and trig_lo[s, j] <= ord_balance <= trig_hi[s, j]
                        ):
                            e, c, cb, pt, b_lo, b_hi = window_orders(
                                side, ord_balance, balance_window, pos_sz, pos_pp, em, mk, prm,
                                buf,
                            )  # fmt: skip
                            entry_trig[s, j], close_trig[s, j], close_bound[s, j] = e, c, cb
                            part_trig[s, j], trig_bal[s, j] = pt, ord_balance
                            trig_lo[s, j], trig_hi[s, j] = b_lo, b_hi
                            trig_size[s, j], trig_pprice[s, j] = pos_sz, pos_pp
                        # the nearest close is exact at the balance it was computed at only
                        c_trig = (
                            close_trig[s, j] if ord_balance == trig_bal[s, j] else close_bound[s, j]
                        )
                        if reached(
                            side, entry_trig[s, j], c_trig, part_trig[s, j], prev_close, hi, lo,
                            mk[M_PRICE_STEP],
                        ):  # fmt: skip
                            hit_side[j] = True
                        elif (
                            (hi > prev_close - mk[M_PRICE_STEP])
                            if side > 0
                            else (lo < prev_close + mk[M_PRICE_STEP])
                        ):
                            # unstuck and exposure-limit closes rest at the ask / bid, put on
                            # the tick: a tick of slack, as reached() keeps (the rounding's
                            # float tolerance can put them a hair inside the book)
                            uq, up = unstuck_order(
                                side, ord_balance, ord_peak, pos_sz, pos_pp, prev_close,
                                prev_close, em, mk, prm,
                            )  # fmt: skip
                            if uq > 0.0 and ((side > 0 and hi > up) or (side < 0 and lo < up)):
                                hit_side[j] = True
                            eq, ep = exposure_close(
                                side, ord_balance, pos_sz, pos_pp, prev_close, prev_close, mk, prm
                            )
                            if eq > 0.0 and ((side > 0 and hi > ep) or (side < 0 and lo < ep)):
                                hit_side[j] = True
                    if not (hit_side[0] or hit_side[1]):
                        continue
                    # Orders from the state after candle k-1, for the sides whose nearest order
                    # the candle reaches (the other side cannot fill); entry levels beyond the
                    # candle's extreme are left out (they could not fill either).
                    n_c = 0
                    for j in range(2):
                        if not hit_side[j]:
                            continue
                        orders = ol if j == 0 else osh
                        osz = ord_size if after_event else size
                        opp = ord_pprice if after_event else pprice
                        n_o = ideal_orders_into(
                            sides[j], ord_balance, ord_peak, osz[j, s], opp[j, s], prev_close,
                            prev_close, emas[s, j], mk,
                            params_long if j == 0 else params_short, may_open[s, j], orders,
                            lo if j == 0 else hi, trails[s, j],
                        )  # fmt: skip
                        for i in range(n_o):
                            if blocked and (orders[i, 0] > 0.0) == (sides[j] > 0):
                                continue  # the vault blocks new entries; closes stay
                            c_qty[n_c] = orders[i, 0]
                            c_price[n_c] = orders[i, 1]
                            c_pside[n_c] = sides[j]
                            c_kind[n_c] = orders[i, 2]
                            n_c += 1
                    n_fill = candle_fill_order(
                        c_qty[:n_c], c_price[:n_c], c_pside[:n_c], o, hi, lo, c_order
                    )
                    if nf + n_fill > fills.shape[0]:
                        fills = _with_room(fills, nf, n_fill)
                    for f in range(n_fill):
                        i = c_order[f]
                        side = int(c_pside[i])
                        jj = 0 if side > 0 else 1
                        q = c_qty[i]
                        p = c_price[i]
                        if (q > 0.0) != (side > 0) and size[jj, s] <= 0.0:
                            continue  # reduce-only with nothing left to reduce
                        if (
                            leverage_cap > 0.0
                            and (q > 0.0) == (side > 0)
                            and entry_over_cap(
                                balance, size, pprice, refs, s, p, abs(q), leverage_cap
                            )
                        ):
                            out_blocked[k] = True  # the vault's cap blocks this entry
                            continue
                        new_size, new_price, filled, pnl, fee = book_fill(
                            side, size[jj, s], pprice[jj, s], q, p, maker_fee
                        )
                        size[jj, s] = new_size
                        pprice[jj, s] = new_price
                        balance += pnl - fee
                        fees_paid += fee
                        realized += pnl
                        if balance > balance_peak:
                            balance_peak = balance
                        nf = _record(
                            fills, nf, k, s, side, filled * (1.0 if q > 0.0 else -1.0), p,
                            fee, pnl, balance, new_size, new_price, c_kind[i],
                        )  # fmt: skip
                        dirty = True
                # liquidation with the positions after the candle's fills, if any
                if nf > nf_candle and account_at_risk(
                    balance, size_l, pprice_l, size_s, pprice_s, lows, highs, tiers
                ):
                    liq = liquidation_prices(
                        balance, size, pprice, refs, lows, highs, tiers, price_steps
                    )
            if liq.shape[0] > 0:
                balance, deficit, n_rows = book_liquidation(balance, size, pprice, liq, tiers, rows)
                for r in range(n_rows):
                    fees_paid += rows[r, R_FEE]
                    realized += rows[r, R_PNL]
                fills = _with_room(fills, nf, n_rows)
                nf = _book_rows(fills, nf, k, rows, n_rows, size, pprice, KIND_LIQUIDATION)
                liquidated_k = k
        if trading and use_trail:
            # a position that changed in this candle trails from the next one
            for s in range(n_sym):
                for j in range(2):
                    if size[j, s] != sz0[j, s] or pprice[j, s] != pp0[j, s]:
                        trail_reset(trails[s, j])
                    elif size[j, s] > 0.0:
                        trail_update(trails[s, j], ohlcv[s, k, 1], ohlcv[s, k, 2], ohlcv[s, k, 3])
        # Record the candle's close.
        equity = balance
        for s in range(n_sym):
            c = ohlcv[s, k, 3]
            equity += unrealized_pnl(1, size[0, s], pprice[0, s], c)
            equity += unrealized_pnl(-1, size[1, s], pprice[1, s], c)
            out_pos[k, s, 0] = size[0, s]
            out_pos[k, s, 1] = pprice[0, s]
            out_pos[k, s, 2] = size[1, s]
            out_pos[k, s, 3] = pprice[1, s]
        out_balance[k] = balance
        out_equity[k] = equity
        if trading and liquidated_k < 0:
            if hsl_on:
                flat = True
                for s in range(n_sym):
                    if size[0, s] != 0.0 or size[1, s] != 0.0:
                        flat = False
                tier = hsl_sample(hsl, hsl_params, equity, float(timestamps[k]), flat)
                if tier != hsl_tier:
                    dirty = True  # what may rest changed: refresh the cached orders and slots
                    hsl_tier = tier
                    hsl_new, hsl_add, hsl_panic = hsl_permissions(tier, hsl_params)
            out_tier[k] = hsl_tier
            out_score[k] = hsl[H_SCORE] if hsl_on else 0.0
    return (
        fills[:nf].copy(),
        out_balance,
        out_equity,
        out_pos,
        liquidated_k,
        fees_paid,
        funding_paid,
        realized,
        transfers,
        deficit,
        out_blocked,
        out_tier,
        hsl,
        out_score,
    )


def run_engine(
    inp: EngineInputs, balance_window: float = BALANCE_WINDOW, ask_every_candle: bool = False
) -> EngineOutput:
    """Run the kernel.

    ``balance_window`` (see ``backtest.triggers``) changes only the speed, never a fill; 0
    recomputes every cached trigger on every balance change. ``ask_every_candle`` asks the
    core for every side of every coin on every candle: slow, the reference the cached
    triggers must match fill for fill (tests/test_engine_triggers.py compares the three).
    """
    capacity = 4096 + inp.ohlcv.shape[1] // 8 + 2 * inp.events.shape[0] * inp.ohlcv.shape[0]
    events = np.ascontiguousarray(inp.events, dtype=np.float64).reshape(-1, N_E)
    rates = inp.funding
    if rates is None:  # the constant rate at 00:00, 08:00 and 16:00 UTC
        due = (inp.timestamps % FUNDING_INTERVAL_MS) == 0
        rates = np.where(due[None, :], inp.funding_rate, 0.0) * np.ones((inp.ohlcv.shape[0], 1))
    rates = np.ascontiguousarray(rates, dtype=np.float64)
    n_sym = inp.ohlcv.shape[0]
    elig_from = (
        np.full(n_sym, np.iinfo(np.int64).min, dtype=np.int64)
        if inp.eligible_from_ms is None
        else np.ascontiguousarray(inp.eligible_from_ms, dtype=np.int64)
    )
    hsl_params = np.zeros(N_HP) if inp.hard_stop is None else inp.hard_stop
    (
        fills,
        bal,
        eq,
        pos,
        liq_k,
        fees,
        funding,
        realized,
        transfers,
        deficit,
        blocked,
        tier,
        hsl_state,
        score,
    ) = _kernel(
        inp.timestamps,
        np.ascontiguousarray(inp.ohlcv),
        inp.markets,
        inp.tiers,
        inp.params_long,
        inp.params_short,
        inp.n_positions_long,
        inp.n_positions_short,
        inp.starting_balance,
        inp.maker_fee,
        rates,
        inp.trade_start,
        events,
        np.zeros((capacity, N_F)),
        float(inp.sizing_fraction),
        float(inp.leverage_cap),
        float(inp.margin_buffer_pct),
        elig_from,
        float(balance_window),
        bool(ask_every_candle),
        np.ascontiguousarray(hsl_params, dtype=np.float64),
        float(inp.taker_fee),
    )
    return EngineOutput(
        fills,
        bal,
        eq,
        pos,
        liq_k,
        fees,
        funding,
        realized,
        transfers,
        deficit,
        blocked,
        tier,
        hsl_state,
        score,
    )

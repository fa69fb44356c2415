"""Index constants for the flat float64 arrays the numba core takes.

The core works on plain arrays (numba needs fixed types); ``bot.config`` builds them from the
typed config, so these indices are the only place where the layout is written down.
"""

from __future__ import annotations

# Sides. Sizes in the core are magnitudes (>= 0); the side says which way a position points.
LONG = 1
SHORT = -1

# Per-side strategy parameters: params[...]
P_ENABLED = 0
P_WALLET_EXPOSURE_LIMIT = 1  # per position: total_wallet_exposure_limit / n_positions
P_ENTRY_INITIAL_QTY_PCT = 2
P_ENTRY_INITIAL_EMA_DIST = 3
P_ENTRY_GRID_SPACING_PCT = 4
P_ENTRY_GRID_SPACING_WEIGHT = 5
P_ENTRY_GRID_DOUBLE_DOWN_FACTOR = 6
P_CLOSE_GRID_MIN_MARKUP = 7
P_CLOSE_GRID_MARKUP_RANGE = 8
P_CLOSE_GRID_QTY_PCT = 9
P_UNSTUCK_THRESHOLD = 10
P_UNSTUCK_CLOSE_PCT = 11
P_UNSTUCK_EMA_DIST = 12
P_UNSTUCK_LOSS_ALLOWANCE_PCT = 13
P_EMA_SPAN_0 = 14
P_EMA_SPAN_1 = 15
# The side's total limit (all its positions): Passivbot scales the unstuck loss allowance by it.
P_TOTAL_WALLET_EXPOSURE_LIMIT = 16
P_ENFORCE_EXPOSURE_LIMIT = 17  # 1.0: reduce a position more than 1% past its WEL (bot.core.enforce)
# trailing (bot.core.trailing); a grid ratio of 0 turns trailing off
P_ENTRY_TRAILING_THRESHOLD_PCT = 18
P_ENTRY_TRAILING_RETRACEMENT_PCT = 19
P_ENTRY_TRAILING_GRID_RATIO = 20
P_CLOSE_TRAILING_THRESHOLD_PCT = 21
P_CLOSE_TRAILING_RETRACEMENT_PCT = 22
P_CLOSE_TRAILING_GRID_RATIO = 23
P_CLOSE_TRAILING_QTY_PCT = 24
# the forager (bot.core.forager): EMA spans in candles (minutes in the config), 0 = unused
P_FILTER_VOLUME_WINDOW = 25
P_FILTER_VOLATILITY_WINDOW = 26
P_FILTER_VOLUME_DROP_PCT = 27
N_PARAMS = 28

# Market (exchange) constraints: market[...]
M_QTY_STEP = 0
M_PRICE_STEP = 1
M_MIN_QTY = 2
M_MIN_COST = 3
N_MARKET = 4

# Order rows returned by the core: [signed qty (+buy / -sell), price, kind]
O_QTY = 0
O_PRICE = 1
O_KIND = 2

KIND_ENTRY_INITIAL = 1
KIND_ENTRY_GRID = 2
KIND_CLOSE_GRID = 3
KIND_UNSTUCK = 4
KIND_LIQUIDATION = 5
KIND_OUTSIDE = 6  # a position reduced by an outside event (deleverage, vault exit): no order
KIND_EXPOSURE_LIMIT = 7  # a close bringing a position back to its WEL (enforce_exposure_limit)
KIND_ENTRY_TRAILING = 8
KIND_CLOSE_TRAILING = 9
KIND_HARD_STOP = 10  # a market close of the equity hard stop loss (bot.core.hard_stop)

KIND_NAMES = {
    KIND_ENTRY_INITIAL: "entry_initial",
    KIND_ENTRY_GRID: "entry_grid",
    KIND_CLOSE_GRID: "close",
    KIND_UNSTUCK: "unstuck",
    KIND_LIQUIDATION: "liquidation",
    KIND_OUTSIDE: "outside",
    KIND_EXPOSURE_LIMIT: "exposure_limit",
    KIND_ENTRY_TRAILING: "entry_trailing",
    KIND_CLOSE_TRAILING: "close_trailing",
    KIND_HARD_STOP: "hard_stop",
}

# Leverage tier rows: [notional_floor, notional_cap, maint_margin_rate, max_leverage, maint_amount]
T_FLOOR = 0
T_CAP = 1
T_MMR = 2
T_MAX_LEVERAGE = 3
T_MAINT_AMOUNT = 4

# Bounds that keep the output arrays of fixed size.
MAX_ENTRY_LEVELS = 60
MAX_CLOSE_LEVELS = 100
MAX_ORDERS = MAX_ENTRY_LEVELS + MAX_CLOSE_LEVELS + 2  # + unstuck + trailing close

"""The pure sizing core: numeric functions with no I/O, no clock and no mode.

The live bot and the backtester both call :func:`ideal_orders` to decide orders, and the
backtester and the simulated venue both book fills, liquidations and outside events with
:mod:`bot.core.book` (on :mod:`bot.core.account`'s arithmetic), so nothing that decides a price,
a quantity, a fee or a liquidation exists twice.
"""

from bot.core.account import (
    apply_fill,
    candle_low_first,
    funding_payment,
    order_fills,
    unrealized_pnl,
)
from bot.core.book import (
    apply_event,
    book_fill,
    book_liquidation,
    book_market_closes,
    candle_fill_order,
    liquidation_prices,
    transfer_peak,
)
from bot.core.ema import ema_alphas, ema_band, ema_seed, ema_update
from bot.core.exposure import bankruptcy_price, wallet_exposure, wallet_exposure_limit
from bot.core.grid import (
    close_grid,
    entry_grid,
    ideal_orders,
    ideal_orders_into,
    initial_entry_price,
    opening_slots,
    partial_entry_bound,
    unstuck_order,
)
from bot.core.guard import entries_within_limit, exposure_if_filled
from bot.core.margin import (
    LeverageCheck,
    account_at_risk,
    account_equity_margin,
    account_liquidation,
    check_leverage,
    liquidation_price,
    maintenance_margin,
    max_leverage_for_notional,
    stack_tiers,
    tier_index,
)
from bot.core.rounding import is_on_step, min_entry_qty, round_dn, round_nearest, round_up

__all__ = [
    "LeverageCheck",
    "account_at_risk",
    "account_equity_margin",
    "account_liquidation",
    "apply_event",
    "apply_fill",
    "bankruptcy_price",
    "book_fill",
    "book_liquidation",
    "book_market_closes",
    "candle_fill_order",
    "candle_low_first",
    "check_leverage",
    "close_grid",
    "ema_alphas",
    "ema_band",
    "ema_seed",
    "ema_update",
    "entries_within_limit",
    "entry_grid",
    "exposure_if_filled",
    "funding_payment",
    "ideal_orders",
    "ideal_orders_into",
    "initial_entry_price",
    "is_on_step",
    "liquidation_price",
    "liquidation_prices",
    "maintenance_margin",
    "max_leverage_for_notional",
    "min_entry_qty",
    "opening_slots",
    "order_fills",
    "partial_entry_bound",
    "round_dn",
    "round_nearest",
    "round_up",
    "stack_tiers",
    "tier_index",
    "transfer_peak",
    "unrealized_pnl",
    "unstuck_order",
    "wallet_exposure",
    "wallet_exposure_limit",
]

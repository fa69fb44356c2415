"""Why the venue's core refuses a request, in no exchange's terms.

The matching engine raises :class:`Refused` with a :class:`Refusal`; each API dialect maps it to
its own error code, message and HTTP status (:mod:`backtest.venue.binance.errors`,
:data:`backtest.venue.bybit.rest.RET_CODES`). ``msg`` is a human-readable detail (the engine
writes Binance's wording, which a dialect may keep or replace).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Refusal", "Refused"]


class Refusal(Enum):
    BAD_API_KEY = "bad_api_key"
    UNKNOWN_SYMBOL = "unknown_symbol"
    BAD_LEVERAGE = "bad_leverage"
    MISSING_PARAMETER = "missing_parameter"
    MARGIN_TYPE_UNCHANGED = "margin_type_unchanged"
    MARGIN_TYPE_LOCKED_BY_ORDERS = "margin_type_locked_by_orders"
    MARGIN_TYPE_LOCKED_BY_POSITION = "margin_type_locked_by_position"
    POSITION_MODE_UNCHANGED = "position_mode_unchanged"
    POSITION_MODE_LOCKED_BY_ORDERS = "position_mode_locked_by_orders"
    POSITION_MODE_LOCKED_BY_POSITION = "position_mode_locked_by_position"
    BAD_SIDE = "bad_side"
    BAD_ORDER_TYPE = "bad_order_type"
    POSITION_SIDE_MISMATCH = "position_side_mismatch"  # order's side vs the position mode
    REDUCE_ONLY_NOT_ALLOWED = "reduce_only_not_allowed"  # reduce-only flag in hedge mode
    BAD_QUANTITY = "bad_quantity"  # <= 0 or below the minimum
    OFF_STEP = "off_step"  # quantity or price not on its step
    BAD_PRICE = "bad_price"
    OVERLOADED = "overloaded"  # the exchange is busy (an injected fault)
    NOTIONAL_TOO_SMALL = "notional_too_small"
    REDUCE_ONLY_REJECTED = "reduce_only_rejected"  # would not reduce the position
    DUPLICATE_CLIENT_ID = "duplicate_client_id"
    POST_ONLY_WOULD_TAKE = "post_only_would_take"
    INSUFFICIENT_MARGIN = "insufficient_margin"
    CANCEL_UNKNOWN_ORDER = "cancel_unknown_order"
    UNKNOWN_ORDER = "unknown_order"


class Refused(Exception):
    """The core refused a request for ``reason``; ``msg`` says more."""

    def __init__(self, reason: Refusal, msg: str) -> None:
        super().__init__(f"{reason.value}: {msg}")
        self.reason = reason
        self.msg = msg

"""Bybit's errors on the venue: ``retCode``/``retMsg`` in the v5 envelope, and the core's
neutral refusals (:class:`backtest.venue.refusals.Refused`) in those terms."""

from __future__ import annotations

from ..refusals import Refusal, Refused

__all__ = ["RET_CODES", "BybitError", "to_bybit_error"]

# the core's refusal -> (Bybit retCode, retMsg or None to keep the core's message)
RET_CODES: dict[Refusal, tuple[int, str | None]] = {
    Refusal.OFF_STEP: (10001, "Qty or price has too many decimals."),
    Refusal.BAD_QUANTITY: (10001, "The number of contracts exceeds minimum limit allowed"),
    Refusal.BAD_PRICE: (10001, "Order price is invalid"),
    Refusal.NOTIONAL_TOO_SMALL: (110094, "Order does not meet minimum order value 5USDT"),
    Refusal.INSUFFICIENT_MARGIN: (110007, "ab not enough for new order"),
    Refusal.DUPLICATE_CLIENT_ID: (110072, "OrderLinkedID is duplicate"),
    Refusal.REDUCE_ONLY_REJECTED: (110017, "Reduce-only rule not satisfied"),
    Refusal.POSITION_SIDE_MISMATCH: (10001, "position idx not match position mode"),
    Refusal.UNKNOWN_ORDER: (110001, "order not exists or too late to cancel"),
    Refusal.CANCEL_UNKNOWN_ORDER: (110001, "order not exists or too late to cancel"),
    Refusal.UNKNOWN_SYMBOL: (10001, "params error: symbol invalid"),
    Refusal.BAD_LEVERAGE: (10001, "leverage invalid"),
    Refusal.OVERLOADED: (10016, "Internal server error."),
    Refusal.POSITION_MODE_UNCHANGED: (110025, "Position mode is not modified"),
    Refusal.POSITION_MODE_LOCKED_BY_ORDERS: (
        110028, "Open orders exist, so you cannot change position mode"
    ),
    Refusal.POSITION_MODE_LOCKED_BY_POSITION: (
        110024, "You have an existing position, so position mode cannot be switched"
    ),
    Refusal.MARGIN_TYPE_UNCHANGED: (110026, "Cross/isolated margin mode is not modified"),
    Refusal.BAD_API_KEY: (10003, "API key is invalid."),
}  # fmt: skip


class BybitError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


def to_bybit_error(err: Refused) -> BybitError:
    code, msg = RET_CODES.get(err.reason, (10001, None))
    return BybitError(code, msg or err.msg)

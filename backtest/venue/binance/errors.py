"""Binance's errors: ``{"code": code, "msg": msg}`` with an HTTP status, and the core's neutral
refusals (:class:`backtest.venue.refusals.Refused`) in those terms."""

from __future__ import annotations

from backtest.venue.refusals import Refusal, Refused

__all__ = ["CODES", "ApiError", "to_api_error"]


class ApiError(Exception):
    """A refusal in Binance's terms: ``{"code": code, "msg": msg}`` with an HTTP status."""

    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


#: neutral refusal -> (Binance code, HTTP status); the core's message is Binance's wording
CODES: dict[Refusal, tuple[int, int]] = {
    Refusal.BAD_API_KEY: (-2015, 401),
    Refusal.UNKNOWN_SYMBOL: (-1121, 400),
    Refusal.BAD_LEVERAGE: (-4028, 400),
    Refusal.MISSING_PARAMETER: (-1102, 400),
    Refusal.MARGIN_TYPE_UNCHANGED: (-4046, 400),
    Refusal.MARGIN_TYPE_LOCKED_BY_ORDERS: (-4047, 400),
    Refusal.MARGIN_TYPE_LOCKED_BY_POSITION: (-4048, 400),
    Refusal.POSITION_MODE_UNCHANGED: (-4059, 400),
    Refusal.POSITION_MODE_LOCKED_BY_ORDERS: (-4067, 400),
    Refusal.POSITION_MODE_LOCKED_BY_POSITION: (-4068, 400),
    Refusal.BAD_SIDE: (-1117, 400),
    Refusal.BAD_ORDER_TYPE: (-1116, 400),
    Refusal.POSITION_SIDE_MISMATCH: (-4061, 400),
    Refusal.REDUCE_ONLY_NOT_ALLOWED: (-1106, 400),
    Refusal.BAD_QUANTITY: (-4003, 400),
    Refusal.OFF_STEP: (-1111, 400),
    Refusal.BAD_PRICE: (-4001, 400),
    Refusal.OVERLOADED: (-1001, 503),
    Refusal.NOTIONAL_TOO_SMALL: (-4164, 400),
    Refusal.REDUCE_ONLY_REJECTED: (-2022, 400),
    Refusal.DUPLICATE_CLIENT_ID: (-4116, 400),
    Refusal.POST_ONLY_WOULD_TAKE: (-5022, 400),
    Refusal.INSUFFICIENT_MARGIN: (-2019, 400),
    Refusal.CANCEL_UNKNOWN_ORDER: (-2011, 400),
    Refusal.UNKNOWN_ORDER: (-2013, 400),
}


def to_api_error(err: Refused) -> ApiError:
    code, status = CODES[err.reason]
    return ApiError(code, err.msg, status)

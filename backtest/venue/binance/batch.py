"""Binance's batch order endpoints on the venue: ``POST /fapi/v1/batchOrders`` (up to 5 new
orders) and ``DELETE /fapi/v1/batchOrders`` (up to 10 cancels of one symbol).

Each item goes through the same handler as its single-order endpoint (``new_order`` /
``cancel_order`` of :class:`.rest.RestApi`, hence the neutral core's matching and refusals);
the answer is a list in the request's order holding, per item, the order or Binance's
``{"code", "msg"}``. Faults in the request as a whole (bad JSON, too many items, a missing
symbol) refuse the whole call, as Binance does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..refusals import Refused
from .errors import ApiError, to_api_error

if TYPE_CHECKING:
    from .rest import RestApi

__all__ = ["MAX_CANCELS", "MAX_CREATES", "add_batch_routes"]

MAX_CREATES = 5  # Binance: "Max 5 orders"
MAX_CANCELS = 10  # Binance: "max length 10"


def _json_list(params: dict[str, str], names: tuple[str, ...], cap: int) -> list[Any] | None:
    """The JSON list sent under the first of ``names`` present (ccxt sends lower case keys)."""
    for name in names:
        raw = params.get(name)
        if raw is None or raw == "":
            continue
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError:
            items = None
        if not isinstance(items, list) or not items:
            raise ApiError(-1130, f"Data sent for parameter '{names[0]}' is not valid.")
        if len(items) > cap:
            raise ApiError(-4035, f"Parameter '{names[0]}' has too many items (max {cap}).")
        return items
    return None


def _item(fn: Any, params: dict[str, str], key: str) -> dict:
    """One item's answer: the single endpoint's answer, or its refusal as {code, msg}."""
    try:
        return fn(params, key)
    except ApiError as err:
        return {"code": err.code, "msg": err.msg}
    except Refused as err:
        e = to_api_error(err)
        return {"code": e.code, "msg": e.msg}


def add_batch_routes(api: RestApi) -> None:
    """Register the batch endpoints on ``api`` with Binance's IP weights (POST 5, DELETE 1)."""

    def create(params: dict[str, str], key: str) -> list:
        items = _json_list(params, ("batchOrders",), MAX_CREATES)
        if items is None:
            raise ApiError(
                -1102,
                "Mandatory parameter 'batchOrders' was not sent, was empty/null, or malformed.",
            )
        out = []
        for it in items:
            if not isinstance(it, dict):
                out.append(
                    {"code": -1130, "msg": "Data sent for parameter 'batchOrders' is not valid."}
                )
                continue
            out.append(_item(api.new_order, {k: str(v) for k, v in it.items()}, key))
        return out

    def cancel(params: dict[str, str], key: str) -> list:
        symbol = api._symbol(params)
        by_id = _json_list(params, ("orderIdList", "orderidlist"), MAX_CANCELS)
        by_cid = _json_list(params, ("origClientOrderIdList", "origclientorderidlist"), MAX_CANCELS)
        if by_id is None and by_cid is None:
            raise ApiError(
                -1102,
                "Mandatory parameter 'orderIdList' or 'origClientOrderIdList' was not sent, "
                "was empty/null, or malformed.",
            )
        refs = [{"orderId": str(i)} for i in by_id or []]
        refs += [{"origClientOrderId": str(c)} for c in by_cid or []]
        return [_item(api.cancel_order, {"symbol": symbol, **r}, key) for r in refs]

    api._route("POST", "/fapi/v1/batchOrders", create, 5, "signed")
    api._route("DELETE", "/fapi/v1/batchOrders", cancel, 1, "signed")

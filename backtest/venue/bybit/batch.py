"""Bybit's batch order endpoints on the venue: ``POST /v5/order/create-batch`` and
``POST /v5/order/cancel-batch`` (category linear, up to 20 items in ``request``).

Each item goes through the same handler as its single-order endpoint (``create_order`` /
``cancel_order`` of :class:`.rest.BybitRestApi`, hence the neutral core's matching and
refusals). Bybit answers with two lists of the request's length: ``result.list`` (the order's
ids, empty ids for a refused item) and ``retExtInfo.list`` (``{"code", "msg"}``, 0 / "OK" for
a placed item). A fault of the request as a whole (category, list too long) refuses it whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..refusals import Refused
from .errors import BybitError, to_bybit_error

if TYPE_CHECKING:
    from .rest import BybitRestApi

__all__ = ["MAX_ITEMS", "WithExtInfo", "add_batch_routes"]

MAX_ITEMS = 20  # linear: 20 orders per request (Bybit v5 docs, batch place / cancel)


@dataclass
class WithExtInfo:
    """A handler's answer with Bybit's ``retExtInfo`` filled (the batch endpoints' item codes)."""

    result: Any
    ext_info: Any


def add_batch_routes(api: BybitRestApi) -> None:
    """Register the batch endpoints on ``api`` (one IP budget unit per request, like every
    other call of the venue's Bybit face)."""

    def items(params: dict[str, Any]) -> list[Any]:
        api._category(params)
        req = params.get("request")
        if not isinstance(req, list) or not req:
            raise BybitError(10001, "params error: request is required")
        if len(req) > MAX_ITEMS:
            raise BybitError(10001, f"params error: too many orders in request (max {MAX_ITEMS})")
        return req

    def run(fn: Any, item: Any, key: str) -> tuple[dict, dict]:
        sym = str(item.get("symbol", "")) if isinstance(item, dict) else ""
        try:
            if not isinstance(item, dict):
                raise BybitError(10001, "params error: request item is not an object")
            res = fn({**item, "category": "linear"}, key)
            return {"category": "linear", "symbol": sym, **res}, {"code": 0, "msg": "OK"}
        except (BybitError, Refused) as err:
            e = to_bybit_error(err) if isinstance(err, Refused) else err
            link = str(item.get("orderLinkId", "")) if isinstance(item, dict) else ""
            empty = {"category": "linear", "symbol": sym, "orderId": "", "orderLinkId": link}
            return empty, {"code": e.code, "msg": e.msg}

    def batch(fn: Any, params: dict[str, Any], key: str, created: bool) -> WithExtInfo:
        pairs = [run(fn, it, key) for it in items(params)]
        rows = [r for r, _ in pairs]
        if created:  # create-batch items carry the creation time
            now = str(api.eng.now_ms)
            rows = [{**r, "createAt": now if r["orderId"] else ""} for r in rows]
        return WithExtInfo({"list": rows}, {"list": [x for _, x in pairs]})

    api._route(
        "POST", "/v5/order/create-batch", lambda p, k: batch(api.create_order, p, k, True), "signed"
    )
    api._route(
        "POST",
        "/v5/order/cancel-batch",
        lambda p, k: batch(api.cancel_order, p, k, False),
        "signed",
    )

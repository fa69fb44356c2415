"""Bybit's account log on the venue: ``GET /v5/account/transaction-log`` (unified account).

Rows of one account's history, newest first: ``TRADE`` per fill (the account's trades),
``SETTLEMENT`` per position charged funding, ``TRANSFER_IN`` / ``TRANSFER_OUT`` per deposit or
withdrawal (the outside events the matching engine applied, :attr:`Account.cash_log`). Each
row carries Bybit's fields (``id``, ``transactionTime``, ``type``, ``change`` = cashFlow +
funding - fee, ``cashBalance`` = the USDT wallet balance after it, ...), in strings.

Filters as Bybit's: ``accountType`` UNIFIED only, ``currency`` (USDT: everything; another coin:
nothing), ``category`` (linear: trades and settlements; transfers belong to no category),
``type``, ``startTime`` / ``endTime`` (both: at most 7 days apart; only the start: 24 hours from
it; neither: the 24 hours up to the account's last row), ``limit`` 1..50 (default 20) and
``cursor`` (the ``nextPageCursor`` of the page before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..matching import Account
from ..wire import fmt
from .errors import BybitError

if TYPE_CHECKING:
    from .rest import BybitRestApi

__all__ = ["TYPES", "add_ledger_route"]

DAY_MS = 86_400_000
MAX_SPAN_MS = 7 * DAY_MS
TYPES = frozenset({"TRADE", "SETTLEMENT", "TRANSFER_IN", "TRANSFER_OUT"})


@dataclass(frozen=True)
class _Row:
    time_ms: int
    key: str  # the row's id
    kind: str
    symbol: str
    change: float
    balance: float  # the wallet balance after it
    extra: dict[str, str]


def _rows(acct: Account, fee_rates: tuple[float, float]) -> list[_Row]:
    """Every row of the account, newest first; a trade's balance after it is the wallet now
    less every later change (each balance change of the account is one row)."""
    # (time, order: the trades before it and then rank, id, type, symbol, change, fields)
    out: list[tuple[int, tuple[int, int], str, str, str, float, dict[str, str]]] = []
    for i, f in enumerate(acct.trades):
        rate = fee_rates[0] if f.maker else fee_rates[1]
        extra = {
            "side": "Buy" if f.side == "BUY" else "Sell",
            "qty": fmt(f.qty, 8),
            "tradePrice": fmt(f.price, 8),
            "fee": fmt(f.commission, 8),
            "cashFlow": fmt(f.realized_pnl, 8),
            "feeRate": fmt(rate, 6),
            "tradeId": str(f.trade_id),
            "orderId": str(f.order_id),
            "orderLinkId": f.client_order_id,
        }
        change = f.realized_pnl - f.commission
        out.append((f.time_ms, (i, 0), f"T{f.trade_id}", "TRADE", f.symbol, change, extra))
    for e in acct.cash_log:
        extra = {"funding": fmt(e.change, 8)} if e.kind == "SETTLEMENT" else {
            "cashFlow": fmt(e.change, 8)
        }  # fmt: skip
        order = (e.trades_before - 1, e.seq)  # after the trades booked before it
        out.append((e.time_ms, order, f"C{e.seq}", e.kind, e.symbol, e.change, extra))
    out.sort(key=lambda r: (r[0], r[1]), reverse=True)
    rows, balance = [], acct.balance
    for t, _, key, kind, symbol, change, extra in out:
        rows.append(_Row(t, key, kind, symbol, change, balance, extra))
        balance -= change
    return rows


def _window(params: dict[str, Any], newest_ms: int) -> tuple[int, int]:
    def ms(name: str) -> int | None:
        v = params.get(name)
        if v in (None, ""):
            return None
        try:
            return int(v)
        except (TypeError, ValueError):
            raise BybitError(10001, f"params error: {name} invalid") from None

    start, end = ms("startTime"), ms("endTime")
    if start is not None and end is not None:
        if end < start:
            raise BybitError(10001, "params error: endTime must be after startTime")
        if end - start > MAX_SPAN_MS:
            raise BybitError(10001, "params error: the time range must not exceed 7 days")
        return start, end
    if start is not None:
        return start, start + DAY_MS
    if end is not None:
        return end - DAY_MS, end
    return newest_ms - DAY_MS, newest_ms


def _json(r: _Row) -> dict[str, str]:
    d = {
        "id": r.key,
        "symbol": r.symbol,
        "category": "linear" if r.symbol else "",
        "side": "None",
        "transactionTime": str(r.time_ms),
        "type": r.kind,
        "transSubType": "",
        "qty": "0",
        "size": "0",
        "currency": "USDT",
        "tradePrice": "0",
        "funding": "0",
        "fee": "0",
        "cashFlow": "0",
        "change": fmt(r.change, 8),
        "cashBalance": fmt(r.balance, 8),
        "feeRate": "0",
        "bonusChange": "",
        "tradeId": "",
        "orderId": "",
        "orderLinkId": "",
    }
    d.update(r.extra)
    return d


def add_ledger_route(api: BybitRestApi) -> None:
    """Register ``GET /v5/account/transaction-log`` on ``api``."""

    def transaction_log(params: dict[str, Any], key: str) -> dict:
        if params.get("accountType") not in (None, "", "UNIFIED"):
            raise BybitError(10001, "accountType only support UNIFIED.")
        category = params.get("category") or None
        if category not in (None, "linear", "spot", "option", "inverse"):
            raise BybitError(10001, "params error: category invalid")
        kind = params.get("type") or None
        if kind is not None and kind not in TYPES:
            return {"list": [], "nextPageCursor": ""}
        acct = api.eng.account(key)
        rows = _rows(acct, (api.eng.maker_fee, api.eng.taker_fee))
        start, end = _window(params, rows[0].time_ms if rows else api.eng.now_ms)
        currency = params.get("currency") or "USDT"
        rows = [
            r
            for r in rows
            if start <= r.time_ms <= end
            and currency == "USDT"
            and (kind is None or r.kind == kind)
            and (category is None or (category == "linear" and r.symbol != ""))
        ]
        try:
            limit = min(max(int(params.get("limit") or 20), 1), 50)
            first = int(params.get("cursor") or 0)
        except ValueError:
            raise BybitError(10001, "params error: limit or cursor invalid") from None
        page = rows[first : first + limit]
        nxt = str(first + limit) if first + limit < len(rows) else ""
        return {"list": [_json(r) for r in page], "nextPageCursor": nxt}

    api._route("GET", "/v5/account/transaction-log", transaction_log, "signed")

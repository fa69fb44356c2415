"""Bybit v5 (category linear, hedge mode) wire formats -> :mod:`bot.exchange.events`.

Pure functions over decoded JSON, shared by the websocket streams (``execution``, ``order``,
``position``, ``wallet``, ``publicTrade``, ``kline.1``) and the REST adapter (the execution,
order and position lists carry the same fields as the stream topics). Quirks, as data:

- hedge mode: ``positionIdx`` 1 = long, 2 = short (0 = one-way: the side decides);
- executions carry no ``positionIdx``: ours are read from our client id (``gbL...`` /
  ``gbS...``), others from ``closedSize`` (a buy that closes something closes a short);
- ``execType`` Trade, AdlTrade and BustTrade change the position at a price: fills (as
  Binance's TRADE and CALCULATED); Funding is not a fill;
- the wallet topic says nothing about why the balance changed (reason unknown): the account's
  transaction log (``/v5/account/transaction-log``) does, row by row.
"""

from __future__ import annotations

from typing import Any

from bot.exchange.events import (
    ADJUSTMENT,
    ORDER,
    UNKNOWN_REASON,
    BalanceEvent,
    Event,
    FillEvent,
    KlineEvent,
    LedgerRow,
    OrderEvent,
    PositionEvent,
    PriceEvent,
)
from bot.exchange.order import PREFIX

__all__ = [
    "FILL_EXEC_TYPES",
    "OPEN_STATUSES",
    "UNKNOWN_REASON",
    "parse_execution",
    "parse_order",
    "parse_position",
    "parse_private",
    "parse_public",
    "parse_transaction",
    "parse_wallet",
    "pside_of",
]

FILL_EXEC_TYPES = frozenset({"Trade", "AdlTrade", "BustTrade"})
OPEN_STATUSES = frozenset({"New", "PartiallyFilled", "Untriggered"})
CLOSED_STATUSES = frozenset(
    {"Filled", "Cancelled", "Rejected", "PartiallyFilledCanceled", "Deactivated"}
)
ADJUSTMENT_STATUSES = frozenset({"Adl", "Liq"})  # positionStatus other than Normal


def _f(x: Any) -> float:
    return float(x) if x not in (None, "") else 0.0


def _linear(d: dict[str, Any]) -> bool:
    return d.get("category", "linear") in ("linear", "", None)


def pside_of(position_idx: Any, side: str) -> int:
    """+1 long / -1 short from ``positionIdx`` (1, 2) or, one-way (0), the order side."""
    idx = int(position_idx or 0)
    if idx in (1, 2):
        return 1 if idx == 1 else -1
    return 1 if side == "Buy" else -1


def parse_execution(d: dict[str, Any]) -> FillEvent | None:
    """One execution (stream or ``/v5/execution/list`` row) -> a fill, or None (funding...)."""
    if not _linear(d) or d.get("execType", "Trade") not in FILL_EXEC_TYPES:
        return None
    qty = _f(d.get("execQty"))
    if qty <= 0:
        return None
    sign = 1.0 if d["side"] == "Buy" else -1.0
    # an exchange's own execution (AdlTrade, BustTrade) has no link id: its type names it
    cid = str(d.get("orderLinkId") or "") or (
        "" if d.get("execType", "Trade") == "Trade" else str(d["execType"])
    )
    if cid.startswith(PREFIX) and len(cid) > len(PREFIX) and cid[len(PREFIX)] in "LS":
        pside = 1 if cid[len(PREFIX)] == "L" else -1  # our id names the position side
    elif _f(d.get("closedSize")) > 0:
        pside = -1 if sign > 0 else 1  # a buy that closes closes a short
    else:
        pside = 1 if sign > 0 else -1
    t = int(d["execTime"])
    leaves = d.get("leavesQty")
    return FillEvent(
        symbol=d["symbol"],
        pside=pside,
        qty=sign * qty,
        price=_f(d["execPrice"]),
        trade_id=str(d["execId"]),
        time_ms=t,
        client_id=cid,
        order_id=str(d.get("orderId") or ""),
        remaining=_f(leaves) if leaves not in (None, "") else None,
        cursor=t,
    )


def parse_order(d: dict[str, Any]) -> OrderEvent | None:
    """One order (stream or ``/v5/order/realtime`` row) -> its status, or None (not limit)."""
    if not _linear(d) or d.get("orderType", "Limit") != "Limit":
        return None
    status = d.get("orderStatus", "")
    if status not in OPEN_STATUSES and status not in CLOSED_STATUSES:
        return None
    sign = 1.0 if d["side"] == "Buy" else -1.0
    leaves = d.get("leavesQty")
    remaining = _f(leaves) if leaves not in (None, "") else _f(d["qty"]) - _f(d.get("cumExecQty"))
    return OrderEvent(
        symbol=d["symbol"],
        client_id=str(d.get("orderLinkId") or ""),
        order_id=str(d["orderId"]),
        open=status in OPEN_STATUSES,
        pside=pside_of(d.get("positionIdx"), d["side"]),
        qty=sign * remaining,
        price=_f(d.get("price")),
        filled=_f(d["cumExecQty"]) if d.get("cumExecQty") not in (None, "") else None,
        cancelled=status in CLOSED_STATUSES and status != "Filled",
    )


def parse_position(d: dict[str, Any], time_ms: int = -1) -> PositionEvent | None:
    """One position (stream: ``entryPrice``; REST ``/v5/position/list``: ``avgPrice``)."""
    if not _linear(d):
        return None
    idx = int(d.get("positionIdx") or 0)
    side = d.get("side", "")
    if idx == 0 and side not in ("Buy", "Sell"):
        return None  # one-way and flat: which side is unknowable (we trade hedge mode)
    size = abs(_f(d.get("size")))
    price = _f(d.get("entryPrice", d.get("avgPrice")))
    updated = d.get("updatedTime")
    return PositionEvent(
        symbol=d["symbol"],
        pside=pside_of(idx, side),
        size=size,
        price=price if size else 0.0,
        time_ms=int(updated) if updated not in (None, "") else time_ms,
        reason=ADJUSTMENT if d.get("positionStatus") in ADJUSTMENT_STATUSES else ORDER,
    )


def parse_wallet(data: list[dict[str, Any]], time_ms: int) -> list[BalanceEvent]:
    """Wallet topic (or REST ``/v5/account/wallet-balance`` list) -> the USDT walletBalance."""
    out = []
    for acct in data:
        for c in acct.get("coin") or []:
            if c.get("coin") == "USDT":
                out.append(BalanceEvent(_f(c.get("walletBalance")), UNKNOWN_REASON, time_ms))
    return out


def parse_transaction(d: dict[str, Any]) -> LedgerRow | None:
    """One ``/v5/account/transaction-log`` row -> a ledger row (None: not USDT, or no id)."""
    if d.get("currency", "USDT") != "USDT" or not d.get("id"):
        return None
    return LedgerRow(
        row_id=str(d["id"]),
        time_ms=int(d["transactionTime"]),
        kind=str(d.get("type", "")),
        change=_f(d.get("change")),
        balance_after=_f(d.get("cashBalance")),
    )


def parse_private(msg: dict[str, Any]) -> list[Event]:
    """A ``/v5/private`` frame -> events (auth/subscribe replies and pongs -> [])."""
    topic = str(msg.get("topic", ""))
    data = msg.get("data") or []
    t = int(msg.get("creationTime") or 0)
    out: list[Event] = []
    if topic.startswith("execution"):
        out += [e for e in map(parse_execution, data) if e is not None]
    elif topic.startswith("order"):
        out += [e for e in map(parse_order, data) if e is not None]
    elif topic.startswith("position"):
        out += [e for e in (parse_position(d, t) for d in data) if e is not None]
    elif topic.startswith("wallet"):
        out += parse_wallet(data, t)
    return out


def parse_public(msg: dict[str, Any]) -> list[Event]:
    """``publicTrade.S`` -> prices; ``kline.1.S`` -> klines (closed when ``confirm``)."""
    topic = str(msg.get("topic", ""))
    data = msg.get("data") or []
    if topic.startswith("publicTrade."):
        return [PriceEvent(t["s"], _f(t["p"])) for t in data]
    if topic.startswith("kline.1."):
        symbol = topic.split(".", 2)[2]
        return [
            KlineEvent(
                symbol,
                int(k["start"]),
                _f(k["close"]),
                bool(k.get("confirm")),
                _f(k.get("high", "nan")),
                _f(k.get("low", "nan")),
                _f(k.get("volume")),
            )
            for k in data
        ]
    return []

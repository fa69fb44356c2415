"""Ideal orders vs open orders: what to cancel, what to create, and our client order ids.

Only orders whose client id starts with :data:`PREFIX` are ours; anything else on the account
(manual orders, other bots) is never matched, cancelled or counted.

Client ids are derived from (symbol, position side, kind, level, price, qty), so the same ideal
order always gets the same id: a create retried after a timeout, or re-sent by a restarted bot,
is refused by the exchange as a duplicate (-4116) instead of resting twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from bot.core.params import O_KIND, O_PRICE, O_QTY
from bot.exchange.order import PREFIX, LiveOrder

__all__ = ["PREFIX", "LiveOrder", "batches", "client_order_id", "diff_orders", "orders_from_rows"]

_KIND_CODE = {1: "i", 2: "g", 3: "c", 4: "u", 5: "l", 7: "t", 8: "r"}


def client_order_id(
    symbol: str, pside: int, kind: int, level: int, price: float, qty: float
) -> str:
    """Deterministic id (Binance: <= 36 chars of [A-Za-z0-9._:/-]) with our prefix.

    Readable head (prefix, side, kind, level) and a hash of the exact price and qty.
    """
    # repr() of the floats: the core's rounding already cleaned them, so equal orders hash equal
    raw = f"{symbol}|{pside}|{kind}|{level}|{price!r}|{qty!r}".encode()
    digest = hashlib.sha1(raw).hexdigest()[:24]
    side = "L" if pside > 0 else "S"
    return f"{PREFIX}{side}{_KIND_CODE.get(kind, 'x')}{level:02d}{digest}"[:36]


def orders_from_rows(symbol: str, pside: int, rows: np.ndarray) -> list[LiveOrder]:
    """Core rows [signed qty, price, kind] -> LiveOrders with levels and client ids."""
    out = []
    levels: dict[int, int] = {}
    for row in rows:
        kind = int(row[O_KIND])
        level = levels.get(kind, 0)
        levels[kind] = level + 1
        qty, price = float(row[O_QTY]), float(row[O_PRICE])
        cid = client_order_id(symbol, pside, kind, level, price, qty)
        out.append(LiveOrder(symbol, pside, qty, price, kind, level, cid))
    return out


def _close(a: float, b: float, tol: float) -> bool:
    if tol <= 0.0:
        return a == b
    return abs(a - b) <= tol * max(abs(b), 1e-300)


def diff_orders(
    open_orders: Sequence[LiveOrder],
    ideal: Sequence[LiveOrder],
    last_price: float,
    price_threshold: float = 0.0,
    qty_threshold: float = 0.0,
) -> tuple[list[LiveOrder], list[LiveOrder]]:
    """(to_cancel, to_create), each sorted nearest to ``last_price`` first.

    An open order matches an ideal one of the same position side and direction whose price
    and qty are within the relative thresholds (0: exactly equal); each matches at most once.
    Open orders without our prefix are ignored entirely.
    """
    ours = [o for o in open_orders if o.client_id.startswith(PREFIX)]
    unmatched = list(ours)
    to_create = []
    for want in ideal:
        hit = None
        for i, have in enumerate(unmatched):
            if (
                have.pside == want.pside
                and (have.qty > 0) == (want.qty > 0)
                and _close(have.price, want.price, price_threshold)
                and _close(abs(have.qty), abs(want.qty), qty_threshold)
            ):
                hit = i
                break
        if hit is None:
            to_create.append(want)
        else:
            unmatched.pop(hit)

    def nearest(o: LiveOrder) -> float:
        return abs(o.price - last_price)

    return sorted(unmatched, key=nearest), sorted(to_create, key=nearest)


def batches(items: Iterable[LiveOrder], size: int) -> list[list[LiveOrder]]:
    """Split into consecutive batches of at most ``size``."""
    items = list(items)
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]

"""Bybit's account log, ``GET /v5/account/transaction-log`` (unified account, USDT): how the
live bot tells a deposit or withdrawal from a trading result, since Bybit's ``wallet`` topic
gives no reason for a balance change.

Bybit's rules, kept here: ``startTime`` and ``endTime`` at most 7 days apart (the log is read
in 7-day windows from the cursor up to now), pages of at most 50 rows, newest first, chained
with ``nextPageCursor``. No ``category`` filter: transfers belong to no product category
(a ``linear`` filter would hide them).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from bot.exchange.bybit import format as bybit_format
from bot.exchange.events import LedgerRow

if TYPE_CHECKING:
    from bot.exchange.bybit.rest import BybitAdapter

__all__ = ["WINDOW_MS", "fetch_ledger"]

log = logging.getLogger("gridbot.live.exchange")

WINDOW_MS = 7 * 86_400_000  # Bybit: endTime - startTime <= 7 days
PAGE_ROWS = 50  # Bybit's maximum per page
_MAX_WINDOWS = 60  # ~14 months from the cursor per call (Bybit keeps 2 years)
_MAX_PAGES = 200
_CLOCK_SLACK_MS = 3_600_000  # windows go on this far past our clock (a server ahead of it)


async def _window(ad: BybitAdapter, q: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(_MAX_PAGES):
        p = {**q, "cursor": cursor} if cursor else q
        raw = await ad._call(ad.ex.privateGetV5AccountTransactionLog, p)
        res = raw.get("result") or {}
        rows += res.get("list") or []
        cursor = res.get("nextPageCursor") or ""
        if not cursor:
            break
    return rows


async def fetch_ledger(ad: BybitAdapter, since_ms: int) -> list[LedgerRow]:
    """USDT rows from ``since_ms`` on (inclusive; < 0: Bybit's default, the last 24 hours),
    oldest first (ties in the exchange's order)."""
    base = {"accountType": "UNIFIED", "currency": "USDT", "limit": PAGE_ROWS}
    raw: list[dict[str, Any]] = []
    if since_ms < 0:
        raw = await _window(ad, base)
    else:
        now_ms = int(time.time() * 1000) + _CLOCK_SLACK_MS
        start = since_ms
        for _ in range(_MAX_WINDOWS):
            end = start + WINDOW_MS - 1
            raw += await _window(ad, {**base, "startTime": start, "endTime": end})
            start = end + 1
            if start > now_ms:
                break
        else:
            log.info(
                "bybit: the transaction log was read up to %d only (the cursor %d is older than "
                "%d windows of 7 days); the rest at the next ask", start, since_ms, _MAX_WINDOWS,
            )  # fmt: skip
    rows = [r for r in map(bybit_format.parse_transaction, raw) if r is not None]
    seen: set[str] = set()
    out = []
    for r in reversed(rows):  # each window newest first: oldest first overall, stable
        if r.row_id not in seen:
            seen.add(r.row_id)
            out.append(r)
    return sorted(out, key=lambda r: r.time_ms)

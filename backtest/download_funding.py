"""Download the exchange's funding-rate history with ccxt into ``OUT/funding/SYMBOL.csv``.

ccxt's ``fetchFundingRateHistory`` (Binance USDT-M: ``GET /fapi/v1/fundingRate``, up to 1000
rows a page), paged forward from ``since``. Resumable like the candles: rows already in the
file are kept and the next page starts after the last one; the file is replaced whole (temp
file + rename). Rates are kept as the exchange printed them. :mod:`backtest.funding` reads
them for the backtest (each symbol at its own times: 1 h, 4 h or 8 h apart).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backtest.download import _call_with_retry, _clean, make_exchange
from backtest.funding import FUNDING_DIR, read_funding, write_funding

__all__ = ["download_funding"]

PAGE = 1000


def _existing(path: Path) -> dict[int, str]:
    """The rows already downloaded, as the exchange printed them (checked by read_funding)."""
    read_funding(path)  # a broken file is a DataError naming the line, not a silent restart
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()[1:]
    return {int(t): r for t, r in (line.split(",")[:2] for line in lines if line.strip())}


def download_funding(
    symbols: Sequence[str],
    start_ms: int,
    end_ms: int,
    out_dir: str | Path,
    *,
    exchange: Any = None,
    base_url: str | None = None,
    max_retries: int = 5,
    backoff_seconds: float = 1.0,
    enable_rate_limit: bool = True,
) -> dict[str, int]:
    """Fetch each symbol's funding times and rates in ``[start_ms, end_ms)``; returns the rows
    added per symbol."""
    ex = exchange or make_exchange("binance", base_url, enable_rate_limit=enable_rate_limit)
    kw: dict[str, Any] = {
        "max_retries": max_retries,
        "backoff_seconds": backoff_seconds,
        "on_retry": lambda: None,
    }
    _call_with_retry(ex.load_markets, what="load_markets", **kw)
    added: dict[str, int] = {}
    for s in symbols:
        sid = s.strip().upper().replace("/", "").replace(":USDT", "")
        unified = ex.markets_by_id[sid][0]["symbol"] if sid in ex.markets_by_id else sid
        path = Path(out_dir) / FUNDING_DIR / f"{sid}.csv"
        rows = _existing(path)
        before = len(rows)
        # only what is not there yet: before the first row we hold, and after the last
        spans = [(start_ms, min(rows) if rows else end_ms)]
        if rows:
            spans.append((max(rows) + 1, end_ms))
        for since, until in spans:
            for _ in range(10_000):  # bounded: a page per call, each moving forward
                if since >= until:
                    break
                page = _call_with_retry(
                    functools.partial(
                        ex.fetch_funding_rate_history, unified, since, PAGE, {"endTime": until - 1}
                    ),
                    what=f"{sid} funding from {since}",
                    **kw,
                )
                page = [p for p in page if since <= int(p["timestamp"]) < until]
                if not page:
                    break
                for p in page:
                    info = p.get("info") or {}
                    rows[int(p["timestamp"])] = _clean(info.get("fundingRate", p["fundingRate"]))
                since = int(page[-1]["timestamp"]) + 1
        if len(rows) != before:
            write_funding(path, rows)
        added[sid] = len(rows) - before
    return added

"""Download 1m candles of Binance USDT-M perpetuals with ccxt into ``OUT/SYMBOL.csv.gz``.

Same layout as the bundled sample (header ``timestamp_ms,open,high,low,close,volume``, candle
open time in UTC ms). Resumable: a rerun fetches only what the file lacks (before its first
and after its last candle). The file is only ever replaced whole (temp file + ``os.replace``) at
checkpoints, so an interruption loses at most the pages since the last checkpoint and never corrupts the file.
Values are kept as the exchange's decimal strings (trailing zeros trimmed), never re-formatted
floats, so a download of the same candles is byte-identical.

Paging uses the raw ``GET /fapi/v1/klines`` (1500 candles per request; ccxt's
``fetch_ohlcv`` caps futures pages at 1000). Rate limits: ccxt's ``enableRateLimit`` spaces
requests; 429/418 and network errors are retried with exponential backoff, a bounded number
of times.
"""

from __future__ import annotations

import functools
import gzip
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from backtest.data import atomic_write
from bot.errors import ConfigError, ExchangeError

__all__ = ["DownloadError", "DownloadResult", "download_candles", "make_exchange"]

log = logging.getLogger("gridbot.download")

HEADER = "timestamp_ms,open,high,low,close,volume"
PAGE_LIMIT = 1500
MINUTE_MS = 60_000
CHECKPOINT_SECONDS = 10.0
_EXCHANGES = ("binance", "binanceusdm")


class DownloadError(ExchangeError):
    """The exchange kept failing after the bounded retries (what was fetched is saved)."""


@dataclass(frozen=True)
class DownloadResult:
    symbol: str
    path: Path
    rows_before: int
    rows_added: int
    rows_total: int
    first_ms: int | None
    last_ms: int | None
    retries: int


def make_exchange(
    exchange_id: str = "binance",
    base_url: str | None = None,
    *,
    timeout_ms: int = 10_000,
    enable_rate_limit: bool = True,
) -> Any:
    """A sync ccxt binanceusdm client, pointed at ``base_url`` when given (local venue)."""
    if exchange_id.lower() not in _EXCHANGES:
        raise ConfigError(
            f"--exchange {exchange_id!r}: only Binance USDT-M futures is supported; use 'binance'"
        )
    import ccxt

    ex = ccxt.binanceusdm({"enableRateLimit": enable_rate_limit, "timeout": timeout_ms})
    if base_url:
        from bot.exchange.rewire import point_ccxt_at

        point_ccxt_at(ex, base_url)
    return ex


def _clean(value: Any) -> str:
    s = str(value)
    if "." in s and "e" not in s.lower():
        s = s.rstrip("0").rstrip(".")
    return s or "0"


def read_rows(path: Path) -> dict[int, str]:
    """Existing rows of a candle file: timestamp -> the rest of the line (values as text)."""
    rows: dict[int, str] = {}
    if not path.exists():
        return rows
    with gzip.open(path, "rt") as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line or (i == 0 and line.startswith("timestamp")):
                continue
            ts, _, rest = line.partition(",")
            try:
                rows[int(ts)] = rest
            except ValueError:
                continue  # a bad row: the loader reports such rows; a rerun refetches nothing for it
    return rows


def write_rows(path: Path, rows: dict[int, str]) -> None:
    """Write sorted, deduplicated rows atomically (temp file in the same folder + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(raw: BinaryIO) -> None:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write((HEADER + "\n").encode())
            gz.write("".join(f"{ts},{rows[ts]}\n" for ts in sorted(rows)).encode())

    atomic_write(path, write)


def _call_with_retry(
    fn: Callable[[], Any],
    *,
    max_retries: int,
    backoff_seconds: float,
    what: str,
    on_retry: Callable[[], None],
) -> Any:
    import ccxt

    for attempt in range(max_retries + 1):
        try:
            return fn()
        except (ccxt.DDoSProtection, ccxt.NetworkError) as exc:  # 429/418, 5xx, timeouts
            if attempt >= max_retries:
                raise DownloadError(
                    f"{what}: giving up after {max_retries} retries: {type(exc).__name__}: {str(exc)[:200]}"
                ) from exc
            banned = " 418 " in str(exc)
            delay = min(backoff_seconds * (2**attempt) * (4 if banned else 1), 120.0)
            log.warning(
                "%s: %s, retry %d/%d in %.1f s",
                what,
                type(exc).__name__,
                attempt + 1,
                max_retries,
                delay,
            )
            on_retry()
            time.sleep(delay)
        except ccxt.BaseError as exc:  # refused for good (bad symbol, not a Binance server...)
            raise DownloadError(f"{what}: {type(exc).__name__}: {str(exc)[:200]}") from None
    raise AssertionError("unreachable")


def download_candles(  # noqa: C901 -- paging, retries, checkpoints in one bounded loop (debt)
    symbols: Sequence[str],
    start_ms: int,
    end_ms: int | None = None,
    out_dir: str | Path = "data/binance_usdtm_1m",
    *,
    exchange_id: str = "binance",
    base_url: str | None = None,
    exchange: Any = None,
    max_retries: int = 5,
    backoff_seconds: float = 1.0,
    progress: bool = True,
    enable_rate_limit: bool = True,
) -> dict[str, DownloadResult]:
    """Fetch 1m candles ``[start_ms, end_ms)`` (end defaults to the last closed minute).

    ``enable_rate_limit=False`` only for a local server (tests): ccxt then stops spacing requests.
    """
    ex = exchange or make_exchange(exchange_id, base_url, enable_rate_limit=enable_rate_limit)
    out = Path(out_dir)
    retries = [0]

    def bump() -> None:
        retries[0] += 1

    markets = _call_with_retry(
        ex.load_markets,
        max_retries=max_retries,
        backoff_seconds=backoff_seconds,
        what="load_markets",
        on_retry=bump,
    )
    available = sorted({m["id"] for m in markets.values() if m.get("swap") and m.get("linear")})
    wanted = [s.strip().upper().replace("/", "").replace(":USDT", "") for s in symbols if s.strip()]
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise ConfigError(
            f"--symbols: unknown symbol(s) {', '.join(unknown)}; available: {', '.join(available)}"
        )
    if end_ms is None:
        end_ms = (int(time.time() * 1000) // MINUTE_MS) * MINUTE_MS  # only closed candles
    if end_ms <= start_ms:
        raise ConfigError(f"--end must be after --start ({end_ms} <= {start_ms})")

    plans = []
    for s in wanted:
        path = out / f"{s}.csv.gz"
        rows = read_rows(path)
        # only what the file lacks: before its first candle, and after its last
        spans = [(start_ms, min(min(rows), end_ms))] if rows and start_ms < min(rows) else []
        spans.append((max(start_ms, max(rows) + MINUTE_MS) if rows else start_ms, end_ms))
        plans.append((s, path, rows, [(a, b) for a, b in spans if a < b]))
    total = sum(math.ceil((b - a) / MINUTE_MS) for *_, spans in plans for a, b in spans)

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not progress,
    )
    results: dict[str, DownloadResult] = {}
    with bar:
        task = bar.add_task("download 1m", total=total)
        for symbol, path, rows, spans in plans:
            before = len(rows)
            bar.update(task, description=f"{symbol}")
            last_write = time.monotonic()
            dirty = False
            try:
                for since, until in spans:
                    max_pages = math.ceil((until - since) / MINUTE_MS / PAGE_LIMIT) + 2
                    for _ in range(max_pages):  # bounded: the range's pages and a little slack
                        if since >= until:
                            break
                        params = {
                            "symbol": symbol,
                            "interval": "1m",
                            "startTime": since,
                            "endTime": until - 1,
                            "limit": PAGE_LIMIT,
                        }
                        page = _call_with_retry(
                            functools.partial(ex.fapiPublicGetKlines, params),
                            max_retries=max_retries,
                            backoff_seconds=backoff_seconds,
                            what=f"{symbol} klines from {since}",
                            on_retry=bump,
                        )
                        page = [k for k in page if since <= int(k[0]) < until]
                        if not page:
                            break  # nothing more on the exchange yet
                        for k in page:
                            rows[int(k[0])] = ",".join(_clean(v) for v in k[1:6])
                        dirty = True
                        nxt = int(page[-1][0]) + MINUTE_MS
                        bar.advance(task, (nxt - since) // MINUTE_MS)
                        since = nxt
                        if time.monotonic() - last_write > CHECKPOINT_SECONDS:
                            write_rows(path, rows)
                            last_write, dirty = time.monotonic(), False
            finally:
                if dirty:
                    write_rows(path, rows)  # save what was fetched, also on errors and Ctrl-C
            results[symbol] = DownloadResult(
                symbol, path, before, len(rows) - before, len(rows),
                min(rows) if rows else None, max(rows) if rows else None, retries[0],
            )  # fmt: skip
    return results

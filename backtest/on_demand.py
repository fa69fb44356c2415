"""Data on demand: a backtest over coins or dates the candle folder lacks downloads them first.

``gridbot backtest ... --download`` (or ``--download-url URL``) checks, for each symbol, that
``FOLDER/SYMBOL.csv(.gz)`` covers ``[start, end)``; what is missing is fetched with
:func:`backtest.download.download_candles` (ccxt, paged, resumable: only the span the file
lacks, a progress bar on stderr) together with the same span's funding-rate history
(:func:`backtest.download_funding.download_funding`). A folder inside the source tree (the
bundled sample) is never written to: the error says to give ``--data FOLDER``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backtest.download import MINUTE_MS, read_rows

__all__ = ["ensure_data", "missing_spans"]


def _file(folder: Path, symbol: str) -> Path | None:
    for name in (f"{symbol}.csv.gz", f"{symbol}.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def missing_spans(folder: Path, symbols: Sequence[str], start_ms: int, end_ms: int) -> list[str]:
    """The symbols whose file is missing or does not cover ``[start_ms, end_ms)``."""
    out = []
    for s in symbols:
        f = _file(folder, s)
        if f is None:
            out.append(s)
            continue
        rows = read_rows(f)
        if not rows or min(rows) > start_ms or max(rows) + MINUTE_MS < end_ms:
            out.append(s)
    return out


def ensure_data(
    folder: Path,
    symbols: Sequence[str],
    start_ms: int | None,
    end_ms: int | None,
    *,
    base_url: str | None = None,
    max_retries: int = 5,
    progress: bool = True,
) -> list[str]:
    """Download what ``folder`` lacks for ``symbols`` over ``[start_ms, end_ms)`` (end: the last
    closed minute; start required when a file is missing); returns the symbols fetched."""
    from bot import inputs
    from bot.errors import ConfigError

    now = (int(time.time() * 1000) // MINUTE_MS) * MINUTE_MS
    end = end_ms if end_ms is not None else now
    if start_ms is None:
        missing = [s for s in symbols if _file(folder, s) is None]
        if missing:
            raise ConfigError(f"--download: {', '.join(missing)} not in {folder}: give --start "
                              "(and --end) to say which dates to fetch")  # fmt: skip
        return []
    todo = missing_spans(folder, symbols, start_ms, end)
    if not todo:
        return []
    try:
        inputs.writable_dir(folder, "--data")
    except ConfigError as exc:
        raise ConfigError(f"--download: cannot save candles there ({exc}); give --data FOLDER "
                          "for downloaded candles, e.g. --data data/binance_usdtm_1m") from None  # fmt: skip
    from backtest.download import download_candles
    from backtest.download_funding import download_funding

    folder.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = {"base_url": base_url, "max_retries": max_retries}
    download_candles(todo, start_ms, end, folder, progress=progress, **kw)
    download_funding(todo, start_ms, end, folder, **kw)
    return todo

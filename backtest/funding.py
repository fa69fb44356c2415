"""Funding as the exchange charges it: per-symbol funding times and rates for the backtest.

The exchange's funding-rate history (``gridbot download`` fetches it with ccxt's
``fetchFundingRateHistory`` into ``DATA/funding/SYMBOL.csv``, header ``timestamp_ms,rate``)
says when each symbol was charged (every 1 h, 4 h or 8 h: its own interval, which can change)
and at what rate. :func:`funding_matrix` turns it into the rate charged at the top of each
candle (the first candle opening at or after the funding time), per symbol, for the engine and
the simulated venue; a symbol without history falls back to the constant ``funding_rate_8h``
at 00:00, 08:00 and 16:00 UTC, and :class:`FundingPlan` says which was used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from bot.errors import DataError

__all__ = ["FUNDING_DIR", "FundingPlan", "funding_dir", "funding_matrix", "read_funding",
           "write_funding"]  # fmt: skip

FUNDING_DIR = "funding"
HEADER = "timestamp_ms,rate"
EIGHT_HOURS_MS = 8 * 3600 * 1000


@dataclass
class FundingPlan:
    """The rate charged at the top of each candle, (n_symbols, n); 0 where none is charged."""

    rates: np.ndarray
    source: dict[str, str] = field(default_factory=dict)  # symbol -> "history" / "constant"
    interval_hours: dict[str, float] = field(default_factory=dict)  # the history's usual gap

    def as_dict(self, constant_rate: float) -> dict:
        return {
            "source": dict(self.source),
            "interval_hours": dict(self.interval_hours),
            "constant_rate_8h": constant_rate,
            "charges": {s: int((self.rates[i] != 0).sum()) for i, s in enumerate(self.source)},
        }


def funding_dir(data: str | Path) -> Path:
    """Where the funding history of a candle folder (or of a candle file's folder) lives."""
    p = Path(data)
    return (p if p.is_dir() else p.parent) / FUNDING_DIR


def read_funding(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(funding times in ms, rates) from one symbol's file, sorted; empty when missing."""
    try:
        st = path.stat()
    except OSError:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    # the optimizer backtests the same candles thousands of times: parse each file once
    return _read_funding(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=256)
def _read_funding(name: str, _mtime_ns: int, _size: int) -> tuple[np.ndarray, np.ndarray]:
    path = Path(name)
    if not path.is_file():
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    times, rates = [], []
    for i, line in enumerate(path.read_text().splitlines()[1:], 2):
        if not line.strip():
            continue
        try:
            t, r = line.split(",")[:2]
            times.append(int(t))
            rates.append(float(r))
        except ValueError:
            raise DataError(f"{path}: line {i}: expected {HEADER}, got {line[:80]!r}") from None
    order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
    return np.asarray(times, dtype=np.int64)[order], np.asarray(rates)[order]


def write_funding(path: Path, rows: dict[int, str]) -> None:
    """Write ``{time_ms: rate as the exchange printed it}`` whole (temp file + rename)."""
    from backtest.data import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    text = HEADER + "\n" + "".join(f"{t},{rows[t]}\n" for t in sorted(rows))
    atomic_write(path, lambda f: f.write(text.encode()))


def funding_matrix(
    symbols: tuple[str, ...] | list[str],
    timestamps: np.ndarray,
    timeframe_ms: int,
    constant_rate_8h: float,
    sources: dict[str, str] | None = None,
) -> FundingPlan:
    """Per symbol: the history's rates at its funding times when the folder of its candle file
    (``sources``: symbol -> file, as ``Candles.sources``) has any for the candles' span, else
    the constant rate every 8 h (module docstring)."""
    ts = np.asarray(timestamps, dtype=np.int64)
    rates = np.zeros((len(symbols), len(ts)))
    plan = FundingPlan(rates)
    sources = sources or {}
    end = int(ts[-1]) + int(timeframe_ms) if len(ts) else 0
    for i, s in enumerate(symbols):
        src = sources.get(s)
        none = (np.zeros(0, dtype=np.int64), np.zeros(0))
        times, r = read_funding(funding_dir(src) / f"{s}.csv") if src else none
        inside = (times >= int(ts[0])) & (times < end) if len(ts) else times < 0
        if inside.any():
            ks = np.searchsorted(ts, times[inside])  # the first candle opening at or after it
            keep = ks < len(ts)
            np.add.at(rates[i], ks[keep], r[inside][keep])
            plan.source[s] = "history"
            gaps = np.diff(times)
            plan.interval_hours[s] = float(np.median(gaps)) / 3.6e6 if len(gaps) else 8.0
        else:
            rates[i, ts % EIGHT_HOURS_MS == 0] = constant_rate_8h
            plan.source[s] = "constant"
            plan.interval_hours[s] = 8.0
    return plan

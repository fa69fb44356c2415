"""Candles for the backtester, the simulated venue and the live bot's warm-up.

Files: CSV or gzip CSV, header ``timestamp_ms,open,high,low,close,volume`` (candle open time,
UTC ms), one file per symbol (``SYMBOL.csv`` or ``SYMBOL.csv.gz``) in a folder.

What a load does, in order:

1. parse (numpy's C parser; a slow per-line scan only runs to explain a failure),
2. validate every row (a bad file raises :class:`DataError` naming file, row, problem),
3. infer the timeframe (most common positive step) and check the grid,
4. fill gaps with flat candles at the previous close, volume 0 -- what a live bot sees when no
   trade prints: the price stays. A single gap longer than ``max_gap_minutes`` is refused,
   because a backtest across a day-long hole would invent a quiet market that never existed,
5. optionally cache the prepared arrays as ``.npy`` (memory-mapped on load, so optimizer
   processes share pages instead of copying candles per trial),
6. align several symbols to their common range and slice ``[start_ms, end_ms)``.

Returned arrays are read-only: candles are shared input, nobody may edit them in place.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bot.errors import ConfigError, DataError
from bot.inputs import (
    MAX_CANDLE_FILE_BYTES,
    MAX_DATE_MS,
    MIN_PLAUSIBLE_MS,
    decode_text,
    parse_date_ms,
    read_file,
)

__all__ = [
    "COLUMNS",
    "Candles",
    "Gap",
    "atomic_write",
    "LoadReport",
    "fill_gaps",
    "format_ms",
    "infer_timeframe_ms",
    "list_symbols",
    "load_candles",
    "load_candles_with_report",
    "parse_date_ms",
    "validate_candles",
]

COLUMNS: tuple[str, ...] = ("timestamp_ms", "open", "high", "low", "close", "volume")
_HEADER = ",".join(COLUMNS)
_SUFFIXES = (".csv.gz", ".csv")
# Bump when the cached arrays' meaning or layout changes: old entries then simply miss.
_CACHE_FORMAT = 1
_MS_PER_MINUTE = 60_000


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on ndarrays raises, identity is sane
class Candles:
    """Candles of one or more symbols on one common time axis."""

    symbols: tuple[str, ...]
    timestamps: np.ndarray  # int64, shape (n,), candle open times in ms, on one grid
    ohlcv: np.ndarray  # float64, shape (n_symbols, n, 5): open, high, low, close, volume
    timeframe_ms: int
    filled_candles: dict[str, int]  # per symbol, candles created by gap filling (in range)
    sources: dict[str, str]  # per symbol, the file it came from


@dataclass(frozen=True)
class Gap:
    """Missing candles ``first_ms .. last_ms`` (inclusive open times), filled flat."""

    symbol: str
    first_ms: int
    last_ms: int
    n_candles: int


@dataclass(frozen=True)
class LoadReport:
    """What a load found and did, for the CLI to tell the user (the library never prints)."""

    file_ranges: dict[str, tuple[int, int]]  # per symbol, first and last candle open time in file
    gaps: tuple[Gap, ...]  # every filled gap, across the whole file (before slicing)
    common_range: tuple[int, int]  # first and last open time after alignment, before slicing
    from_cache: dict[str, bool]
    notes: tuple[str, ...]  # human-readable sentences worth showing


# --------------------------------------------------------------------------- small helpers


def format_ms(ts_ms: int) -> str:
    """UTC ISO time of a ms timestamp, e.g. ``2021-05-19T13:10:00Z`` (``<n> ms`` when the
    timestamp lies outside what a calendar date can show)."""
    try:
        return datetime.fromtimestamp(int(ts_ms) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return f"{int(ts_ms)} ms"


def infer_timeframe_ms(timestamps: np.ndarray) -> int:
    """The most common positive step between consecutive timestamps (gaps don't fool it)."""
    diffs = np.diff(np.asarray(timestamps, dtype=np.int64))
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise ValueError("need at least two increasing timestamps to infer the timeframe")
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])  # ties -> the smallest step, the finer grid


def _tf_text(timeframe_ms: int) -> str:
    """60000 -> '1m', 300000 -> '5m', 3600000 -> '1h', odd steps in ms."""
    for unit, ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if timeframe_ms % ms == 0:
            return f"{timeframe_ms // ms}{unit}"
    return f"{timeframe_ms}ms"


def _where(source: str, row: int, ts: float | None = None) -> str:
    """``file: row N (line N+1, 2021-...)`` -- row is 1-based over data rows."""
    at = f"{source}: row {row} (line {row + 1}"
    if ts is not None and math.isfinite(ts):
        at += f", timestamp {int(ts)} = {format_ms(int(ts))}" if ts == int(ts) else f", {ts!r}"
    return at + ")"


# --------------------------------------------------------------------------- parsing


def _read_text(path: Path, raw: bytes) -> str:
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        limit = MAX_CANDLE_FILE_BYTES
        try:  # bounded: a small gzip bomb must not fill the memory
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                raw = gz.read(limit + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: cannot decompress gzip file: {exc}") from None
        if len(raw) > limit:
            raise DataError(f"{path}: decompresses to more than the {limit:,} bytes allowed")
    return decode_text(raw, str(path), "candle file", DataError)


def _explain_parse_failure(source: str, lines: list[str], numpy_error: str) -> DataError:
    """Find the first row numpy could not parse and say why (slow; only runs on failure)."""
    for i, line in enumerate(lines):
        parts = line.split(",")
        if len(parts) != len(COLUMNS):
            return DataError(
                f"{_where(source, i + 1)}: expected {len(COLUMNS)} columns "
                f"({_HEADER}), found {len(parts)}: {line[:80]!r}"
            )
        for name, part in zip(COLUMNS, parts, strict=True):
            try:
                float(part)
            except ValueError:
                return DataError(
                    f"{_where(source, i + 1)}: unparsable number {part.strip()!r} in column {name}"
                )
    return DataError(f"{source}: could not parse the file: {numpy_error}")


def _parse_csv(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Raw file bytes -> (int64 timestamps, float64 (n, 5) ohlcv), format-checked only."""
    source = str(path)
    lines = _read_text(path, raw).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{source}: empty file (expected header {_HEADER!r} and data rows)")
    header = [c.strip().lower() for c in lines[0].split(",")]
    if header != list(COLUMNS):
        try:
            [float(c) for c in header]
            problem = "missing header line"
        except ValueError:
            problem = f"wrong header {lines[0][:80]!r}"
        raise DataError(f"{source}: line 1: {problem}; expected {_HEADER!r}")
    body = lines[1:]
    if not body:
        raise DataError(f"{source}: empty file (header only, no data rows)")
    for i, line in enumerate(body):  # numpy would skip blank lines and shift row numbers
        if not line.strip():
            raise DataError(f"{_where(source, i + 1)}: empty line inside the data")
    try:
        table = np.loadtxt(body, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
    except ValueError as exc:
        raise _explain_parse_failure(source, body, str(exc)) from None
    if table.shape[1] != len(COLUMNS):
        raise _explain_parse_failure(source, body, f"{table.shape[1]} columns")
    ts = table[:, 0]
    bad = ~np.isfinite(ts) | (ts != np.round(ts)) | (np.abs(ts) > 2**53)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{_where(source, i + 1)}: timestamp {body[i].split(',')[0].strip()[:40]!r} "
            f"is not a whole number of milliseconds"
        )
    # Seconds (1621382400) or microseconds read as ms would put the candles in 1970 or in the
    # far future and the run would "succeed" on nonsense: refuse, naming the first such row.
    implausible = (ts < MIN_PLAUSIBLE_MS) | (ts > MAX_DATE_MS)
    if implausible.any():
        i = int(np.flatnonzero(implausible)[0])
        unit = "seconds" if ts[i] < MIN_PLAUSIBLE_MS else "microseconds or nanoseconds"
        raise DataError(
            f"{_where(source, i + 1)}: timestamp {int(ts[i])} is not in milliseconds "
            f"({unit}?): column timestamp_ms holds the candle open time in UTC milliseconds "
            f"since 1970, e.g. 1621382400000 for 2021-05-19"
        )
    return ts.astype(np.int64), np.ascontiguousarray(table[:, 1:])


# --------------------------------------------------------------------------- validation


def validate_candles(
    timestamps: np.ndarray, ohlcv: np.ndarray, source: str, timeframe_ms: int | None = None
) -> int:
    """Check candles row by row; return the timeframe (inferred unless given).

    Raises DataError at the earliest bad row, naming source, row, timestamp and problem.
    Works on any (timestamps, ohlcv) pair, e.g. candles fetched by the live bot.
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    x = np.asarray(ohlcv, dtype=np.float64)
    n = len(ts)
    if n == 0:
        raise DataError(f"{source}: no candles")
    o, h, lo, c, v = (x[:, k] for k in range(5))
    # (problem mask, message builder); on one row the first listed problem wins.
    checks = [
        (
            ~np.isfinite(x).all(axis=1),
            lambda i: (
                "NaN or inf in "
                + ", ".join(COLUMNS[k + 1] for k in range(5) if not math.isfinite(x[i, k]))
            ),
        ),
        (
            (x[:, :4] <= 0).any(axis=1),
            lambda i: (
                "non-positive price ("
                + " ".join(f"{COLUMNS[k + 1]}={float(x[i, k])!r}" for k in range(4))
                + ")"
            ),
        ),
        (
            h < np.maximum(o, c),
            lambda i: f"high {float(h[i])!r} below max(open, close) = {float(max(o[i], c[i]))!r}",
        ),
        (
            lo > np.minimum(o, c),
            lambda i: f"low {float(lo[i])!r} above min(open, close) = {float(min(o[i], c[i]))!r}",
        ),
        (v < 0, lambda i: f"negative volume {float(v[i])!r}"),
    ]
    steps = np.diff(ts)
    order_bad = np.zeros(n, dtype=bool)
    order_bad[1:] = steps <= 0
    checks.append(
        (
            order_bad,
            lambda i: (
                (
                    f"duplicate timestamp (same as row {i})"
                    if ts[i] == ts[i - 1]
                    else f"timestamp out of order: before row {i}'s {format_ms(ts[i - 1])}"
                )
                + " (timestamps must strictly increase)"
            ),
        )
    )
    first_bad = [(int(np.argmax(mask)), k) for k, (mask, _) in enumerate(checks) if mask.any()]
    if first_bad:
        i, k = min(first_bad)
        raise DataError(f"{_where(source, i + 1, float(ts[i]))}: {checks[k][1](i)}")
    if timeframe_ms is None:
        if n < 2:
            raise DataError(f"{source}: a single candle; cannot infer the timeframe")
        timeframe_ms = infer_timeframe_ms(ts)
    off = ts % timeframe_ms != 0
    if off.any():
        i = int(np.argmax(off))
        raise DataError(
            f"{_where(source, i + 1, float(ts[i]))}: timestamp not on the "
            f"{_tf_text(timeframe_ms)} grid of this file (timestamp % {timeframe_ms} = "
            f"{int(ts[i] % timeframe_ms)})"
        )
    return int(timeframe_ms)


# --------------------------------------------------------------------------- gaps


def fill_gaps(
    timestamps: np.ndarray, ohlcv: np.ndarray, timeframe_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill missing candles flat at the previous close with volume 0.

    Input must be validated (strictly increasing, on the grid). Returns (timestamps, ohlcv,
    filled) on the full grid from first to last candle; ``filled`` marks invented candles.
    The live bot uses the same function, so backtest and live see the same prices.
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    x = np.asarray(ohlcv, dtype=np.float64)
    idx = (ts - ts[0]) // timeframe_ms
    n_full = int(idx[-1]) + 1
    if n_full == len(ts):
        return ts, np.ascontiguousarray(x), np.zeros(len(ts), dtype=bool)
    full_ts = ts[0] + np.arange(n_full, dtype=np.int64) * timeframe_ms
    present = np.zeros(n_full, dtype=bool)
    present[idx] = True
    last_real_row = np.cumsum(present) - 1  # slot -> input row of the last real candle so far
    prev_close = x[last_real_row, 3]
    full = np.empty((n_full, 5), dtype=np.float64)
    full[:, :4] = prev_close[:, None]
    full[:, 4] = 0.0
    full[idx] = x
    return full_ts, full, ~present


def _find_gaps(ts: np.ndarray, timeframe_ms: int) -> list[tuple[int, int, int]]:
    """(row before the gap, first missing ms, missing count) for each gap in validated ts."""
    missing = np.diff(ts) // timeframe_ms - 1
    rows = np.flatnonzero(missing > 0)
    return [(int(r), int(ts[r] + timeframe_ms), int(missing[r])) for r in rows]


# --------------------------------------------------------------------------- one symbol


@dataclass(frozen=True)
class _Prepared:
    """One symbol on its own full grid, gaps filled."""

    first_ms: int
    timeframe_ms: int
    ohlcv: np.ndarray  # (n, 5) float64, C-contiguous, maybe a read-only memmap
    filled: np.ndarray  # (n,) bool
    gaps: tuple[tuple[int, int], ...]  # (first missing ms, count)
    from_cache: bool

    @property
    def n(self) -> int:
        return self.ohlcv.shape[0]

    @property
    def last_ms(self) -> int:
        return self.first_ms + (self.n - 1) * self.timeframe_ms


def _max_gap_candles(max_gap_minutes: float, timeframe_ms: int) -> int:
    if math.isinf(max_gap_minutes):
        return sys.maxsize
    return int(max_gap_minutes * _MS_PER_MINUTE // timeframe_ms)


def _prepare(path: Path, raw: bytes, max_gap_minutes: float) -> _Prepared:
    source = str(path)
    ts, x = _parse_csv(path, raw)
    tf = validate_candles(ts, x, source)
    gaps = _find_gaps(ts, tf)
    limit = _max_gap_candles(max_gap_minutes, tf)
    for row, first_missing, count in gaps:
        if count > limit:
            last_missing = first_missing + (count - 1) * tf
            raise DataError(
                f"{source}: gap of {count} missing candles ({count * tf / _MS_PER_MINUTE:g} min) "
                f"from {format_ms(first_missing)} to {format_ms(last_missing)} inclusive "
                f"(after row {row + 1}, data resumes at {format_ms(last_missing + tf)}); "
                f"longer than max_gap_minutes={max_gap_minutes:g} ({limit} candles). "
                f"Refusing to invent a flat market that long: slice around it or raise the limit"
            )
    _, full, filled = fill_gaps(ts, x, tf)
    return _Prepared(
        first_ms=int(ts[0]),
        timeframe_ms=tf,
        ohlcv=full,
        filled=filled,
        gaps=tuple((g[1], g[2]) for g in gaps),
        from_cache=False,
    )


# --------------------------------------------------------------------------- cache


def _cache_key(raw: bytes, max_gap_minutes: float) -> str:
    h = hashlib.sha256(raw)
    h.update(f"|max_gap_minutes={float(max_gap_minutes)!r}|format={_CACHE_FORMAT}".encode())
    return h.hexdigest()


def atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write via a temp file in the same folder + os.replace: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _cache_paths(cache_dir: Path, symbol: str, key: str) -> tuple[Path, Path, Path]:
    stem = f"{symbol}-{key[:32]}"
    return (
        cache_dir / f"{stem}.ohlcv.npy",
        cache_dir / f"{stem}.filled.npy",
        cache_dir / f"{stem}.json",  # written last: its presence commits the entry
    )


def _cache_read(cache_dir: Path, symbol: str, key: str) -> _Prepared | None:
    ohlcv_p, filled_p, meta_p = _cache_paths(cache_dir, symbol, key)
    try:
        meta = json.loads(meta_p.read_text())
        if meta.get("key") != key or meta.get("format") != _CACHE_FORMAT:
            return None
        ohlcv = np.load(ohlcv_p, mmap_mode="r")
        filled = np.load(filled_p, mmap_mode="r")
        n = int(meta["n"])
        if ohlcv.shape != (n, 5) or ohlcv.dtype != np.float64 or filled.shape != (n,):
            return None
        return _Prepared(
            first_ms=int(meta["first_ms"]),
            timeframe_ms=int(meta["timeframe_ms"]),
            ohlcv=ohlcv.view(np.ndarray),  # plain ndarray over the shared mapping
            filled=np.asarray(filled, dtype=bool),
            gaps=tuple((int(a), int(b)) for a, b in meta["gaps"]),
            from_cache=True,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged entry: rebuild it


def _cache_write(cache_dir: Path, symbol: str, key: str, prep: _Prepared, source: str) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    ohlcv_p, filled_p, meta_p = _cache_paths(cache_dir, symbol, key)
    atomic_write(ohlcv_p, lambda f: np.save(f, np.ascontiguousarray(prep.ohlcv)))
    atomic_write(filled_p, lambda f: np.save(f, prep.filled))
    meta = {
        "format": _CACHE_FORMAT,
        "key": key,
        "source": source,
        "first_ms": prep.first_ms,
        "timeframe_ms": prep.timeframe_ms,
        "n": prep.n,
        "gaps": [list(g) for g in prep.gaps],
    }
    atomic_write(meta_p, lambda f: f.write(json.dumps(meta).encode()))


def _load_symbol(
    path: Path, symbol: str, max_gap_minutes: float, cache_dir: Path | None
) -> _Prepared:
    raw = read_file(path, what="candle file", limit=MAX_CANDLE_FILE_BYTES, error=DataError)
    if cache_dir is None:
        return _prepare(path, raw, max_gap_minutes)
    key = _cache_key(raw, max_gap_minutes)
    cached = _cache_read(cache_dir, symbol, key)
    if cached is not None:
        return cached
    prep = _prepare(path, raw, max_gap_minutes)
    try:
        _cache_write(cache_dir, symbol, key, prep, str(path))
    except OSError as exc:
        raise DataError(f"cache folder {cache_dir}: cannot write {symbol}: {exc}") from None
    shared = _cache_read(cache_dir, symbol, key)  # hand out the shared mapping
    return prep if shared is None else replace(shared, from_cache=False)


# --------------------------------------------------------------------------- files


def _symbol_of(path: Path) -> str | None:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def list_symbols(folder: str | Path) -> dict[str, Path]:
    """Symbol -> file for every ``SYMBOL.csv`` / ``SYMBOL.csv.gz`` in a folder, sorted."""
    folder = Path(folder)
    found: dict[str, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list candle folder: {exc.strerror or exc}") from None
    for p in entries:
        sym = _symbol_of(p)
        if sym is None or not p.is_file():
            continue
        if sym in found:
            raise DataError(
                f"{folder}: two files for {sym}: {found[sym].name} and {p.name}; keep one"
            )
        found[sym] = p
    return dict(sorted(found.items()))


def _resolve_files(path: Path, symbols: Sequence[str] | None) -> dict[str, Path]:
    if isinstance(symbols, str):  # "BTCUSDT" would otherwise iterate as letters
        symbols = [symbols]
    if symbols is not None:
        if not symbols:
            raise ConfigError("symbols: empty list; give at least one symbol, or None for all")
        dupes = sorted({s for s in symbols if list(symbols).count(s) > 1})
        if dupes:
            raise ConfigError(f"symbols: listed more than once: {', '.join(dupes)}")
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as exc:
        raise DataError(f"{str(path)[:200]}: not a usable candle path: {exc}") from None
    if not exists:
        raise DataError(f"{path}: no such candle file or folder")
    if not is_dir:  # one file (a device or pipe is refused when it is read)
        sym = (_symbol_of(path) or path.name.split(".")[0]).upper()
        if symbols is not None and list(symbols) != [sym]:
            raise DataError(
                f"{path}: a single file holds only {sym}; asked for {', '.join(symbols)}"
            )
        return {sym: path}
    available = list_symbols(path)
    if not available:
        raise DataError(f"{path}: no candle files (SYMBOL.csv or SYMBOL.csv.gz) in this folder")
    if symbols is None:
        return available
    missing = [s for s in symbols if s not in available]
    if missing:
        raise DataError(
            f"{path}: no candle file for {', '.join(missing)}; available: {', '.join(available)}"
        )
    return {s: available[s] for s in symbols}


# --------------------------------------------------------------------------- entry points


def load_candles_with_report(  # noqa: C901 -- the loader's checks in file order (debt)
    path: str | Path,
    symbols: Sequence[str] | None = None,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    max_gap_minutes: float = 1440.0,
    cache_dir: str | Path | None = None,
) -> tuple[Candles, LoadReport]:
    """Like :func:`load_candles`, and also say what was found: ranges, gaps, trimming."""
    if not (isinstance(max_gap_minutes, int | float) and max_gap_minutes >= 0):
        raise ConfigError(f"max_gap_minutes={max_gap_minutes!r}: must be a number >= 0")
    path = Path(path)
    files = _resolve_files(path, symbols)
    cache = Path(cache_dir) if cache_dir is not None else None
    preps = {s: _load_symbol(p, s, max_gap_minutes, cache) for s, p in files.items()}
    syms = tuple(preps)
    notes: list[str] = []

    tfs = {s: p.timeframe_ms for s, p in preps.items()}
    if len(set(tfs.values())) > 1:
        listing = ", ".join(f"{s} {_tf_text(tf)} ({files[s]})" for s, tf in tfs.items())
        raise DataError(f"symbols have different timeframes: {listing}")
    tf = tfs[syms[0]]

    first = max(p.first_ms for p in preps.values())
    last = min(p.last_ms for p in preps.values())
    ranges = {s: (p.first_ms, p.last_ms) for s, p in preps.items()}
    if first > last:
        listing = "; ".join(f"{s} {format_ms(a)} to {format_ms(b)}" for s, (a, b) in ranges.items())
        raise DataError(f"symbols' candle ranges do not overlap: {listing}")
    if len(set(ranges.values())) > 1:
        trims = [
            f"{s} has {format_ms(a)} to {format_ms(b)}"
            for s, (a, b) in ranges.items()
            if (a, b) != (first, last)
        ]
        notes.append(
            f"candle ranges differ; using the common range {format_ms(first)} to "
            f"{format_ms(last)}, where all symbols have data ({'; '.join(trims)})"
        )

    lo, hi = first, last + tf  # [lo, hi) over candle open times
    if start_ms is not None:
        lo = max(lo, -(-int(start_ms) // tf) * tf)  # first grid time >= start_ms
    if end_ms is not None:
        hi = min(hi, -(-int(end_ms) // tf) * tf)  # open times < end_ms
    if lo >= hi:
        want = (
            f"[{format_ms(start_ms) if start_ms is not None else '-'}, "
            f"{format_ms(end_ms) if end_ms is not None else '-'})"
        )
        raise DataError(
            f"{path}: no candles in the requested range {want}; the data "
            f"({', '.join(syms)}) covers {format_ms(first)} to {format_ms(last)}"
        )
    n = (hi - lo) // tf
    timestamps = lo + np.arange(n, dtype=np.int64) * tf
    timestamps.flags.writeable = False

    def window(p: _Prepared) -> slice:
        i0 = (lo - p.first_ms) // tf
        return slice(i0, i0 + n)

    if len(syms) == 1:  # a view: a cached memmap stays shared, nothing copied
        p = preps[syms[0]]
        ohlcv = p.ohlcv[window(p)][None]
    else:
        ohlcv = np.empty((len(syms), n, 5), dtype=np.float64)
        for k, s in enumerate(syms):
            ohlcv[k] = preps[s].ohlcv[window(preps[s])]
    if ohlcv.flags.writeable:
        ohlcv.flags.writeable = False

    filled = {s: int(np.count_nonzero(p.filled[window(p)])) for s, p in preps.items()}
    gaps = tuple(Gap(s, a, a + (c - 1) * tf, c) for s, p in preps.items() for a, c in p.gaps)
    for s, p in preps.items():
        if p.gaps:
            longest = max(c for _, c in p.gaps)
            total = sum(c for _, c in p.gaps)
            notes.append(
                f"{s}: {len(p.gaps)} gap(s), {total} missing candles in the file (longest "
                f"{longest}), filled flat at the previous close with volume 0; "
                f"{filled[s]} of them in the loaded range"
            )

    candles = Candles(
        symbols=syms,
        timestamps=timestamps,
        ohlcv=ohlcv,
        timeframe_ms=int(tf),
        filled_candles=filled,
        sources={s: str(p) for s, p in files.items()},
    )
    report = LoadReport(
        file_ranges=ranges,
        gaps=gaps,
        common_range=(first, last),
        from_cache={s: p.from_cache for s, p in preps.items()},
        notes=tuple(notes),
    )
    return candles, report


def load_candles(
    path: str | Path,
    symbols: Sequence[str] | None = None,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    max_gap_minutes: float = 1440.0,
    cache_dir: str | Path | None = None,
) -> Candles:
    """Load, validate, gap-fill and align candles of one file or a folder of symbol files.

    ``symbols=None`` loads every symbol in the folder (sorted). ``start_ms`` is inclusive,
    ``end_ms`` exclusive, both applied after aligning symbols to their common range.
    """
    candles, _ = load_candles_with_report(
        path,
        symbols,
        start_ms=start_ms,
        end_ms=end_ms,
        max_gap_minutes=max_gap_minutes,
        cache_dir=cache_dir,
    )
    return candles

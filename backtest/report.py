"""A backtest's report folder: analysis.json, fills.csv, equity.csv, config and PNG plots.

Every run gets a new folder ``<out_dir>/backtest_<UTC time>_<config hash>`` (a ``-2``, ``-3``
suffix if that name is taken: a report is never overwritten). It is written in a hidden
``.partial-<host>-<pid>-<name>`` folder and renamed when complete, so a run killed half-way
(kill -9, power loss) leaves no half report under a report's name; the next run removes such
leftovers of dead processes. Plots use matplotlib's
object-oriented API on Agg canvases (no pyplot global state, no display needed); full-range
lines are reduced to a min/max envelope per pixel-sized bucket so that a year of 1m candles
plots as fast as a week and a crash's extreme still shows.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import math
import os
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

from backtest.data import format_ms
from backtest.engine import (
    F_BALANCE,
    F_FEE,
    F_K,
    F_KIND,
    F_PNL,
    F_POS_PRICE,
    F_POS_SIZE,
    F_PRICE,
    F_QTY,
    F_SIDE,
    F_SYMBOL,
    F_WE,
)
from backtest.metrics import (
    bankruptcy_distances,
    bankruptcy_prices,
    hard_stop_stops,
    wallet_exposures,
)
from bot.config import config_to_dict
from bot.core.params import (
    KIND_CLOSE_GRID,
    KIND_CLOSE_TRAILING,
    KIND_ENTRY_GRID,
    KIND_ENTRY_INITIAL,
    KIND_ENTRY_TRAILING,
    KIND_HARD_STOP,
    KIND_LIQUIDATION,
    KIND_NAMES,
    KIND_UNSTUCK,
    P_UNSTUCK_THRESHOLD,
    P_WALLET_EXPOSURE_LIMIT,
)
from bot.errors import GridbotError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from backtest.runner import BacktestRun

# matplotlib is imported by the plotting functions only: importing it costs more than a whole
# warm `gridbot backtest --no-plots`.

__all__ = ["EQUITY_MAX_ROWS", "report_dir_name", "worst_day", "write_report"]

EQUITY_MAX_ROWS = 20_000
_PLOT_POINTS = 4_000  # per line; ~2.5 points per pixel column of a 1400 px wide figure
_DAY_MS = 86_400_000
_DPI = 110
_UTC_LOCATOR_KW = {"tz": UTC}


# --------------------------------------------------------------------------- files


def _config_hash(run: BacktestRun) -> str:
    blob = orjson.dumps(config_to_dict(run.config), option=orjson.OPT_SORT_KEYS)
    ts = run.candles.timestamps
    blob += f"|{','.join(run.candles.symbols)}|{int(ts[0])}|{int(ts[-1])}".encode()
    return hashlib.sha256(blob).hexdigest()[:6]


def report_dir_name(run: BacktestRun, now: datetime | None = None) -> str:
    """``backtest_2026-11-22T03-10-00Z_ab12cd``: UTC time and a hash of config + data range."""
    now = now or datetime.now(UTC)
    return f"backtest_{now.astimezone(UTC):%Y-%m-%dT%H-%M-%SZ}_{_config_hash(run)}"


_PARTIAL = ".partial-"


def partial_dir(out_dir: Path, name: str) -> Path:
    """A hidden work folder next to the final one: ``.partial-<host>-<pid>-<name>``.

    Work folders of this host whose process is gone (a kill -9) are removed first."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GridbotError(
            f"report folder {out_dir}: cannot create it: {exc.strerror or exc}"
        ) from None
    host = socket.gethostname().replace("-", "_")[:40] or "host"
    for old in out_dir.glob(f"{_PARTIAL}{host}-*"):
        pid = old.name[len(_PARTIAL) + len(host) + 1 :].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = out_dir / f"{_PARTIAL}{host}-{os.getpid()}-{name}"
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.mkdir()
    except OSError as exc:
        raise GridbotError(
            f"report folder {out_dir}: cannot write: {exc.strerror or exc}"
        ) from None
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def publish(work: Path, out_dir: Path, name: str) -> Path:
    """Rename the finished work folder to its final name (``-2``, ``-3`` if taken): a report
    appears under its name complete or not at all, and is never overwritten."""
    for i in range(1, 10_000):
        path = out_dir / (name if i == 1 else f"{name}-{i}")
        if path.exists() or path.is_symlink():
            continue
        try:
            os.rename(work, path)  # atomic; fails if another run took the name meanwhile
            return path
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                continue
            raise GridbotError(f"report folder {path}: {exc.strerror or exc}") from None
    raise GridbotError(f"{out_dir}: no free report folder name for {name}")


def _iso(ts_ms: np.ndarray) -> np.ndarray:
    """Vectorized UTC ISO times (``2021-05-19T13:10:00Z``) of ms timestamps."""
    t = np.asarray(ts_ms, dtype=np.int64).astype("datetime64[ms]")
    return np.char.add(np.datetime_as_string(t, unit="s"), "Z")


def _num(x: float) -> str:
    """Shortest round-trip text of a float (CSV stays exact and small)."""
    return repr(float(x)) if math.isfinite(x) else ""


def _nums(x: np.ndarray) -> list[str]:
    """:func:`_num` of every element (through Python floats: numpy scalars are slow to format)."""
    finite = np.isfinite(x).tolist()
    return [repr(v) if ok else "" for v, ok in zip(x.tolist(), finite, strict=True)]


def _write_fills(run: BacktestRun, path: Path) -> None:
    f = run.output.fills
    ts = np.asarray(run.candles.timestamps, dtype=np.int64)
    times: np.ndarray | list[str] = _iso(ts[f[:, F_K].astype(np.int64)]) if len(f) else []
    syms = run.candles.symbols
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "time", "symbol", "side", "kind", "qty", "price", "fee", "realized_pnl",
                "balance", "wallet_exposure", "pos_size", "pos_price",
            ]
        )  # fmt: skip
        for row, t in zip(f, times, strict=True):
            w.writerow(
                [
                    t,
                    syms[int(row[F_SYMBOL])],
                    "long" if row[F_SIDE] > 0 else "short",
                    KIND_NAMES.get(int(row[F_KIND]), str(int(row[F_KIND]))),
                    *(_num(row[c]) for c in (F_QTY, F_PRICE, F_FEE, F_PNL, F_BALANCE, F_WE)),
                    _num(row[F_POS_SIZE]),
                    _num(row[F_POS_PRICE]),
                ]
            )


def _equity_rows(equity: np.ndarray, max_rows: int) -> np.ndarray:
    """Indices to keep: all, or the minimum-equity candle of each bucket (and the last one),
    so the downsampled curve keeps every drawdown's bottom."""
    n = len(equity)
    if n <= max_rows:
        return np.arange(n)
    size = -(-n // (max_rows - 1))
    n_full = n // size
    idx = (
        np.argmin(equity[: n_full * size].reshape(n_full, size), axis=1) + np.arange(n_full) * size
    )
    if n_full * size < n:
        idx = np.r_[idx, n_full * size + np.argmin(equity[n_full * size :])]
    return np.unique(np.r_[idx, n - 1])


def _write_equity(run: BacktestRun, path: Path, max_rows: int) -> int:
    out = run.output
    keep = _equity_rows(np.asarray(out.equity), max_rows)
    times = _iso(np.asarray(run.candles.timestamps)[keep])
    bal = _nums(np.asarray(out.balance[keep], dtype=np.float64))
    eq = _nums(np.asarray(out.equity[keep], dtype=np.float64))
    lines = ["time,balance,equity"]
    lines += [f"{t},{b},{e}" for t, b, e in zip(times.tolist(), bal, eq, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return len(keep)


def _analysis(run: BacktestRun, metrics: dict, equity_rows: int) -> dict:
    c = run.candles
    ts = c.timestamps
    k0 = int(min(run.inputs.trade_start, len(ts) - 1))
    return {
        "metrics": metrics,
        "symbols": list(c.symbols),
        "start_time": format_ms(int(ts[0])),
        "end_time": format_ms(int(ts[-1]) + c.timeframe_ms),  # exclusive: last candle's close
        "trading_start_time": format_ms(int(ts[k0])),
        "timeframe_ms": int(c.timeframe_ms),
        "n_candles": len(ts),
        "warmup_candles": k0,
        "filled_candles": {s: int(v) for s, v in c.filled_candles.items()},
        "data_sources": dict(c.sources),
        # which symbols paid the exchange's funding history, which the constant rate
        "funding": run.funding.as_dict(run.config.backtest.funding_rate_8h)
        if run.funding is not None
        else None,
        "equity_csv_rows": equity_rows,
        # each red stop of the equity hard stop: when, at what score, the closes' cost, restart
        "hard_stops": hard_stop_stops(run),
    }


def write_report(
    run: BacktestRun,
    metrics: dict,
    out_dir: Path,
    *,
    config_source: str | None = None,
    plots: bool = True,
    equity_max_rows: int = EQUITY_MAX_ROWS,
) -> Path:
    """Write a new report folder under ``out_dir`` and return its path.

    ``config_source``: path of the config file the run came from; copied as ``config.hjson``
    next to the complete, validated ``config.json``.
    """
    out_dir = Path(out_dir)
    name = report_dir_name(run)
    folder = partial_dir(out_dir, name)
    try:
        rows = _write_equity(run, folder / "equity.csv", equity_max_rows)
        _write_fills(run, folder / "fills.csv")
        (folder / "analysis.json").write_bytes(
            orjson.dumps(_analysis(run, metrics, rows), option=orjson.OPT_INDENT_2) + b"\n"
        )
        (folder / "config.json").write_bytes(
            orjson.dumps(config_to_dict(run.config), option=orjson.OPT_INDENT_2) + b"\n"
        )
        if config_source is not None:
            shutil.copyfile(config_source, folder / "config.hjson")
        if plots:
            plot_all(run, metrics, folder)
        return publish(folder, out_dir, name)
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, OSError):
            raise GridbotError(
                f"report folder {out_dir}: cannot write {exc.filename or ''}: {exc.strerror or exc}"
            ) from None
        raise


# --------------------------------------------------------------------------- plots


def _envelope(
    x: np.ndarray, y: np.ndarray, points: int = _PLOT_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most ~``points`` points: per bucket its min and max in time order (crashes stay)."""
    n = len(y)
    if n <= points:
        return x, y
    size = -(-n // (points // 2))
    n_full = n // size
    yb = y[: n_full * size].reshape(n_full, size)
    base = np.arange(n_full) * size
    i_min = np.argmin(yb, axis=1) + base
    i_max = np.argmax(yb, axis=1) + base
    idx = np.sort(np.r_[i_min, i_max, np.arange(n_full * size, n)])
    return x[idx], y[idx]


def _dates(ts_ms: np.ndarray) -> np.ndarray:
    from matplotlib import dates as mdates

    return mdates.date2num(np.asarray(ts_ms, dtype=np.int64).astype("datetime64[ms]"))


def _time_axis(ax: object, label: bool = True) -> None:
    from matplotlib import dates as mdates

    loc = mdates.AutoDateLocator(**_UTC_LOCATOR_KW)
    ax.xaxis.set_major_locator(loc)  # type: ignore[attr-defined]
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, **_UTC_LOCATOR_KW))  # type: ignore[attr-defined]
    if label:
        ax.set_xlabel("time (UTC)")  # type: ignore[attr-defined]
    ax.grid(True, alpha=0.3)  # type: ignore[attr-defined]


def _figure(
    size: tuple[float, float],
    rows: int,
    *,
    height_ratios: tuple[float, ...] | None = None,
    sharex: bool = False,
    hspace: float = 0.22,
) -> tuple[Figure, list]:
    """A figure with fixed margins in inches. No layout engine: constrained layout costs an
    extra draw and a tight-bbox pass per figure, half the plotting time."""
    from matplotlib.figure import Figure

    w, h = size
    fig = Figure(figsize=size)
    fig.subplots_adjust(
        left=0.85 / w, right=1 - 0.25 / w, bottom=0.6 / h, top=1 - 0.4 / h, hspace=hspace
    )
    axes = fig.subplots(rows, 1, sharex=sharex, height_ratios=height_ratios, squeeze=False)
    return fig, list(axes[:, 0])


def _save(fig: Figure, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI)


def _fmt(x: object, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x * 100:.2f}%" if pct else f"{x:.4g}"
    return str(x)


def plot_balance_equity(run: BacktestRun, metrics: dict, path: Path) -> None:
    out = run.output
    ts = np.asarray(run.candles.timestamps)
    x = _dates(ts)
    fig, (ax, ax_dd) = _figure((13, 7), 2, height_ratios=(3, 1), sharex=True, hspace=0.1)
    ax.plot(*_envelope(x, np.asarray(out.balance)), lw=1.2, label="balance", color="tab:blue")
    ax.plot(*_envelope(x, np.asarray(out.equity)), lw=0.8, label="equity", color="tab:orange")
    ax.axhline(run.inputs.starting_balance, color="grey", ls=":", lw=1, label="starting balance")
    peak = np.maximum.accumulate(np.r_[run.inputs.starting_balance, out.equity])[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, 1.0 - out.equity / peak, 0.0) * 100
    ax_dd.fill_between(*_envelope(x, dd), color="tab:red", alpha=0.5, lw=0)
    ax_dd.invert_yaxis()
    ax_dd.set_ylabel("drawdown (%)")
    if out.liquidated_k >= 0:
        for a in (ax, ax_dd):
            a.axvline(x[out.liquidated_k], color="black", lw=1.5, ls="--", label="liquidation")
    ax.set_ylabel("USDT")
    ax.set_title(
        f"Balance and equity: {', '.join(run.candles.symbols)} | gain {_fmt(metrics.get('gain'))}"
        f", adg {_fmt(metrics.get('adg'), pct=True)}"
        f", worst drawdown {_fmt(metrics.get('drawdown_worst'), pct=True)}"
        + (" | LIQUIDATED" if metrics.get("liquidated") else "")
    )
    ax.legend(loc="best")
    _time_axis(ax, label=False)
    _time_axis(ax_dd)
    _save(fig, path)


def plot_wallet_exposure(run: BacktestRun, path: Path) -> None:
    out = run.output
    x = _dates(run.candles.timestamps)
    we = wallet_exposures(out.positions, out.balance)  # (n, S, 2)
    sides = [
        (j, name, prm)
        for j, (name, prm) in enumerate(
            (("long", run.inputs.params_long), ("short", run.inputs.params_short))
        )
        if prm[0] != 0.0 or (we[:, :, j] > 0).any()
    ] or [(0, "long", run.inputs.params_long)]
    fig, axes = _figure((13, 1.2 + 4.0 * len(sides)), len(sides), sharex=True)
    for ax, (j, name, prm) in zip(axes, sides, strict=True):
        wel = float(prm[P_WALLET_EXPOSURE_LIMIT])
        for s, sym in enumerate(run.candles.symbols):
            ax.plot(*_envelope(x, np.nan_to_num(we[:, s, j], posinf=0.0)), lw=0.9, label=sym)
        ax.axhline(wel, color="tab:red", ls="--", lw=1.2, label=f"limit (WEL) {wel:.3g}")
        thr = wel * float(prm[P_UNSTUCK_THRESHOLD])
        ax.axhline(thr, color="tab:orange", ls=":", lw=1.2, label=f"unstuck threshold {thr:.3g}")
        ax.set_ylabel("wallet exposure")
        ax.set_title(f"{name}: wallet exposure per coin (size x position price / balance)")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", ncols=2, fontsize="small")
        _time_axis(ax, label=ax is axes[-1])
    _save(fig, path)


def worst_day(run: BacktestRun, s: int) -> tuple[int, str]:
    """(first candle index of the UTC day to zoom on for coin ``s``, why): the liquidation's
    day; else the day of the highest high for a coin only ever held short; else the day of the
    lowest low, within the trading window."""
    ts = np.asarray(run.candles.timestamps, dtype=np.int64)
    k0 = int(min(run.inputs.trade_start, len(ts) - 1))
    pos = run.output.positions[:, s]
    if run.output.liquidated_k >= 0:
        k, why = run.output.liquidated_k, "liquidation"
    elif (pos[:, 2] > 0).any() and not (pos[:, 0] > 0).any():
        k = k0 + int(np.argmax(run.candles.ohlcv[s, k0:, 1]))
        why = f"highest high {run.candles.ohlcv[s, k, 1]:.6g}"
    else:
        k = k0 + int(np.argmin(run.candles.ohlcv[s, k0:, 2]))
        why = f"lowest low {run.candles.ohlcv[s, k, 2]:.6g}"
    day0 = ts[k] // _DAY_MS * _DAY_MS
    return int(np.searchsorted(ts, day0)), f"{why} at {format_ms(int(ts[k]))[11:16]} UTC"


_MARKERS = (  # kinds, label, marker, color
    ((KIND_ENTRY_INITIAL, KIND_ENTRY_GRID, KIND_ENTRY_TRAILING), "entry", "^", "tab:green"),
    ((KIND_CLOSE_GRID, KIND_CLOSE_TRAILING), "close", "v", "tab:red"),
    ((KIND_UNSTUCK,), "unstuck", "D", "tab:orange"),
    ((KIND_HARD_STOP,), "hard stop", "s", "tab:purple"),
    ((KIND_LIQUIDATION,), "liquidation", "X", "black"),
)


def _plot_fills(ax: object, x: np.ndarray, fills: np.ndarray, size: float) -> None:
    for kinds, label, marker, color in _MARKERS:
        for side, side_label in ((1, "long"), (-1, "short")):
            m = np.isin(fills[:, F_KIND], kinds) & (fills[:, F_SIDE] == side)
            if not m.any():
                continue
            big = label in ("liquidation", "hard stop")
            ax.scatter(  # type: ignore[attr-defined]
                x[fills[m, F_K].astype(np.int64)],
                fills[m, F_PRICE],
                marker=marker,
                s=size * (3 if big else 1),
                facecolors=color if side > 0 else "none",
                edgecolors=color,
                linewidths=1.0,
                zorder=5,
                label=f"{label} ({side_label})",
            )


def _position_price(pos: np.ndarray, j: int) -> np.ndarray:
    p = pos[:, 2 * j + 1].copy()
    p[pos[:, 2 * j] <= 0] = np.nan
    return p


def plot_price(
    run: BacktestRun,
    s: int,
    path: Path,
    bk: np.ndarray | None = None,
    bk_dist: np.ndarray | None = None,
) -> None:
    c = run.candles
    sym = c.symbols[s]
    ts = np.asarray(c.timestamps, dtype=np.int64)
    x = _dates(ts)
    o = c.ohlcv[s]
    pos = run.output.positions[:, s]
    fills = (
        run.output.fills[run.output.fills[:, F_SYMBOL] == s]
        if len(run.output.fills)
        else np.zeros((0, 12))
    )
    d0, why = worst_day(run, s)
    d1 = int(np.searchsorted(ts, ts[d0] + _DAY_MS))
    fig, (ax, axz) = _figure((13, 9.5), 2, hspace=0.32)

    # full range
    xl, yl = _envelope(x, np.asarray(o[:, 2]))
    xh, yh = _envelope(x, np.asarray(o[:, 1]))
    ax.plot(xl, yl, color="tab:blue", lw=0.5, alpha=0.5)
    ax.plot(xh, yh, color="tab:blue", lw=0.5, alpha=0.5, label="high / low")
    for j, (name, color) in enumerate((("long", "tab:green"), ("short", "tab:purple"))):
        pp = _position_price(pos, j)
        if np.isfinite(pp).any():
            ax.plot(x, pp, color=color, lw=1.0, ls="--", label=f"{name} position price")
    _plot_fills(ax, x, fills, 22)
    ax.axvspan(x[d0], x[min(d1, len(x) - 1)], color="gold", alpha=0.25, label="zoomed day")
    if run.inputs.trade_start > 0:
        ax.axvspan(
            x[0],
            x[min(run.inputs.trade_start, len(x) - 1)],
            color="grey",
            alpha=0.12,
            label="EMA warm-up",
        )
    ax.set_title(f"{sym}: price and fills")
    ax.set_ylabel("price (USDT)")
    ax.legend(loc="best", fontsize="small", ncols=2)
    _time_axis(ax)

    # zoom on the worst day
    sl = slice(d0, d1)
    xz = x[sl]
    axz.fill_between(xz, o[sl, 2], o[sl, 1], color="tab:blue", alpha=0.25, lw=0, label="high-low")
    axz.plot(xz, o[sl, 3], color="tab:blue", lw=0.8, label="close")
    lo, hi = float(o[sl, 2].min()), float(o[sl, 1].max())
    # Reference lines join the view when near the day's prices; far ones would squash the
    # candles, so their level is named in the legend instead.
    view_lo, view_hi = lo, hi
    near_lo, near_hi = lo - 0.25 * (hi + lo) / 2, hi + 0.25 * (hi + lo) / 2
    lines = []
    for j, (name, color) in enumerate((("long", "tab:green"), ("short", "tab:purple"))):
        pp = _position_price(pos[sl], j)
        if np.isfinite(pp).any():
            lines.append((pp, f"{name} position price", color, "--"))
    note = ""
    if bk_dist is not None and np.isfinite(bk_dist[sl, s]).any():
        note = f"; closest to bankruptcy this day: {np.nanmin(bk_dist[sl, s]):.1f}% away"
    if bk is not None and np.isfinite(bk[sl, s]).any():
        lines.append((bk[sl, s], "bankruptcy price", "black", ":"))
    labelled = []
    for y, label, color, ls in lines:
        y_lo, y_hi = float(np.nanmin(y)), float(np.nanmax(y))
        if near_lo <= y_lo and y_hi <= near_hi:
            view_lo, view_hi = min(view_lo, y_lo), max(view_hi, y_hi)
        else:
            seen = (y >= view_lo) & (y <= view_hi)
            where = "partly out of view" if seen.any() else "out of view"
            span = f"{y_lo:.6g}" if y_lo == y_hi else f"{y_lo:.6g}..{y_hi:.6g}"
            label += f" ({where}: {span})"
        labelled.append((y, label, color, ls))
    pad = (view_hi - view_lo) * 0.06 or view_hi * 0.01
    for y, label, color, ls in labelled:
        # Points beyond the view are left out so a jump out of view draws no vertical stroke.
        shown = np.where((y >= view_lo - pad) & (y <= view_hi + pad), y, np.nan)
        axz.plot(xz, shown, color=color, lw=1.2, ls=ls, label=label)
    m = (fills[:, F_K] >= d0) & (fills[:, F_K] < d1) if len(fills) else np.zeros(0, bool)
    _plot_fills(axz, x, fills[m], 45)
    axz.set_ylim(view_lo - pad, view_hi + pad)
    axz.set_title(f"{sym}: worst day {format_ms(int(ts[d0]))[:10]} ({why}{note})")
    axz.set_ylabel("price (USDT)")
    axz.legend(loc="best", fontsize="small", ncols=2)
    _time_axis(axz)
    _save(fig, path)


def plot_all(run: BacktestRun, metrics: dict, folder: Path) -> list[Path]:
    """Every PNG of a report; returns their paths."""
    paths = [folder / "balance_equity.png", folder / "wallet_exposure.png"]
    plot_balance_equity(run, metrics, paths[0])
    plot_wallet_exposure(run, paths[1])
    bk = bankruptcy_prices(run)
    bk_dist = bankruptcy_distances(run)
    for s, sym in enumerate(run.candles.symbols):
        p = folder / f"price_{sym}.png"
        plot_price(run, s, p, bk, bk_dist)
        paths.append(p)
    return paths

"""Metrics of a backtest run: one flat dict of JSON-safe numbers, computed with numpy.

It runs after every optimizer trial, so everything is vectorized over the (candles x coins x
sides) arrays of :class:`~backtest.engine.EngineOutput` (about 1 ms on 16k candles x 3 coins).

Every metric is measured over the trading window, from candle ``inputs.trade_start`` on: the
candles before only warm up the EMAs (equity is flat at the starting balance there), and
counting them as days would dilute the daily gains. Times are UTC; equity and positions are
taken at each candle's close. Definitions (the README quotes them):

- final_balance: wallet balance (realized) at the last candle's close.
- final_equity: balance + unrealized pnl at the last candle's close.
- gain: final_equity / starting_balance.
- adg: average daily gain as Passivbot defines it, geometric: gain ** (1 / n_days) - 1, the
  constant daily return that compounds to the final equity (-1 when equity ended at or below
  zero; 0 with no trading day).
- daily_gain_mean: the arithmetic mean of daily equity returns: equity at each UTC day's last
  candle vs the previous day's (the first day vs the starting balance). Partial first and last
  days count as days. (gridbot's adg before it took Passivbot's meaning.)
- mdg: median of the same daily returns.
- sharpe_ratio: daily_gain_mean / standard deviation (population) of the daily returns, not annualized;
  0 when the deviation is 0 (e.g. a single day, or no trade).
- sortino_ratio: daily_gain_mean / downside deviation sqrt(mean(min(r, 0)^2)) of the daily returns, not
  annualized; 0 when there is no losing day (undefined, like sharpe with zero deviation).
- drawdown_worst: max over candles of 1 - equity / running max of equity (the running max
  starts at the starting balance); 0..1, above 1 only if equity went negative.
- calmar_ratio: adg / drawdown_worst; 0 when drawdown_worst is 0 (undefined).
- loss_profit_ratio: sum of losses / sum of profits over the realized pnl (gross of fees) of
  the fills, losses as positive numbers; 0 when nothing was realized; None when there were
  losses and no profit (an infinite ratio, the worst value).
- n_fills: number of fills, liquidation fills included.
- fees_paid: maker fees plus liquidation fees, in quote.
- funding_paid: net funding paid (negative: received), in quote.
- wallet_exposure_max: max over candles and positions (coin x side) of
  size * position_price / balance.
- wallet_exposure_mean: mean of the same over the (candle, position) pairs with the position
  open; 0 when never in a position.
- hours_stuck_max: the longest continuous run of candles in which one position (coin x side)
  had WE >= unstuck_threshold * wallet_exposure_limit of its side, in hours (candles x candle
  length).
- position_held_hours_max: the longest continuous run of candles in which one position had
  size > 0 at the close, in hours.
- bankruptcy_distance_min_pct: the minimum over candles and coins with a net position of the
  distance from the candle's adverse extreme (low for net long, high for net short) to that
  coin's cross-margin bankruptcy price, other coins held at their closes:
  p_i = (L*P_L - S*P_S - (balance + upnl of the other coins)) / (L - S) (0 if negative for a net
  long); distance = (low - p_i) / low * 100 (net long), (p_i - high) / high * 100 (net short).
  Both the positions entering the candle and those after its fills are checked (as the
  engine's liquidation check does); 100 means only a fall to zero bankrupts. None when never in
  a position.
- liquidated: the account was liquidated; liquidation_time: open time (UTC ISO) of the candle
  in which it happened, else None.
- starting_balance, n_days (length of the trading window in days), realized_pnl (gross of fees).
- the equity hard stop (``bot.core.hard_stop``; 0 while it is off), Passivbot's names:
  hard_stop_triggers (red stops), hard_stop_restarts (restarts after a cooldown),
  hard_stop_time_in_yellow_pct / _orange_pct / _red_pct (share of the trading candles whose
  close left that tier in force, %), hard_stop_trigger_drawdown_mean (mean score at the red
  triggers, 0..1), hard_stop_panic_close_loss_sum (USDT the stop's market closes lost:
  -(pnl - fee) summed; negative when they closed at a profit), hard_stop_duration_minutes_max
  (longest time from a red trigger to its restart, or to the end of the run).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from backtest.data import format_ms
from backtest.engine import F_FEE, F_K, F_KIND, F_PNL
from bot.config import KNOWN_METRICS
from bot.core.hard_stop import H_RESTARTS, H_TRIGGERS, TIER_ORANGE, TIER_RED, TIER_YELLOW
from bot.core.params import KIND_HARD_STOP, P_UNSTUCK_THRESHOLD, P_WALLET_EXPOSURE_LIMIT

if TYPE_CHECKING:
    from backtest.runner import BacktestRun

__all__ = [
    "EXTRA_METRICS",
    "bankruptcy_distances",
    "bankruptcy_prices",
    "compute_metrics",
    "daily_returns",
    "geometric_daily_gain",
    "hard_stop_metrics",
    "hard_stop_stops",
    "longest_runs",
    "wallet_exposures",
]

EXTRA_METRICS = ("liquidation_time", "starting_balance", "n_days", "realized_pnl")
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
Metrics = dict[str, float | int | bool | str | None]


def _trade_start(run: BacktestRun) -> int:
    n = len(run.candles.timestamps)
    return int(min(max(run.inputs.trade_start, 0), max(n - 1, 0)))


def daily_returns(
    timestamps: np.ndarray, equity: np.ndarray, starting_balance: float
) -> np.ndarray:
    """Equity return of each UTC day: last candle of the day vs the previous day's last candle
    (the first day vs ``starting_balance``). A day that starts with no equity left returns 0."""
    if len(timestamps) == 0:
        return np.zeros(0)
    day = np.asarray(timestamps, dtype=np.int64) // DAY_MS
    last = np.flatnonzero(np.r_[day[1:] != day[:-1], True])
    eq = np.asarray(equity, dtype=np.float64)[last]
    prev = np.r_[starting_balance, eq[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0.0, eq / prev - 1.0, 0.0)


def _fields(positions: np.ndarray) -> np.ndarray:
    """(n, S, 4) positions -> contiguous (4, S, n): long size, long price, short size, short
    price. With the long axis innermost numpy runs ~5x faster than on rows of 3 coins."""
    return np.ascontiguousarray(np.asarray(positions, dtype=np.float64).transpose(2, 1, 0))


def _exposures(fields: np.ndarray, balance: np.ndarray) -> np.ndarray:
    """(2, S, n) wallet exposure of the long [0] and short [1] positions; inf for an open
    position on a balance <= 0."""
    sizes = fields[0::2]
    with np.errstate(divide="ignore", invalid="ignore"):
        we = sizes * fields[1::2] / balance
    we[(sizes > 0.0) & ~(balance > 0.0)] = np.inf
    we[sizes <= 0.0] = 0.0
    return we


def wallet_exposures(positions: np.ndarray, balance: np.ndarray) -> np.ndarray:
    """(n, n_symbols, 2) wallet exposure of each long [..., 0] and short [..., 1] position per
    candle (size * position_price / balance); inf for an open position on a balance <= 0."""
    bal = np.asarray(balance, dtype=np.float64)
    return _exposures(_fields(positions), bal).transpose(2, 1, 0)


def longest_runs(mask: np.ndarray) -> int:
    """Longest run of consecutive True along the last axis of a bool array, over all rows."""
    m = np.asarray(mask, dtype=bool)
    m = m.reshape(-1, m.shape[-1]) if m.ndim else m.reshape(1, 1)
    if m.size == 0 or not m.any():
        return 0
    pad = np.zeros((m.shape[0], 1), dtype=np.int8)
    d = np.diff(np.concatenate([pad, m.view(np.int8), pad], axis=1), axis=1)
    # row-major nonzero: starts and ends pair up row by row
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return int((ends - starts).max())


def _bankruptcy(
    fields: np.ndarray, balance: np.ndarray, closes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(S, n) bankruptcy price of each coin with the other coins at ``closes`` and the net size
    L - S (0: no net position, price nan), from (4, S, n) ``fields`` and (S, n) ``closes``."""
    lsz, lpr, ssz, spr = fields
    upnl = lsz * (closes - lpr) - ssz * (closes - spr)
    others = balance + upnl.sum(axis=0) - upnl
    net = lsz - ssz
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (lsz * lpr - ssz * spr - others) / net
    p[net == 0.0] = np.nan
    np.maximum(p, 0.0, out=p, where=net > 0.0)  # a net long covered by the balance: 0
    return p, net


def bankruptcy_prices(run: BacktestRun) -> np.ndarray:
    """(n, n_symbols) cross-margin bankruptcy price of each coin at each candle's close (the
    other coins at their closes); nan where the coin has no net position."""
    closes = np.ascontiguousarray(run.candles.ohlcv[:, :, 3])
    bal = np.asarray(run.output.balance, dtype=np.float64)
    p, _ = _bankruptcy(_fields(run.output.positions), bal, closes)
    return p.T


def _distances(states: tuple[tuple[np.ndarray, np.ndarray], ...], ohlcv: np.ndarray) -> np.ndarray:
    """(S, n) distance (%) from each candle's adverse extreme to the bankruptcy price, the
    minimum over ``states`` ((fields (4, S, n), balance (n,)) pairs); nan with no net position."""
    highs, lows, closes = (np.ascontiguousarray(ohlcv[:, :, j]) for j in (1, 2, 3))
    best = np.full(closes.shape, np.nan)
    for fields, balance in states:
        p, net = _bankruptcy(fields, balance, closes)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(net > 0.0, (lows - p) / lows, (p - highs) / highs) * 100.0
        d[net == 0.0] = np.nan
        best = np.fmin(best, d)  # fmin: nan only where every state is flat
    return best


def _states(run: BacktestRun, k0: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(fields (4, S, m), balance (m,)) after each candle from ``k0`` on, and entering it."""
    out = run.output
    f_all = _fields(out.positions)
    # (4, S, n + 1): a flat column in front stands for "before the first candle"
    f_all = np.concatenate([np.zeros_like(f_all[:, :, :1]), f_all], axis=2)
    b_all = np.r_[float(run.inputs.starting_balance), np.asarray(out.balance, dtype=np.float64)]
    return ((f_all[:, :, k0 + 1 :], b_all[k0 + 1 :]), (f_all[:, :, k0:-1], b_all[k0:-1]))


def bankruptcy_distances(run: BacktestRun) -> np.ndarray:
    """(n, n_symbols) per candle and coin: how far (%) the candle's adverse extreme stayed from
    the coin's bankruptcy price, with the positions entering the candle or after its fills,
    whichever is closer; nan where the coin had no net position (see the module doc)."""
    ohlcv = np.asarray(run.candles.ohlcv, dtype=np.float64)
    return _distances(_states(run, 0), ohlcv).T


def _safe(x: object) -> float | int | bool | str | None:
    """Plain Python values; NaN/inf -> None (JSON has neither)."""
    if x is None or isinstance(x, bool | str):
        return x
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    f = float(x)  # type: ignore[arg-type]
    return f if math.isfinite(f) else None


def geometric_daily_gain(gain: float, n_days: float) -> float:
    """Passivbot's adg: the daily return that compounds to ``gain`` over ``n_days``."""
    if n_days <= 0.0:
        return 0.0
    if gain <= 0.0:
        return -1.0  # everything lost (or more): no real root
    log_daily = math.log(gain) / n_days
    if log_daily > 700.0:  # a minutes-long window compounds past any float: undefined
        return math.inf
    return math.expm1(log_daily)


def _red_runs(tier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, end) candle indices of each run of red (end exclusive: the restart's candle, or
    the length); a restart always comes back green, so a run is one stop."""
    red = np.r_[False, tier == TIER_RED, False].view(np.int8)
    d = np.diff(red)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def hard_stop_stops(run: BacktestRun) -> list[dict[str, object]]:
    """Each red stop: when it fired (the close it sampled), its score, what its market closes
    cost (USDT, -(pnl - fee) summed), when it restarted (None: halted to the end)."""
    out = run.output
    tier = np.asarray(out.hard_stop_tier)
    if tier.size == 0:
        return []
    ts = np.asarray(run.candles.timestamps, dtype=np.int64)
    tf = int(run.candles.timeframe_ms)
    f = out.fills
    stop_fills = f[f[:, F_KIND] == KIND_HARD_STOP] if f.shape[0] else f
    stops: list[dict[str, object]] = []
    for first, end in zip(*_red_runs(tier), strict=True):
        mine = stop_fills[stop_fills[:, F_K] == first + 1]
        cost = float(-(mine[:, F_PNL] - mine[:, F_FEE]).sum()) if mine.shape[0] else 0.0
        stops.append(
            {
                "fired_at": format_ms(int(ts[first]) + tf),
                "score": _safe(out.hard_stop_score[first]) if out.hard_stop_score.size else None,
                "closes": int(mine.shape[0]),
                "close_loss": cost,
                "restarted_at": format_ms(int(ts[end]) + tf) if end < tier.size else None,
            }
        )
    return stops


def hard_stop_metrics(run: BacktestRun, k0: int) -> dict[str, object]:
    """The hard stop's metrics (module doc) over the trading window from ``k0``."""
    out = run.output
    tier = np.asarray(out.hard_stop_tier)
    state = np.asarray(out.hard_stop_state)
    window = tier[k0:]
    n = max(window.size, 1)
    f = out.fills
    stop = f[f[:, F_KIND] == KIND_HARD_STOP] if f.shape[0] else f
    first, end = _red_runs(tier) if tier.size else (np.zeros(0, int), np.zeros(0, int))
    scores = np.asarray(out.hard_stop_score)[first] if first.size else np.zeros(0)
    minutes = (end - first) * (run.candles.timeframe_ms / 60_000)
    return {
        "hard_stop_triggers": int(state[H_TRIGGERS]),
        "hard_stop_restarts": int(state[H_RESTARTS]),
        "hard_stop_time_in_yellow_pct": float((window == TIER_YELLOW).sum()) / n * 100.0,
        "hard_stop_time_in_orange_pct": float((window == TIER_ORANGE).sum()) / n * 100.0,
        "hard_stop_time_in_red_pct": float((window == TIER_RED).sum()) / n * 100.0,
        "hard_stop_trigger_drawdown_mean": float(scores.mean()) if scores.size else 0.0,
        "hard_stop_panic_close_loss_sum": float(-(stop[:, F_PNL] - stop[:, F_FEE]).sum()),
        "hard_stop_duration_minutes_max": float(minutes.max()) if minutes.size else 0.0,
    }


def compute_metrics(run: BacktestRun) -> Metrics:
    """KNOWN_METRICS of ``bot.config`` plus EXTRA_METRICS for one run (see the module doc)."""
    out = run.output
    inp = run.inputs
    ts_all = np.asarray(run.candles.timestamps, dtype=np.int64)
    tf = int(run.candles.timeframe_ms)
    k0 = _trade_start(run)
    sb = float(inp.starting_balance)

    ts = ts_all[k0:]
    equity = np.asarray(out.equity[k0:], dtype=np.float64)
    states = _states(run, k0)
    fields, balance = states[0]
    ohlcv = np.asarray(run.candles.ohlcv[:, k0:, :], dtype=np.float64)

    # returns and drawdown
    r = daily_returns(ts, equity, sb)
    mean_gain = float(r.mean()) if r.size else 0.0
    mdg = float(np.median(r)) if r.size else 0.0
    std = float(r.std()) if r.size else 0.0
    sharpe = mean_gain / std if std > 0.0 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))) if r.size else 0.0
    sortino = mean_gain / downside if downside > 0.0 else 0.0
    n_days = len(ts) * tf / DAY_MS
    gain = (float(out.equity[-1]) if len(out.equity) else sb) / sb
    adg = geometric_daily_gain(gain, n_days)
    peak = np.maximum.accumulate(np.r_[sb, equity])[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0.0, 1.0 - equity / peak, 0.0)
    drawdown_worst = max(float(dd.max()), 0.0) if dd.size else 0.0
    calmar = adg / drawdown_worst if drawdown_worst > 0.0 else 0.0

    # realized pnl of the fills
    pnl = out.fills[:, F_PNL] if out.fills.shape[0] else np.zeros(0)
    profits = float(pnl[pnl > 0.0].sum())
    losses = float(np.abs(pnl[pnl < 0.0]).sum())
    if profits > 0.0:
        lpr: float | None = losses / profits
    else:
        lpr = 0.0 if losses == 0.0 else None

    # exposure, stuck and held times; per position = (side, coin) row of (2, S, n)
    we = _exposures(fields, balance)
    is_open = fields[0::2] > 0.0
    any_open = bool(is_open.any())
    we_max = float(we.max()) if any_open else 0.0
    we_mean = float(we[is_open].mean()) if any_open else 0.0
    lim = np.array(
        [
            inp.params_long[P_WALLET_EXPOSURE_LIMIT] * inp.params_long[P_UNSTUCK_THRESHOLD],
            inp.params_short[P_WALLET_EXPOSURE_LIMIT] * inp.params_short[P_UNSTUCK_THRESHOLD],
        ]
    )[:, None, None]
    stuck = is_open & (lim > 0.0) & (we >= lim)
    hours_per_candle = tf / HOUR_MS

    dist = _distances(states, ohlcv)
    liq_k = int(out.liquidated_k)
    values: dict[str, object] = {
        "final_balance": float(out.balance[-1]) if len(out.balance) else sb,
        "final_equity": float(out.equity[-1]) if len(out.equity) else sb,
        "adg": adg,
        "daily_gain_mean": mean_gain,
        "mdg": mdg,
        "sharpe_ratio": sharpe,
        "sortino_ratio": sortino,
        "drawdown_worst": drawdown_worst,
        "calmar_ratio": calmar,
        "loss_profit_ratio": lpr,
        "n_fills": int(out.fills.shape[0]),
        "fees_paid": float(out.fees_paid),
        "funding_paid": float(out.funding_paid),
        "wallet_exposure_max": we_max,
        "wallet_exposure_mean": we_mean,
        "hours_stuck_max": longest_runs(stuck) * hours_per_candle,
        "position_held_hours_max": longest_runs(is_open) * hours_per_candle,
        "bankruptcy_distance_min_pct": float(np.nanmin(dist)) if np.isfinite(dist).any() else None,
        "liquidated": liq_k >= 0,
        "liquidation_time": format_ms(int(ts_all[liq_k])) if liq_k >= 0 else None,
        "starting_balance": sb,
        "n_days": n_days,
        "realized_pnl": float(out.realized_pnl),
    }
    values["gain"] = gain
    values.update(hard_stop_metrics(run, k0))
    return {k: _safe(values[k]) for k in (*KNOWN_METRICS, *EXTRA_METRICS)}

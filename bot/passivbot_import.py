"""A Passivbot v7 config (a parsed JSON / hjson dict) -> a gridbot config dict.

Pure: no I/O. :func:`convert` returns our config as a plain dict (validated by the caller with
:func:`bot.config.parse_config`) and the notes on every key it could not carry over, each
naming the key and why. Passivbot renamed keys during v7; both the early names
(``close_grid_min_markup``, ``close_grid_markup_range``, ``entry_grid_spacing_weight``) and the
later ones (``close_grid_markup_start`` / ``_end``, ``entry_grid_spacing_we_weight``, ...) are
read. A key whose value has no effect in Passivbot (a volatility span with a zero volatility
weight) is dropped without a note: nothing changes.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeGuard

__all__ = ["convert", "to_symbol"]

# Passivbot side keys we carry over under the same name (same meaning: README "Differences
# from Passivbot").
_SAME = (
    "total_wallet_exposure_limit",
    "entry_initial_qty_pct",
    "entry_initial_ema_dist",
    "entry_grid_spacing_pct",
    "entry_grid_double_down_factor",
    "ema_span_0",
    "ema_span_1",
    "close_grid_min_markup",
    "close_grid_markup_range",
    "close_grid_qty_pct",
    "unstuck_threshold",
    "unstuck_close_pct",
    "unstuck_ema_dist",
    "unstuck_loss_allowance_pct",
)
_RENAMED = {"entry_grid_spacing_we_weight": "entry_grid_spacing_weight"}
# Trailing (README "Trailing entries and closes"): the same names, the same meaning.
_TRAILING = (
    "entry_trailing_threshold_pct",
    "entry_trailing_retracement_pct",
    "entry_trailing_grid_ratio",
    "close_trailing_threshold_pct",
    "close_trailing_retracement_pct",
    "close_trailing_grid_ratio",
    "close_trailing_qty_pct",
)
# The forager's filters under each of Passivbot's v7 names -> ours (README "The forager").
# Passivbot's early rolling window (minutes) served both volume and noisiness; ours are EMA
# spans in minutes, one per measure.
_FILTERS = {
    "filter_volume_rolling_window": ("filter_volume_rolling_window",),
    "filter_volatility_rolling_window": ("filter_volatility_rolling_window",),
    "filter_volume_drop_pct": ("filter_volume_drop_pct",),
    "filter_volume_ema_span": ("filter_volume_rolling_window",),
    "filter_volatility_ema_span": ("filter_volatility_rolling_window",),
    "filter_noisiness_rolling_window": ("filter_volatility_rolling_window",),
    "filter_rolling_window": ("filter_volume_rolling_window", "filter_volatility_rolling_window"),
    "filter_relative_volume_clip_pct": ("filter_volume_drop_pct",),
}
_SIDES = ("long", "short")
# Passivbot's account-wide equity hard stop (bot.common.equity_hard_stop_loss): the same keys
_HARD_STOP = (
    "enabled",
    "red_threshold",
    "ema_span_minutes",
    "cooldown_minutes_after_red",
    "no_restart_drawdown_threshold",
    "tier_ratios",
    "orange_tier_mode",
    "panic_close_order_type",
)
_HSL = "equity_hard_stop_loss"
_CCXT = re.compile(r"^([A-Z0-9]+)/USDT(?::USDT)?$")


def to_symbol(coin: Any) -> str | None:
    """Passivbot's coin names ('BTC', 'BTCUSDT', 'BTC/USDT:USDT') as our symbol, or None."""
    if not isinstance(coin, str):
        return None
    c = coin.strip().upper()
    m = _CCXT.match(c)
    if m:
        c = m.group(1)
    if not re.fullmatch(r"[A-Z0-9]{1,30}", c):
        return None
    return c if c.endswith("USDT") and len(c) > 4 else f"{c}USDT"


def _num(x: Any) -> TypeGuard[float]:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _trailing_and_filters(src: dict, out: dict, done: set[str]) -> None:
    """Trailing keys under their names; the forager's filters under any of their v7 names."""
    for key in _TRAILING:
        if key in src:
            out[key] = src[key]
            done.add(key)
    for theirs, ours_keys in _FILTERS.items():
        if theirs in src:
            done.add(theirs)
            for ours in ours_keys:
                out.setdefault(ours, src[theirs])


def _side(src: dict, side: str, notes: list[str]) -> dict:
    """One side's strategy keys: ours, and a note per key that cannot carry over."""
    out: dict[str, Any] = {}
    where = f"bot.{side}"
    done: set[str] = set()
    for key in _SAME:
        if key in src:
            out[key] = src[key]
            done.add(key)
    for theirs, ours in _RENAMED.items():
        if theirs in src:
            out[ours] = src[theirs]
            done.add(theirs)
    if "entry_grid_spacing_weight" in src and "entry_grid_spacing_we_weight" not in src:
        out["entry_grid_spacing_weight"] = src["entry_grid_spacing_weight"]
    done.add("entry_grid_spacing_weight")
    _markups(src, out, where, notes, done)
    _n_positions(src, out, where, notes, done)
    vol = src.get("entry_grid_spacing_volatility_weight", 0.0)
    done.update(("entry_grid_spacing_volatility_weight", "entry_grid_spacing_log_span_hours"))
    if vol not in (0, 0.0):
        notes.append(
            f"{where}.entry_grid_spacing_volatility_weight = {vol!r}: volatility-widened grid "
            f"spacing is not supported (entry_grid_spacing_log_span_hours goes with it)"
        )
    _trailing_and_filters(src, out, done)
    if "enforce_exposure_limit" in src:
        out["enforce_exposure_limit"] = src["enforce_exposure_limit"]
    done.add("enforce_exposure_limit")
    for key in sorted(set(src) - done):
        if key.startswith("hsl_"):
            notes.append(
                f"{where}.{key}: Passivbot's per-side / per-coin hard stop is not in gridbot "
                f"(its hard stop is account-wide: bot.common.{_HSL})"
            )
            continue
        notes.append(f"{where}.{key}: no such setting in gridbot")
    return out


def _common(src: Any, notes: list[str]) -> dict:
    """bot.common: the equity hard stop's keys carry over; a limit panic close does not."""
    if not isinstance(src, dict):
        notes.append("bot.common: not an object")
        return {}
    for key in sorted(set(src) - {_HSL}):
        notes.append(f"bot.common.{key}: no such setting in gridbot")
    hsl = src.get(_HSL)
    if hsl is None:
        return {}
    if not isinstance(hsl, dict):
        notes.append(f"bot.common.{_HSL}: not an object")
        return {}
    out = {k: hsl[k] for k in _HARD_STOP if k in hsl}
    if out.get("panic_close_order_type", "market") != "market":
        notes.append(
            f"bot.common.{_HSL}.panic_close_order_type = {out.pop('panic_close_order_type')!r}: "
            f"not carried over (gridbot's hard stop closes at market)"
        )
    for key in sorted(set(hsl) - set(_HARD_STOP)):
        notes.append(f"bot.common.{_HSL}.{key}: no such setting in gridbot")
    return {_HSL: out}


def _markups(src: dict, out: dict, where: str, notes: list[str], done: set[str]) -> None:
    """close_grid_markup_start / _end (later v7) as min markup + range."""
    start, end = src.get("close_grid_markup_start"), src.get("close_grid_markup_end")
    done.update(("close_grid_markup_start", "close_grid_markup_end"))
    if start is None and end is None:
        return
    if not (_num(start) and _num(end)):
        notes.append(f"{where}.close_grid_markup_start/_end: both needed as numbers")
        return
    if end < start:
        notes.append(
            f"{where}.close_grid_markup_end {end!r} < close_grid_markup_start {start!r}: a "
            f"backwards close grid is not supported; using markups {end!r} .. {start!r}"
        )
        start, end = end, start
    out["close_grid_min_markup"] = start
    out["close_grid_markup_range"] = round(end - start, 12)


def _n_positions(src: dict, out: dict, where: str, notes: list[str], done: set[str]) -> None:
    """Passivbot's n_positions is a float rounded to a whole number; 0 (or no exposure) turns
    the side off."""
    done.add("n_positions")
    n = src.get("n_positions")
    twel = src.get("total_wallet_exposure_limit")
    if n is None:
        return
    if not _num(n):
        out["n_positions"] = n  # our validation names it
        return
    k = int(round(n))
    if k <= 0 or (_num(twel) and twel <= 0.0):
        out["enabled"] = False
        out["n_positions"] = 1
        out["total_wallet_exposure_limit"] = 0.0 if k <= 0 else twel
        return
    if k != n:
        notes.append(f"{where}.n_positions = {n!r}: rounded to {k} (as Passivbot does)")
    out["n_positions"] = k


def _coins(value: Any, where: str, notes: list[str]) -> dict[str, list[str]] | None:
    """A coin list, or one per side ({"long": [...], "short": [...]}), as symbols per side."""
    per_side = value if isinstance(value, dict) else {s: value for s in _SIDES}
    out: dict[str, list[str]] = {}
    for side in _SIDES:
        coins = per_side.get(side, [])
        if isinstance(coins, str):
            coins = [c for c in coins.split(",") if c.strip()]
        if not isinstance(coins, list):
            notes.append(f"{where}: expected a list of coins, got {coins!r}")
            return None
        syms = []
        for c in coins:
            s = to_symbol(c)
            if s is None:
                notes.append(f"{where}: {c!r} is not a coin name")
            elif s not in syms:
                syms.append(s)
        out[side] = syms
    return out


def _symbols(live: dict, sides_on: list[str], notes: list[str]) -> list[str] | None:
    """live.approved_coins minus live.ignored_coins, over the enabled sides."""
    if "approved_coins" not in live:
        return None
    approved = _coins(live["approved_coins"], "live.approved_coins", notes)
    if approved is None:
        return None
    ignored = _coins(live.get("ignored_coins", []), "live.ignored_coins", notes) or {}
    per_side = {
        s: [c for c in approved[s] if c not in ignored.get(s, [])] for s in sides_on or _SIDES
    }
    union: list[str] = []
    for s in per_side.values():
        union += [c for c in s if c not in union]
    lists = list(per_side.values())
    if len(lists) == 2 and set(lists[0]) != set(lists[1]):
        notes.append(
            "live.approved_coins: different coins per side; both sides trade all of "
            + ", ".join(union)
        )
    return union


# Passivbot live / backtest keys we carry over (theirs -> ours, same meaning).
_LIVE = {
    "leverage": "leverage",
    "execution_delay_seconds": "execution_delay_seconds",
    "price_distance_threshold": "price_distance_threshold",
    "minimum_coin_age_days": "minimum_coin_age_days",
}
_BACKTEST = {"starting_balance": "starting_balance", "start_date": "start_date"}


def _section(pb: dict, name: str) -> dict:
    """A top-level section of the Passivbot config ({} when missing or not an object)."""
    got = pb.get(name)
    return got if isinstance(got, dict) else {}


def _backtest(bt: dict, symbols: list[str] | None, notes: list[str]) -> dict:
    out = {ours_k: bt[k] for k, ours_k in _BACKTEST.items() if k in bt}
    if bt.get("end_date") not in (None, "now", ""):
        out["end_date"] = bt["end_date"]
    if symbols:
        out["symbols"] = symbols
    for key in sorted(set(bt) - {*_BACKTEST, "end_date"}):
        notes.append(f"backtest.{key}: no such setting in gridbot")
    return out


def _live_notes(keys: list[str], notes: list[str]) -> None:
    for key in keys:
        if key.startswith("hsl_"):
            notes.append(
                f"live.{key}: not carried over (Passivbot's hard-stop cooldown policy for "
                f"positions; gridbot's stop stays flat through its cooldown)"
            )
            continue
        notes.append(f"live.{key}: no such setting in gridbot")


def convert(pb: dict) -> tuple[dict, list[str]]:
    """(our config dict, notes naming every key not carried over)."""
    notes: list[str] = []
    if not isinstance(pb, dict):
        return {}, ["the file's top level is not an object"]
    bot = _section(pb, "bot")
    ours: dict[str, Any] = {"bot": {}}
    for side in _SIDES:
        src = bot.get(side)
        if isinstance(src, dict):
            ours["bot"][side] = _side(src, side, notes)
        elif src is not None:
            notes.append(f"bot.{side}: not an object")
    if "common" in bot and (common := _common(bot["common"], notes)):
        ours["bot"]["common"] = common
    for key in sorted(set(bot) - {*_SIDES, "common"}):
        notes.append(f"bot.{key}: no such setting in gridbot")
    sides_on = [s for s in _SIDES if ours["bot"].get(s, {}).get("enabled", True) and s in bot]
    live = _section(pb, "live")
    symbols = _symbols(live, sides_on, notes)
    ours["live"] = {ours_k: live[k] for k, ours_k in _LIVE.items() if k in live}
    if symbols:
        ours["live"]["symbols"] = symbols
    handled = {*_LIVE, "approved_coins", "ignored_coins"}
    _live_notes(sorted(set(live) - handled), notes)
    ours["backtest"] = _backtest(_section(pb, "backtest"), symbols, notes)
    overrides = pb.get("coin_overrides")
    if isinstance(overrides, dict):
        for coin in sorted(overrides):
            notes.append(f"coin_overrides.{coin}: per-coin settings are not supported")
    for key in sorted(set(pb) - {"bot", "live", "backtest", "coin_overrides"}):
        what = "Passivbot's optimizer settings" if key == "optimize" else "no such section"
        notes.append(f"{key}: {what} (not carried over)")
    return {k: v for k, v in ours.items() if v}, notes

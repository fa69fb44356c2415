"""What every API dialect writes the same way: the wall clock, numbers as strings, and the
figures both show that are computed from the engine's state (the cross-margin liquidation
price). Pure functions apart from :func:`wall_ms`."""

from __future__ import annotations

import math
import time

import numpy as np

from bot.core.margin import liquidation_price

from .matching import Account, MatchingEngine

__all__ = ["decimals", "fmt", "liquidation_price_of", "num", "wall_ms"]


def wall_ms() -> int:
    """The wall clock (ms): what clients sign with and what server-time endpoints answer."""
    return int(time.time() * 1000)


def decimals(step: float) -> int:
    """Decimals a step needs: 0.001 -> 3, 1.0 -> 0."""
    return max(0, int(round(-math.log10(step)))) if step < 1 else 0


def fmt(x: float, places: int = 8) -> str:
    """A number as the exchanges send it: a fixed-point string."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "0"
    return f"{x:.{places}f}"


def num(x: float) -> str:
    """Shortest exact decimal of a data value (candle prices keep the file's precision)."""
    return np.format_float_positional(float(x), trim="-")


def liquidation_price_of(eng: MatchingEngine, acct: Account, symbol: str) -> float:
    """Cross-margin liquidation price of ``symbol`` with the other coins held at their prices."""
    ls = lp = ss = sp = 0.0
    other_eq = other_mm = 0.0
    for p in acct.positions.values():
        if p.amount == 0.0:
            continue
        if p.symbol == symbol:
            if p.amount > 0:
                ls, lp = p.amount, p.entry_price
            else:
                ss, sp = -p.amount, p.entry_price
        else:
            other_eq += p.amount * (eng.prices[p.symbol] - p.entry_price)
    other_mm = eng.maint_margin(acct) - eng.maint_margin(acct, symbol)
    if ls == 0.0 and ss == 0.0:
        return 0.0
    price = liquidation_price(
        acct.balance, ls, lp, ss, sp, eng.specs[symbol].tiers, other_eq, other_mm
    )
    return price if math.isfinite(price) and price > 0 else 0.0

"""The live bot's status as one JSON-ready dict: what the status page, ``/api/status``,
``gridbot status`` and the heartbeat line show.

It reads the bot's book (balance, balance peak, per-coin positions, last prices, open orders,
fills) and the monitor's records (stream state, last reconciliation, events, equity curve), and
computes every risk number with the core (:mod:`bot.core`): wallet exposure, equity,
bankruptcy and liquidation prices. Nothing here decides an order.

Cross margin: each coin's bankruptcy and liquidation price is the price of *that* coin at
which the whole account's equity reaches zero (bankruptcy) or the maintenance margin
(liquidation), the other coins held at their last prices.

No secret is read: the adapter, the keys, the listen key and the config's key settings never
enter the dict.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from bot.core import (
    bankruptcy_price,
    liquidation_price,
    maintenance_margin,
    unrealized_pnl,
    wallet_exposure,
)

__all__ = ["build_status", "distance_pct", "warm_up"]

_SIDE_NAMES = ("long", "short")
_SIGNS = (1, -1)
RECENT_FILLS = 10


def _num(x: Any) -> float | None:
    """JSON has no NaN or inf: those become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def distance_pct(price: float, level: float, net: float) -> float | None:
    """How far (percent of ``price``) the price can move against a net position before it
    reaches ``level`` (negative: already past it). None without a net position or a level."""
    if net == 0.0 or not (math.isfinite(price) and math.isfinite(level)) or price <= 0.0:
        return None
    return (price - level) / price * 100.0 if net > 0 else (level - price) / price * 100.0


def warm_up() -> None:
    """Compile (or load from numba's cache) the core functions used here, before trading, so
    the first status request never stalls the event loop."""
    tiers = np.array([[0.0, math.inf, 0.004, 125.0, 0.0]])
    liquidation_price(1000.0, 1.0, 100.0, 0.0, 0.0, tiers, 0.0, 0.0)
    bankruptcy_price(1000.0, 1.0, 100.0, 0.0, 0.0)
    maintenance_margin(100.0, tiers)
    unrealized_pnl(1, 1.0, 100.0, 101.0)
    wallet_exposure(1.0, 100.0, 1000.0)


def _positions(bot: Any, coin: Any) -> list[tuple[float, float]]:
    return [tuple(float(x) for x in bot.position(coin, j)) for j in (0, 1)]  # type: ignore[misc]


def build_status(bot: Any, monitor: Any = None, *, now: float | None = None) -> dict[str, Any]:
    """The status of ``bot`` (a :class:`bot.live.bot.LiveBot`) and its ``monitor``."""
    now = time.time() if now is None else now
    balance = float(bot.balance)
    wel = [
        bot.config.bot.long.wallet_exposure_limit if bot.config.bot.long.enabled else 0.0,
        bot.config.bot.short.wallet_exposure_limit if bot.config.bot.short.enabled else 0.0,
    ]
    coins = list(bot.coins.values())
    # per coin: unrealized pnl and maintenance margin at its last price (for cross margin)
    upnl: dict[str, float] = {}
    mm: dict[str, float] = {}
    for c in coins:
        price = float(c.last_price)
        (ls, lp), (ss, sp) = _positions(bot, c)
        if math.isfinite(price):
            upnl[c.symbol] = unrealized_pnl(1, ls, lp, price) + unrealized_pnl(-1, ss, sp, price)
            mm[c.symbol] = maintenance_margin(ls * price, c.spec.tiers) + maintenance_margin(
                ss * price, c.spec.tiers
            )
        else:
            upnl[c.symbol], mm[c.symbol] = 0.0, 0.0
    equity = balance + sum(upnl.values())

    out_coins = []
    for c in coins:
        price = float(c.last_price)
        (ls, lp), (ss, sp) = _positions(bot, c)
        other_eq = sum(v for k, v in upnl.items() if k != c.symbol)
        other_mm = sum(v for k, v in mm.items() if k != c.symbol)
        net = ls - ss
        bkr = liq = math.nan
        if ls > 0.0 or ss > 0.0:
            if net != 0.0:
                bkr = bankruptcy_price(balance + other_eq, ls, lp, ss, sp)
            liq = liquidation_price(balance, ls, lp, ss, sp, c.spec.tiers, other_eq, other_mm)
        sides = {}
        for j, (size, pprice) in enumerate(((ls, lp), (ss, sp))):
            we = wallet_exposure(size, pprice, balance) if size > 0.0 else 0.0
            sides[_SIDE_NAMES[j]] = {
                "size": size,
                "price": _num(pprice) if size > 0.0 else None,
                "wallet_exposure": _num(we),
                "wallet_exposure_limit": wel[j],
                "exposure_of_limit_pct": _num(we / wel[j] * 100.0) if wel[j] > 0 else None,
                "upnl": _num(unrealized_pnl(_SIGNS[j], size, pprice, price))
                if size > 0.0 and math.isfinite(price)
                else 0.0,
            }
        orders = sorted(
            (
                {
                    "side": o.side,
                    "position_side": o.position_side,
                    "kind": o.kind_name,
                    "qty": abs(float(o.qty)),
                    "price": float(o.price),
                }
                for o in bot.open_orders(c.symbol)
            ),
            key=lambda o: -o["price"],
        )
        fills = [
            {
                "time_ms": int(f.time_ms),
                "side": "BUY" if f.qty > 0 else "SELL",
                "position_side": "LONG" if f.pside > 0 else "SHORT",
                "qty": abs(float(f.qty)),
                "price": float(f.price),
            }
            for f in [f for f in bot.fills[-500:] if f.symbol == c.symbol][-RECENT_FILLS:]
        ]
        out_coins.append(
            {
                "symbol": c.symbol,
                "price": _num(price),
                "long": sides["long"],
                "short": sides["short"],
                "bankruptcy_price": _num(bkr),
                "bankruptcy_distance_pct": _num(distance_pct(price, bkr, net)),
                "liquidation_price": _num(liq),
                "liquidation_distance_pct": _num(distance_pct(price, liq, net)),
                "open_orders": orders,
                "recent_fills": fills[::-1],
            }
        )

    status: dict[str, Any] = {
        "time": now,
        "symbols": [c.symbol for c in coins],
        # the coins whose prices are followed and orders kept now (bot.live.active_coins)
        "active_symbols": sorted(bot.active.symbols),
        "account": {
            "balance": _num(balance),
            "balance_peak": _num(bot.book.balance_peak),
            # why no new entries go out right now (empty: the book is trusted)
            "book_doubts": sorted(bot.book.doubts),
            "equity": _num(equity),
            "upnl": _num(sum(upnl.values())),
            "n_fills": len(bot.fills),
            "cycles": int(bot.cycles),
            "errors": len(bot.errors),
        },
        "coins": out_coins,
    }
    hard_stop = getattr(bot, "hard_stop", None)
    if hard_stop is not None:  # tier, score, peak, halted, cooldown left
        status["hard_stop"] = hard_stop.status()
    if monitor is not None:
        status.update(monitor.status_fields(now))
    return status

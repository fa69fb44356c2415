"""Market specs (steps, minimums, leverage tiers) for the backtester and the simulated venue.

Live, the bot reads the same fields from the exchange; offline they come from the snapshot in
``bot/data`` (provenance inside each file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from bot.core.params import M_MIN_COST, M_MIN_QTY, M_PRICE_STEP, M_QTY_STEP, N_MARKET
from bot.errors import ConfigError

__all__ = ["MarketSpec", "load_markets", "market_spec"]


@dataclass(frozen=True)
class MarketSpec:
    """One perpetual market's constraints, as the exchange publishes them."""

    symbol: str
    qty_step: float
    price_step: float
    min_qty: float
    min_cost: float
    # rows [notional_floor, notional_cap, maint_margin_rate, max_leverage, maint_amount]
    tiers: np.ndarray
    listed_ms: int = 0  # when the exchange listed it (0: unknown); the forager's coin age

    def as_array(self) -> np.ndarray:
        """The market array the core takes (see ``bot.core.params``)."""
        m = np.zeros(N_MARKET)
        m[M_QTY_STEP] = self.qty_step
        m[M_PRICE_STEP] = self.price_step
        m[M_MIN_QTY] = self.min_qty
        m[M_MIN_COST] = self.min_cost
        return m

    @property
    def max_leverage(self) -> float:
        return float(self.tiers[:, 3].max())


def _read(name: str) -> dict:
    return json.loads(resources.files("bot.data").joinpath(name).read_text())


@cache
def load_markets() -> dict[str, MarketSpec]:
    """Every bundled Binance USDT-M market, by symbol (e.g. ``BTCUSDT``)."""
    markets = _read("binance_usdtm_markets.json")["markets"]
    tiers = _read("binance_leverage_tiers.json")["tiers"]
    out = {}
    for symbol, m in markets.items():
        out[symbol] = MarketSpec(
            symbol=symbol,
            qty_step=float(m["qty_step"]),
            price_step=float(m["price_step"]),
            min_qty=float(m["min_qty"]),
            min_cost=float(m["min_cost"]),
            tiers=np.array(tiers[symbol], dtype=np.float64),
        )
    return out


def market_spec(symbol: str) -> MarketSpec:
    """The bundled spec of ``symbol``; an unknown symbol is an error listing the known ones."""
    markets = load_markets()
    key = symbol.upper().replace("/", "").replace(":USDT", "")
    if key not in markets:
        raise ConfigError(
            f"symbol {symbol!r}: no bundled market spec; known symbols: {', '.join(sorted(markets))}"
        )
    return markets[key]

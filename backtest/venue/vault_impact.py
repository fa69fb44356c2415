"""The simulated venue's price for a vault's closes: the square-root impact model.

A live vault unwinds a leaver's slice with market closes whose client ids start with
:data:`VAULT_PREFIX` (``bot.live.vault_exits``). A real exchange's order book moves them by
itself; the venue has candles, not a book, so it moves them as the stress backtest does: from
the last price, against the closer, by :func:`bot.core.vault.impact_fraction` with the trailing
daily volatility and volume of the candle being played (``backtest.impact.impact_inputs``).
Any other market order fills at the last price, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from backtest.impact import impact_inputs
from bot.core.vault import impact_fraction

__all__ = ["VAULT_PREFIX", "VaultImpact"]

VAULT_PREFIX = "gbv"  # bot.live.vault_exits names its closes so
_MAX_IMPACT = 0.99  # as the backtest's unwind


class VaultImpact:
    def __init__(self, candles: Any, coef: float, window_minutes: float) -> None:
        self.candles = candles
        self.coef = coef
        self.window_minutes = window_minutes
        self._inputs: tuple[np.ndarray, np.ndarray] | None = None

    def applies(self, client_order_id: str, type_: str) -> bool:
        return self.coef > 0.0 and type_ == "MARKET" and client_order_id.startswith(VAULT_PREFIX)

    def price(self, symbol: str, pside: int, qty: float, last: float, now_ms: int) -> float:
        """The fill price of a close of ``qty`` of the ``pside`` position at ``now_ms``: a
        long's slice sells below ``last``, a short's buys above."""
        if self._inputs is None:
            self._inputs = impact_inputs(self.candles, self.window_minutes)
        vol, vday = self._inputs
        s = list(self.candles.symbols).index(symbol)
        ts = np.asarray(self.candles.timestamps, dtype=np.int64)
        k = min(int(np.searchsorted(ts, now_ms, side="left")), len(ts) - 1)
        imp = min(impact_fraction(qty, vol[s, k], vday[s, k], self.coef), _MAX_IMPACT)
        return last * (1.0 - pside * imp)

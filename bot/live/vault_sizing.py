"""The vault's risk-aware sizing in the live bot (``vault.enabled``), through the same core
functions as the backtest engine (``bot.core.vault``):

- the core sizes orders from the balance (and its peak) less the cash buffer
  (``1 - vault.cash_buffer_pct`` of it);
- new entries are blocked, never resized, while total notional / equity at the latest prices is
  above ``vault.leverage_cap`` or (equity - maintenance margin) / equity is below
  ``vault.margin_buffer_pct`` (:func:`bot.core.vault.entries_blocked`), and an entry that would
  take the leverage past the cap once filled is not sent (:func:`bot.core.vault.entry_over_cap`,
  the side's nearer entries counted as filled first, as the engine fills them);
- every block is counted and logged, and reported to the monitor (``vault_entries_blocked``).

Disabled, it changes nothing (the sizing fraction is 1 and nothing is blocked).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from bot.config import VaultConfig
from bot.core.margin import stack_tiers
from bot.core.vault import entries_blocked, entry_over_cap

if TYPE_CHECKING:
    from bot.live.bot import LiveBot
    from bot.live.orders import LiveOrder

__all__ = ["VaultSizing"]

log = logging.getLogger("gridbot.live.vault")


class VaultSizing:
    def __init__(self, vault: VaultConfig) -> None:
        self.enabled = vault.enabled
        self.sizing_fraction = 1.0 - vault.cash_buffer_pct if vault.enabled else 1.0
        self.leverage_cap = vault.leverage_cap
        self.margin_buffer_pct = vault.margin_buffer_pct
        self.blocked_entries = 0  # entries not sent because of the cap or the buffer
        self._tiers: np.ndarray | None = None

    def _account(self, bot: LiveBot) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(balance, size (2, n), price (2, n), latest prices (n,)) of the strategy's book."""
        syms = list(bot.coins)
        pos = [[bot.strategy_position(s, j) for s in syms] for j in (0, 1)]
        size = np.array([[p[0] for p in row] for row in pos], dtype=np.float64)
        price = np.array([[p[1] for p in row] for row in pos], dtype=np.float64)
        refs = np.array([bot.coins[s].last_price for s in syms], dtype=np.float64)
        if self._tiers is None or self._tiers.shape[0] != len(syms):
            self._tiers = stack_tiers([bot.coins[s].spec.tiers for s in syms])
        return bot.strategy_balance(), size, price, refs

    def allowed_entries(
        self, bot: LiveBot, symbol: str, entries: list[LiveOrder]
    ) -> list[LiveOrder]:
        """The entries (both sides, nearest first per side) the vault lets through now."""
        if not self.enabled or not entries:
            return entries
        balance, size, price, refs = self._account(bot)
        if np.isnan(refs).any():
            return []  # a coin without a price yet: the leverage is unknown
        assert self._tiers is not None
        if entries_blocked(
            balance, size, price, refs, self._tiers, self.leverage_cap, self.margin_buffer_pct
        ):
            self._report(bot, symbol, entries, "leverage cap or margin buffer")
            return []
        s = list(bot.coins).index(symbol)
        out = []
        for pside in (1, -1):
            j = 0 if pside > 0 else 1
            grown = size.copy()  # this side's nearer entries counted as filled
            avg = price.copy()
            mine = sorted((o for o in entries if o.pside == pside), key=lambda o: -o.price * pside)
            for o in mine:
                q = abs(o.qty)
                if entry_over_cap(balance, grown, avg, refs, s, o.price, q, self.leverage_cap):
                    self._report(bot, symbol, mine[mine.index(o) :], "leverage cap once filled")
                    break
                new = grown[j, s] + q
                avg[j, s] = (grown[j, s] * avg[j, s] + q * o.price) / new
                grown[j, s] = new
                out.append(o)
        return [o for o in entries if o in out]

    def _report(self, bot: LiveBot, symbol: str, orders: list[LiveOrder], why: str) -> None:
        self.blocked_entries += len(orders)
        text = f"{symbol}: the vault blocked {len(orders)} entries ({why})"
        log.info("%s", text)
        bot.notify("vault_entries_blocked", symbol=symbol, n=len(orders), text=text)

"""One limit order of ours, as the bot and every exchange adapter see it.

Only orders whose client id starts with :data:`PREFIX` are ours; anything else on the account
(manual orders, other bots) is never matched, cancelled or counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.params import KIND_NAMES

__all__ = ["PREFIX", "LiveOrder"]

PREFIX = "gb"


@dataclass(frozen=True)
class LiveOrder:
    """One limit order of ours. ``qty`` is signed (+buy / -sell); ``pside`` +1 long, -1 short."""

    symbol: str
    pside: int
    qty: float
    price: float
    kind: int
    level: int = 0
    client_id: str = ""
    order_id: str | None = None

    @property
    def side(self) -> str:
        return "BUY" if self.qty > 0 else "SELL"

    @property
    def position_side(self) -> str:
        return "LONG" if self.pside > 0 else "SHORT"

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, "?")

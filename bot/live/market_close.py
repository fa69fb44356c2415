"""Kill-safe reduce-only market closes, shared by the vault's exits (:mod:`bot.live.vault_exits`)
and the equity hard stop (:mod:`bot.live.hard_stop`).

The caller records each close (its client id, symbol, side, quantity) before it is sent and
books its result once after; a close still recorded as sent after a kill is asked for by its
client id (:func:`ask_close`): the exchange says how much of it filled, or that it never took
it. A close is a taker order on the position side's closing side (hedge mode): it can reduce
the position, never open or add to one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.errors import ExchangeError

if TYPE_CHECKING:
    from bot.live.bot import LiveBot

__all__ = ["ask_close", "send_close"]

log = logging.getLogger("gridbot.live.market_close")


async def send_close(
    bot: LiveBot, symbol: str, pside: int, qty: float, client_id: str, what: str
) -> tuple[float, float] | None:
    """Send one close under the coin's lock (no cycle of the coin while its position moves
    under it): (filled qty, average price), or None when it failed (it may have landed: the
    caller keeps it recorded as sent and asks for it by client id later)."""
    c = bot.coins[symbol]
    async with c.lock:
        try:
            got = await bot.adapter.create_market_close(symbol, pside, qty, client_id)
        except ExchangeError as exc:
            log.warning("%s: close of %g %s failed: %s", what, qty, symbol, exc)
            return None
    c.wake.set()
    return got


async def ask_close(bot: LiveBot, symbol: str, client_id: str) -> tuple[float, float]:
    """A close recorded as sent and never booked (a kill between the two): (filled qty,
    average price) as the exchange has it; (0, 0) when the exchange never took it."""
    got = await bot.rest(bot.adapter.query_order_fill, symbol, client_id)
    return got if got is not None else (0.0, 0.0)

"""The coins the live bot may trade: ``--symbols`` / live.symbols / the approved list, or, with
live.approved_coins "all" and no symbols, every USDT-margined linear perpetual the exchange
lists as trading (as Passivbot's forager), less live.ignored_coins and the markets younger than
live.minimum_coin_age_days, but with every coin the account holds a position in (its closes
continue). A market listed later, or one that comes of age, is taken in at the next start."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.config import LiveConfig
from bot.errors import ConfigError
from bot.exchange.base import ExchangeAdapter
from bot.live.active_coins import check_stream_limit
from bot.markets import MarketSpec

if TYPE_CHECKING:
    from bot.live.bot import LiveBot

__all__ = ["all_markets", "configured_symbols"]

log = logging.getLogger("gridbot.live.universe")

_DAY_MS = 86_400_000


def configured_symbols(
    live: LiveConfig, adapter: ExchangeAdapter, symbols: Sequence[str] | None
) -> tuple[str, ...]:
    """``symbols`` (``--symbols``), else live.symbols, else the approved list; () for "all"
    (listed at start by :func:`all_markets`)."""
    approved = live.approved_coins
    chosen = symbols or live.symbols or (approved if approved != "all" else ())
    out = tuple(adapter.market_id(s) for s in chosen or ())
    if not out and approved != "all":
        raise ConfigError("live.symbols: no symbols to trade (set live.symbols or --symbols)")
    return out


async def all_markets(bot: LiveBot) -> tuple[tuple[str, ...], dict[str, MarketSpec]]:
    """approved_coins "all": (the symbols, their markets), from the exchange's listing."""
    adapter, live = bot.adapter, bot.live
    snap = await bot.rest(adapter.fetch_account, None)
    held = {s for s, r in snap.positions.items() if r[0] > 0 or r[2] > 0}
    ignored = {adapter.market_id(s) for s in live.ignored_coins}
    listed = await bot.rest(adapter.list_markets)
    symbols = tuple(s for s in listed if s not in ignored or s in held)
    if not symbols:
        raise ConfigError('live.approved_coins "all": the exchange lists no market to trade')
    check_stream_limit(adapter.kind, len(symbols))
    specs = await bot.rest(adapter.load_markets, symbols)
    age_ms = live.minimum_coin_age_days * _DAY_MS
    now_ms = await bot.feeds.server_now_ms()
    young = [
        s
        for s, m in specs.items()
        if m.listed_ms and m.listed_ms + age_ms > now_ms and s not in held
    ]
    if young:
        log.info("not trading %d markets younger than live.minimum_coin_age_days: %s",
                 len(young), ", ".join(young))  # fmt: skip
    symbols = tuple(s for s in symbols if s not in young)
    if not symbols:
        raise ConfigError('live.approved_coins "all": every market is younger than '
                          "live.minimum_coin_age_days")  # fmt: skip
    log.info("approved_coins \"all\": trading %d of the exchange's %d perpetuals",
             len(symbols), len(listed))  # fmt: skip
    return symbols, {s: specs[s] for s in symbols}

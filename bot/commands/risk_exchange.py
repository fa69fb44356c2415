"""`gridbot risk --exchange ...`: the account's position and the exchange's ADL quantile.

Connects as ``gridbot live`` does (``--base-url``, ``--key-file`` or the key environment
variables, through :func:`bot.exchange.registry.make_adapter`), reads the wallet balance,
the position on ``--symbol``, its last price and the ADL quantile the exchange publishes
(Binance ``GET /fapi/v1/adlQuantile``: 0..4; Bybit ``adlRankIndicator`` in
``/v5/position/list``: 1..5), and says where each side stands in the exchange's queue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from bot.errors import ConfigError

__all__ = ["ExchangeView", "adl_report", "read_exchange"]


@dataclass
class ExchangeView:
    balance: float
    long: tuple[float, float] | None
    short: tuple[float, float] | None
    price: float
    quantiles: dict[str, int | None]  # long / short -> the exchange's number (None: no position)
    scale: tuple[int, int]  # (lowest, highest): the highest is deleveraged first


async def _read(exchange: str, base_url: str | None, key_file: str | None,
                symbol: str) -> ExchangeView:  # fmt: skip
    from bot.config import LiveConfig
    from bot.exchange.registry import make_adapter
    from bot.live.credentials import install_redaction, load_credentials

    key, secret = load_credentials(LiveConfig(key_file=key_file))
    uninstall = install_redaction([key, secret])
    adapter = make_adapter(exchange, key, secret, base_url=base_url, throttle=True)
    try:
        snap = await adapter.fetch_account([symbol])
        prices = await adapter.fetch_last_prices([symbol])
        if symbol not in prices:
            raise ConfigError(f"--symbol {symbol}: not a market on this exchange")
        quantiles = await adapter.fetch_adl_quantiles(symbol)
    finally:
        await adapter.close()
        uninstall()
    ls, lp, ss, sp = snap.positions.get(symbol, (0.0, 0.0, 0.0, 0.0))
    return ExchangeView(
        snap.balance, (ls, lp) if ls > 0 else None, (ss, sp) if ss > 0 else None,
        prices[symbol], quantiles, adapter.adl_scale,
    )  # fmt: skip


def read_exchange(exchange: str, base_url: str | None, key_file: str | None,
                  symbol: str | None) -> ExchangeView:  # fmt: skip
    if symbol is None:
        raise ConfigError("--exchange: give --symbol, the market whose position to read")
    return asyncio.run(_read(exchange, base_url, key_file, symbol.upper()))


def adl_report(view: ExchangeView, exchange: str) -> dict[str, Any]:
    """The exchange's quantile per side and what it means (JSON-ready)."""
    lo, hi = view.scale
    out: dict[str, Any] = {"adl_exchange": exchange, "adl_scale": [lo, hi]}
    for side in ("long", "short"):
        q = view.quantiles.get(side)
        out[f"adl_quantile_{side}"] = q
        if q is None:
            out[f"adl_queue_{side}"] = None
            continue
        # the exchange's buckets: the top one is the first fifth of its queue
        fifth = hi - q + 1
        out[f"adl_queue_{side}"] = (
            f"quantile {q} of {lo}..{hi}: in the "
            + (
                "first"
                if fifth == 1
                else f"{fifth}{'nd' if fifth == 2 else 'rd' if fifth == 3 else 'th'}"
            )
            + " fifth of the exchange's deleverage queue"
            + (" (deleveraged first)" if q == hi else " (deleveraged last)" if q == lo else "")
        )
    return out

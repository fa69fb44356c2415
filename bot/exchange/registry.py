"""Exchange name -> adapter class: the one place the live bot, the CLI and the replay pick an
exchange's dialect. A new exchange is a package under :mod:`bot.exchange` plus a line here."""

from __future__ import annotations

from bot.exchange.base import ExchangeAdapter
from bot.exchange.binance.rest import BinanceAdapter
from bot.exchange.bybit.rest import BybitAdapter

__all__ = ["ADAPTERS", "adapter_class", "make_adapter"]

#: "sim" is the simulated venue, which speaks Binance's format by default
ADAPTERS: dict[str, type[BinanceAdapter] | type[BybitAdapter]] = {
    "binance": BinanceAdapter,
    "bybit": BybitAdapter,
    "sim": BinanceAdapter,
}


def adapter_class(exchange: str) -> type[BinanceAdapter] | type[BybitAdapter]:
    try:
        return ADAPTERS[exchange]
    except KeyError:
        raise ValueError(
            f"unknown exchange {exchange!r} (known: {', '.join(sorted(ADAPTERS))})"
        ) from None


def make_adapter(
    exchange: str,
    api_key: str = "",
    api_secret: str = "",
    *,
    base_url: str | None = None,
    throttle: bool = True,
    timeout_ms: int = 10_000,
) -> ExchangeAdapter:
    """An adapter for one account on ``exchange`` ("binance", "bybit" or "sim")."""
    cls = adapter_class(exchange)
    return cls(api_key, api_secret, base_url=base_url, throttle=throttle, timeout_ms=timeout_ms)

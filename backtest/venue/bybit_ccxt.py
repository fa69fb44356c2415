"""Point a ccxt ``bybit`` client (sync or async, ccxt 4.5) at the venue's Bybit v5 REST API.

Every ``urls['api']`` entry (and the test/demo sets) becomes ``base_url``, so nothing can leak
to the internet; ``load_markets`` asks only ``/v5/market/instruments-info?category=linear`` (no
spot, inverse or option markets, no ``/v5/asset/coin/query-info`` currencies); the account is
taken as a unified (UTA 2.0) account without asking ``/v5/user/query-api`` and
``/v5/account/info`` (the venue answers them the same way if asked).
"""

from __future__ import annotations

from typing import Any

__all__ = ["point_bybit_ccxt_at"]


def point_bybit_ccxt_at(exchange: Any, base_url: str) -> None:
    """Rewire ``exchange`` (ccxt bybit) to ``base_url`` (e.g. ``http://127.0.0.1:8080``);
    call before ``load_markets``."""
    base = base_url.rstrip("/")
    urls = dict(exchange.urls)
    for name in ("api", "test", "demotrading"):
        family = urls.get(name)
        if isinstance(family, dict):
            urls[name] = {k: base for k in family}
    urls["api"] = {**urls.get("api", {}), "public": base, "private": base}
    exchange.urls = urls
    exchange.options["fetchMarkets"] = {
        **(exchange.options.get("fetchMarkets") or {}),
        "types": ["linear"],
    }
    exchange.options["defaultType"] = "swap"
    exchange.options["defaultSubType"] = "linear"
    exchange.options["adjustForTimeDifference"] = False
    exchange.options["enableDemoTrading"] = False
    # a UTA 2.0 account: what /v5/user/query-api and /v5/account/info would say
    exchange.options["enableUnifiedMargin"] = False
    exchange.options["enableUnifiedAccount"] = True
    exchange.options["unifiedMarginStatus"] = 6
    # fetchOrder on a UTA account asks for this acknowledgement of Bybit's 500-order window
    exchange.options["fetchOrder"] = {
        **(exchange.options.get("fetchOrder") or {}),
        "acknowledged": True,
    }
    exchange.has = {**exchange.has, "fetchCurrencies": False}

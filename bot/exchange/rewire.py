"""The one ccxt URL rewirer: point a ccxt ``binanceusdm`` or ``bybit`` client (sync or async)
at a compatible server, e.g. the simulated venue on ``http://127.0.0.1:PORT``.

Used by the adapters (``base_url``), the tests, ``gridbot download --base-url`` and the replay.
Every REST family ccxt knows is rewired to ``base_url``, so nothing can leak to the internet.

- Binance: ``load_markets`` asks only ``/fapi/v1/exchangeInfo`` (no spot, no coin-M, no
  ``sapi`` currencies or margin pairs), and ccxt's Binance USDT-M error table (which it picks
  by URL prefix, e.g. -2019 -> InsufficientFunds) applies to the local URLs too.
- Bybit: every ``urls['api']`` entry (and the test/demo sets) becomes ``base_url``;
  ``load_markets`` asks only ``/v5/market/instruments-info?category=linear`` (no spot, inverse
  or option markets, no ``/v5/asset/coin/query-info`` currencies); the account is taken as a
  unified (UTA 2.0) account without asking ``/v5/user/query-api`` and ``/v5/account/info``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["point_ccxt_at"]

# ccxt's Binance API families and the path each lives under on Binance.
_PATHS = {
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "dapiPublic": "/dapi/v1",
    "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data",
    "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
    "papi": "/papi/v1",
    "papiV2": "/papi/v2",
}


def point_ccxt_at(exchange: Any, base_url: str) -> None:
    """Rewire ``exchange`` (ccxt binanceusdm or bybit, sync or async) to ``base_url`` (e.g.
    ``http://127.0.0.1:8080``); call before ``load_markets``."""
    if exchange.id == "bybit":
        _point_bybit_at(exchange, base_url.rstrip("/"))
    elif exchange.id in ("binanceusdm", "binance"):
        _point_binance_at(exchange, base_url.rstrip("/"))
    else:
        raise ValueError(f"cannot point ccxt {exchange.id!r} at {base_url}")


def _point_binance_at(exchange: Any, base: str) -> None:
    api = dict(exchange.urls.get("api") or {})
    for name in list(api) + list(_PATHS):
        api[name] = base + _PATHS.get(name, "/" + name)
    exchange.urls = {**exchange.urls, "api": api}
    exchange.urls.pop("test", None)
    exchange.options["fetchMarkets"] = {"types": ["linear"]}
    exchange.options["fetchCurrencies"] = False  # sapi capital/config/getall does not exist here
    exchange.options["fetchMargins"] = False
    exchange.options["adjustForTimeDifference"] = False
    exchange.has = {**exchange.has, "fetchCurrencies": False}

    original = exchange.get_exceptions_by_url

    def exceptions_by_url(url: str | None, exact_or_broad: str) -> dict:
        # ccxt picks the USDT-M table by the URL's host (fapi.binance.com); ours is local.
        if url is not None and url.startswith(base + "/fapi/"):
            linear = exchange.safe_dict(exchange.exceptions, "linear", {})
            return exchange.safe_dict(linear, exact_or_broad, {})
        return original(url, exact_or_broad)

    exchange.get_exceptions_by_url = exceptions_by_url


def _point_bybit_at(exchange: Any, base: str) -> None:
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

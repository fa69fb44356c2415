"""The rooms of issue 9 hold together: one exchange registry, one ccxt URL rewirer, one IP
budget for both of the venue's dialects, and every refusal of the venue's core answered in
each dialect's own terms (real ccxt clients over HTTP to the venue on 127.0.0.1)."""

from __future__ import annotations

import ccxt
import pytest

from backtest.data import load_candles
from backtest.venue.binance.errors import to_api_error
from backtest.venue.bybit.rest import to_bybit_error
from backtest.venue.refusals import Refusal, Refused
from backtest.venue.server import Venue, VenueConfig, VenueThread
from bot.exchange.binance.rest import BinanceAdapter
from bot.exchange.bybit.rest import BybitAdapter
from bot.exchange.registry import make_adapter
from bot.exchange.rewire import point_ccxt_at

SAMPLE = "data/sample/binance_spot_1m"
T0 = 1_620_604_800_000  # 2021-05-10 00:00 UTC


def test_the_registry_picks_each_exchange_dialect():
    assert type(make_adapter("binance", "k", "s")) is BinanceAdapter
    assert type(make_adapter("bybit", "k", "s")) is BybitAdapter
    assert type(make_adapter("sim", "k", "s")) is BinanceAdapter  # the venue speaks Binance
    with pytest.raises(ValueError, match="unknown exchange 'kraken'.*binance, bybit, sim"):
        make_adapter("kraken", "k", "s")


@pytest.mark.parametrize("cls", [ccxt.binanceusdm, ccxt.bybit])
def test_one_rewirer_points_every_rest_family_at_the_base(cls):
    ex = cls({"apiKey": "k", "secret": "s"})
    point_ccxt_at(ex, "http://127.0.0.1:9/")
    urls = [u for fam in ("api", "test") for u in (ex.urls.get(fam) or {}).values()]
    assert urls and all(u.startswith("http://127.0.0.1:9") for u in urls)  # nothing leaks
    with pytest.raises(ValueError, match="cannot point ccxt 'kraken'"):
        point_ccxt_at(ccxt.kraken(), "http://127.0.0.1:9")


def test_every_core_refusal_has_an_answer_in_both_dialects():
    for reason in Refusal:
        binance = to_api_error(Refused(reason, "why"))
        assert binance.code < 0 and binance.http_status in (400, 401, 503), reason
        bybit = to_bybit_error(Refused(reason, "why"))
        assert bybit.code >= 10000 and bybit.msg, reason
    # the answers a bot tells apart stay distinct in both dialects
    told_apart = (
        Refusal.INSUFFICIENT_MARGIN, Refusal.DUPLICATE_CLIENT_ID, Refusal.REDUCE_ONLY_REJECTED,
        Refusal.POSITION_MODE_UNCHANGED, Refusal.UNKNOWN_ORDER,
    )  # fmt: skip
    for convert in (to_api_error, to_bybit_error):
        codes = [convert(Refused(r, "")).code for r in told_apart]
        assert len(set(codes)) == len(codes), convert


@pytest.fixture(scope="module")
def venue_thread():
    candles = load_candles(SAMPLE, ["BTCUSDT"], end_ms=T0 + 400 * 60_000)
    venue = Venue(candles, VenueConfig(start_index=300, weight_limit_per_minute=2))
    vt = VenueThread(venue)
    vt.start()
    yield vt
    vt.stop()


def test_binance_and_bybit_calls_spend_one_ip_budget(venue_thread):
    venue = venue_thread.venue
    binance = ccxt.binanceusdm({"timeout": 5_000, "enableRateLimit": False})
    bybit = ccxt.bybit({"timeout": 5_000, "enableRateLimit": False})
    point_ccxt_at(binance, venue.rest_url)
    point_ccxt_at(bybit, venue.rest_url)
    venue_thread.call(venue.clear_faults)
    assert binance.fapiPublicGetTime()["serverTime"] > 0  # weight 1 of 2
    assert bybit.publicGetV5MarketTime()["retCode"] == 0  # 1 more: the budget is spent
    with pytest.raises(ccxt.RateLimitExceeded):  # Bybit's words for it: HTTP 403
        bybit.publicGetV5MarketTime()
    with pytest.raises(ccxt.DDoSProtection, match="-1003"):  # Binance's: 429, code -1003
        binance.fapiPublicGetTime()
    venue_thread.call(venue.clear_faults)  # a new minute, as far as the budget knows
    assert bybit.publicGetV5MarketTime()["retCode"] == 0

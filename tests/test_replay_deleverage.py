"""A replay in which the exchange deleverages the bot's profitable position mid-run.

The simulated exchange closes half of a profitable position at a price of its own
(``MatchingEngine.deleverage``: an ADL order that is not the bot's, pushed on the user stream in
the dialect's format: Binance ORDER_TRADE_UPDATE ``adl_autoclose`` / CALCULATED, Bybit execution
``AdlTrade``). The bot must book it at once (its book equals the exchange's without waiting for
a REST reconciliation), never send a close against the part that vanished, and keep trading.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from backtest.replay import replay, round_to_ticks
from backtest.venue.matching import ADL_CLIENT_ID
from bot.config import parse_config
from bot.core.rounding import round_dn
from tests.test_live_replay import TIGHT_GRID_SIDE, sample


def _profitable(venue, api_key):
    acct = venue.engine.accounts[api_key]
    for (symbol, ps), pos in acct.positions.items():
        if pos.amount == 0.0:
            continue
        price = venue.engine.prices[symbol]
        if (price - pos.entry_price) * pos.amount > 0:
            return symbol, ps, pos
    return None


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_bot_books_a_deleverage_at_once_and_carries_on(exchange: str, caplog):
    caplog.set_level(logging.WARNING)
    config = parse_config(
        {
            "bot": {"long": TIGHT_GRID_SIDE, "short": {**TIGHT_GRID_SIDE, "enabled": True}},
            "live": {"leverage": 10},
            "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"], "starting_balance": 1000},
        }
    )
    candles = round_to_ticks(sample(5))
    seen: dict = {}

    async def after_step(k, venue, bot):
        (api_key,) = venue.engine.accounts
        acct = venue.engine.accounts[api_key]
        if "k" not in seen:
            found = _profitable(venue, api_key)
            if found is None:
                return
            symbol, ps, pos = found
            step = venue.engine.specs[symbol].qty_step
            j = 0 if ps == "LONG" else 1
            booked_before = bot.book.position(symbol, j)
            qty = round_dn(abs(pos.amount) / 2, step) or abs(pos.amount)
            price = venue.engine.prices[symbol]  # the bankrupt's price: better than the mark
            fill = venue.engine.deleverage(api_key, symbol, ps, qty, price)
            assert fill is not None and fill.client_order_id == ADL_CLIENT_ID
            venue.flush_events()
            want = abs(acct.position(symbol, ps).amount)
            seen.update(k=k, symbol=symbol, ps=ps, j=j, qty=qty, before=booked_before[0])
            seen["price"] = price
            seen["venue"] = want
            seen["trade"] = acct.trades[-1]
            if exchange == "binance":
                # pushed on the user stream: booked at once, without a reconciliation
                for _ in range(500):
                    if abs(bot.book.position(symbol, j)[0] - want) < step / 2:
                        break
                    await asyncio.sleep(0.01)
                seen["after"] = bot.book.position(symbol, j)[0]
            # Bybit in lockstep books a candle's fills by REST before its next decision (the
            # replay's rule, README "Replay"): the AdlTrade execution is among them
            return
        seen["bot"] = bot
        # every later candle: no close of ours bigger than what is left of the position
        symbol, ps, j = seen["symbol"], seen["ps"], seen["j"]
        pos = abs(acct.position(symbol, ps).amount)
        closing = "SELL" if ps == "LONG" else "BUY"
        resting = sum(
            o.remaining
            for o in acct.open_orders.values()
            if o.symbol == symbol and o.position_side == ps and o.side == closing
        )
        assert resting <= pos + 1e-9, (k, resting, pos)
        assert abs(bot.book.position(symbol, j)[0] - pos) < 1e-9
        seen["checked"] = seen.get("checked", 0) + 1

    result = asyncio.run(
        replay(config, candles, exchange=exchange, after_step=after_step, compare=False)
    )
    assert "k" in seen, "no profitable position to deleverage"
    assert seen["before"] - seen["venue"] == pytest.approx(seen["qty"])
    if exchange == "binance":
        assert seen["after"] == pytest.approx(seen["venue"])  # at once, from the stream
    # booked as a fill (at the deleverage's price), not adopted from a position report
    adl = [
        f
        for f in seen["bot"].fills
        if f.symbol == seen["symbol"] and f.price == seen["price"]
        and abs(abs(f.qty) - seen["qty"]) < 1e-9 and f.client_id in (ADL_CLIENT_ID, "AdlTrade")
    ]  # fmt: skip
    assert len(adl) == 1
    assert "a fill of an order that is not ours" in caplog.text  # recorded
    t = seen["trade"]  # in the trade history: the ADL order's fill, no fee
    assert t.client_order_id == ADL_CLIENT_ID and t.commission == 0.0 and t.realized_pnl > 0
    assert seen.get("checked", 0) > 10
    assert any(f["k"] > seen["k"] for f in result.fills_live), "the grid carries on"
    assert result.bot_errors == []

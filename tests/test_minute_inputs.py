"""The minute's account-wide inputs (the forager's slots, the active set) are computed once and
read by every coin's cycle, and never outlive a change within the minute: a fill, an outside
position change, an order created or cancelled (bot.live.minute_inputs)."""

from __future__ import annotations

import pytest

from bot.core.params import KIND_ENTRY_INITIAL
from bot.exchange.events import ADJUSTMENT, FillEvent, PositionEvent
from bot.live.bot import LiveBot
from bot.live.orders import LiveOrder
from tests.test_forager_streams import one_slot_config
from tests.test_live_monitor import fake_bot

T_MS = 1_700_000_040_000  # the open of the minute's closed kline


def ranked_bot() -> LiveBot:
    """BTC and ETH, one long slot, ranked by volatility: ETH (the more volatile) gets it."""
    bot = fake_bot(one_slot_config())
    for c, vol in ((bot.coins["BTCUSDT"], 0.001), (bot.coins["ETHUSDT"], 0.004)):
        c.fema[0] = [1e6, vol]  # [volume EMA, range EMA]
        c.emas[:] = c.last_price
        c.last_kline_ts = T_MS
    return bot


def opens(bot: LiveBot, symbol: str) -> bool:
    """Does the coin's ideal carry an initial entry (the forager let it open)?"""
    return any(o.kind == KIND_ENTRY_INITIAL for o in bot.ideal(bot.coins[symbol]))


def uncached(bot: LiveBot) -> tuple[bool, bool, frozenset[str]]:
    """The same questions with every input recomputed (the old path)."""
    bot.minute.cached = False
    try:
        return opens(bot, "ETHUSDT"), opens(bot, "BTCUSDT"), bot.active.wanted(T_MS + 60_000)
    finally:
        bot.minute.cached = True


def test_a_fill_within_the_minute_takes_the_slot_before_another_coin_asks():
    """ETH holds the ranking's one slot; BTC's entry from the minute before fills within the
    minute: BTC holds the slot now, so ETH's next ideal must not open on the stale ranking."""
    bot = ranked_bot()
    assert opens(bot, "ETHUSDT") and not opens(bot, "BTCUSDT")
    assert bot.active.wanted(T_MS + 60_000) == {"ETHUSDT"}
    assert bot.minute.computed == 1  # one ranking for every coin's question of the minute
    fill = FillEvent("BTCUSDT", 1, 0.01, 30_000.0, 1, T_MS + 70_000, "gbL1", "11", 0.0)
    assert bot.book_fill(fill)
    assert not opens(bot, "ETHUSDT")  # the slot is BTC's
    assert bot.active.wanted(T_MS + 60_000) == {"BTCUSDT"}
    assert not bot.active.needs_cycle(bot.coins["ETHUSDT"])
    assert bot.minute.computed == 2  # recomputed once for the fill, then read again
    assert uncached(bot) == (False, False, frozenset({"BTCUSDT"}))


def test_an_outside_close_and_an_order_within_the_minute_move_the_active_set():
    """BTC holds the slot; an exchange deleverage closes it within the minute (no fill of
    ours): ETH gets the slot at once. An order resting on BTC keeps it active until
    cancelled, in the same minute."""
    bot = ranked_bot()
    bot.book_fill(FillEvent("BTCUSDT", 1, 0.01, 30_000.0, 1, T_MS, "gbL1", "11", 0.0))
    assert not opens(bot, "ETHUSDT")
    assert bot.active.refresh(T_MS + 60_000) == {"BTCUSDT"}
    adl = PositionEvent("BTCUSDT", 1, 0.0, 0.0, T_MS + 65_000, ADJUSTMENT)
    assert bot.book.position_report(adl)  # adopted: flat
    assert opens(bot, "ETHUSDT")
    assert bot.active.refresh(T_MS + 60_000) == {"ETHUSDT"}
    order = LiveOrder("BTCUSDT", 1, 0.01, 29_000.0, KIND_ENTRY_INITIAL, 0, "gbL2", "12")
    bot.book.created("BTCUSDT", order)
    assert bot.active.refresh(T_MS + 60_000) == {"BTCUSDT", "ETHUSDT"}
    bot.book.forget("BTCUSDT", order)
    assert bot.active.refresh(T_MS + 60_000) == {"ETHUSDT"}
    assert uncached(bot) == (True, False, frozenset({"ETHUSDT"}))


@pytest.mark.parametrize("change", ["kline", "eligibility"])
def test_a_new_ranking_input_within_the_minute_is_read(change):
    """A kline that arrives late moves the forager's EMAs; a coin's eligibility changes:
    the next question ranks again."""
    bot = ranked_bot()
    assert opens(bot, "ETHUSDT")
    btc = bot.coins["BTCUSDT"]
    if change == "kline":  # BTC's late kline: a huge range, now the most volatile by far
        btc.last_kline_ts -= 60_000
        assert bot.feeds.apply_kline(btc, T_MS, 30_000.0, 60_000.0, 1_000.0, 1e6)
    else:
        bot.coins["ETHUSDT"].eligible_from_ms = 10**15  # too young from now on
    assert not opens(bot, "ETHUSDT") and opens(bot, "BTCUSDT")
    assert bot.active.wanted(T_MS + 60_000) == {"BTCUSDT"}
    assert uncached(bot) == (False, True, frozenset({"BTCUSDT"}))

"""Batch order endpoints, real in both places: the live bot's adapters send two or more creates
or cancels as one batch request through ccxt over HTTP to the venue on 127.0.0.1 (Binance
``/fapi/v1/batchOrders``, Bybit ``/v5/order/create-batch`` and ``cancel-batch``); each item's
refusal is the same error its single call raises, and a batch whose answer never came leaves
every item "create unknown" for the book until the open orders say."""

from __future__ import annotations

import asyncio

import pytest

from backtest.replay import round_to_ticks
from backtest.venue.server import Venue, VenueConfig
from bot.errors import (
    InsufficientMarginError,
    OrderRejectedError,
    TransientExchangeError,
    UnknownOrderError,
)
from bot.exchange.registry import make_adapter
from bot.live.book import Book
from bot.live.orders import PREFIX, LiveOrder
from bot.live.state import StateStore
from tests.test_live_replay import sample

KEY, SECRET = "batch-key-0123456789abcdef", "batch-secret-fedcba9876543210"
SYM = "BTCUSDT"
EXCHANGES = ("binance", "bybit")


async def _with_adapter(exchange: str, fn, *, timeout_ms: int = 10_000):
    venue = Venue(round_to_ticks(sample(0.2)), VenueConfig(start_index=60))
    venue.add_account(KEY, SECRET, 1000.0)
    await venue.start()
    ad = make_adapter(
        exchange, KEY, SECRET, base_url=venue.rest_url, throttle=False, timeout_ms=timeout_ms
    )
    try:
        await ad.load_markets([SYM])
        await ad.setup_account([SYM], 10)
        price = float((await ad.fetch_klines(SYM, limit=2))[-1, 4])
        return await fn(venue, ad, price)
    finally:
        await ad.close()
        await venue.stop()


def _bid(price: float, pct_below: float, cid: str, qty: float = 0.003) -> LiveOrder:
    """A long entry ``pct_below`` % under ``price`` (a resting maker order)."""
    return LiveOrder(SYM, 1, qty, round(price * (1 - pct_below / 100), 1), 2, 0, PREFIX + cid)


def _calls(ad, before: int) -> int:
    return ad.requests - before


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_batch_create_and_cancel_one_request_each_with_a_failing_item(exchange):
    async def go(venue, ad, price):
        orders = [
            _bid(price, 1, "a"),
            _bid(price, 2, "b", qty=50.0),  # 50 BTC on 1000 USDT: refused for margin
            _bid(price, 3, "c"),
        ]
        n = ad.requests
        created = await ad.run_batch(ad.create_order, orders)
        create_calls = _calls(ad, n)
        opens = {o.client_id: o for o in await ad.fetch_open_orders(SYM)}
        ghost = LiveOrder(SYM, 1, 0.001, 1.0, 2, 0, PREFIX + "ghost", "987654321")
        n = ad.requests
        cancelled = await ad.run_batch(ad.cancel_order, [created[0], ghost, created[2]])
        cancel_calls = _calls(ad, n)
        return created, create_calls, opens, cancelled, cancel_calls, await ad.fetch_open_orders()

    created, create_calls, opens, cancelled, cancel_calls, after = asyncio.run(
        _with_adapter(exchange, go)
    )
    assert create_calls == 1 and cancel_calls == 1  # one batch request each
    assert isinstance(created[0], LiveOrder) and created[0].order_id
    assert isinstance(created[1], InsufficientMarginError)  # mapped as the single call's
    assert isinstance(created[2], LiveOrder) and created[2].order_id
    assert sorted(opens) == [PREFIX + "a", PREFIX + "c"]  # the others were still placed
    assert opens[PREFIX + "a"].order_id == created[0].order_id
    assert cancelled[0] is None and cancelled[2] is None
    assert isinstance(cancelled[1], UnknownOrderError)  # the book's "vanished" path
    assert after == []  # the good ones were still cancelled


def test_binance_batch_post_only_item_that_would_take_is_rejected_alone():
    async def go(venue, ad, price):
        crossing = LiveOrder(SYM, 1, 0.003, round(price * 1.02, 1), 2, 0, PREFIX + "x")
        res = await ad.run_batch(ad.create_order, [_bid(price, 1, "a"), crossing])
        return res, await ad.fetch_open_orders(SYM)

    res, opens = asyncio.run(_with_adapter("binance", go))
    assert isinstance(res[0], LiveOrder)
    assert isinstance(res[1], OrderRejectedError) and "-5022" in str(res[1])
    assert [o.client_id for o in opens] == [PREFIX + "a"]


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_batches_split_at_the_exchange_size_and_one_order_uses_the_single_call(exchange):
    async def go(venue, ad, price):
        orders = [_bid(price, 1 + i / 10, f"n{i}") for i in range(12)]
        n = ad.requests
        res = await ad.run_batch(ad.create_order, orders)
        batched = _calls(ad, n)
        n = ad.requests
        one = await ad.run_batch(ad.create_order, [_bid(price, 5, "solo")])
        return res, batched, one, _calls(ad, n), len(await ad.fetch_open_orders(SYM))

    res, batched, one, single, n_open = asyncio.run(_with_adapter(exchange, go))
    assert all(isinstance(r, LiveOrder) for r in res)
    assert batched == (3 if exchange == "binance" else 1)  # 5 + 5 + 2 ; 20 a request
    assert isinstance(one[0], LiveOrder) and single == 1
    assert n_open == 13


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_batch_whose_answer_never_came_is_create_unknown_then_settled(exchange, landed, tmp_path):
    """The client times out on a create batch: either the venue placed every order and its
    answer came too late (``landed``), or the request was held before being served and dropped
    (``lost``). Either way each item is a transient error, which the cycle books "create
    unknown": the pre-trade guard counts them, and the next open-orders snapshot settles them
    (adopted with the exchange's ids, or forgotten)."""

    async def go(venue, ad, price):
        orders = [_bid(price, 1, "u1"), _bid(price, 2, "u2"), _bid(price, 3, "u3")]
        if landed:
            venue.faults.rest_answer_delay_ms = 1500
        else:
            venue.faults.rest_delay_ms = 1500
        n = ad.requests
        res = await ad.run_batch(ad.create_order, orders)
        calls = _calls(ad, n)
        venue.faults.rest_answer_delay_ms = venue.faults.rest_delay_ms = 0
        await asyncio.sleep(2.0)  # the held request is done with meanwhile
        return orders, res, calls, await ad.fetch_open_orders(SYM), price

    orders, res, calls, opens, price = asyncio.run(_with_adapter(exchange, go, timeout_ms=500))
    assert calls == 1 and all(isinstance(r, TransientExchangeError) for r in res)
    book = Book(StateStore(tmp_path, "t"), [SYM], {SYM: 0.001})  # qty steps
    book.load(1000.0)
    unsure_usdt = sum(o.qty * o.price for o in orders)
    wel = 1.5 * unsure_usdt / 1000.0  # the limit: 1.5 x what the unanswered creates hold
    new = [_bid(price, 1, "z", qty=round(0.6 * wel * 1000.0 / price, 3))]
    assert book.entry_room(SYM, 1, new, wel) == 1  # alone it fits
    for o in orders:  # what the cycle does with a transient create error
        book.create_unknown(SYM, o)
    assert book.entry_room(SYM, 1, new, wel) == 0  # the guard counts what may have landed
    want = sorted(o.client_id for o in orders) if landed else []
    assert sorted(o.client_id for o in opens) == want
    book.set_open_orders(SYM, opens)
    adopted = book.coins[SYM].open
    assert sorted(adopted) == want and not book.coins[SYM].unsure
    assert all(o.order_id for o in adopted.values())
    # the cycle passes what rests (the adopted orders) to the guard
    assert book.entry_room(SYM, 1, new, wel, adopted.values()) == (0 if landed else 1)


def test_bybit_takes_every_coins_fills_in_one_query_from_each_coins_cursor():
    """The per-candle catch-up on Bybit: one execution query for the coins with a cursor, each
    coin's fills from its own (inclusive) cursor, the same fills the per-coin queries return;
    a coin without a cursor is asked alone, and a shared answer of more than one page falls
    back to one query per coin."""

    async def go(venue, ad, price):
        await ad.setup_account(["DOGEUSDT"], 10)
        for sym, qty in (("BTCUSDT", 0.003), ("DOGEUSDT", 200.0), ("BTCUSDT", 0.004)):
            venue.engine.place_order(KEY, sym, "BUY", "MARKET", qty, position_side="LONG")
        t = venue.engine.now_ms

        async def both(cursors):
            n = ad.requests
            many = await ad.fetch_fills_many(cursors)
            calls = ad.requests - n
            return many, calls, {s: await ad.fetch_fills(s, c) for s, c in cursors.items()}

        out = [
            await both({"BTCUSDT": t, "DOGEUSDT": t}),
            await both({"BTCUSDT": t, "DOGEUSDT": t + 1}),
            await both({"BTCUSDT": t, "DOGEUSDT": 0}),
        ]
        for i in range(100):  # a busy coin: the shared answer takes two pages
            side = "SELL" if i % 2 else "BUY"  # open and close again (margin stays small)
            venue.engine.place_order(KEY, "BTCUSDT", side, "MARKET", 0.003, position_side="LONG")
        out.append(await both({"BTCUSDT": t, "DOGEUSDT": t}))
        return out

    (all_, c1, e1), (part, c2, e2), (zero, c3, e3), (busy, c4, e4) = asyncio.run(
        _with_adapter("bybit", go)
    )
    assert (c1, c2, c3) == (1, 1, 2)  # shared; shared; DOGE without a cursor asked alone
    assert all_ == e1 and part == e2 and zero == e3 and busy == e4
    assert [f.qty for f in all_["BTCUSDT"]] == [0.003, 0.004] and len(all_["DOGEUSDT"]) == 1
    assert len(part["BTCUSDT"]) == 2 and part["DOGEUSDT"] == []  # before its cursor: dropped
    assert len(busy["BTCUSDT"]) == 102 and c4 == 1 + 2 + 1  # shared page, then coin by coin

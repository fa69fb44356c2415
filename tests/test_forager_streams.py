"""The live forager follows its active coins' prices on the open connection.

Klines of every coin feed the ranking; price streams and order cycles go to the active coins
only (positions, open orders, the forager's candidates), and change with them through
SUBSCRIBE / UNSUBSCRIBE (Binance) or subscribe / unsubscribe (Bybit) without a reconnect. The
venue's own record of each connection's subscriptions is the witness; the backtester's fills
are the yardstick."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace

import pytest
from websockets.asyncio.client import connect

from backtest.replay import replay
from backtest.venue.server import Venue, VenueConfig
from bot.config import parse_config
from bot.core.params import KIND_ENTRY_INITIAL
from bot.errors import ConfigError
from bot.exchange.binance.streams import BinanceStreams, binance_events
from bot.exchange.bybit.streams import BybitPublicStream
from bot.exchange.order import LiveOrder
from bot.exchange.registry import make_adapter
from bot.live.active_coins import check_stream_limit
from bot.live.bot import LiveBot
from bot.live.pacing import Lockstep
from bot.live.status_snapshot import build_status
from tests.test_forager import FORAGER_SIDE, SYMBOLS3, candles3
from tests.test_live_monitor import fake_bot, set_pos

ONE_SLOT = {**FORAGER_SIDE, "n_positions": 1}


def one_slot_config():
    """Three coins, one long slot, the volume and volatility filters on: the ranking moves
    the slot between coins during the run."""
    return parse_config(
        {
            "bot": {"long": ONE_SLOT, "short": {**ONE_SLOT, "enabled": False}},
            "live": {"leverage": 10},
            "backtest": {"symbols": SYMBOLS3, "starting_balance": 1000},
        }
    )


def price_streams(venue: Venue, exchange: str) -> list[set[str]]:
    """Per open market connection, the coins whose price stream it carries."""
    if exchange == "binance":
        subs = venue.streams.subscriptions()
        return [{s.split("@")[0].upper() for s in c if s.endswith("@aggTrade")} for c in subs]
    return [
        {t.split(".")[1] for t in c if t.startswith("publicTrade.")}
        for c in venue.bybit_streams.subscriptions()
    ]


def ticker_streams(venue: Venue) -> list[set[str]]:
    return [
        {t.split(".")[1] for t in c if t.startswith("tickers.")}
        for c in venue.bybit_streams.subscriptions()
    ]


def kline_streams(venue: Venue, exchange: str) -> list[set[str]]:
    if exchange == "binance":
        subs = venue.streams.subscriptions()
        return [{s.split("@")[0].upper() for s in c if s.endswith("@kline_1m")} for c in subs]
    return [
        {t.split(".")[2] for t in c if t.startswith("kline.1.")}
        for c in venue.bybit_streams.subscriptions()
    ]


def market_connects(venue: Venue, exchange: str) -> int:
    return (
        venue.streams.connects if exchange == "binance" else venue.bybit_streams.connects["public"]
    )


def holding_on_venue(venue: Venue) -> set[str]:
    """The exchange's truth: coins with a position or an open order of the account."""
    (acct,) = venue.engine.accounts.values()
    out = {o.symbol for o in acct.open_orders.values()}
    return out | {p.symbol for p in acct.positions.values() if p.amount != 0.0}


@dataclass
class Watch:
    """What each step looked like: (k, the bot's active set, each connection's price streams)."""

    exchange: str
    steps: list[tuple[int, frozenset[str], list[set[str]]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __call__(self, k: int, venue: Venue, bot) -> None:
        active = bot.active.symbols
        prices = price_streams(venue, self.exchange)
        self.steps.append((k, active, prices))
        holding = holding_on_venue(venue)
        if prices != [set(active)]:
            self.problems.append(f"k={k}: price streams {prices}, active {sorted(active)}")
        if not holding <= active:
            self.problems.append(f"k={k}: {sorted(holding - active)} trade but are not active")
        if kline_streams(venue, self.exchange) != [set(SYMBOLS3)]:
            self.problems.append(f"k={k}: klines {kline_streams(venue, self.exchange)}")
        if self.exchange == "bybit" and ticker_streams(venue) != [set(active)]:
            self.problems.append(f"k={k}: tickers {ticker_streams(venue)}")

    def distinct_sets(self) -> list[frozenset[str]]:
        out: list[frozenset[str]] = []
        for _, active, _ in self.steps:
            if not out or out[-1] != active:
                out.append(active)
        return out


def assert_parity(result) -> None:
    assert len(result.fills_backtest) >= 20
    assert result.mismatches == []
    assert result.first_divergence is None, result.first_divergence
    assert result.matched == len(result.fills_live) == len(result.fills_backtest)
    assert result.bot_errors == []
    assert result.open_orders_ok


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_price_streams_follow_the_ranking_on_one_connection(exchange: str):
    watch = Watch(exchange)
    connects: list[int] = []

    def after(k, venue, bot):
        watch(k, venue, bot)
        connects.append(market_connects(venue, exchange))

    result = asyncio.run(
        replay(one_slot_config(), candles3(8), exchange=exchange, after_step=after)
    )
    assert_parity(result)
    assert watch.problems == []
    sets = watch.distinct_sets()
    # the slot moved between coins (ETH -> BTC -> ETH ...), and mostly one coin was followed
    assert len(sets) >= 4, sets
    assert len({s for a in sets for s in a}) >= 2
    assert sum(len(a) < len(SYMBOLS3) for _, a, _ in watch.steps) > 0.9 * len(watch.steps)
    assert set(connects) == {1}, "a change of the active set must not cost a reconnect"


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_connection_drops_while_a_candidate_enters(exchange: str):
    """The market connection drops the moment the bot asks for a new candidate's prices (its
    subscribe reaches the venue, no ack comes back): after the reconnect the right streams
    are subscribed and the fills still equal the backtester's."""
    watch = Watch(exchange)
    state = {"armed": False, "dropped_at": None, "patched": False}

    async def arm(k, venue, bot):
        # the bot may finish a candle by REST before its market socket is back (backoff):
        # the subscriptions are checked once it is
        for _ in range(1000):
            if bot.streams_ready() and bot.feeds.market_up:
                break
            await asyncio.sleep(0.01)
        if not state["patched"]:
            state["patched"] = True
            server = venue.streams if exchange == "binance" else venue.bybit_streams
            original = server._on_message

            def on_message(client, message):
                text = message.decode() if isinstance(message, bytes) else message
                req = json.loads(text)
                adds = (req.get("method") == "SUBSCRIBE") or (req.get("op") == "subscribe")
                if state["armed"] and adds and "Trade" in text:
                    state["armed"] = False
                    state["dropped_at"] = k_now[0]
                    venue.drop_ws()  # before the ack: the change is in flight
                    return None if exchange == "binance" else []
                return original(client, message)

            server._on_message = on_message
            state["armed"] = True
        watch(k, venue, bot)
        state["connects"] = market_connects(venue, exchange)

    k_now = [0]

    def on_step(k, venue, bot):
        k_now[0] = k

    result = asyncio.run(
        replay(one_slot_config(), candles3(8), exchange=exchange, after_step=arm, on_step=on_step)
    )
    assert state["dropped_at"] is not None, "no candidate entered after arming"
    assert_parity(result)
    after_drop = [p for p in watch.problems if int(p.split(":")[0][2:]) > state["dropped_at"]]
    assert after_drop == []
    assert len(watch.distinct_sets()) >= 4
    assert state["connects"] == 2, "one reconnect after the drop, none for the changes"


# ---------------------------------------------------------------------------------- the venue


@pytest.fixture
def venue_loop():
    candles = candles3(1)
    venue = Venue(candles, VenueConfig(start_index=30))
    return venue


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_binance_venue_subscribes_and_refuses_as_binance(venue_loop):
    venue = venue_loop

    async def main():
        await venue.start()
        try:
            async with connect(f"{venue.ws_url}/market/stream?streams=btcusdt@kline_1m") as ws:
                await ws.send(
                    json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 7})
                )
                assert await recv_json(ws) == {"result": None, "id": 7}
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "list1"}))
                assert await recv_json(ws) == {
                    "result": ["btcusdt@kline_1m", "ethusdt@aggTrade"], "id": "list1"
                }  # fmt: skip
                await venue.advance()
                got = [await recv_json(ws) for _ in range(5)]
                assert (
                    sorted(m["stream"] for m in got)
                    == ["btcusdt@kline_1m"] + ["ethusdt@aggTrade"] * 4
                )
                await ws.send(
                    json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 8})
                )
                assert await recv_json(ws) == {"result": None, "id": 8}
                await venue.advance()
                assert (await recv_json(ws))["stream"] == "btcusdt@kline_1m"  # no trades now
                bad = [
                    ({"method": "SUBSCRIBE", "params": "ethusdt@aggTrade", "id": 9}, 2, 9),
                    ({"method": "SUBSCRIBE", "params": [3], "id": 10}, 2, 10),
                    ({"method": "SUBSCRIBE", "params": ["x@aggTrade"], "id": {"a": 1}}, 2, None),
                    (
                        {"method": "SUBSCRIBE", "params": ["x@aggTrade"], "id": "not-alnum!"},
                        2,
                        None,
                    ),
                    ({"method": "SUBSCRIBED", "params": ["x@aggTrade"], "id": 11}, 2, 11),
                    ({"params": ["x@aggTrade"], "id": 12}, 2, 12),
                ]
                for req, code, rid in bad:
                    await ws.send(json.dumps(req))
                    reply = await recv_json(ws)
                    assert reply["error"]["code"] == code and reply["id"] == rid, (req, reply)
                    assert "result" not in reply
                await ws.send("{not json")
                assert (await recv_json(ws))["error"]["code"] == 3
                many = [f"c{i}usdt@aggTrade" for i in range(1100)]
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": many, "id": 13}))
                assert (await recv_json(ws))["error"]["code"] == 2
                # nothing of the refused requests was applied
                assert venue.streams.subscriptions() == [{"btcusdt@kline_1m"}]
            assert venue.streams.connects == 1
        finally:
            await venue.stop()

    asyncio.run(main())


def test_bybit_venue_subscribes_and_refuses_as_bybit(venue_loop):
    venue = venue_loop

    async def main():
        await venue.start()
        try:
            async with connect(f"{venue.ws_url}/v5/public/linear") as ws:
                await ws.send(
                    json.dumps({"op": "subscribe", "req_id": "a", "args": ["kline.1.BTCUSDT"]})
                )
                ack = await recv_json(ws)
                assert (ack["success"], ack["op"], ack["req_id"]) == (True, "subscribe", "a")
                await ws.send(
                    json.dumps({"op": "subscribe", "req_id": "b", "args": ["publicTrade.ETHUSDT"]})
                )
                assert (await recv_json(ws))["success"] is True
                await venue.advance()
                got = [await recv_json(ws) for _ in range(5)]
                assert (
                    sorted(m["topic"] for m in got)
                    == ["kline.1.BTCUSDT"] + ["publicTrade.ETHUSDT"] * 4
                )
                await ws.send(
                    json.dumps(
                        {"op": "unsubscribe", "req_id": "c", "args": ["publicTrade.ETHUSDT"]}
                    )
                )
                ack = await recv_json(ws)
                assert (ack["success"], ack["op"], ack["req_id"]) == (True, "unsubscribe", "c")
                await venue.advance()
                assert (await recv_json(ws))["topic"] == "kline.1.BTCUSDT"  # no trades now
                eleven = [f"publicTrade.{s}" for s in SYMBOLS3] + [f"tickers.{s}" for s in SYMBOLS3]
                eleven += [f"kline.1.{s}" for s in SYMBOLS3[1:]] + ["tickers.BTCUSDT"] * 3
                refused = [
                    (["kline.1.BTCUSDT"], "already subscribed"),
                    (eleven, "args size"),
                    ([], "args is empty"),
                    (["publicTrade.NOPEUSDT"], "Invalid topic"),
                ]
                for args, text in refused:
                    await ws.send(json.dumps({"op": "subscribe", "req_id": "r", "args": args}))
                    reply = await recv_json(ws)
                    assert reply["success"] is False and text in reply["ret_msg"], reply
                assert venue.bybit_streams.subscriptions() == [{"kline.1.BTCUSDT"}]
            assert venue.bybit_streams.connects == {"public": 1, "private": 0}
        finally:
            await venue.stop()

    asyncio.run(main())


# ----------------------------------------------------------------- approved_coins "all" live


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_all_approved_without_symbols_trades_the_exchanges_perpetuals(exchange: str, tmp_path):
    """No live.symbols, approved_coins "all": every perpetual the venue lists, less the ignored
    coin and the one listed too recently; account set-up and EMAs for exactly those. An
    ignored coin the account holds a position in stays (its closes continue)."""
    key, secret = "all-coins-key-0123456789", "all-coins-secret-0123456789"
    config = parse_config(
        {
            "bot": {"long": ONE_SLOT, "short": {**ONE_SLOT, "enabled": False}},
            "live": {
                "leverage": 10,
                "state_dir": str(tmp_path),
                "ignored_coins": ["ETHUSDT"],
                "minimum_coin_age_days": 30,
            },
            "backtest": {"symbols": SYMBOLS3, "starting_balance": 1000},
        }
    )

    async def main():
        venue = Venue(candles3(2), VenueConfig(start_index=70))
        venue.add_account(key, secret, 1000.0, hedge_mode=True)
        spec = venue.engine.specs["BTCUSDT"]
        # BTCUSDT "listed" a day ago (by the wall clock the bot asks the exchange for)
        venue.engine.specs["BTCUSDT"] = replace(
            spec, listed_ms=int(time.time() * 1000) - 86_400_000
        )
        await venue.start()
        adapter = make_adapter(exchange, key, secret, base_url=venue.rest_url, throttle=False)
        try:
            bot = LiveBot(config, adapter, ws_url=venue.ws_url, pacing=Lockstep())
            assert bot.symbols == () and bot.all_markets
            await bot.start()
            first = bot.symbols, set(bot.coins), dict(venue.engine.accounts[key].leverage)
            # a long on the ignored ETHUSDT: a new start keeps it, to close it
            venue.engine.change_position(key, "ETHUSDT", "LONG", 0.01, 3000.0)
            again = LiveBot(config, adapter, ws_url=venue.ws_url, pacing=Lockstep())
            await again.start()
            again.state.close()
            held = again.symbols, again.active.symbols
            bot.state.close()
            return first, held
        finally:
            await adapter.close()
            await venue.stop()

    (symbols, coins, leverage), (held_symbols, held_active) = asyncio.run(main())
    assert symbols == ("DOGEUSDT",) and coins == {"DOGEUSDT"}
    assert set(leverage) <= {"DOGEUSDT"}  # set up for the coins it may trade only
    if exchange == "binance":
        assert leverage == {"DOGEUSDT": 10}
    assert held_symbols == ("DOGEUSDT", "ETHUSDT") and "ETHUSDT" in held_active


# ------------------------------------------------------------------------- the active set


def test_active_set_is_positions_orders_and_the_forager_candidates():
    """One long slot, the volatility ranking on: flat, the most volatile coin is the
    candidate; a position elsewhere takes the slot (the candidate drops out); an order still
    resting on a coin keeps it active until cancelled. The status page shows the set."""
    config = one_slot_config()
    bot = fake_bot(config)
    bot.coins["BTCUSDT"].fema[0] = [1e6, 0.001]  # [volume EMA, range EMA]
    bot.coins["ETHUSDT"].fema[0] = [1e6, 0.004]  # the most volatile
    assert bot.active.refresh() == {"ETHUSDT"}
    set_pos(bot, "BTCUSDT", 0, 0.01, 30000.0)
    assert bot.active.refresh() == {"BTCUSDT"}  # its slot: ETH is no candidate now
    order = LiveOrder("ETHUSDT", 1, 0.1, 1900.0, KIND_ENTRY_INITIAL, 0, "cid-1", "1")
    bot.book.created("ETHUSDT", order)
    assert bot.active.refresh() == {"BTCUSDT", "ETHUSDT"}  # until its cycle cancels it
    bot.book.forget("ETHUSDT", order)
    set_pos(bot, "BTCUSDT", 0, 0.0, 0.0)
    assert bot.active.refresh() == {"ETHUSDT"}
    bot.coins["ETHUSDT"].eligible_from_ms = 10**15  # too young from now on
    assert bot.active.refresh() == {"BTCUSDT"}
    assert build_status(bot)["active_symbols"] == ["BTCUSDT"]
    assert bot.active.changes == 5


def test_a_universe_beyond_one_binance_connection_is_refused():
    check_stream_limit("binance", 959)
    check_stream_limit("bybit", 2000)  # Bybit: 10 topics a request, no such cap
    with pytest.raises(ConfigError, match="1024 streams"):
        check_stream_limit("binance", 960)


# ------------------------------------------------------------------------- the stream clients


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_stream_client_changes_prices_on_the_open_connection(exchange: str, venue_loop):
    """The clients' own API: klines of every coin, trades of the price coins; set_prices
    answers True once the exchange acknowledged, and the next candle's trades follow it."""
    venue = venue_loop
    got: list[tuple[str, str]] = []

    async def on_events(events):
        for ev in events:
            got.append((type(ev).__name__, ev.symbol))

    async def on_binance(ev, data):
        await on_events(binance_events(ev, data))

    async def until(cond, seconds=5.0):
        for _ in range(int(seconds / 0.01)):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def main():
        await venue.start()
        stop = asyncio.Event()
        try:
            if exchange == "binance":
                st = BinanceStreams(venue.ws_url, SYMBOLS3, on_binance, price_symbols={"BTCUSDT"})
                ready = lambda: bool(st.clients) and st.clients[0].connected.is_set()  # noqa: E731
                client = lambda: st.clients[0]  # noqa: E731
            else:
                st = BybitPublicStream(venue.ws_url, SYMBOLS3, on_events, price_symbols={"BTCUSDT"})
                ready = st.subscribed.is_set
                client = lambda: st.client  # noqa: E731
            task = asyncio.create_task(st.run(stop))
            await until(ready)

            async def candle() -> set[str]:
                got.clear()
                await venue.advance()
                await until(lambda: sum(k == "KlineEvent" for k, _ in got) == 3)
                await asyncio.sleep(0.05)  # anything else of that candle
                return {s for k, s in got if k == "PriceEvent"}

            assert await candle() == {"BTCUSDT"}
            assert await st.set_prices({"ETHUSDT", "DOGEUSDT"}) is True
            assert await candle() == {"ETHUSDT", "DOGEUSDT"}
            assert await st.set_prices(set()) is True
            assert await candle() == set()
            assert client().stats.connects == 1
            stop.set()
            await asyncio.wait_for(task, 5)
        finally:
            await venue.stop()

    asyncio.run(main())


def test_binance_streams_beyond_the_url_are_subscribed_after_the_connect(venue_loop, monkeypatch):
    """A universe too long for one connect URL: what does not fit is SUBSCRIBEd on the open
    connection, so the venue's record holds every kline and price stream, on one connection."""
    import bot.exchange.binance.streams as binance_streams

    monkeypatch.setattr(binance_streams, "_URL_MAX_CHARS", 90)  # room for about two streams
    monkeypatch.setattr(binance_streams, "_PARAMS_PER_REQUEST", 2)
    venue = venue_loop

    async def main():
        await venue.start()
        stop = asyncio.Event()
        try:
            st = BinanceStreams(
                venue.ws_url, SYMBOLS3, lambda ev, data: None, price_symbols=SYMBOLS3
            )
            task = asyncio.create_task(st.run(stop))
            want = {f"{s.lower()}@kline_1m" for s in SYMBOLS3}
            want |= {f"{s.lower()}@aggTrade" for s in SYMBOLS3}
            for _ in range(500):
                if venue.streams.subscriptions() == [want]:
                    break
                await asyncio.sleep(0.01)
            subs = venue.streams.subscriptions()
            stop.set()
            await asyncio.wait_for(task, 5)
            return subs, want, st.clients[0].stats.connects
        finally:
            await venue.stop()

    subs, want, connects = asyncio.run(main())
    assert subs == [want] and connects == 1

"""The simulated exchange on 127.0.0.1: REST (aiohttp) + websockets, driven by a candle replay.

Clocks (written down once): the *replay clock* is the open time of the next candle to apply;
order, trade, event and kline times are replay times. The *wall clock* answers
``/fapi/v1/time`` and checks signed requests' ``timestamp``/``recvWindow``, because clients sign
with their own wall clock. A lockstep driver calls :meth:`Venue.advance`; :meth:`Venue.run`
free-runs at ``speed`` times real time (a 1m candle every 60/speed s).

For candle k, fills are booked first, then the account's user-stream events go out, then the
market messages (aggTrades, kline with ``"x": true``, bookTicker, markPrice): a client that
reacts to candle k's kline already sees candle k's fills in REST and in its user stream.
The Bybit v5 face (``/v5/...``, see :mod:`.bybit.streams`) follows the same order on its
separate public/private sockets; every frame of candle k is sent when ``advance`` returns.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .binance import formats
from .binance.rest import RestApi
from .binance.streams import StreamServer
from .bybit.rest import BybitRestApi
from .bybit.streams import BybitStreams
from .faults import AnswerHold, Faults, RestFault
from .hub import WsHub
from .matching import Account, AccountUpdate, MatchingEngine, candle_trades
from .ratelimit import IpBudget
from .vault_impact import VaultImpact
from .wire import decimals

__all__ = ["AccountReset", "Venue", "VenueConfig", "VenueThread"]

log = logging.getLogger("gridbot.venue")


@dataclass(frozen=True)
class AccountReset:
    """Given to observers (never sent to clients) when :meth:`Venue.reset_account` replaced an
    account by a fresh one with ``balance``."""

    api_key: str
    balance: float
    time_ms: int


Observer = Callable[[list[Any]], None]


@dataclass
class VenueConfig:
    host: str = "127.0.0.1"
    rest_port: int = 0  # 0: an ephemeral port (read Venue.rest_port after start)
    ws_port: int = 0
    maker_fee: float = 0.0002
    taker_fee: float = 0.0005
    funding_rate: float = 0.0001  # per 8 h, constant
    default_leverage: int = 20
    recv_window_ms: int = 5000
    weight_limit_per_minute: int = 2400
    ban_after_429s: int = 3  # 429s within a minute after which the IP gets 418 (banned)
    ban_seconds: float = 120.0
    ws_ping_interval_seconds: float | None = 180.0
    ws_ping_timeout_seconds: float | None = 600.0
    fill_mode: str = "candle"  # candle: lockstep candle rule; trades: 4 trades per candle
    start_index: int = 0  # first candle to replay; earlier candles are history (klines)
    # a vault's market closes (client ids gbv...) priced by the square-root impact model with
    # this coefficient (0: like any market order, at the last price); backtest.venue.vault_impact
    vault_impact_coef: float = 0.0
    vault_volatility_window_minutes: float = 1440.0


class Venue:
    """Replay of ``candles`` behind Binance-format REST and websocket servers."""

    def __init__(self, candles: Any, config: VenueConfig | None = None) -> None:
        self.config = config or VenueConfig()
        if self.config.fill_mode not in ("candle", "trades"):
            raise ValueError(
                f"fill_mode must be 'candle' or 'trades', not {self.config.fill_mode!r}"
            )
        self.candles = candles
        self.engine = MatchingEngine(
            candles.symbols,
            maker_fee=self.config.maker_fee,
            taker_fee=self.config.taker_fee,
            funding_rate=self.config.funding_rate,
            default_leverage=self.config.default_leverage,
            timeframe_ms=int(candles.timeframe_ms),
            candles=candles,
        )
        if self.config.vault_impact_coef > 0.0:
            self.engine.vault_impact = VaultImpact(
                candles, self.config.vault_impact_coef, self.config.vault_volatility_window_minutes
            )
        n = len(candles.timestamps)
        self.index = max(0, min(int(self.config.start_index), n))
        first = self.index - 1 if self.index > 0 else 0
        col = 3 if self.index > 0 else 0  # last close of the history, else the first open
        self.engine.set_prices(
            {s: float(candles.ohlcv[i, first, col]) for i, s in enumerate(candles.symbols)},
            self.replay_time_ms,
        )
        self.faults = Faults()
        self.ip_budget = IpBudget(self.config)  # one budget for the IP, whichever dialect
        self.listen_keys: dict[str, str] = {}  # listenKey -> api key
        self.hub = WsHub(self.config.ws_ping_interval_seconds, self.config.ws_ping_timeout_seconds)
        self.rest = RestApi(self)
        self.streams = StreamServer(self)
        self.bybit_rest = BybitRestApi(self)  # Bybit v5 under /v5/ on the same ports
        self.bybit_streams = BybitStreams(self, self.bybit_rest)
        self.hub.route("/v5/", self.bybit_streams.handle)
        self.hub.route("", self.streams.handle)
        self.rest_port = 0
        self.ws_port = 0
        self._runner: web.AppRunner | None = None
        self._agg_id = 1
        self._book_id = 1
        self._starting_balance: dict[str, float] = {}
        # called with each batch of engine events (and AccountReset) before clients get them
        self.observers: list[Observer] = []
        # a scenario's risk engine (risk_loop.VenueRisk, --scenario): runs at each candle's top
        self.risk: Any = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def n_candles(self) -> int:
        return len(self.candles.timestamps)

    @property
    def replay_time_ms(self) -> int:
        ts = self.candles.timestamps
        if self.index < len(ts):
            return int(ts[self.index])
        return int(ts[-1]) + int(self.candles.timeframe_ms)

    @property
    def rest_url(self) -> str:
        return f"http://{self.config.host}:{self.rest_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.ws_port}"

    async def start(self) -> None:
        """Bind the REST and websocket servers (ports 0 -> ephemeral; see rest_port/ws_port)."""
        app = web.Application()
        app.router.add_route("*", "/v5/{tail:.*}", self.bybit_rest.dispatch)  # before /fapi
        app.router.add_route("*", "/{tail:.*}", self.rest.dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.rest_port)
        await site.start()
        self.rest_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ws_port = await self.hub.start(self.config.host, self.config.ws_port)
        log.info("venue listening: REST %s, websockets %s", self.rest_url, self.ws_url)

    async def stop(self) -> None:
        self.faults.release_answers()  # the server waits for its handlers
        await self.hub.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ accounts

    def add_account(
        self, api_key: str, api_secret: str, balance: float, *, hedge_mode: bool = False
    ) -> Account:
        self._starting_balance[api_key] = float(balance)
        return self.engine.add_account(api_key, api_secret, balance, hedge_mode=hedge_mode)

    def starting_balance(self, api_key: str) -> float:
        """The balance the account was created with (what a fresh account gets back)."""
        return self._starting_balance.get(api_key, self.engine.account(api_key).balance)

    def listen_key_for(self, api_key: str, *, create: bool = True) -> str | None:
        for lk, key in self.listen_keys.items():
            if key == api_key:
                return lk
        if not create:
            return None
        lk = secrets.token_urlsafe(48)[:64]
        self.listen_keys[lk] = api_key
        return lk

    def close_listen_key(self, api_key: str) -> None:
        for lk in [lk for lk, key in self.listen_keys.items() if key == api_key]:
            del self.listen_keys[lk]
            asyncio.get_running_loop().create_task(self.streams.close_streams(lk))

    # ------------------------------------------------------------------ replay

    async def advance(self, n: int = 1, *, pace_seconds: float = 0.0) -> int:
        """Apply the next ``n`` candles and publish them; return how many were applied.

        In ``trades`` fill mode the four trades of a candle are spread over ``pace_seconds`` seconds.
        """
        done = 0
        for _ in range(n):
            if self.index >= self.n_candles:
                break
            k = self.index
            if self.risk is not None:
                self.risk.at_candle(k)
            if self.config.fill_mode == "candle":
                self.engine.step_candle(k)
                self.index += 1
                self.flush_events()
                self._publish_candle(k, trades=True)
            else:
                await self._advance_trades(k, pace_seconds)
            done += 1
        return done

    async def _advance_trades(self, k: int, pace_seconds: float) -> None:
        c = self.candles
        ts, tf = int(c.timestamps[k]), int(c.timeframe_ms)
        eng = self.engine
        eng.begin_candle(ts, {s: float(c.ohlcv[i, k, 0]) for i, s in enumerate(c.symbols)})
        paths = {
            s: candle_trades(*(float(x) for x in c.ohlcv[i, k, :4]))
            for i, s in enumerate(c.symbols)
        }
        times = self._trade_times(ts, tf)
        for j in range(4):
            if j and pace_seconds > 0:
                await asyncio.sleep(pace_seconds / 4)
            for s in c.symbols:
                eng.apply_trade(s, paths[s][j], times[j])
            self.flush_events()
            for i, s in enumerate(c.symbols):
                self._publish_trade(
                    s,
                    paths[s][j],
                    float(c.ohlcv[i, k, 4]) / 4,
                    times[j],
                    paths[s][j - 1] if j else None,
                )
        eng.now_ms = ts + tf
        self.index += 1
        self._publish_candle(k, trades=False)

    @staticmethod
    def _trade_times(ts: int, tf: int) -> list[int]:
        return [ts, ts + tf // 3, ts + 2 * tf // 3, ts + tf - 1]

    async def run(
        self,
        speed: float = 1.0,
        *,
        max_candles: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> int:
        """Free-run at ``speed`` x real time until the data ends, ``max_candles`` or ``stop``."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        period = self.candles.timeframe_ms / 1000 / speed
        done = 0
        nxt = time.monotonic()
        while self.index < self.n_candles and (max_candles is None or done < max_candles):
            if stop is not None and stop.is_set():
                break
            done += await self.advance(
                1, pace_seconds=period if self.config.fill_mode == "trades" else 0.0
            )
            nxt += period
            delay = nxt - time.monotonic()
            if delay > 0:
                if stop is not None:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)  # let clients' requests in even when running behind
        return done

    # ------------------------------------------------------------------ publishing

    def flush_events(self) -> None:
        """Send the engine's pending account/order events to the user streams."""
        events = self.engine.drain_events()
        if not events:
            return
        for observe in list(self.observers):
            observe(events)
        self.bybit_streams.publish_private(events)
        keys_by_account: dict[str, list[str]] = {}
        for lk, key in self.listen_keys.items():
            keys_by_account.setdefault(key, []).append(lk)
        for ev in events:
            lks = keys_by_account.get(ev.api_key)
            if not lks:
                continue
            if isinstance(ev, AccountUpdate):
                data = formats.account_update_event(ev, self.engine)
            else:
                data = formats.order_trade_update_event(ev, self.engine.specs[ev.order.symbol])
            for lk in lks:
                self.streams.publish(lk, data)

    def _publish_trade(
        self, symbol: str, price: float, qty: float, ts: int, prev: float | None
    ) -> None:
        spec = self.engine.specs[symbol]
        s = symbol.lower()
        step = spec.qty_step
        q = max(round(qty / step) * step, step)
        buyer_maker = prev is not None and price < prev  # a fall prints sells into bids
        self.streams.publish(
            f"{s}@aggTrade",
            formats.agg_trade_event(symbol, self._agg_id, price, q, ts, buyer_maker, spec),
        )
        self._agg_id += 1
        self.bybit_streams.publish_trade(symbol, price, q, ts)

    def _publish_candle(self, k: int, *, trades: bool) -> None:
        c = self.candles
        ts, tf = int(c.timestamps[k]), int(c.timeframe_ms)
        times = self._trade_times(ts, tf)
        interval = "1m" if tf == 60_000 else f"{tf // 60_000}m"
        nxt_funding = (ts // 28_800_000 + 1) * 28_800_000
        for i, symbol in enumerate(c.symbols):
            row = tuple(float(x) for x in c.ohlcv[i, k])
            s = symbol.lower()
            spec = self.engine.specs[symbol]
            first = self._agg_id
            if trades:
                prev = None
                for j, p in enumerate(candle_trades(*row[:4])):
                    self._publish_trade(symbol, p, row[4] / 4, times[j], prev)
                    prev = p
            kline = formats.kline_event(
                symbol, ts, row, tf, True, ts + tf - 1, spec, first, self._agg_id - 1
            )
            self.streams.publish(f"{s}@kline_{interval}", kline)
            self.bybit_streams.publish_candle(symbol, ts, row, tf)
            close = row[3]
            self.streams.publish(
                f"{s}@bookTicker",
                formats.book_ticker_event(symbol, self._book_id, close, close, ts + tf - 1, spec),
            )
            self._book_id += 1
            mark = formats.mark_price_event(
                symbol, close, self.engine.funding_rate, nxt_funding, ts + tf - 1, spec
            )
            self.streams.publish(f"{s}@markPrice", mark)
            self.streams.publish(f"{s}@markPrice@1s", mark)

    # ------------------------------------------------------------------ fault injection

    def delay_rest(self, ms: float) -> None:
        """Delay every REST answer by ``ms`` (0 to stop)."""
        self.faults.rest_delay_ms = float(ms)

    def fail_rest(
        self,
        status: int = 503,
        count: int = 1,
        *,
        path: str | None = None,
        skip: int = 0,
        method: str | None = None,
        contains: tuple[str, ...] = (),
    ) -> RestFault:
        """Answer the next ``count`` REST calls (matching ``path``, ``method`` and every
        substring in ``contains`` of the query + body, after ``skip``) with ``status``, before
        they are applied."""
        rule = RestFault(path, method, tuple(contains), status, count, skip)
        self.faults.rest_faults.append(rule)
        return rule

    def hold_answers(
        self,
        seconds: float,
        count: int = 1,
        *,
        path: str | None = None,
        method: str | None = None,
        contains: tuple[str, ...] = (),
    ) -> AnswerHold:
        """Apply the next ``count`` matching REST calls, then hold each answer ``seconds``
        (its user-stream events go out at once, as the exchange's would)."""
        rule = AnswerHold(path, method, tuple(contains), seconds, count)
        self.faults.answer_holds.append(rule)
        return rule

    def rate_limit_next(self, n429: int = 1, n418: int = 0, *, path: str | None = None) -> None:
        """Answer the next calls with ``n429`` x 429 (-1003), then ``n418`` x 418 (IP ban)."""
        if n429:
            self.fail_rest(429, n429, path=path)
        if n418:
            self.fail_rest(418, n418, path=path)

    def clear_faults(self) -> None:
        self.faults.rest_faults.clear()
        self.faults.release_answers()
        self.faults.rest_delay_ms = 0.0
        self.faults.ws_silent = False
        self.faults.private_topic_delay_seconds.clear()
        self.ip_budget.reset()

    def drop_ws(self) -> int:
        """Abort every websocket connection abruptly (no close frame: the client sees 1006)."""
        return self.hub.drop_all()

    async def close_ws(self, code: int = 1008, reason: str = "policy violation") -> int:
        """Close every websocket connection with ``code`` (1008 policy violation by default)."""
        return await self.hub.close_all(code, reason)

    def set_ws_silent(self, silent: bool = True, *, hang: bool = False) -> None:
        """Keep sockets open but send nothing; ``hang`` also stops answering pings."""
        self.faults.ws_silent = silent
        if silent and hang:
            self.hub.hang_all()

    def delay_private_topic(self, topic: str, seconds: float) -> None:
        """Hold back the Bybit private ``topic`` (execution, order, position, wallet) by
        ``seconds`` (0 to stop), so it arrives after the others of the same moment."""
        if seconds > 0:
            self.faults.private_topic_delay_seconds[topic] = float(seconds)
        else:
            self.faults.private_topic_delay_seconds.pop(topic, None)

    def reject_next_order_margin(self, api_key: str, n: int = 1) -> None:
        self.engine.reject_next_order_margin(api_key, n)

    def partial_fill(
        self, api_key: str, order_id: int, qty: float, price: float | None = None
    ) -> None:
        self.engine.partial_fill(api_key, order_id, qty, price)
        self.flush_events()

    def reset_account(
        self,
        api_key: str,
        balance: float | None = None,
        *,
        hedge_mode: bool = False,
        restart: bool = False,
    ) -> Account:
        """The exchange forgot the account (a restarted exchange, a new sub-account behind the
        same key): positions flat, no open orders, no trade history, ``balance`` (default:
        unchanged) and trade ids starting again at 1 (below the bot's cursor); the position
        mode is ``hedge_mode`` (default one-way, as a new account's). No user-stream event says
        so, as after a real exchange-side reset. ``restart``: also drop every websocket (1006)
        and forget the listen keys, as a restarted exchange would. Observers get an
        :class:`AccountReset`."""
        self.flush_events()
        eng = self.engine
        old = eng.account(api_key)
        balance = old.balance if balance is None else float(balance)
        acct = eng.add_account(api_key, old.api_secret, balance, hedge_mode=hedge_mode)
        eng.restart_trade_ids()
        self.bybit_rest.ledger.forget(api_key)
        if restart:
            for lk in [lk for lk, key in self.listen_keys.items() if key == api_key]:
                del self.listen_keys[lk]
            self.drop_ws()
        for observe in list(self.observers):
            observe([AccountReset(api_key, balance, eng.now_ms)])
        return acct

    def set_position_mode_behind(self, api_key: str, hedge_mode: bool) -> None:
        """Switch the account's position mode behind the bot's back (as a user in the web UI
        would while flat); its resting orders are cancelled first, as the exchange requires."""
        eng = self.engine
        acct = eng.account(api_key)
        for oid in list(acct.open_orders):
            eng.cancel_order(api_key, acct.open_orders[oid].symbol, order_id=oid)
        acct.hedge_mode = hedge_mode
        self.flush_events()

    def change_position(
        self, api_key: str, symbol: str, side: str, size: float, price: float | None = None
    ) -> None:
        """Change a position behind the bot's back (ACCOUNT_UPDATE reason ADJUSTMENT)."""
        p = self.engine.prices[symbol] if price is None else price
        self.engine.change_position(api_key, symbol, side, size, p)
        self.flush_events()

    def flip_position_mode(self, api_key: str, hedge: bool = False, *, tag: str = "manual") -> int:
        """Switch the account's position mode as a person on the exchange's website would have
        to: cancel every open order, close every position at the last price with market
        orders (client ids ``{tag}-flat-N``, taker fee), then switch to hedge (``hedge=True``)
        or one-way mode. The cancels and fills go out on the user streams; the mode change
        itself is not announced, so a hedge-mode client meets -4061 (Bybit: 10001 "position
        idx not match position mode") on its next order. Returns the positions closed (0 and
        nothing done when the account already is in that mode)."""
        eng = self.engine
        acct = eng.account(api_key)
        if acct.hedge_mode == hedge:
            return 0
        for o in list(acct.open_orders.values()):
            eng.cancel_order(api_key, o.symbol, o.order_id)
        closed = 0
        for (symbol, ps), pos in list(acct.positions.items()):
            step = eng.specs[symbol].qty_step
            qty = round(abs(pos.amount) / step) * step
            qty = float(f"{qty:.{decimals(step)}f}")
            if qty > 0:
                eng.place_order(
                    api_key,
                    symbol,
                    "SELL" if pos.amount > 0 else "BUY",
                    "MARKET",
                    qty,
                    reduce_only=ps == "BOTH",
                    position_side=ps,
                    client_order_id=f"{tag}-flat-{eng.now_ms}-{closed}",
                )
                closed += 1
            pos.amount = 0.0  # dust below one step goes with it
        eng.set_position_mode(api_key, hedge)
        self.flush_events()
        return closed


class VenueThread:
    """Runs a :class:`Venue` on its own event loop in a daemon thread (for sync callers)."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="gridbot-venue", daemon=True
        )

    def start(self, timeout: float = 10.0) -> Venue:
        self._thread.start()
        self.call(self.venue.start, timeout=timeout)
        return self.venue

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 10.0, **kw: Any) -> Any:
        """Run ``fn(*args, **kw)`` on the venue's loop (awaiting it if it is a coroutine)."""

        async def runner() -> Any:
            result = fn(*args, **kw)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(timeout)

    def advance(self, n: int = 1) -> int:
        return self.call(self.venue.advance, n, timeout=60.0)

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            try:
                self.call(self.venue.stop, timeout=timeout)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()

    def __enter__(self) -> Venue:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

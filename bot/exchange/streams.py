"""Websocket streams (the ``websockets`` library, not ccxt.pro): Binance USDT-M market and user
data streams; Bybit v5 linear public (``/v5/public/linear``) and private (``/v5/private``) streams.

:class:`StreamClient` is one self-healing connection: exponential backoff with jitter between
attempts, a rotation before the exchange's own 24 h cut, and a watchdog that treats a socket
silent for ``silence_timeout_s`` as dead (hung sockets can stay "open" for a long time).
Parsing lives in small pure functions so it can be tested on recorded messages; every
exchange's messages become :mod:`bot.exchange.events` here, at the boundary
(:func:`binance_events`, :func:`bot.exchange.bybit_format.parse_public` / ``parse_private``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from bot.exchange import bybit_format
from bot.exchange.events import (
    FUNDING,
    BalanceEvent,
    Event,
    FillEvent,
    KlineEvent,
    OrderEvent,
    PositionEvent,
    PriceEvent,
    StreamExpired,
)

__all__ = [
    "BinanceStreams",
    "BybitPrivateStream",
    "BybitPublicStream",
    "BybitStreams",
    "BybitTickers",
    "StreamClient",
    "binance_events",
    "bybit_auth_args",
    "parse_binance",
    "parse_bybit",
]

log = logging.getLogger("gridbot.live.streams")

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]
EventSink = Callable[[list[Event]], Awaitable[None] | None]


async def _emit(sink: EventSink, events: list[Event]) -> None:
    if events:
        result = sink(events)
        if asyncio.iscoroutine(result):
            await result


class StaleStream(Exception):
    """No message for longer than the silence timeout."""


@dataclass
class StreamStats:
    connects: int = 0
    disconnects: int = 0
    messages: int = 0
    last_message: float = 0.0  # time.monotonic()
    last_error: str = ""


class StreamClient:
    """One websocket connection kept alive until ``stop`` is set.

    ``url`` may be a coroutine function (e.g. to fetch a fresh listen key per connection).
    ``on_open(ws)`` runs after each connect (subscriptions), ``on_message(dict)`` per frame.
    """

    def __init__(
        self,
        name: str,
        url: str | Callable[[], Awaitable[str]],
        on_message: Handler,
        *,
        silence_timeout_s: float = 30.0,
        max_age_s: float = 23 * 3600.0,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 30.0,
        max_failures: int = 1000,
        on_open: Callable[[ClientConnection], Awaitable[None]] | None = None,
        ping_json: dict[str, Any] | None = None,
        ping_interval_s: float = 20.0,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.on_message = on_message
        self.silence_timeout_s = silence_timeout_s
        self.max_age_s = max_age_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_failures = max_failures
        self.on_open = on_open
        self.ping_json = ping_json
        self.ping_interval_s = ping_interval_s
        self.on_state = on_state
        self.stats = StreamStats()
        self.connected = asyncio.Event()
        self._ws: ClientConnection | None = None

    async def _url(self) -> str:
        return self.url if isinstance(self.url, str) else await self.url()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, read, reconnect; returns when ``stop`` is set (bounded by max_failures)."""
        failures = 0
        while not stop.is_set():
            rotate = False
            try:
                url = await self._url()
                async with connect(
                    url,
                    open_timeout=10,
                    close_timeout=2,
                    ping_interval=20,
                    ping_timeout=20,
                    max_size=2**22,
                ) as ws:
                    self._ws = ws
                    self.stats.connects += 1
                    self.stats.last_message = time.monotonic()
                    if self.on_open is not None:
                        await self.on_open(ws)
                    self.connected.set()
                    self._set_state(True)
                    failures = 0
                    rotate = await self._read(ws, stop)
            except (
                OSError,
                TimeoutError,
                WebSocketException,
                InvalidHandshake,
                StaleStream,
            ) as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s stream: %s", self.name, self.stats.last_error)
            except Exception as exc:  # a bad URL factory (REST down) must not end the stream
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s stream: cannot connect: %s", self.name, self.stats.last_error)
            finally:
                self._ws = None
                if self.connected.is_set():
                    self.stats.disconnects += 1
                    self.connected.clear()
                    self._set_state(False)
            if stop.is_set():
                break
            if rotate:
                log.info("%s stream: rotating the connection before the exchange's cut", self.name)
                continue
            failures += 1
            if failures > self.max_failures:
                raise ConnectionError(f"{self.name} stream: {failures} failed connects in a row")
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(failures - 1, 16))
            delay *= 0.5 + random.random() / 2  # jitter: many bots must not reconnect in step
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass

    def _set_state(self, up: bool) -> None:
        if self.on_state is not None:
            self.on_state(up)

    async def _read(self, ws: ClientConnection, stop: asyncio.Event) -> bool:
        """Read until error (raises), stop (False) or rotation age (True)."""
        opened = time.monotonic()
        next_ping = opened + self.ping_interval_s
        stop_wait = asyncio.ensure_future(stop.wait())
        recv: asyncio.Future | None = None
        try:
            while True:
                now = time.monotonic()
                if now - opened >= self.max_age_s:
                    return True
                if self.ping_json is not None and now >= next_ping:
                    await ws.send(orjson.dumps(self.ping_json).decode())
                    next_ping = now + self.ping_interval_s
                silent = now - self.stats.last_message
                if silent >= self.silence_timeout_s:
                    raise StaleStream(f"silent for {silent:.1f} s")
                timeout = min(
                    self.silence_timeout_s - silent,
                    self.max_age_s - (now - opened),
                    (next_ping - now) if self.ping_json is not None else 3600.0,
                )
                if recv is None:
                    recv = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait(
                    {recv, stop_wait}, timeout=max(timeout, 0.001), return_when="FIRST_COMPLETED"
                )
                if recv not in done:
                    if stop_wait in done:
                        return False
                    continue  # keep the pending recv: it resolves on the next wait
                raw = recv.result()  # raises ConnectionClosed when the socket ended
                recv = None
                self.stats.messages += 1
                self.stats.last_message = time.monotonic()
                try:
                    msg = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    log.warning("%s stream: not JSON: %.200r", self.name, raw)
                    continue
                result = self.on_message(msg)
                if asyncio.iscoroutine(result):
                    await result
        finally:
            stop_wait.cancel()
            if recv is not None:  # abandoned read: cancel it and retrieve its outcome
                recv.cancel()
                recv.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def close(self) -> None:
        ws = self._ws
        if ws is not None:
            await ws.close()


# ---------------------------------------------------------------------------- Binance


def parse_binance(msg: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A combined-stream or raw frame -> (event type, payload), or None (subscribe replies)."""
    data = msg.get("data", msg) if "stream" in msg else msg
    if not isinstance(data, dict):
        return None
    ev = data.get("e")
    if ev is None:
        return None
    return str(ev), data


@dataclass
class BinanceStreams:
    """Binance USDT-M streams for a set of symbols.

    Market data (aggTrade, kline_1m) on ``{ws_url}{market_path}/stream?streams=...``; the user
    data stream on ``{ws_url}/private/ws?listenKey=KEY``, or (``user_in_market=True``) as one
    more stream of the combined market connection: then one TCP connection carries both, in
    the order the exchange sent them (the lockstep replay needs candle k's fills before
    candle k's kline).
    """

    ws_url: str
    symbols: Sequence[str]
    on_event: Callable[[str, dict[str, Any]], Awaitable[None] | None]
    listen_key: Callable[[], Awaitable[str]] | None = None
    market_path: str = "/market"
    user_path: str = "/private/ws"
    user_in_market: bool = False
    silence_timeout_s: float = 30.0
    max_age_s: float = 23 * 3600.0
    on_state: Callable[[str, bool], None] | None = None
    clients: list[StreamClient] = field(default_factory=list)

    def _market_streams(self) -> list[str]:
        out = []
        for s in self.symbols:
            s = s.lower()
            out += [f"{s}@aggTrade", f"{s}@kline_1m"]
        return out

    async def _market_url(self) -> str:
        names = self._market_streams()
        if self.user_in_market and self.listen_key is not None:
            names.append(await self.listen_key())
        return f"{self.ws_url.rstrip('/')}{self.market_path}/stream?streams={'/'.join(names)}"

    async def _user_url(self) -> str:
        assert self.listen_key is not None
        return f"{self.ws_url.rstrip('/')}{self.user_path}?listenKey={await self.listen_key()}"

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        parsed = parse_binance(msg)
        if parsed is None:
            return
        result = self.on_event(*parsed)
        if asyncio.iscoroutine(result):
            await result

    def build(self) -> list[StreamClient]:
        def state(name: str) -> Callable[[bool], None]:
            return lambda up: self.on_state(name, up) if self.on_state else None

        kw = dict(silence_timeout_s=self.silence_timeout_s, max_age_s=self.max_age_s)
        self.clients = [
            StreamClient("market", self._market_url, self._dispatch, on_state=state("market"), **kw)
        ]
        if self.listen_key is not None and not self.user_in_market:
            # the user stream is quiet when nothing happens: a longer silence allowance
            ukw = dict(kw, silence_timeout_s=max(self.silence_timeout_s, 3600.0))
            self.clients.append(
                StreamClient("user", self._user_url, self._dispatch, on_state=state("user"), **ukw)
            )
        return self.clients

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(c.run(stop) for c in self.build()))


# ---------------------------------------------------------------------------- Bybit


class BybitTickers:
    """Bybit v5 ``tickers.SYMBOL``: a snapshot, then deltas carrying only changed fields."""

    def __init__(self) -> None:
        self.tickers: dict[str, dict[str, Any]] = {}

    def apply(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Merge one message; return the symbol's merged ticker (None if not a ticker)."""
        topic = str(msg.get("topic", ""))
        if not topic.startswith("tickers."):
            return None
        data = msg.get("data") or {}
        symbol = data.get("symbol") or topic.split(".", 1)[1]
        if msg.get("type") == "snapshot" or symbol not in self.tickers:
            self.tickers[symbol] = dict(data)
        else:
            self.tickers[symbol].update({k: v for k, v in data.items() if v not in (None, "")})
        return self.tickers[symbol]


def parse_bybit(msg: dict[str, Any], tickers: BybitTickers) -> list[tuple[str, dict[str, Any]]]:
    """Bybit v5 linear public frame -> [(event, payload)]: ("trade", {symbol, price, ts}) per
    public trade, ("ticker", merged ticker) per tickers message; pongs and acks -> []."""
    topic = str(msg.get("topic", ""))
    if topic.startswith("publicTrade."):
        return [
            ("trade", {"symbol": t["s"], "price": float(t["p"]), "ts": int(t["T"])})
            for t in msg.get("data") or []
        ]
    if topic.startswith("tickers."):
        merged = tickers.apply(msg)
        return [("ticker", merged)] if merged is not None else []
    return []


def _ack(msg: dict[str, Any], op: str) -> bool | None:
    """Bybit's reply to ``op`` (auth / subscribe): True/False, or None if not such a reply."""
    if msg.get("op") != op or "success" not in msg:
        return None
    return bool(msg["success"])


class _BybitSocket:
    """What Bybit's public and private sockets share: the subscribe ack, the up/down state and
    a :class:`StreamClient` with JSON pings. Subclasses provide the fields used here and
    ``_on_open`` (what to send after each connect)."""

    _name = ""
    ws_url: str
    path: str
    silence_timeout_s: float
    ping_interval_s: float
    max_age_s: float
    on_state: Callable[[bool], None] | None
    subscribed: asyncio.Event
    client: StreamClient | None

    async def _on_open(self, ws: ClientConnection) -> None:
        raise NotImplementedError

    def _subscribe_ack(self, msg: dict[str, Any]) -> bool:
        """True when ``msg`` answered our subscribe (then nothing else is in it)."""
        ack = _ack(msg, "subscribe")
        if ack is None:
            return False
        if ack:
            self.subscribed.set()
        else:
            log.error("bybit %s: subscribe refused: %s", self._name, msg.get("ret_msg"))
        return True

    def _state(self, up: bool) -> None:
        if not up:
            self.subscribed.clear()
        if self.on_state is not None:
            self.on_state(up)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    def build(self) -> StreamClient:
        # market data flows all the time: silence means a dead socket; the private socket is
        # quiet when nothing happens, and only its pongs prove it alive
        public = self._name == "public"
        silence = self.silence_timeout_s
        self.client = StreamClient(
            "market" if public else "user",
            f"{self.ws_url.rstrip('/')}{self.path}",
            self._dispatch,
            silence_timeout_s=silence if public else max(silence, 2.5 * self.ping_interval_s),
            max_age_s=self.max_age_s,
            on_open=self._on_open,
            ping_json={"op": "ping"},
            ping_interval_s=self.ping_interval_s,
            on_state=self._state,
        )
        return self.client

    async def run(self, stop: asyncio.Event) -> None:
        await self.build().run(stop)


@dataclass
class BybitPublicStream(_BybitSocket):
    """Bybit v5 linear public: ``publicTrade.S``, ``tickers.S`` (snapshot + deltas merged) and
    ``kline.1.S`` (closed candles move the EMAs); a JSON ping every ``ping_interval_s``.

    ``on_events`` gets :mod:`bot.exchange.events` (prices, klines); ``subscribed`` is set once
    the venue acknowledged the subscription on the current connection.
    """

    ws_url: str
    symbols: Sequence[str]
    on_events: EventSink
    silence_timeout_s: float = 30.0
    ping_interval_s: float = 20.0
    max_age_s: float = 23 * 3600.0
    path: str = "/v5/public/linear"
    on_state: Callable[[bool], None] | None = None
    on_ticker: Callable[[dict[str, Any]], None] | None = None
    tickers: BybitTickers = field(default_factory=BybitTickers)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    client: StreamClient | None = None

    _name = "public"

    def topics(self) -> list[str]:
        return [f"{t}.{s}" for s in self.symbols for t in ("publicTrade", "tickers", "kline.1")]

    async def _on_open(self, ws: ClientConnection) -> None:
        self.subscribed.clear()
        # Bybit takes at most 10 args per subscribe request
        topics = self.topics()
        for i in range(0, len(topics), 10):
            req = {"op": "subscribe", "args": topics[i : i + 10]}
            await ws.send(orjson.dumps(req).decode())

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if self._subscribe_ack(msg):
            return
        if str(msg.get("topic", "")).startswith("tickers."):
            merged = self.tickers.apply(msg)  # kept merged for bid/ask; prices come from trades
            if merged is not None and self.on_ticker is not None:
                self.on_ticker(merged)
            return
        await _emit(self.on_events, bybit_format.parse_public(msg))


def bybit_auth_args(api_key: str, api_secret: str, expires_ms: int) -> list[Any]:
    """``{"op": "auth", "args": ...}`` of Bybit v5: HMAC-SHA256 of ``GET/realtime{expires}``."""
    payload = f"GET/realtime{expires_ms}".encode()
    sig = hmac.new(api_secret.encode(), payload, hashlib.sha256).hexdigest()
    return [api_key, expires_ms, sig]


class AuthRefused(Exception):
    """The private stream's auth op was refused (bad key or signature, clock too far off)."""


@dataclass
class BybitPrivateStream(_BybitSocket):
    """Bybit v5 ``/v5/private``: auth, then ``order``, ``execution``, ``position``, ``wallet``;
    a JSON ping every ``ping_interval_s``; every reconnect authenticates afresh.

    ``time_offset_ms`` (server minus local clock) keeps ``expires`` valid on a drifting clock.
    """

    ws_url: str
    auth_args: Callable[[int], list[Any]]  # expires_ms -> [key, expires, signature]
    on_events: EventSink
    silence_timeout_s: float = 30.0
    ping_interval_s: float = 20.0
    max_age_s: float = 23 * 3600.0
    expires_after_ms: int = 10_000
    auth_timeout_s: float = 10.0
    path: str = "/v5/private"
    topics: tuple[str, ...] = ("order", "execution", "position", "wallet")
    time_offset_ms: Callable[[], int] = lambda: 0
    on_state: Callable[[bool], None] | None = None
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    client: StreamClient | None = None
    _name = "private"

    async def _on_open(self, ws: ClientConnection) -> None:
        self.subscribed.clear()
        expires = int(time.time() * 1000) + self.time_offset_ms() + self.expires_after_ms
        args = self.auth_args(expires)
        await ws.send(orjson.dumps({"op": "auth", "args": args}).decode())
        # the reply comes before any topic data: read it here, bounded in time
        end = time.monotonic() + self.auth_timeout_s
        while True:
            raw = await asyncio.wait_for(ws.recv(), max(0.01, end - time.monotonic()))
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            ok = _ack(msg, "auth")
            if ok is None:
                continue
            if not ok:
                raise AuthRefused(f"bybit private: auth refused: {msg.get('ret_msg', '')}")
            break
        req = {"op": "subscribe", "args": list(self.topics)}
        await ws.send(orjson.dumps(req).decode())

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if self._subscribe_ack(msg):
            return
        await _emit(self.on_events, bybit_format.parse_private(msg))


@dataclass
class BybitStreams:
    """Both Bybit sockets for one account, with the same face as :class:`BinanceStreams`."""

    public: BybitPublicStream
    private: BybitPrivateStream
    clients: list[StreamClient] = field(default_factory=list)

    def ready(self) -> bool:
        """Both subscriptions acknowledged on live connections."""
        return self.public.subscribed.is_set() and self.private.subscribed.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        self.clients = [self.public.build(), self.private.build()]
        await asyncio.gather(*(c.run(stop) for c in self.clients))


# ---------------------------------------------------------------------------- normalizing


def binance_events(ev: str, data: dict[str, Any]) -> list[Event]:
    """A Binance USDT-M stream event -> :mod:`bot.exchange.events`."""
    if ev == "aggTrade":
        return [PriceEvent(data["s"], float(data["p"]))]
    if ev == "kline":
        k = data["k"]
        high, low, vol = float(k.get("h", "nan")), float(k.get("l", "nan")), float(k.get("v", 0))
        return [KlineEvent(data["s"], int(k["t"]), float(k["c"]), bool(k.get("x")), high, low, vol)]
    if ev == "ORDER_TRADE_UPDATE":
        o = data["o"]
        out: list[Event] = []
        cid = str(o.get("c", ""))
        sign = 1.0 if o["S"] == "BUY" else -1.0
        pside = 1 if o.get("ps") == "LONG" else -1
        if o.get("x") in ("TRADE", "CALCULATED") and float(o.get("l", 0) or 0) > 0:
            t = int(o["t"])
            out.append(
                FillEvent(
                    o["s"],
                    pside,
                    sign * float(o["l"]),
                    float(o["L"]),
                    t,
                    int(o["T"]),
                    cid,
                    str(o["i"]),
                    None,
                    t,
                )  # fmt: skip
            )
        status = o.get("X")
        filled = float(o.get("z", 0) or 0)
        if status in ("FILLED", "CANCELED", "EXPIRED", "REJECTED", "EXPIRED_IN_MATCH"):
            out.append(
                OrderEvent(
                    o["s"],
                    cid,
                    str(o["i"]),
                    False,
                    pside,
                    0.0,
                    float(o["p"]),
                    filled,
                    status != "FILLED",
                )  # fmt: skip
            )
        elif status in ("NEW", "PARTIALLY_FILLED"):
            remaining = float(o["q"]) - filled
            out.append(
                OrderEvent(
                    o["s"], cid, str(o["i"]), True, pside, sign * remaining, float(o["p"]), filled
                )
            )
        return out
    if ev == "ACCOUNT_UPDATE":
        a = data["a"]
        t = int(data.get("T", data.get("E", 0)))
        reason = a.get("m", "")
        reason = FUNDING if reason == "FUNDING_FEE" else reason
        out = [
            BalanceEvent(float(b["wb"]), reason, t) for b in a.get("B", []) if b.get("a") == "USDT"
        ]
        if not out:  # the reason still matters (the balance peak follows fills only)
            out = [BalanceEvent(float("nan"), reason, t)]
        for p in a.get("P", []):
            amt = float(p["pa"])
            ps = p.get("ps", "BOTH")
            pside = 1 if ps == "LONG" or (ps == "BOTH" and amt >= 0) else -1
            price = float(p["ep"]) if amt else 0.0
            out.append(PositionEvent(p["s"], pside, abs(amt), price, t, reason))
        return out
    if ev == "listenKeyExpired":
        return [StreamExpired()]
    return []

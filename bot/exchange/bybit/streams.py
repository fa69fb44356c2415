"""Bybit v5 linear websocket streams: public (``/v5/public/linear``: trades, tickers, klines)
and private (``/v5/private``: auth, orders, executions, positions, wallet). Their messages
become :mod:`bot.exchange.events` in :mod:`bot.exchange.bybit.format`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from bot.exchange.bybit import format as bybit_format
from bot.exchange.streams import EventSink, StreamClient, emit

__all__ = [
    "AuthRefused",
    "BybitPrivateStream",
    "BybitPublicStream",
    "BybitStreams",
    "BybitTickers",
    "bybit_auth_args",
    "parse_bybit",
]

log = logging.getLogger("gridbot.live.streams")


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
    silence_timeout_seconds: float
    ping_interval_seconds: float
    max_age_seconds: float
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
        silence = self.silence_timeout_seconds
        self.client = StreamClient(
            "market" if public else "user",
            f"{self.ws_url.rstrip('/')}{self.path}",
            self._dispatch,
            silence_timeout_seconds=silence
            if public
            else max(silence, 2.5 * self.ping_interval_seconds),
            max_age_seconds=self.max_age_seconds,
            on_open=self._on_open,
            ping_json={"op": "ping"},
            ping_interval_seconds=self.ping_interval_seconds,
            on_state=self._state,
        )
        return self.client

    async def run(self, stop: asyncio.Event) -> None:
        await self.build().run(stop)


@dataclass
class BybitPublicStream(_BybitSocket):
    """Bybit v5 linear public: ``kline.1.S`` of every symbol (closed candles move the EMAs),
    ``publicTrade.S`` and ``tickers.S`` (snapshot + deltas merged) of ``price_symbols`` only
    (the active coins), changed on the open connection by :meth:`set_prices` (``subscribe`` /
    ``unsubscribe``, at most 10 args a request, each acknowledged with ``success``); a JSON
    ping every ``ping_interval_seconds``.

    ``on_events`` gets :mod:`bot.exchange.events` (prices, klines); ``subscribed`` is set once
    the venue acknowledged the subscription on the current connection.
    """

    ws_url: str
    symbols: Sequence[str]
    on_events: EventSink
    silence_timeout_seconds: float = 30.0
    ping_interval_seconds: float = 20.0
    max_age_seconds: float = 23 * 3600.0
    path: str = "/v5/public/linear"
    on_state: Callable[[bool], None] | None = None
    on_ticker: Callable[[dict[str, Any]], None] | None = None
    tickers: BybitTickers = field(default_factory=BybitTickers)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    client: StreamClient | None = None
    price_symbols: Collection[str] | None = None  # None: every symbol
    request_timeout_seconds: float = 10.0
    _live_prices: set[str] = field(default_factory=set)  # asked for on this connection
    _pending: dict[str, asyncio.Future] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ws: ClientConnection | None = None

    _name = "public"

    def _prices(self) -> set[str]:
        return set(self.symbols if self.price_symbols is None else self.price_symbols)

    @staticmethod
    def _price_topics(symbols: Collection[str]) -> list[str]:
        return [f"{t}.{s}" for s in sorted(symbols) for t in ("publicTrade", "tickers")]

    def topics(self) -> list[str]:
        return [f"kline.1.{s}" for s in self.symbols] + self._price_topics(self._prices())

    async def _send(self, ws: ClientConnection, op: str, args: list[str]) -> list[asyncio.Future]:
        """``op`` for ``args``, 10 at a time (Bybit's limit per request), each with a req_id."""
        out = []
        for i in range(0, len(args), 10):
            rid = f"gb{next(self._ids)}"
            fut: asyncio.Future = asyncio.get_running_loop().create_future()
            self._pending[rid] = fut
            out.append(fut)
            req = {"req_id": rid, "op": op, "args": args[i : i + 10]}
            await ws.send(orjson.dumps(req).decode())
        return out

    async def _on_open(self, ws: ClientConnection) -> None:
        async with self._lock:
            self.subscribed.clear()
            self._ws = ws
            self._fail_pending()
            self._live_prices = self._prices()
            await self._send(ws, "subscribe", self.topics())

    async def set_prices(self, symbols: Collection[str]) -> bool:
        """Follow the prices of ``symbols`` from now on: on the open connection (until its
        acks, at most ``request_timeout_seconds``), else on the next connect. True when
        acknowledged (or nothing to ask)."""
        self.price_symbols = set(symbols)
        async with self._lock:
            ws = self._ws
            if ws is None or self.client is None or self.client.ws is not ws:
                return False  # not connected: the next connect asks for them
            want = self._prices()
            drop, add = self._live_prices - want, want - self._live_prices
            futs: list[asyncio.Future] = []
            try:
                if drop:
                    futs += await self._send(ws, "unsubscribe", self._price_topics(drop))
                if add:
                    futs += await self._send(ws, "subscribe", self._price_topics(add))
            except Exception as exc:  # the socket died under us: the reconnect asks again
                log.warning("bybit public: subscribing failed: %s", exc)
                return False
            self._live_prices = want
        try:
            done = await asyncio.wait_for(asyncio.gather(*futs), self.request_timeout_seconds)
        except TimeoutError:
            done = [False]
        if not all(done):  # refused or unanswered: a reconnect asks for what is wanted then
            if self.client.ws is ws:  # (a connection that dropped meanwhile asked afresh)
                log.warning("bybit public: a subscription change failed; reconnecting")
                await self.client.close()
            return False
        return True

    def _on_reply(self, msg: dict[str, Any]) -> bool:
        """A reply to our subscribe / unsubscribe (then nothing else is in it)."""
        op = msg.get("op")
        if op not in ("subscribe", "unsubscribe") or "success" not in msg:
            return False
        ok = bool(msg["success"])
        fut = self._pending.pop(str(msg.get("req_id", "")), None)
        if fut is not None and not fut.done():
            fut.set_result(ok)
        if not ok:
            log.error("bybit public: %s refused: %s", op, msg.get("ret_msg"))
        elif op == "subscribe":
            self.subscribed.set()
        return True

    def _fail_pending(self) -> None:
        """Requests asked on a connection that is gone: no answer will come."""
        for p in self._pending.values():
            if not p.done():
                p.set_result(False)
        self._pending.clear()

    def _state(self, up: bool) -> None:
        if not up:
            self._ws = None
            self._fail_pending()
        super()._state(up)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if self._on_reply(msg):
            return
        if str(msg.get("topic", "")).startswith("tickers."):
            merged = self.tickers.apply(msg)  # kept merged for bid/ask; prices come from trades
            if merged is not None and self.on_ticker is not None:
                self.on_ticker(merged)
            return
        await emit(self.on_events, bybit_format.parse_public(msg))


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
    a JSON ping every ``ping_interval_seconds``; every reconnect authenticates afresh.

    ``time_offset_ms`` (server minus local clock) keeps ``expires`` valid on a drifting clock.
    """

    ws_url: str
    auth_args: Callable[[int], list[Any]]  # expires_ms -> [key, expires, signature]
    on_events: EventSink
    silence_timeout_seconds: float = 30.0
    ping_interval_seconds: float = 20.0
    max_age_seconds: float = 23 * 3600.0
    expires_after_ms: int = 10_000
    auth_timeout_seconds: float = 10.0
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
        end = time.monotonic() + self.auth_timeout_seconds
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
        await emit(self.on_events, bybit_format.parse_private(msg))


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

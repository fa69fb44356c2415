"""Binance USDT-M websocket streams: market data (``aggTrade``, ``kline_1m``) and the user data
stream (listen key), and their messages -> :mod:`bot.exchange.events`."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

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
from bot.exchange.streams import StreamClient

__all__ = ["BinanceStreams", "binance_events", "parse_binance"]

log = logging.getLogger("gridbot.live.streams")

# a combined-stream URL carries streams up to this length; the rest are SUBSCRIBEd after the
# connect (servers cap the request line; Binance's own limit is not published)
_URL_MAX_CHARS = 4000
_PARAMS_PER_REQUEST = 200
_REQUEST_SPACING_SECONDS = 0.11  # Binance takes at most 10 incoming messages per second


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

    Market data on ``{ws_url}{market_path}/stream?streams=...``: ``kline_1m`` of every symbol,
    ``aggTrade`` of ``price_symbols`` only (the active coins), changed on the open connection
    by :meth:`set_prices` (``SUBSCRIBE`` / ``UNSUBSCRIBE``, acknowledged ``{"result": null,
    "id": n}``); each (re)connect asks for what ``price_symbols`` holds then. The user data
    stream on ``{ws_url}/private/ws?listenKey=KEY``, or (``user_in_market=True``) as one more
    stream of the combined market connection: then one TCP connection carries both, in the
    order the exchange sent them (the lockstep replay needs candle k's fills before candle k's
    kline).
    """

    ws_url: str
    symbols: Sequence[str]
    on_event: Callable[[str, dict[str, Any]], Awaitable[None] | None]
    listen_key: Callable[[], Awaitable[str]] | None = None
    market_path: str = "/market"
    user_path: str = "/private/ws"
    user_in_market: bool = False
    silence_timeout_seconds: float = 30.0
    max_age_seconds: float = 23 * 3600.0
    on_state: Callable[[str, bool], None] | None = None
    clients: list[StreamClient] = field(default_factory=list)
    price_symbols: Collection[str] | None = None  # None: every symbol
    request_timeout_seconds: float = 10.0
    _live_prices: set[str] = field(default_factory=set)  # asked for on this connection
    _overflow: list[str] = field(default_factory=list)  # streams to SUBSCRIBE after the connect
    _pending: dict[int, asyncio.Future] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ws: ClientConnection | None = None

    def _prices(self) -> set[str]:
        return set(self.symbols if self.price_symbols is None else self.price_symbols)

    @staticmethod
    def _price_stream(symbol: str) -> str:
        return f"{symbol.lower()}@aggTrade"

    def _market_streams(self) -> list[str]:
        prices = sorted(self._prices())
        self._live_prices = set(prices)
        klines = [f"{s.lower()}@kline_1m" for s in self.symbols]
        return klines + [self._price_stream(s) for s in prices]

    async def _market_url(self) -> str:
        names = self._market_streams()
        lead = []
        if self.user_in_market and self.listen_key is not None:
            lead.append(await self.listen_key())  # first: always in the URL
        base = f"{self.ws_url.rstrip('/')}{self.market_path}/stream?streams="
        in_url, size = lead, len(base) + sum(len(n) + 1 for n in lead)
        rest = iter(names)
        for n in rest:
            if size + len(n) + 1 > _URL_MAX_CHARS:
                self._overflow = [n, *rest]
                break
            in_url.append(n)
            size += len(n) + 1
        else:
            self._overflow = []
        return base + "/".join(in_url)

    async def _on_market_open(self, ws: ClientConnection) -> None:
        """After each connect: what did not fit in the URL, then any change of the active set
        made while connecting (acks are read by the stream, not awaited here)."""
        async with self._lock:
            self._ws = ws
            self._fail_pending()
            over, self._overflow = self._overflow, []
            for i in range(0, len(over), _PARAMS_PER_REQUEST):
                if i:
                    await asyncio.sleep(_REQUEST_SPACING_SECONDS)
                await self._send(ws, "SUBSCRIBE", over[i : i + _PARAMS_PER_REQUEST])
            await self._sync_prices(ws)

    def _fail_pending(self) -> None:
        """Requests asked on a connection that is gone: no answer will come."""
        for p in self._pending.values():
            if not p.done():
                p.set_result(False)
        self._pending.clear()

    async def _send(self, ws: ClientConnection, method: str, params: list[str]) -> asyncio.Future:
        rid = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        await ws.send(orjson.dumps({"method": method, "params": params, "id": rid}).decode())
        return fut

    async def _sync_prices(self, ws: ClientConnection) -> list[asyncio.Future]:
        """Send what turns this connection's price streams into ``price_symbols``."""
        want = self._prices()
        drop, add = sorted(self._live_prices - want), sorted(want - self._live_prices)
        out = []
        if drop:
            out.append(await self._send(ws, "UNSUBSCRIBE", [self._price_stream(s) for s in drop]))
        if add:
            if drop:
                await asyncio.sleep(_REQUEST_SPACING_SECONDS)
            out.append(await self._send(ws, "SUBSCRIBE", [self._price_stream(s) for s in add]))
        self._live_prices = want
        return out

    async def set_prices(self, symbols: Collection[str]) -> bool:
        """Follow the prices of ``symbols`` from now on: on the open connection (until its
        acks, at most ``request_timeout_seconds``), else on the next connect. True when
        acknowledged (or nothing to ask)."""
        self.price_symbols = set(symbols)
        async with self._lock:
            ws = self._ws
            market = self.clients[0] if self.clients else None
            if ws is None or market is None or market._ws is not ws:
                return False  # not connected: the next connect asks for them
            try:
                futs = await self._sync_prices(ws)
            except Exception as exc:  # the socket died under us: the reconnect asks again
                log.warning("market stream: subscribing failed: %s", exc)
                return False
        try:
            done = await asyncio.wait_for(asyncio.gather(*futs), self.request_timeout_seconds)
        except TimeoutError:
            done = [False]
        if not all(done):  # refused or unanswered: a reconnect asks for what is wanted then
            if market.ws is ws:  # (a connection that dropped meanwhile asked afresh)
                log.warning("market stream: a subscription change failed; reconnecting")
                await market.close()
            return False
        return True

    def _on_reply(self, msg: dict[str, Any]) -> bool:
        """A reply to SUBSCRIBE / UNSUBSCRIBE (``{"result": null, "id": n}`` or an error)."""
        if "id" not in msg or not ("result" in msg or "error" in msg) or "stream" in msg:
            return False
        fut = self._pending.pop(msg["id"], None) if isinstance(msg["id"], int) else None
        err = msg.get("error")
        if err is not None:
            log.error("market stream: subscription refused: %s", err)
        if fut is not None and not fut.done():
            fut.set_result(err is None)
        return True

    async def _user_url(self) -> str:
        assert self.listen_key is not None
        return f"{self.ws_url.rstrip('/')}{self.user_path}?listenKey={await self.listen_key()}"

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if self._on_reply(msg):
            return
        parsed = parse_binance(msg)
        if parsed is None:
            return
        result = self.on_event(*parsed)
        if asyncio.iscoroutine(result):
            await result

    def build(self) -> list[StreamClient]:
        def state(name: str) -> Callable[[bool], None]:
            return lambda up: self.on_state(name, up) if self.on_state else None

        kw: dict[str, Any] = dict(
            silence_timeout_seconds=self.silence_timeout_seconds,
            max_age_seconds=self.max_age_seconds,
        )

        def market_state(up: bool) -> None:
            if not up:
                self._ws = None
                self._fail_pending()
            if self.on_state:
                self.on_state("market", up)

        self.clients = [
            StreamClient(
                "market", self._market_url, self._dispatch, on_state=market_state,
                on_open=self._on_market_open, **kw,
            )
        ]  # fmt: skip
        if self.listen_key is not None and not self.user_in_market:
            # the user stream is quiet when nothing happens: a longer silence allowance
            ukw = dict(kw, silence_timeout_seconds=max(self.silence_timeout_seconds, 3600.0))
            self.clients.append(
                StreamClient("user", self._user_url, self._dispatch, on_state=state("user"), **ukw)
            )
        return self.clients

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(c.run(stop) for c in self.build()))


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

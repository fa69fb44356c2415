"""One self-healing websocket connection (the ``websockets`` library, not ccxt.pro), shared by
every exchange's streams (:mod:`bot.exchange.binance.streams`, :mod:`bot.exchange.bybit.streams`).

:class:`StreamClient` is one self-healing connection: exponential backoff with jitter between
attempts, a rotation before the exchange's own 24 h cut, and a watchdog that treats a socket
silent for ``silence_timeout_seconds`` as dead (hung sockets can stay "open" for a long time).
Parsing lives in small pure functions so it can be tested on recorded messages; every
exchange's messages become :mod:`bot.exchange.events` at the boundary, in its own package
(:func:`bot.exchange.binance.streams.binance_events`, :mod:`bot.exchange.bybit.format`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from bot.exchange.events import Event

__all__ = ["EventSink", "StaleStream", "StreamClient", "StreamStats", "emit"]

log = logging.getLogger("gridbot.live.streams")

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]
EventSink = Callable[[list[Event]], Awaitable[None] | None]


async def emit(sink: EventSink, events: list[Event]) -> None:
    """Hand ``events`` to ``sink`` (awaited when it is a coroutine function); none: no call."""
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
        silence_timeout_seconds: float = 30.0,
        max_age_seconds: float = 23 * 3600.0,
        backoff_base_seconds: float = 0.2,
        backoff_max_seconds: float = 30.0,
        max_failures: int = 1000,
        on_open: Callable[[ClientConnection], Awaitable[None]] | None = None,
        ping_json: dict[str, Any] | None = None,
        ping_interval_seconds: float = 20.0,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.on_message = on_message
        self.silence_timeout_seconds = silence_timeout_seconds
        self.max_age_seconds = max_age_seconds
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.max_failures = max_failures
        self.on_open = on_open
        self.ping_json = ping_json
        self.ping_interval_seconds = ping_interval_seconds
        self.on_state = on_state
        self.stats = StreamStats()
        self.connected = asyncio.Event()
        self._ws: ClientConnection | None = None

    @property
    def ws(self) -> ClientConnection | None:
        """The open connection (None between connections)."""
        return self._ws

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
            delay = min(
                self.backoff_max_seconds, self.backoff_base_seconds * 2 ** min(failures - 1, 16)
            )
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
        next_ping = opened + self.ping_interval_seconds
        stop_wait = asyncio.ensure_future(stop.wait())
        recv: asyncio.Future | None = None
        try:
            while True:
                now = time.monotonic()
                if now - opened >= self.max_age_seconds:
                    return True
                if self.ping_json is not None and now >= next_ping:
                    await ws.send(orjson.dumps(self.ping_json).decode())
                    next_ping = now + self.ping_interval_seconds
                silent = now - self.stats.last_message
                if silent >= self.silence_timeout_seconds:
                    raise StaleStream(f"silent for {silent:.1f} s")
                timeout = min(
                    self.silence_timeout_seconds - silent,
                    self.max_age_seconds - (now - opened),
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

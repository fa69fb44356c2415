"""The venue's one websocket port, shared by every API dialect.

:class:`WsHub` binds the port, hands each connection to the dialect whose path prefix it asks
for (Bybit ``/v5/``, Binance everything else), and holds every open connection so that the
faults (drop, close, hang) reach all of them whatever their dialect. Sending never blocks the
replay: dialects write frames to each socket's buffer (``broadcast``).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import Server, ServerConnection, serve

__all__ = ["WsHandler", "WsHub"]

log = logging.getLogger("gridbot.venue.ws")

#: a dialect's connection handler: (connection, path without query) -> served until it ends
WsHandler = Callable[[ServerConnection, str], Awaitable[None]]


class WsHub:
    def __init__(
        self, ping_interval_seconds: float | None, ping_timeout_seconds: float | None
    ) -> None:
        self.ping_interval_seconds = ping_interval_seconds
        self.ping_timeout_seconds = ping_timeout_seconds
        self.connections: set[ServerConnection] = set()
        self._routes: list[tuple[str, WsHandler]] = []
        self._server: Server | None = None

    def route(self, prefix: str, handler: WsHandler) -> None:
        """Connections whose path starts with ``prefix`` go to ``handler`` (first match wins;
        register the catch-all ``""`` last)."""
        self._routes.append((prefix, handler))

    async def start(self, host: str, port: int) -> int:
        self._server = await serve(
            self._handle,
            host,
            port,
            ping_interval=self.ping_interval_seconds,
            ping_timeout=self.ping_timeout_seconds,
            max_size=2**20,
            close_timeout=2,
        )
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, conn: ServerConnection) -> None:
        request_path = conn.request.path if conn.request is not None else "/"
        path = urllib.parse.urlsplit(request_path).path.rstrip("/") or "/"
        handler = next((h for prefix, h in self._routes if path.startswith(prefix)), None)
        if handler is None:
            await conn.close(1008, "unknown path")
            return
        self.connections.add(conn)
        try:
            await handler(conn, path)
        finally:
            self.connections.discard(conn)

    # ------------------------------------------------------------------ faults

    def drop_all(self) -> int:
        """Abort every connection: no close frame (the client sees 1006)."""
        n = 0
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
                n += 1
        return n

    async def close_all(self, code: int = 1008, reason: str = "policy violation") -> int:
        """Close every connection with a close frame ``code``."""
        conns = list(self.connections)
        for conn in conns:
            await conn.close(code, reason)
        return len(conns)

    def hang_all(self) -> int:
        """Stop reading every connection (pings go unanswered): a hung socket."""
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.pause_reading()
        return len(self.connections)

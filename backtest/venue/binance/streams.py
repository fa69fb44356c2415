"""The venue's Binance USDT-M websocket streams (on the port of :class:`backtest.venue.hub.WsHub`).

Paths: ``/ws``, ``/ws/<stream>[/<stream>...]`` (raw payloads), ``/stream?streams=a/b``
(combined: ``{"stream": name, "data": payload}``), each also under the ``/market``, ``/public``
and ``/private`` prefixes of Binance's newer routing, plus ``/private/ws?listenKey=KEY``.
A stream that is a listen key is the user data stream of its account. Clients may
``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` on an open connection, as on Binance:
``{"method": ..., "params": [...], "id": n}`` is answered ``{"result": null, "id": n}`` and the
streams start or stop with the next message; a bad request gets ``{"error": {"code", "msg"},
"id": n}`` (code 2 for a bad method, id or params, 3 for invalid JSON) and changes nothing; a
connection holds at most 1024 streams. The id may be an integer, a string of up to 36
letters and digits, or null. :attr:`StreamServer.connects` counts the connections served (for
tests: a change of streams must not cost a reconnect). The server pings (keepalive).

Sending never blocks the replay: frames go to each socket's buffer (``broadcast``).
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast

from ..host import VenueHost
from ..wire import wall_ms

__all__ = ["StreamServer"]

log = logging.getLogger("gridbot.venue.ws")

_PREFIXES = ("/market", "/public", "/private")
MAX_STREAMS = 1024  # per connection, as Binance
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS")


@dataclass(eq=False)
class _Client:
    conn: ServerConnection
    combined: bool
    streams: set[str] = field(default_factory=set)


class StreamServer:
    """Market and user-data streams for the venue."""

    def __init__(self, venue: VenueHost) -> None:
        self.venue = venue
        self.clients: set[_Client] = set()
        self.connects = 0  # connections served since the start

    # ------------------------------------------------------------------ connections

    async def handle(self, conn: ServerConnection, path: str) -> None:
        """Serve one connection (the hub's handler for Binance paths) until it ends."""
        url = urllib.parse.urlsplit(conn.request.path if conn.request is not None else path)
        for prefix in _PREFIXES:
            if path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                break
        query = urllib.parse.parse_qs(url.query)
        if path == "/stream":
            client = _Client(conn, combined=True)
            names = "/".join(query.get("streams", [""])).split("/")
        elif path == "/ws" or path.startswith("/ws/"):
            client = _Client(conn, combined=False)
            names = path[4:].split("/") if len(path) > 3 else []
        else:
            await conn.close(1008, "unknown path")
            return
        self.connects += 1
        names += query.get("listenKey", [])
        # a user stream's name is its listen key (no "@"): one this exchange does not know
        # (expired, or forgotten by a restart) gets listenKeyExpired and the socket closes,
        # as Binance does, so that the client asks for a new key instead of listening to nothing
        for name in names:
            if name and "@" not in name and name not in self.venue.listen_keys:
                event = {"e": "listenKeyExpired", "E": wall_ms(), "listenKey": name}
                msg = {"stream": name, "data": event} if client.combined else event
                await conn.send(orjson.dumps(msg).decode())
                await conn.close(1000, "listenKey expired")
                return
        for name in names:
            if name:
                client.streams.add(self._normalize(name))
        self.clients.add(client)
        log.debug(
            "ws client %s on %s streams=%s",
            conn.remote_address,
            url.geturl(),
            sorted(client.streams),
        )
        try:
            async for message in conn:
                reply = self._on_message(client, message)
                if reply is not None and not self.venue.faults.ws_silent:
                    await conn.send(orjson.dumps(reply).decode())
        except Exception as exc:  # a dropped client must never take the server down
            log.debug("ws client %s ended: %r", conn.remote_address, exc)
        finally:
            self.clients.discard(client)

    def _normalize(self, name: str) -> str:
        # market streams are lower-case symbol @ camelCase type (btcusdt@aggTrade), as Binance's
        if "@" not in name:
            return name  # a listen key (case-sensitive)
        symbol, kind = name.split("@", 1)
        return f"{symbol.lower()}@{kind}"

    def _on_message(self, client: _Client, message: str | bytes) -> dict[str, Any] | None:
        try:
            req = orjson.loads(message)
        except orjson.JSONDecodeError:
            return _error(3, "Invalid JSON: expected value", None)
        if not isinstance(req, dict):
            return _error(3, "Invalid JSON: expected an object", None)
        rid = req.get("id")
        bad = _bad_request(req)
        if bad is not None:
            return _error(2, f"Invalid request: {bad}", rid if _id_ok(rid) else None)
        method, params = req["method"], req.get("params") or []
        if method == "SUBSCRIBE":
            names = {self._normalize(p) for p in params}
            if len(client.streams | names) > MAX_STREAMS:
                return _error(2, f"Invalid request: more than {MAX_STREAMS} streams", rid)
            client.streams.update(names)
            return {"result": None, "id": rid}
        if method == "UNSUBSCRIBE":
            client.streams.difference_update(self._normalize(p) for p in params)
            return {"result": None, "id": rid}
        return {"result": sorted(client.streams), "id": rid}

    def subscriptions(self) -> list[set[str]]:
        """Each open connection's streams (the venue's own record, for tests)."""
        return [set(c.streams) for c in self.clients]

    # ------------------------------------------------------------------ sending

    def publish(self, stream: str, data: dict[str, Any]) -> None:
        """Send ``data`` to every client subscribed to ``stream`` (raw or combined)."""
        if self.venue.faults.ws_silent or not self.clients:
            return
        raw = combined = None
        for c in list(self.clients):
            if stream not in c.streams:
                continue
            if c.combined:
                combined = combined or orjson.dumps({"stream": stream, "data": data}).decode()
                broadcast([c.conn], combined)
            else:
                raw = raw or orjson.dumps(data).decode()
                broadcast([c.conn], raw)

    def has_subscribers(self, stream: str) -> bool:
        return any(stream in c.streams for c in self.clients)

    # ------------------------------------------------------------------ listen keys

    async def close_streams(self, stream: str) -> None:
        for c in list(self.clients):
            if stream in c.streams:
                await c.conn.close(1000, "listenKey closed")


def _error(code: int, msg: str, rid: Any) -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg}, "id": rid}


def _id_ok(rid: Any) -> bool:
    """Binance takes a 64-bit integer, a string of up to 36 letters and digits, or null."""
    if rid is None:
        return True
    if isinstance(rid, bool):
        return False
    if isinstance(rid, int):
        return -(2**63) <= rid < 2**63
    return isinstance(rid, str) and len(rid) <= 36 and rid.isalnum()


def _bad_request(req: dict[str, Any]) -> str | None:
    """What is wrong with a SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS request, or None."""
    method = req.get("method")
    if method is None:
        return "missing field `method`"
    if method not in _METHODS:
        return f"unknown variant `{method}`, expected one of {', '.join(_METHODS)}"
    if not _id_ok(req.get("id")):
        return (
            "request ID must be an integer, an alphanumeric string of up to 36 characters or null"
        )
    params = req.get("params")
    if method == "LIST_SUBSCRIPTIONS":
        return None
    if not isinstance(params, list) or not params:
        return "params must be a non-empty array of stream names"
    if not all(isinstance(p, str) and p for p in params):
        return "every param must be a stream name (a non-empty string)"
    return None

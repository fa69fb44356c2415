"""Bybit v5 websockets on the venue's websocket port: ``/v5/public/linear`` and ``/v5/private``.

Public topics: ``publicTrade.{symbol}`` (one message per replayed trade price, as the Binance
aggTrades), ``tickers.{symbol}`` (a full ``snapshot`` right after the subscribe ack, then
``delta`` messages with the changed fields only, each with ``cs`` and ``ts``) and
``kline.{interval}.{symbol}`` (the candle's one update, ``confirm: true``, at its close).
Private topics (after ``{"op": "auth", "args": [key, expires, sign]}`` with sign = hex
HMAC-SHA256(secret, "GET/realtime" + expires)): ``order``, ``execution``, ``position``,
``wallet`` (also ``order.linear``, ``execution.linear``, ``position.linear``), fed from the
same engine events as Binance's ORDER_TRADE_UPDATE / ACCOUNT_UPDATE, to the sockets that
authenticated with that account's key.

Ordering: Bybit uses separate public and private sockets, so nothing orders them for a client.
The venue sends, for candle k in lockstep, the private messages first, then the trades, then
the closed kline and the ticker delta (like the Binance side); every frame is in the sockets'
buffers when :meth:`Venue.advance` returns, so a lockstep driver that awaits ``advance`` knows
candle k is fully sent, and a bot that waits for candle k's kline before reading its private
socket sees candle k's fills there.

Subscriptions change on the open connection: ``{"op": "subscribe"|"unsubscribe", "args":
[...], "req_id": ...}`` is answered ``{"success": true, "ret_msg": "", "conn_id", "req_id",
"op"}`` and the topics start (a ticker with its snapshot) or stop with the next message. Refused,
changing nothing: an unknown topic, an empty list, more than 10 args in one request, a topic
already subscribed on this connection (``error:already subscribed,topic:...``).
:attr:`BybitStreams.connects` counts the connections served, per socket kind.

Deviations: public ping answers ``{"success": true, "ret_msg": "pong", "op": "ping"}``, private
ping ``{"op": "pong", "args": [ms]}`` (as Bybit); auth failures' ``ret_msg`` texts are
approximations; klines are only sent at the close (no in-candle updates).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from websockets.asyncio.server import ServerConnection, broadcast

from bot.core.account import funding_payment

from ..host import VenueHost
from ..matching import AccountUpdate, OrderUpdate
from ..wire import decimals, fmt, num, wall_ms
from . import formats as bf
from .rest import BybitRestApi

__all__ = ["BybitStreams"]

log = logging.getLogger("gridbot.venue.bybit.ws")

PUBLIC_PATH = "/v5/public/linear"
PRIVATE_PATH = "/v5/private"
MAX_ARGS = 10  # per subscribe / unsubscribe request
_PRIVATE_TOPICS = {
    "order": "order",
    "order.linear": "order",
    "execution": "execution",
    "execution.linear": "execution",
    "position": "position",
    "position.linear": "position",
    "wallet": "wallet",
}


@dataclass(eq=False)
class _Client:
    conn: ServerConnection
    private: bool
    conn_id: str
    topics: set[str] = field(default_factory=set)  # private: the canonical names
    api_key: str | None = None


class BybitStreams:
    """Bybit v5 public (linear) and private streams for the venue."""

    def __init__(self, venue: VenueHost, rest: BybitRestApi) -> None:
        self.venue = venue
        self.rest = rest  # the tickers it answers are the ones the stream sends
        self.clients: set[_Client] = set()
        self._ids = itertools.count(1)
        self._cs = itertools.count(1)
        self._tickers: dict[str, dict] = {}  # the last full ticker sent per symbol (delta base)
        self._last_trade: dict[str, float] = {}
        self._direction: dict[str, str] = {}
        self.connects = {"public": 0, "private": 0}  # connections served since the start

    # ------------------------------------------------------------------ connections

    async def handle(self, conn: ServerConnection, path: str) -> None:
        if path not in (PUBLIC_PATH, PRIVATE_PATH):
            await conn.close(1008, "unknown path")
            return
        client = _Client(conn, path == PRIVATE_PATH, secrets.token_hex(10))
        self.connects["private" if client.private else "public"] += 1
        self.clients.add(client)
        try:
            async for message in conn:
                for reply in self._on_message(client, message):
                    if not self.venue.faults.ws_silent:
                        await conn.send(orjson.dumps(reply).decode())
        except Exception as exc:  # a dropped client must never take the server down
            log.debug("bybit ws client %s ended: %r", conn.remote_address, exc)
        finally:
            self.clients.discard(client)

    def _on_message(self, client: _Client, message: str | bytes) -> list[dict[str, Any]]:
        try:
            req = orjson.loads(message)
            op = req.get("op")
        except (orjson.JSONDecodeError, AttributeError):
            return [{"success": False, "ret_msg": "error:invalid json", "conn_id": client.conn_id}]
        rid = req.get("req_id")
        args = req.get("args") or []
        base = {"conn_id": client.conn_id, "req_id": rid} if rid is not None else {}
        base = base or {"conn_id": client.conn_id}
        if op == "ping":
            if client.private:
                return [{"req_id": rid or "", "op": "pong", "args": [str(wall_ms())], **base}]
            return [{"success": True, "ret_msg": "pong", **base, "op": "ping"}]
        if op == "auth" and client.private:
            ok, msg = self._auth(client, args)
            reply = {"success": ok, "ret_msg": msg, "op": "auth", **base}
            if not ok:
                reply["request"] = {"op": "auth", "args": args}
            return [reply]
        if op in ("subscribe", "unsubscribe"):
            return self._subscribe(client, op, args, base)
        return [
            {
                "success": False,
                "ret_msg": f"error:invalid op {op}",
                **base,
                "request": {"op": op, "args": args},
            }
        ]

    def _auth(self, client: _Client, args: list) -> tuple[bool, str]:
        if len(args) != 3:
            return False, "Params Error"
        key, expires, sign = str(args[0]), str(args[1]), str(args[2])
        acct = self.venue.engine.accounts.get(key)
        if acct is None:
            return False, "API key is invalid."
        try:
            exp = int(expires)
        except ValueError:
            return False, "Params Error"
        if exp <= wall_ms():
            return False, "Params Error: request expired"
        expected = hmac.new(
            acct.api_secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, sign.lower()):
            return False, "Invalid sign"
        client.api_key = key
        return True, ""

    def _topic_ok(self, client: _Client, topic: str) -> str | None:
        """The canonical topic name, or None when the venue does not serve it."""
        if client.private:
            return _PRIVATE_TOPICS.get(topic)
        parts = topic.split(".")
        specs = self.venue.engine.specs
        if len(parts) == 2 and parts[0] in ("publicTrade", "tickers") and parts[1] in specs:
            return topic
        interval = bf.interval_of(int(self.venue.candles.timeframe_ms))
        if len(parts) == 3 and parts[0] == "kline" and parts[1] == interval and parts[2] in specs:
            return topic
        return None

    def _subscribe(
        self, client: _Client, op: str, args: list, base: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if client.private and client.api_key is None:
            return [{"success": False, "ret_msg": "Request not authorized", **base, "op": op}]
        if not isinstance(args, list) or not args:
            return [{"success": False, "ret_msg": "Params Error: args is empty", **base, "op": op}]
        if len(args) > MAX_ARGS:
            msg = f"Params Error: args size >{MAX_ARGS}"
            return [{"success": False, "ret_msg": msg, **base, "op": op}]
        names = [self._topic_ok(client, str(t)) for t in args]
        bad = [str(t) for t, n in zip(args, names, strict=True) if n is None]
        if bad:
            return [{"success": False, "ret_msg": f"Invalid topic :{bad}", **base, "op": op}]
        dup = [n for n in names if op == "subscribe" and n in client.topics]
        if dup:
            msg = f"error:already subscribed,topic:{dup[0]}"
            return [{"success": False, "ret_msg": msg, **base, "op": op}]
        out: list[dict[str, Any]] = [{"success": True, "ret_msg": "", **base, "op": op}]
        for n in names:
            assert n is not None
            if op == "unsubscribe":
                client.topics.discard(n)
                continue
            new = n not in client.topics
            client.topics.add(n)
            if new and n.startswith("tickers."):
                out.append(self._ticker_snapshot(n.split(".", 1)[1]))
        return out

    # ------------------------------------------------------------------ public

    def _send(self, clients: list[_Client], data: dict[str, Any]) -> None:
        if clients and not self.venue.faults.ws_silent:
            broadcast([c.conn for c in clients], orjson.dumps(data).decode())

    def subscriptions(self, *, private: bool = False) -> list[set[str]]:
        """Each open public (or private) connection's topics (the venue's record, for tests)."""
        return [set(c.topics) for c in self.clients if c.private == private]

    def has_subscribers(self, topic: str) -> bool:
        """Some public socket subscribed to ``topic`` (e.g. ``kline.1.BTCUSDT``)."""
        return bool(self._subscribers(topic))

    def _subscribers(self, topic: str, *, private: bool = False) -> list[_Client]:
        return [c for c in self.clients if c.private == private and topic in c.topics]

    def _ticker_snapshot(self, symbol: str) -> dict[str, Any]:
        t = self.rest.ticker(symbol, self._direction.get(symbol, "ZeroPlusTick"))
        self._tickers[symbol] = t
        return {
            "topic": f"tickers.{symbol}",
            "type": "snapshot",
            "data": t,
            "cs": next(self._cs),
            "ts": self.venue.engine.now_ms,
        }

    def publish_trade(self, symbol: str, price: float, qty: float, ts: int) -> None:
        prev = self._last_trade.get(symbol, self.venue.engine.prices[symbol])
        if price > prev:
            self._direction[symbol] = "PlusTick"
        elif price < prev:
            self._direction[symbol] = "MinusTick"
        else:
            d = self._direction.get(symbol, "ZeroPlusTick")
            self._direction[symbol] = "ZeroMinusTick" if "Minus" in d else "ZeroPlusTick"
        self._last_trade[symbol] = price
        topic = f"publicTrade.{symbol}"
        subs = self._subscribers(topic)
        if not subs:
            return
        spec = self.venue.engine.specs[symbol]
        trade = {
            "T": ts,
            "s": symbol,
            "S": "Sell" if "Minus" in self._direction[symbol] else "Buy",  # taker side
            "v": fmt(qty, decimals(spec.qty_step)),
            "p": num(price),
            "L": self._direction[symbol],
            "i": bf.exec_id((3 << 64) | next(self._ids)),
            "BT": False,
            "RPI": False,
        }
        self._send(subs, {"topic": topic, "type": "snapshot", "ts": ts, "data": [trade]})

    def publish_candle(self, symbol: str, ts: int, row: tuple[float, ...], tf_ms: int) -> None:
        """The closed kline, then the ticker delta (fields that changed since the last message)."""
        interval = bf.interval_of(tf_ms)
        end = ts + tf_ms - 1
        topic = f"kline.{interval}.{symbol}"
        subs = self._subscribers(topic)
        if subs:
            o, h, lo, c, v = row
            kline = {
                "start": ts,
                "end": end,
                "interval": interval,
                "open": num(o),
                "close": num(c),
                "high": num(h),
                "low": num(lo),
                "volume": num(v),
                "turnover": fmt(v * c, 4),
                "confirm": True,
                "timestamp": end,
            }
            self._send(subs, {"topic": topic, "data": [kline], "ts": end, "type": "snapshot"})
        topic = f"tickers.{symbol}"
        subs = self._subscribers(topic)
        if not subs:
            self._tickers.pop(symbol, None)  # the next subscriber gets a fresh snapshot
            return
        old = self._tickers.get(symbol, {})
        new = self.rest.ticker(symbol, self._direction.get(symbol, "ZeroPlusTick"))
        self._tickers[symbol] = new
        delta = {k: v for k, v in new.items() if old.get(k) != v}
        delta["symbol"] = symbol
        msg = {"topic": topic, "type": "delta", "data": delta, "cs": next(self._cs), "ts": end}
        self._send(subs, msg)

    # ------------------------------------------------------------------ private

    def publish_private(self, events: list[OrderUpdate | AccountUpdate]) -> None:
        """Send the engine's account events to the private sockets of their accounts."""
        clients = [c for c in self.clients if c.private and c.api_key and c.topics]
        if not clients:
            return
        for ev in events:
            targets = [c for c in clients if c.api_key == ev.api_key]
            if targets:
                for topic, data in self._private_messages(ev):
                    subs = [c for c in targets if topic in c.topics]
                    msg = {
                        "id": f"{next(self._ids)}",
                        "topic": topic,
                        "creationTime": ev.time_ms,
                        "data": data,
                    }
                    delay_seconds = self.venue.faults.private_topic_delay_seconds.get(topic, 0.0)
                    if delay_seconds > 0:  # topics overtaking each other, as on Bybit's own socket
                        asyncio.get_running_loop().call_later(delay_seconds, self._send, subs, msg)
                    else:
                        self._send(subs, msg)

    def _private_messages(self, ev: OrderUpdate | AccountUpdate) -> list[tuple[str, list[dict]]]:
        eng = self.venue.engine
        rest = self.rest
        acct = eng.accounts[ev.api_key]
        out: list[tuple[str, list[dict]]] = []
        if isinstance(ev, OrderUpdate):
            o = ev.order
            spec = eng.specs[o.symbol]
            if ev.fill is not None:
                f = ev.fill
                notional = f.price * f.qty
                rate = f.commission / notional if notional else 0.0
                out.append(
                    ("execution", [bf.execution_json(f, spec, o, eng.prices[o.symbol], rate)])
                )
            fee = bf.order_fee(acct, o, ev.fill.trade_id if ev.fill else None)
            data = bf.order_json(
                o,
                spec,
                fee=fee,
                reduce_only=o.reduce_only or o.order_id in rest.reduce_only_ids,
                reject_reason=rest.reject_reasons.get(o.order_id),
            )
            out.append(("order", [data]))
            return out
        if ev.reason == "FUNDING":
            execs = []
            for p in ev.positions:
                price = self._open_price(p.symbol, ev.time_ms)
                side = 1 if p.amount > 0 else -1
                rate = eng.last_funding.get(p.symbol, eng.funding_rate)
                fee = funding_payment(side, abs(p.amount), price, rate)
                execs.append(
                    bf.funding_execution_json(
                        p,
                        eng.specs[p.symbol],
                        price,
                        rate,
                        fee,
                        ev.time_ms,
                        next(self._ids),
                    )
                )
            out.append(("execution", execs))
        positions = []
        for p in ev.positions:
            d = rest.position_json(acct, p.symbol, p.position_side)
            spec = eng.specs[p.symbol]
            # the snapshot's size and entry (the account may have moved on since the event)
            d["size"] = fmt(abs(p.amount), decimals(spec.qty_step))
            d["side"] = "" if p.amount == 0.0 else ("Buy" if p.amount > 0 else "Sell")
            d["entryPrice"] = d["avgPrice"] = fmt(p.entry_price, decimals(spec.price_step) + 2)
            d["updatedTime"] = str(p.update_time_ms)
            if ev.reason == "ADJUSTMENT":  # reduced by the exchange (an outside event)
                d["positionStatus"] = "Adl"
            positions.append(d)
        if positions:
            out.append(("position", positions))
        wallet = bf.wallet_json(eng, acct, cum_realised=rest.ledger.total(acct), balance=ev.balance)
        out.append(("wallet", [wallet]))
        return out

    def _open_price(self, symbol: str, ts: int) -> float:
        c = self.venue.candles
        k = int(np.searchsorted(c.timestamps, ts))
        if k < len(c.timestamps) and int(c.timestamps[k]) == ts:
            return float(c.ohlcv[c.symbols.index(symbol), k, 0])
        return float(self.venue.engine.prices[symbol])

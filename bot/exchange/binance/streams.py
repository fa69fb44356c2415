"""Binance USDT-M websocket streams: market data (``aggTrade``, ``kline_1m``) and the user data
stream (listen key), and their messages -> :mod:`bot.exchange.events`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    silence_timeout_seconds: float = 30.0
    max_age_seconds: float = 23 * 3600.0
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

        kw: dict[str, Any] = dict(
            silence_timeout_seconds=self.silence_timeout_seconds,
            max_age_seconds=self.max_age_seconds,
        )
        self.clients = [
            StreamClient("market", self._market_url, self._dispatch, on_state=state("market"), **kw)
        ]
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

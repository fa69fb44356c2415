"""Fault injection switches for the simulated venue (tests and chaos runs set them).

Plain data read by the REST and websocket servers; :class:`backtest.venue.server.Venue` wraps
them in methods. All state is touched from the venue's event loop (use
``VenueThread.call`` from another thread).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["Faults", "RestFault"]


@dataclass
class RestFault:
    """Answer the next ``count`` matching REST calls with ``status`` (after letting ``skip`` pass).

    429 and 418 answer in Binance's JSON (-1003); 5xx answer with a plain-text body, like a
    gateway in front of Binance does.
    """

    status: int
    count: int = 1
    path: str | None = None  # substring of the URL path; None matches every call
    skip: int = 0

    def matches(self, path: str) -> bool:
        return self.path is None or self.path in path


@dataclass
class Faults:
    rest_delay_ms: float = 0.0
    # served, then answered this late: a client that gave up meanwhile never learns that its
    # call took effect (an order placed whose answer was lost)
    rest_answer_delay_ms: float = 0.0
    rest_faults: list[RestFault] = field(default_factory=list)
    ws_silent: bool = False  # keep sockets open, send no data messages
    # Bybit private topic -> seconds its messages are held back (e.g. "execution" arriving
    # after the "order" that says the order filled)
    private_topic_delay_seconds: dict[str, float] = field(default_factory=dict)

    def take_rest_fault(self, path: str) -> int | None:
        """The status to answer this call with, or None to serve it normally."""
        for rule in self.rest_faults:
            if not rule.matches(path):
                continue
            if rule.skip > 0:
                rule.skip -= 1
                return None
            rule.count -= 1
            if rule.count <= 0:
                self.rest_faults.remove(rule)
            return rule.status
        return None

    async def before_request(self, path: str) -> int | None:
        """What every REST call goes through first (Binance and Bybit alike): the injected
        delay, then the status of an injected fault for this call, or None to serve it."""
        if self.rest_delay_ms > 0:
            await asyncio.sleep(self.rest_delay_ms / 1000)
        return self.take_rest_fault(path)

    async def before_answer(self) -> None:
        """What every served REST call goes through before its answer is sent."""
        if self.rest_answer_delay_ms > 0:
            await asyncio.sleep(self.rest_answer_delay_ms / 1000)

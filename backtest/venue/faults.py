"""Fault injection switches for the simulated venue (tests and chaos runs set them).

Plain data read by the REST and websocket servers; :class:`backtest.venue.server.Venue` wraps
them in methods. All state is touched from the venue's event loop (use
``VenueThread.call`` from another thread).

A call is matched by the substring of its URL path, optionally its HTTP method and substrings
of its request text (query string + body, e.g. a client order id): the same rule reaches the
Binance and the Bybit face alike.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["AnswerHold", "Faults", "RestFault"]


@dataclass
class _Match:
    path: str | None = None  # substring of the URL path; None matches every call
    method: str | None = None  # "POST", "GET", ...; None: any
    contains: tuple[str, ...] = ()  # every one of them in the query string + body

    def matches(self, path: str, method: str = "", text: str = "") -> bool:
        return (
            (self.path is None or self.path in path)
            and (self.method is None or self.method.upper() == method.upper())
            and all(c in text for c in self.contains)
        )


@dataclass
class RestFault(_Match):
    """Answer the next ``count`` matching REST calls with ``status`` (after letting ``skip``
    pass), BEFORE they are applied: the call never reaches the matching engine.

    429 and 418 answer in Binance's JSON (-1003); 5xx answer with a plain-text body, like a
    gateway in front of Binance does.
    """

    status: int = 503
    count: int = 1
    skip: int = 0
    served: int = 0  # calls answered with ``status`` so far (tests wait on it)


@dataclass
class AnswerHold(_Match):
    """Apply the next ``count`` matching calls, then hold each answer ``seconds`` before
    sending it: a client killed or timed out meanwhile never learns that its call took effect
    (an order matched, its answer lost)."""

    seconds: float = 60.0
    count: int = 1
    applied: int = 0  # matching calls applied whose answer was (or is being) held
    holding: int = 0  # answers held right now
    released: asyncio.Event = field(default_factory=asyncio.Event)  # set: answer at once


@dataclass
class Faults:
    rest_delay_ms: float = 0.0
    # served, then answered this late: a client that gave up meanwhile never learns that its
    # call took effect (an order placed whose answer was lost)
    rest_answer_delay_ms: float = 0.0
    rest_faults: list[RestFault] = field(default_factory=list)
    answer_holds: list[AnswerHold] = field(default_factory=list)
    ws_silent: bool = False  # keep sockets open, send no data messages
    # Bybit private topic -> seconds its messages are held back (e.g. "execution" arriving
    # after the "order" that says the order filled)
    private_topic_delay_seconds: dict[str, float] = field(default_factory=dict)
    _holding: list[AnswerHold] = field(default_factory=list, repr=False)  # answers held now

    def take_rest_fault(self, path: str, method: str = "", text: str = "") -> int | None:
        """The status to answer this call with, or None to serve it normally."""
        for rule in self.rest_faults:
            if not rule.matches(path, method, text):
                continue
            if rule.skip > 0:
                rule.skip -= 1
                return None
            rule.count -= 1
            rule.served += 1
            if rule.count <= 0:
                self.rest_faults.remove(rule)
            return rule.status
        return None

    async def before_request(self) -> None:
        """What every REST call goes through first (Binance and Bybit alike): the injected
        delay. The caller reads the request after it (a client gone meanwhile sent nothing that
        gets served), then asks :meth:`take_rest_fault`."""
        if self.rest_delay_ms > 0:
            await asyncio.sleep(self.rest_delay_ms / 1000)

    async def before_answer(self, path: str = "", method: str = "", text: str = "") -> None:
        """What every served REST call goes through before its answer is sent (it has been
        applied already)."""
        if self.rest_answer_delay_ms > 0:
            await asyncio.sleep(self.rest_answer_delay_ms / 1000)
        hold = next((h for h in self.answer_holds if h.matches(path, method, text)), None)
        if hold is None:
            return
        hold.count -= 1
        if hold.count <= 0:
            self.answer_holds.remove(hold)
        hold.applied += 1
        hold.holding += 1
        self._holding.append(hold)
        try:
            await asyncio.wait_for(hold.released.wait(), hold.seconds)
        except TimeoutError:
            pass
        finally:
            hold.holding -= 1
            i = next(i for i, h in enumerate(self._holding) if h is hold)
            del self._holding[i]

    def release_answers(self) -> None:
        """Send every held answer now and hold no more (a venue shutting down)."""
        self.answer_holds.clear()
        for hold in list(self._holding):
            hold.released.set()

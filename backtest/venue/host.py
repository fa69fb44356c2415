"""What an API dialect may use of the venue it serves: the protocol-neutral core's parts.

The dialect packages (:mod:`backtest.venue.binance`, :mod:`backtest.venue.bybit`) are given an
object with this face (the :class:`backtest.venue.server.Venue`), so they never import the
server that assembles them, nor each other.
"""

from __future__ import annotations

from typing import Any, Protocol

from .faults import Faults
from .matching import MatchingEngine
from .ratelimit import IpBudget

__all__ = ["HostConfig", "VenueHost"]


class HostConfig(Protocol):
    """The settings a dialect reads (``backtest.venue.server.VenueConfig`` has them)."""

    recv_window_ms: int
    weight_limit_per_minute: int


class VenueHost(Protocol):
    @property
    def config(self) -> HostConfig: ...

    @property
    def engine(self) -> MatchingEngine: ...

    @property
    def faults(self) -> Faults: ...

    @property
    def ip_budget(self) -> IpBudget: ...

    @property
    def candles(self) -> Any: ...

    @property
    def index(self) -> int:
        """The next candle to apply: candles before it are the replay's past."""
        ...

    @property
    def listen_keys(self) -> dict[str, str]:
        """listenKey -> API key (Binance's user streams)."""
        ...

    def flush_events(self) -> None:
        """Send the engine's pending account and order events to every dialect's streams."""

    def listen_key_for(self, api_key: str, *, create: bool = True) -> str | None: ...

    def close_listen_key(self, api_key: str) -> None: ...

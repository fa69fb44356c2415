"""The simulated exchange on 127.0.0.1: a protocol-neutral core and one package per API dialect.

Core (no exchange's wire format, imports no dialect):

- :mod:`.matching` -- accounts, orders, fills, funding, liquidation (pure, no I/O)
- :mod:`.refusals` -- why the core refuses a request (:class:`Refusal`), in no exchange's terms
- :mod:`.ratelimit` -- the one IP request budget; :mod:`.faults` -- injected REST faults
- :mod:`.hub` -- the one websocket port, routing connections to dialects by path
- :mod:`.wire` -- clock and number formatting every dialect shares
- :mod:`.host` -- what a dialect may use of the venue (a protocol)
- :mod:`.risk`, :mod:`.scenario` -- the exchange's own risk engine and its scenarios

Dialects (each maps the core's refusals to its own codes; neither imports the other):

- :mod:`.binance` -- Binance USDT-M ``/fapi`` REST, websocket streams, wire formats, errors
- :mod:`.bybit` -- Bybit v5 linear REST under ``/v5/``, ``/v5/public/linear`` and ``/v5/private``

On top: :mod:`.server` (:class:`Venue`: the replay driver that assembles core and dialects,
fault injection; :class:`VenueThread`) and :mod:`.chaos` (scheduled faults for soak runs).
"""

from __future__ import annotations

from .faults import Faults, RestFault
from .matching import MatchingEngine, candle_trades
from .refusals import Refusal, Refused
from .server import Venue, VenueConfig, VenueThread

__all__ = [
    "Faults",
    "MatchingEngine",
    "Refusal",
    "Refused",
    "RestFault",
    "Venue",
    "VenueConfig",
    "VenueThread",
    "candle_trades",
]

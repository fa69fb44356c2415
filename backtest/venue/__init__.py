"""The simulated exchange: Binance USDT-M REST and websocket formats on 127.0.0.1.

- :mod:`.matching` -- accounts, orders, fills, funding, liquidation (pure, no I/O)
- :mod:`.formats`  -- Binance wire formats
- :mod:`.rest`, :mod:`.streams` -- the aiohttp REST API and the websockets server
- :mod:`.server`   -- :class:`Venue` (replay driver + fault injection), :class:`VenueThread`
- :mod:`.bybit_formats`, :mod:`.bybit_rest`, :mod:`.bybit_streams` -- the same venue in Bybit v5
  (linear) formats: REST under ``/v5/``, websockets ``/v5/public/linear`` and ``/v5/private``;
  :mod:`.bybit_ccxt` points ccxt's ``bybit`` at it
"""

from __future__ import annotations

from .faults import Faults, RestFault
from .matching import ApiError, MatchingEngine, candle_trades
from .server import Venue, VenueConfig, VenueThread

__all__ = [
    "ApiError",
    "Faults",
    "MatchingEngine",
    "RestFault",
    "Venue",
    "VenueConfig",
    "VenueThread",
    "candle_trades",
]

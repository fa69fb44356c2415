"""The exchange boundary: everything the live bot knows of an exchange, in gridbot terms.

- :mod:`.base` -- the adapter protocol the live bot uses, and the account snapshot
- :mod:`.registry` -- exchange name -> adapter class (``make_adapter``)
- :mod:`.ccxt_base` -- what every ccxt dialect shares: error translation, request plumbing
- :mod:`.rewire` -- the one ccxt URL rewirer (point ccxt at a local venue)
- :mod:`.streams` -- one self-healing websocket connection, shared by the dialects
- :mod:`.events`, :mod:`.order`, :mod:`.client_ids` -- neutral events, orders and client ids
- :mod:`.binance`, :mod:`.bybit` -- one package per exchange: REST, streams, wire formats
"""

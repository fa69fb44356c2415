"""The venue in Binance USDT-M's dialect: ``/fapi`` REST (:mod:`.rest`), websocket streams
(:mod:`.streams`), wire formats (:mod:`.formats`) and error codes (:mod:`.errors`)."""

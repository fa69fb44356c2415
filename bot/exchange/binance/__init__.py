"""Binance USDT-M: REST (:mod:`.rest`) and websocket streams (:mod:`.streams`)."""

"""Bybit v5 linear: REST (:mod:`.rest`), wire formats (:mod:`.format`), streams (:mod:`.streams`)."""

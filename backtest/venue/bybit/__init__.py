"""The venue in Bybit v5 linear's dialect: REST under ``/v5/`` (:mod:`.rest`, with its retCodes),
websockets ``/v5/public/linear`` and ``/v5/private`` (:mod:`.streams`), formats (:mod:`.formats`)."""

"""One traded coin's market side in the live bot: its market spec, EMAs, latest price, and the
primitives its cycle task waits on. Its position and orders live in :mod:`bot.live.book`."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import numpy as np

from bot.core.forager import N_FORAGE
from bot.core.trailing import trail_empty
from bot.live.revisions import REVISIONS
from bot.markets import MarketSpec

__all__ = ["Coin"]


@dataclass
class Coin:
    symbol: str
    spec: MarketSpec
    market: np.ndarray
    emas: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)))  # [long, short] x 3
    last_kline_ts: int = -1  # open time of the last closed kline in the EMAs
    last_price: float = math.nan
    kline_close: float = math.nan  # the close of the kline at last_kline_ts (the hard stop)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one cycle or catch-up at a time
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done_ts: int = -1  # lockstep: the last kline whose orders are reconciled
    busy: bool = False  # a cycle is running (woken and not yet finished)
    catching_up: bool = False  # klines are being fetched by REST
    # (open ms, close, high, low, volume)
    pending_klines: list[tuple[int, float, float, float, float]] = field(default_factory=list)
    # the forager (bot.core.forager): [long, short] x [volume EMA, range EMA], and when the
    # coin may open a position (approved, not ignored, old enough)
    fema: np.ndarray = field(default_factory=lambda: np.zeros((2, N_FORAGE)))
    eligible_from_ms: int = -(2**63)
    # trailing, per side [long, short]: the price extremes of the klines after the one the
    # position last changed in (bot.core.trailing), the position they belong to, and the open
    # time of the kline of that change (klines up to it are left out)
    trails: np.ndarray = field(default_factory=lambda: np.stack([trail_empty(), trail_empty()]))
    trail_pos: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 0.0)] * 2)
    trail_since_ms: list[int] = field(default_factory=lambda: [-1, -1])

    def __setattr__(self, name: str, value: object) -> None:
        # the minute's cached forager slots read these (bot.live.revisions); an in-place
        # write of ``fema`` (a kline's EMA update) bumps REVISIONS.emas itself
        if name == "fema":
            REVISIONS.emas += 1
        elif name == "eligible_from_ms":
            REVISIONS.slots += 1
        object.__setattr__(self, name, value)

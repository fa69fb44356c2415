"""How the live bot's time passes: real time (trading) or lockstep (replay against the venue).

The bot asks its pacing object instead of branching on a mode. Real time: the latest trade is
the price and wakes a cycle, cycles are spaced by ``execution_delay_seconds``, orders are
matched within the configured tolerances, the candle still open is dropped by the wall clock.
Lockstep: a cycle runs only on a closed kline, with the kline's close as the price and exact
orders, and the venue serves closed candles only (its time is not the wall clock); where the
private data has a socket of its own, each candle's fills, balance and positions are taken by
REST before the cycle, since nothing on that socket says when a candle's messages are complete.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

__all__ = ["Lockstep", "Pacing", "RealTime"]

MINUTE_MS = 60_000


class Pacing:
    """Real time (the default)."""

    #: trade messages set the price and wake a cycle
    trade_prices = True
    #: a fill wakes its coin's cycle at once
    wake_on_fill = True

    def order_tolerances(self, price_threshold: float, qty_threshold: float) -> tuple[float, float]:
        return price_threshold, qty_threshold

    async def space_cycles(self, last_cycle_monotonic: float, delay_seconds: float) -> None:
        wait = last_cycle_monotonic + delay_seconds - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def closed_klines(self, rows: np.ndarray, server_now_ms: int) -> np.ndarray:
        """Drop the candle still open (by the exchange's clock)."""
        return rows[rows[:, 0] + MINUTE_MS <= server_now_ms]

    def asks_server_time(self) -> bool:
        return True

    #: seconds at least between two REST reconciliations asked for one after another (a busy
    #: account would otherwise keep the book in doubt, with no entries, for good)
    sync_spacing_seconds = 1.0

    def candle_snapshots(self, user_stream_shared: bool) -> bool:
        """Take each candle's account state by REST before the cycle?"""
        return False

    def user_stream_on_market_connection(self, can_share: bool) -> bool:
        return False

    #: every state write waits for the disk (see :class:`bot.live.state.StateStore`)
    fsync_state = True


class RealTime(Pacing):
    """Trading: the market's own time."""


class Lockstep(Pacing):
    """Replay: one cycle per closed kline; the driver waits for it before the next candle."""

    trade_prices = False
    wake_on_fill = False

    def order_tolerances(self, price_threshold: float, qty_threshold: float) -> tuple[float, float]:
        return 0.0, 0.0

    async def space_cycles(self, last_cycle_monotonic: float, delay_seconds: float) -> None:
        return None

    def closed_klines(self, rows: np.ndarray, server_now_ms: int) -> np.ndarray:
        return rows  # the venue serves closed candles only

    def asks_server_time(self) -> bool:
        return False

    sync_spacing_seconds = 0.0  # the driver waits for every sync before the next candle

    # a replay's crashes are the process's (a cancelled task), never the machine's: the
    # state survives them without an fsync per candle (which cost ~5 ms per coin-candle)
    fsync_state = False

    def candle_snapshots(self, user_stream_shared: bool) -> bool:
        return not user_stream_shared

    def user_stream_on_market_connection(self, can_share: bool) -> bool:
        # one connection for both keeps a candle's fills ahead of its kline (Binance)
        return can_share

"""Config + candles -> engine inputs -> engine run: the one path every backtest takes
(`gridbot backtest`, the optimizer's trials, replay's comparison)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backtest.data import Candles
from backtest.engine import EngineInputs, EngineOutput, run_engine
from backtest.events import OutsideEvent, events_array
from bot.config import Config, side_params_array, warmup_candles
from bot.core.margin import stack_tiers
from bot.core.params import P_EMA_SPAN_0, P_EMA_SPAN_1
from bot.markets import market_spec

__all__ = ["BacktestRun", "build_inputs", "run_backtest", "warmup_candles"]


@dataclass(frozen=True)
class BacktestRun:
    config: Config
    candles: Candles
    inputs: EngineInputs
    output: EngineOutput


def build_inputs(
    config: Config, candles: Candles, events: Sequence[OutsideEvent] = ()
) -> EngineInputs:
    """Arrays for the kernel from a validated config, loaded candles and outside events."""
    specs = [market_spec(s) for s in candles.symbols]
    minutes_per_candle = candles.timeframe_ms / 60_000
    params = []
    for side in (config.bot.long, config.bot.short):
        p = side_params_array(side)
        # EMA spans are in minutes; the kernel advances the EMAs once per candle.
        p[P_EMA_SPAN_0] = side.ema_span_0 / minutes_per_candle
        p[P_EMA_SPAN_1] = side.ema_span_1 / minutes_per_candle
        params.append(p)
    return EngineInputs(
        timestamps=np.asarray(candles.timestamps, dtype=np.int64),
        ohlcv=candles.ohlcv,
        markets=np.stack([s.as_array() for s in specs]),
        tiers=stack_tiers([s.tiers for s in specs]),
        params_long=params[0],
        params_short=params[1],
        n_positions_long=config.bot.long.n_positions,
        n_positions_short=config.bot.short.n_positions,
        starting_balance=config.backtest.starting_balance,
        maker_fee=config.backtest.maker_fee,
        funding_rate=config.backtest.funding_rate_8h,
        trade_start=min(warmup_candles(config, candles.timeframe_ms), len(candles.timestamps) - 1),
        events=events_array(events, candles.symbols),
    )


def run_backtest(
    config: Config, candles: Candles, events: Sequence[OutsideEvent] = ()
) -> BacktestRun:
    """Run the engine over ``candles`` with ``config`` (and outside events, if any)."""
    inputs = build_inputs(config, candles, events)
    return BacktestRun(config, candles, inputs, run_engine(inputs))

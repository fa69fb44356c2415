"""Config + candles -> engine inputs -> engine run: the one path every backtest takes
(`gridbot backtest`, the optimizer's trials, replay's comparison)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backtest.data import Candles
from backtest.engine import EngineInputs, EngineOutput, run_engine
from backtest.events import OutsideEvent, events_array
from backtest.funding import FundingPlan, funding_matrix
from bot.config import (
    Config,
    VaultConfig,
    hard_stop_params_array,
    side_params_array,
    warmup_candles,
)
from bot.core import params as P
from bot.core.forager import eligible_from_ms
from bot.core.margin import stack_tiers
from bot.core.params import P_EMA_SPAN_0, P_EMA_SPAN_1
from bot.markets import market_spec

__all__ = ["BacktestRun", "build_inputs", "funding_plan", "run_backtest", "warmup_candles"]


@dataclass(frozen=True)
class BacktestRun:
    config: Config
    candles: Candles
    inputs: EngineInputs
    output: EngineOutput
    funding: FundingPlan | None = None  # which symbols were charged the exchange's history


def funding_plan(config: Config, candles: Candles) -> FundingPlan:
    """The exchange's funding history next to the candle files, else the constant rate."""
    return funding_matrix(
        candles.symbols, candles.timestamps, candles.timeframe_ms,
        config.backtest.funding_rate_8h, candles.sources,
    )  # fmt: skip


def build_inputs(
    config: Config,
    candles: Candles,
    events: Sequence[OutsideEvent] = (),
    funding: FundingPlan | None = None,
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
        p[P.P_FILTER_VOLUME_WINDOW] = side.filter_volume_rolling_window / minutes_per_candle
        p[P.P_FILTER_VOLATILITY_WINDOW] = side.filter_volatility_rolling_window / minutes_per_candle
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
        funding=(funding or funding_plan(config, candles)).rates,
        eligible_from_ms=coins_eligible_from(config, candles),
        hard_stop=hard_stop_params_array(config),
        taker_fee=config.backtest.taker_fee,
        # a vault (vault.enabled) sizes as the live bot does: the cash buffer kept out, entries
        # blocked above the leverage cap or under the margin buffer
        **(vault_sizing(config.vault) if config.vault.enabled else {}),
    )


def coins_eligible_from(config: Config, candles: Candles) -> np.ndarray:
    """The forager's coins (live.approved_coins, ignored_coins, minimum_coin_age_days): per
    coin, when it may open a position; its age counts from its first candle in the data."""
    live = config.live
    first = np.full(len(candles.symbols), int(candles.timestamps[0]), dtype=np.int64)
    return eligible_from_ms(
        candles.symbols, live.approved_coins, live.ignored_coins, first, live.minimum_coin_age_days
    )


def vault_sizing(vault: VaultConfig) -> dict[str, float]:
    """The engine's vault sizing fields (``EngineInputs``) for a vault config."""
    return {
        "sizing_fraction": 1.0 - vault.cash_buffer_pct,
        "leverage_cap": vault.leverage_cap,
        "margin_buffer_pct": vault.margin_buffer_pct,
    }


def run_backtest(
    config: Config, candles: Candles, events: Sequence[OutsideEvent] = ()
) -> BacktestRun:
    """Run the engine over ``candles`` with ``config`` (and outside events, if any)."""
    plan = funding_plan(config, candles)
    inputs = build_inputs(config, candles, events, plan)
    return BacktestRun(config, candles, inputs, run_engine(inputs), plan)

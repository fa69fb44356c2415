"""The candles every trial runs on, loaded once per process (memory-mapped .npy cache)."""

from __future__ import annotations

from pathlib import Path

from backtest.data import Candles, load_candles, parse_date_ms
from bot.config import Config

__all__ = ["cache_dir", "load_backtest_candles"]


def load_backtest_candles(config: Config, cache_dir: str | Path | None = None) -> Candles:
    """Candles of ``config.backtest``: data, symbols, [start_date, end_date) in UTC."""
    bt = config.backtest
    return load_candles(
        bt.data,
        bt.symbols,
        start_ms=parse_date_ms(bt.start_date) if bt.start_date else None,
        end_ms=parse_date_ms(bt.end_date) if bt.end_date else None,
        max_gap_minutes=bt.max_gap_minutes,
        cache_dir=cache_dir,
    )


def cache_dir(config: Config) -> Path:
    return Path(config.backtest.results_dir) / "cache"  # the one `gridbot backtest` fills too

"""The README documents every config key and every metric a backtest reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import (
    KNOWN_METRICS,
    BacktestConfig,
    LiveConfig,
    OptimizeConfig,
    SideConfig,
    VaultConfig,
)

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()

KEYS = (
    [f"bot.long.{k}" for k in SideConfig.model_fields]
    + [f"live.{k}" for k in LiveConfig.model_fields]
    + [f"backtest.{k}" for k in BacktestConfig.model_fields]
    + [f"optimize.{k}" for k in OptimizeConfig.model_fields]
    + [f"vault.{k}" for k in VaultConfig.model_fields]
)


@pytest.mark.parametrize("key", KEYS)
def test_every_config_key_is_in_the_readme(key: str):
    assert f"`{key}`" in README


@pytest.mark.parametrize("metric", KNOWN_METRICS)
def test_every_metric_is_defined_in_the_readme(metric: str):
    assert f"`{metric}`" in README

"""The search space: ``optimize.bounds`` -> Optuna parameters, and a trial's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from bot.config import (
    HARD_STOP_BOUND_PREFIX,
    Config,
    HardStopConfig,
    SideConfig,
    with_overrides,
)
from bot.errors import ConfigError

__all__ = ["ParamSpec", "build_search_space", "trial_config"]


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: dotted key, Optuna distribution bounds, and its type."""

    key: str  # bot.long.<param>, bot.short.<param>, bot.common.equity_hard_stop_loss.<param>
    low: float
    high: float
    step: float | None
    is_int: bool

    def suggest(self, trial: Any) -> float | int:
        if self.is_int:
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1)
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step)

    def distribution(self) -> Any:
        """The Optuna distribution ``suggest`` draws from."""
        import optuna

        if self.is_int:
            return optuna.distributions.IntDistribution(
                int(self.low), int(self.high), step=int(self.step or 1)
            )
        return optuna.distributions.FloatDistribution(self.low, self.high, step=self.step)


def _field_is_int(name: str) -> bool:
    return SideConfig.model_fields[name].annotation is int


def _searched(config: Config, key: str, where: str) -> tuple[str, bool]:
    """(parameter name, is it an integer) of a bound's key; an error when it changes nothing."""
    if key.startswith(HARD_STOP_BOUND_PREFIX):  # the config validator checked the name
        if not config.bot.common.equity_hard_stop_loss.enabled:
            raise ConfigError(
                f"{where}: bot.common.equity_hard_stop_loss.enabled is false, so this "
                f"parameter changes nothing; enable the hard stop or drop the bound"
            )
        return key.removeprefix(HARD_STOP_BOUND_PREFIX), False
    _, side, name = key.split(".")  # the config validator already checked the shape
    if name not in SideConfig.model_fields or name == "enabled":
        raise ConfigError(f"{where}: unknown parameter {name!r}")
    if not config.side(side).enabled:
        raise ConfigError(
            f"{where}: bot.{side}.enabled is false, so this parameter changes nothing; "
            f"enable the side or drop the bound"
        )
    return name, _field_is_int(name)


def build_search_space(config: Config) -> list[ParamSpec]:
    """``optimize.bounds`` -> parameter specs, checked against the config's own ranges.

    Each bound's low and high are applied to the config (``with_overrides``) here, so a bound
    outside what the parameter allows fails now, naming the key, not in every trial.
    """
    bounds = config.optimize.bounds
    if not bounds:
        raise ConfigError("optimize.bounds: empty; name at least one bot.long.<param> to search")
    specs: list[ParamSpec] = []
    for key, b in bounds.items():
        where = f"optimize.bounds.{key}"
        low, high = float(b[0]), float(b[1])
        step = float(b[2]) if len(b) == 3 else None
        if low > high:
            raise ConfigError(f"{where}: low {low:g} must not be above high {high:g}")
        name, is_int = _searched(config, key, where)
        if is_int:
            for label, v in (("low", low), ("high", high), ("step", step)):
                if v is not None and v != int(v):
                    raise ConfigError(f"{where}: {name} is an integer; {label} {v:g} is not")
        for label, v in (("low", low), ("high", high)):
            try:
                with_overrides(config, {key: int(v) if is_int else v})
            except ConfigError as exc:
                detail = str(exc).split("\n", 1)[-1].strip()
                raise ConfigError(f"{where}: {label} {v:g} is not allowed: {detail}") from None
        specs.append(ParamSpec(key, low, high, step, is_int))
    return specs


def trial_config(config: Config, params: dict[str, float | int]) -> Config:
    """The config a trial ran: ``config`` with the trial's parameters set (validated).

    Only the changed sides are validated again (a whole-config round trip costs ~2 ms, a
    quarter of a short trial); no validator looks across sections, so this is the same check.
    A value the side refuses goes through ``with_overrides`` for its error naming the key."""
    changes: dict[str, dict[str, float | int]] = {}
    hsl_changes: dict[str, float | int] = {}
    for key, value in params.items():
        if key.startswith(HARD_STOP_BOUND_PREFIX):
            hsl_changes[key.removeprefix(HARD_STOP_BOUND_PREFIX)] = value
            continue
        _, side, name = key.split(".")
        changes.setdefault(side, {})[name] = value
    hsl = config.bot.common.equity_hard_stop_loss
    try:
        sides: dict[str, Any] = {
            side: SideConfig.model_validate_json(
                orjson.dumps({**config.side(side).model_dump(), **ch}), strict=True
            )
            for side, ch in changes.items()
        }
        if hsl_changes:
            hsl = HardStopConfig.model_validate_json(
                orjson.dumps({**hsl.model_dump(), **hsl_changes}), strict=True
            )
    except ValidationError:
        return with_overrides(config, dict(params))  # raises the ConfigError naming the key
    if hsl_changes:
        common = config.bot.common.model_copy(update={"equity_hard_stop_loss": hsl})
        sides["common"] = common
    return config.model_copy(update={"bot": config.bot.model_copy(update=sides)})

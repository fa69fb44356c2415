"""hjson config -> validated, typed, frozen objects.

Every key is declared here with its type, range and default; an unknown key, a wrong type or a
value out of range is a :class:`~bot.errors.ConfigError` that names the key (dotted path), the
value given and what is allowed. Nothing a user set wrong silently defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import hjson
import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.core import hard_stop as H
from bot.core import params as P
from bot.core.margin import LeverageCheck, check_leverage
from bot.errors import ConfigError
from bot.inputs import (
    MAX_CONFIG_BYTES,
    MAX_NESTING,
    check_symbols,
    check_url,
    decode_text,
    read_file,
    source_tree_part,
)

__all__ = [
    "warmup_candles",
    "AlertsConfig",
    "BacktestConfig",
    "Config",
    "LiveConfig",
    "OptimizeConfig",
    "SideConfig",
    "SIDE_PARAMS",
    "VaultConfig",
    "KNOWN_METRICS",
    "HARD_STOP_BOUND_PARAMS",
    "HARD_STOP_BOUND_PREFIX",
    "config_to_dict",
    "load_config",
    "parse_config",
    "read_hjson",
    "check_config_leverage",
    "side_params_array",
]

# The hard stop's keys optimize.bounds may search (bot.common.equity_hard_stop_loss.<key>)
HARD_STOP_BOUND_PREFIX = "bot.common.equity_hard_stop_loss."
HARD_STOP_BOUND_PARAMS = ("red_threshold", "ema_span_minutes", "cooldown_minutes_after_red")

# Metrics a backtest reports (backtest.metrics produces exactly these); objectives and
# constraints of the optimizer may name any of them.
KNOWN_METRICS = (
    "final_balance",
    "final_equity",
    "gain",
    "adg",
    "daily_gain_mean",
    "mdg",
    "sharpe_ratio",
    "sortino_ratio",
    "drawdown_worst",
    "calmar_ratio",
    "loss_profit_ratio",
    "n_fills",
    "fees_paid",
    "funding_paid",
    "wallet_exposure_max",
    "wallet_exposure_mean",
    "hours_stuck_max",
    "position_held_hours_max",
    "bankruptcy_distance_min_pct",
    "liquidated",
    "hard_stop_triggers",
    "hard_stop_restarts",
    "hard_stop_time_in_yellow_pct",
    "hard_stop_time_in_orange_pct",
    "hard_stop_time_in_red_pct",
    "hard_stop_trigger_drawdown_mean",
    "hard_stop_panic_close_loss_sum",
    "hard_stop_duration_minutes_max",
)


def _symbols(v: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(check_symbols(v, "symbols"))
    except ConfigError as exc:  # pydantic reports ValueErrors with the key and the value
        raise ValueError(str(exc).removeprefix("symbols: ")) from None


def _outside_source_tree(folder: str) -> str:
    """A folder runs write into must not lie in the source tree (relative: from the cwd)."""
    part = source_tree_part(folder)
    if part is not None:
        raise ValueError(
            f"inside the source tree ({part}); results never go there: use e.g. 'results' "
            f"(a relative path is taken from the current folder)"
        )
    return folder


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


class SideConfig(_Strict):
    """Strategy parameters of one side (long or short). Names follow Passivbot's."""

    enabled: bool = True
    total_wallet_exposure_limit: float = Field(1.0, ge=0.0, le=100.0)
    n_positions: int = Field(1, ge=1, le=1000)
    entry_initial_qty_pct: float = Field(0.015, gt=0.0, le=1.0)
    entry_initial_ema_dist: float = Field(0.003, ge=-0.1, le=0.5)
    entry_grid_spacing_pct: float = Field(0.02, gt=0.0, le=1.0)
    entry_grid_spacing_weight: float = Field(1.0, ge=0.0, le=100.0)
    entry_grid_double_down_factor: float = Field(1.0, ge=0.0, le=10.0)
    ema_span_0: float = Field(240.0, ge=1.0, le=100_000.0)
    ema_span_1: float = Field(720.0, ge=1.0, le=100_000.0)
    close_grid_min_markup: float = Field(0.005, ge=0.0, le=1.0)
    close_grid_markup_range: float = Field(0.01, ge=0.0, le=10.0)
    close_grid_qty_pct: float = Field(0.25, ge=0.01, le=1.0)
    unstuck_threshold: float = Field(0.8, gt=0.0, le=1.0)
    unstuck_close_pct: float = Field(0.05, ge=0.0, le=1.0)
    unstuck_ema_dist: float = Field(0.0, ge=-0.1, le=0.5)
    unstuck_loss_allowance_pct: float = Field(0.02, ge=0.0, le=1.0)
    enforce_exposure_limit: bool = False
    # trailing (README "Trailing entries and closes"); a grid ratio of 0 keeps trailing off
    entry_trailing_threshold_pct: float = Field(0.0, ge=-1.0, le=1.0)
    entry_trailing_retracement_pct: float = Field(0.0, ge=0.0, le=1.0)
    entry_trailing_grid_ratio: float = Field(0.0, ge=-1.0, le=1.0)
    close_trailing_threshold_pct: float = Field(0.0, ge=-1.0, le=1.0)
    close_trailing_retracement_pct: float = Field(0.0, ge=0.0, le=1.0)
    close_trailing_grid_ratio: float = Field(0.0, ge=-1.0, le=1.0)
    close_trailing_qty_pct: float = Field(1.0, ge=0.01, le=1.0)
    # the forager (README "The forager"): EMA spans in minutes, 0 = not ranked by it
    filter_volume_rolling_window: float = Field(0.0, ge=0.0, le=100_000.0)
    filter_volatility_rolling_window: float = Field(0.0, ge=0.0, le=100_000.0)
    filter_volume_drop_pct: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _drop_needs_window(self) -> SideConfig:
        if self.filter_volume_drop_pct > 0.0 and self.filter_volume_rolling_window <= 0.0:
            raise ValueError(
                "filter_volume_drop_pct needs filter_volume_rolling_window > 0 (the volume "
                "it drops by)"
            )
        return self

    @property
    def wallet_exposure_limit(self) -> float:
        """A single position's limit: total_wallet_exposure_limit / n_positions."""
        return self.total_wallet_exposure_limit / self.n_positions


SIDE_PARAMS = tuple(k for k in SideConfig.model_fields)


class TierRatios(_Strict):
    """The hard stop's warning tiers, as fractions of ``red_threshold``."""

    yellow: float = Field(0.5, gt=0.0, lt=1.0)
    orange: float = Field(0.75, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> TierRatios:
        if self.yellow > self.orange:
            raise ValueError(f"yellow ({self.yellow}) must not be above orange ({self.orange})")
        return self


class HardStopConfig(_Strict):
    """The equity hard stop loss (``bot.core.hard_stop``; README "Equity hard stop loss").
    Names and defaults follow Passivbot's ``bot.common.equity_hard_stop_loss``."""

    enabled: bool = False
    red_threshold: float = Field(0.25, gt=0.0, lt=1.0)
    ema_span_minutes: float = Field(60.0, ge=1.0, le=100_000.0)
    cooldown_minutes_after_red: float = Field(0.0, ge=0.0, le=525_600.0)
    no_restart_drawdown_threshold: float = Field(1.0, gt=0.0, le=1.0)
    tier_ratios: TierRatios = TierRatios()
    orange_tier_mode: Literal["graceful_stop", "tp_only_with_active_entry_cancellation"] = (
        "tp_only_with_active_entry_cancellation"
    )
    panic_close_order_type: str = "market"

    @field_validator("panic_close_order_type")
    @classmethod
    def _market_only(cls, v: str) -> str:
        if v != "market":
            raise ValueError(
                "only 'market' is supported: a hard stop must close in a crash, and a limit "
                "order at the book may never fill while the price runs away"
            )
        return v


class CommonConfig(_Strict):
    """Account-wide settings (both sides)."""

    equity_hard_stop_loss: HardStopConfig = HardStopConfig()


class BotConfig(_Strict):
    long: SideConfig = SideConfig()
    short: SideConfig = SideConfig(enabled=False)
    common: CommonConfig = CommonConfig()


class AlertsConfig(_Strict):
    """Webhook alerts of the live bot (``bot.live.alerts``)."""

    url: str | None = None
    url_env: str = "GRIDBOT_ALERTS_URL"
    format: Literal["json", "telegram", "discord"] = "json"
    telegram_chat_id: str | int | None = None
    liquidation_distance_pct: float = Field(10.0, ge=0.0, le=100.0)
    stream_down_seconds: float = Field(120.0, gt=0.0, le=86_400.0)
    repeated_errors: int = Field(5, ge=1, le=10_000)
    repeated_errors_minutes: float = Field(10.0, gt=0.0, le=1440.0)
    fills: bool = False


class LiveConfig(_Strict):
    """How the live bot talks to the exchange."""

    exchange: Literal["binance", "bybit", "sim"] = "binance"
    symbols: tuple[str, ...] = ()
    leverage: float = Field(10.0, gt=0.0, le=125.0)
    margin_mode: Literal["cross"] = "cross"
    execution_delay_seconds: float = Field(2.0, ge=0.0, le=600.0)
    price_distance_threshold: float = Field(0.002, ge=0.0, le=0.5)
    qty_distance_threshold: float = Field(0.01, ge=0.0, le=0.5)
    max_orders_per_batch: int = Field(20, ge=1, le=50)
    cancel_orders_on_stop: bool = False
    api_key_env: str = "GRIDBOT_API_KEY"
    api_secret_env: str = "GRIDBOT_API_SECRET"
    key_file: str | None = None
    state_dir: str = "results/live"
    stream_silence_timeout_seconds: float = Field(30.0, gt=0.0, le=3600.0)
    rest_sync_interval_seconds: float = Field(60.0, gt=0.0, le=3600.0)
    base_url: str | None = None
    ws_url: str | None = None
    status_port: int | None = Field(8765, ge=0, le=65535)
    status_host: str = "127.0.0.1"
    status_token_env: str = "GRIDBOT_STATUS_TOKEN"
    log_file: str | None = "results/live/gridbot.jsonl"
    log_max_mb: float = Field(10.0, gt=0.0, le=10_000.0)
    log_backups: int = Field(5, ge=0, le=1000)
    heartbeat_minutes: float = Field(60.0, ge=0.0, le=1440.0)
    # the forager's coins (README "The forager"; the backtest applies them too)
    approved_coins: tuple[str, ...] | Literal["all"] = "all"
    ignored_coins: tuple[str, ...] = ()
    minimum_coin_age_days: float = Field(0.0, ge=0.0, le=10_000.0)
    alerts: AlertsConfig = AlertsConfig()

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _symbols(v) if v else v

    @field_validator("approved_coins", mode="before")
    @classmethod
    def _approved(cls, v: Any) -> Any:
        if v == "all":
            return v
        if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
            raise ValueError('must be a list of symbols or "all"')
        if not v:
            raise ValueError('needs at least one symbol, or "all"')
        return _symbols(tuple(v))

    @field_validator("ignored_coins")
    @classmethod
    def _ignored(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _symbols(v) if v else v

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, v: str) -> str:
        return _outside_source_tree(v)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v, ("http", "https"))

    @field_validator("ws_url")
    @classmethod
    def _ws_url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v, ("ws", "wss"))


class BacktestConfig(_Strict):
    """What the backtester runs on and how it books money."""

    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "DOGEUSDT")
    data: str = "data/sample/binance_spot_1m"
    start_date: str | None = None
    end_date: str | None = None
    starting_balance: float = Field(10_000.0, gt=0.0, le=1e12)
    maker_fee: float = Field(0.0002, ge=-0.001, le=0.01)
    taker_fee: float = Field(0.0005, ge=0.0, le=0.01)
    funding_rate_8h: float = Field(0.0001, ge=-0.01, le=0.01)
    max_gap_minutes: float = Field(1440.0, ge=0.0, le=100_000.0)
    warmup_minutes: float | Literal["auto"] = "auto"
    results_dir: str = "results"

    @field_validator("symbols")
    @classmethod
    def _symbols_nonempty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one symbol")
        return _symbols(v)

    @field_validator("results_dir")
    @classmethod
    def _results_dir(cls, v: str) -> str:
        return _outside_source_tree(v)

    @field_validator("warmup_minutes")
    @classmethod
    def _warmup(cls, v: float | str) -> float | str:
        if v != "auto" and not (0 <= float(v) <= 100_000):
            raise ValueError("must be 'auto' or minutes between 0 and 100000")
        return v


class Objective(_Strict):
    metric: str
    direction: Literal["maximize", "minimize"]

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in KNOWN_METRICS:
            raise ValueError(f"unknown metric {v!r}; known: {', '.join(KNOWN_METRICS)}")
        return v


class Limit(_Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some(self) -> Limit:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class OptimizeConfig(_Strict):
    """Offline search over `bot.long.*` / `bot.short.*` parameters with Optuna."""

    n_trials: int = Field(100, ge=1, le=1_000_000)
    workers: int | None = Field(None, ge=1, le=256)
    seed: int | None = 42
    storage: str | None = None
    study_name: str | None = None
    sampler: Literal["tpe", "nsga2"] = "tpe"
    bounds: dict[str, tuple[float, float] | tuple[float, float, float]] = {
        "bot.long.total_wallet_exposure_limit": (0.3, 3.0),
        "bot.long.n_positions": (1, 3, 1),
        "bot.long.entry_grid_spacing_pct": (0.005, 0.05),
    }
    objectives: tuple[Objective, ...] = (
        Objective(metric="adg", direction="maximize"),
        Objective(metric="drawdown_worst", direction="minimize"),
    )
    constraints: dict[str, Limit] = {
        "drawdown_worst": Limit(max=0.5),
        "hours_stuck_max": Limit(max=240.0),
    }

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: dict) -> dict:
        for key, b in v.items():
            parts = key.split(".")
            if key.startswith(HARD_STOP_BOUND_PREFIX):
                if len(parts) != 4 or parts[3] not in HARD_STOP_BOUND_PARAMS:
                    raise ValueError(
                        f"{key!r}: the hard stop's searchable keys are "
                        + ", ".join(HARD_STOP_BOUND_PREFIX + p for p in HARD_STOP_BOUND_PARAMS)
                    )
            elif len(parts) != 3 or parts[0] != "bot" or parts[1] not in ("long", "short"):
                raise ValueError(
                    f"{key!r}: a bound names bot.long.<param>, bot.short.<param> or "
                    f"{HARD_STOP_BOUND_PREFIX}<param>"
                )
            elif parts[2] not in SIDE_PARAMS or parts[2] == "enabled":
                raise ValueError(
                    f"{key!r}: unknown parameter {parts[2]!r}; known: "
                    + ", ".join(p for p in SIDE_PARAMS if p != "enabled")
                )
            low, high = b[0], b[1]
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"{key!r}: low {low} must not be above high {high}")
            if len(b) == 3 and not b[2] > 0:
                raise ValueError(f"{key!r}: step {b[2]} must be positive")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: tuple) -> tuple:
        if not v:
            raise ValueError("needs at least one objective")
        return v

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: dict) -> dict:
        for key in v:
            if key not in KNOWN_METRICS:
                raise ValueError(f"{key!r}: unknown metric; known: {', '.join(KNOWN_METRICS)}")
        return v


class VaultConfig(_Strict):
    """A vault: many depositors on one trading account (README "The vault"). `gridbot stress`
    always trades as a vault; `gridbot backtest`, `replay` and `live` only with ``enabled``."""

    enabled: bool = False
    cash_buffer_pct: float = Field(0.05, ge=0.0, lt=1.0)
    controlled_unwind_threshold_pct: float = Field(0.25, gt=0.0, le=1.0)
    max_participation_pct: float = Field(0.05, gt=0.0, le=1.0)
    impact_coef: float = Field(1.0, ge=0.0, le=100.0)
    payout_delay_hours: float = Field(24.0, ge=0.0, le=8760.0)
    leverage_cap: float = Field(3.0, gt=0.0, le=125.0)
    margin_buffer_pct: float = Field(0.5, ge=0.0, lt=1.0)
    volatility_window_minutes: float = Field(1440.0, ge=10.0, le=100_000.0)
    ledger_path: str = "results/vault/ledger.db"


class Config(_Strict):
    """The whole config file. Sections: bot (long, short), live, backtest, optimize, vault."""

    bot: BotConfig = BotConfig()
    live: LiveConfig = LiveConfig()
    backtest: BacktestConfig = BacktestConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    vault: VaultConfig = VaultConfig()
    config_version: int = Field(1, ge=1, le=1)

    def side(self, name: str) -> SideConfig:
        return self.bot.long if name == "long" else self.bot.short


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if err["type"] == "extra_forbidden":
            parent = err["loc"][:-1]
            allowed = _allowed_keys(parent)
            msg = "unknown key" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
        lines.append(f"  {key} = {shown}: {msg}")
    return f"{source}: invalid config\n" + "\n".join(lines)


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None or not hasattr(field.annotation, "model_fields"):
            return []
        model = field.annotation
    return list(model.model_fields)


def parse_config(data: dict, source: str = "config") -> Config:
    """Validate a config dict; errors name every bad key with its value and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be an object with sections bot, live, backtest, optimize"
        )
    data = _clean_tree(data, source)
    try:
        # Strict JSON-mode validation: "yes" is not a bool and "3" is not a number.
        return Config.model_validate_json(orjson.dumps(data), strict=True)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


class _Object(dict):
    """An hjson object that remembers the keys it was given more than once."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    dupes = []
    for key, value in pairs:
        if key in obj and key not in dupes:
            dupes.append(key)
        obj[key] = value
    obj.duplicates = tuple(dupes)
    return obj


_INT64 = 2**63
_EXPONENT = re.compile(r"[0-9.][eE]\+?([0-9]+)")


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise ConfigError(f"{where}: a NUL character is not allowed in text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate escape such as "\ud800"
        raise ConfigError(
            f"{where}: not valid text (a lone surrogate \\u{ord(text[exc.start]):04x})"
        ) from None


def _clean_tree(data: Any, source: str) -> Any:  # noqa: C901 -- one branch per hjson node kind (debt)
    """Plain dicts and lists from hjson's objects, checked on the way (iteratively, so no depth
    can overflow the stack): a key given twice, nesting deeper than MAX_NESTING, integers past
    64 bits, inf/NaN and NUL characters are ConfigErrors naming the dotted key."""

    def name(path: tuple[str, ...]) -> str:
        return ".".join(path) or "(top level)"

    def check(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int) and not -_INT64 <= value < _INT64:
            raise ConfigError(
                f"{source}: {name(path)} = {str(value)[:30]}...: the number is too large"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: {name(path)} = {value!r}: must be a finite number")
        if isinstance(value, str):
            _check_text(value, f"{source}: {name(path)}")
        return value

    def container(value: Any) -> Any:
        return {} if isinstance(value, dict) else []

    root = container(data) if isinstance(data, dict | list) else check(data, ())
    stack: list[tuple[Any, Any, tuple[str, ...]]] = []
    if isinstance(data, dict | list):
        stack.append((data, root, ()))
    while stack:
        node, out, path = stack.pop()
        if len(path) >= MAX_NESTING:
            raise ConfigError(
                f"{source}: {name(path[:4])}...: nested more than {MAX_NESTING} levels deep"
            )
        dupes = getattr(node, "duplicates", ())
        if dupes:
            key = name((*path, str(dupes[0])))
            raise ConfigError(
                f"{source}: key {key} is given twice in one object (the last value would "
                f"silently win); keep one"
            )
        items: Iterable[tuple[Any, Any]] = (
            node.items() if isinstance(node, dict) else enumerate(node)
        )
        for key, value in items:
            if isinstance(key, str):
                _check_text(key, f"{source}: a key in {name(path)}")
            sub = (*path, str(key))
            if isinstance(value, dict | list):
                child = container(value)
                stack.append((value, child, sub))
            else:
                child = check(value, sub)
            if isinstance(out, dict):
                out[key] = child
            else:
                out.append(child)
    return root


def load_config(path: str | Path) -> Config:
    """Read an hjson (or JSON) config file and validate it.

    Bounded: only a regular file of at most MAX_CONFIG_BYTES is read; binary or UTF-16 text,
    a key given twice, absurd numbers and absurd nesting are ConfigErrors naming the file."""
    return parse_config(read_hjson(path), str(path))


def read_hjson(path: str | Path) -> Any:
    """The parsed content of an hjson (or JSON) file, read with :func:`load_config`'s bounds
    and checks but not validated as a gridbot config (``gridbot import`` reads Passivbot's)."""
    p = Path(path)
    raw = read_file(p, what="config", limit=MAX_CONFIG_BYTES)
    text = decode_text(raw, str(p), "config")
    try:
        data = hjson.loads(text, object_pairs_hook=_object_pairs)
    except hjson.HjsonDecodeError as exc:
        raise ConfigError(
            f"{p}: not valid hjson at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply (a config nests 3 levels)") from None
    except OverflowError:
        m = next((m for m in _EXPONENT.finditer(text) if int(m.group(1)) > 308), None)
        where = f" on line {text.count(chr(10), 0, m.start()) + 1}" if m else ""
        raise ConfigError(f"{p}: a number too large for a float{where} (like 1e999)") from None
    except Exception as exc:  # the parser's own failure on garbage: still not valid hjson
        raise ConfigError(f"{p}: not valid hjson: {type(exc).__name__}: {exc}") from None
    return data


def config_to_dict(config: Config) -> dict:
    """Plain-JSON form of a config, complete, accepted back by :func:`parse_config`."""
    return config.model_dump(mode="json")


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with dotted keys (``bot.long.n_positions``) set, re-validated."""
    data = config_to_dict(config)
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return parse_config(data, "overrides")


def warmup_candles(config: Config, timeframe_ms: int) -> int:
    """Candles that only warm up the EMAs before trading starts ('auto': the longest enabled
    EMA span, so the EMAs have seen that much history). The backtester skips trading over
    them; the live bot seeds its EMAs from as many closed klines."""
    w = config.backtest.warmup_minutes
    if w == "auto":
        spans = [
            max(side.ema_span_0, side.ema_span_1)
            for side in (config.bot.long, config.bot.short)
            if side.enabled
        ]
        w = max(spans, default=0.0)
    return int(math.ceil(float(w) * 60_000 / timeframe_ms))


def side_params_array(side: SideConfig) -> np.ndarray:
    """The float64 parameter array the core takes (layout in ``bot.core.params``)."""
    a = np.zeros(P.N_PARAMS)
    a[P.P_ENABLED] = 1.0 if side.enabled else 0.0
    a[P.P_WALLET_EXPOSURE_LIMIT] = side.wallet_exposure_limit
    a[P.P_ENTRY_INITIAL_QTY_PCT] = side.entry_initial_qty_pct
    a[P.P_ENTRY_INITIAL_EMA_DIST] = side.entry_initial_ema_dist
    a[P.P_ENTRY_GRID_SPACING_PCT] = side.entry_grid_spacing_pct
    a[P.P_ENTRY_GRID_SPACING_WEIGHT] = side.entry_grid_spacing_weight
    a[P.P_ENTRY_GRID_DOUBLE_DOWN_FACTOR] = side.entry_grid_double_down_factor
    a[P.P_CLOSE_GRID_MIN_MARKUP] = side.close_grid_min_markup
    a[P.P_CLOSE_GRID_MARKUP_RANGE] = side.close_grid_markup_range
    a[P.P_CLOSE_GRID_QTY_PCT] = side.close_grid_qty_pct
    a[P.P_UNSTUCK_THRESHOLD] = side.unstuck_threshold
    a[P.P_UNSTUCK_CLOSE_PCT] = side.unstuck_close_pct
    a[P.P_UNSTUCK_EMA_DIST] = side.unstuck_ema_dist
    a[P.P_UNSTUCK_LOSS_ALLOWANCE_PCT] = side.unstuck_loss_allowance_pct
    a[P.P_EMA_SPAN_0] = side.ema_span_0
    a[P.P_EMA_SPAN_1] = side.ema_span_1
    a[P.P_TOTAL_WALLET_EXPOSURE_LIMIT] = side.total_wallet_exposure_limit
    a[P.P_ENFORCE_EXPOSURE_LIMIT] = 1.0 if side.enforce_exposure_limit else 0.0
    a[P.P_ENTRY_TRAILING_THRESHOLD_PCT] = side.entry_trailing_threshold_pct
    a[P.P_ENTRY_TRAILING_RETRACEMENT_PCT] = side.entry_trailing_retracement_pct
    a[P.P_ENTRY_TRAILING_GRID_RATIO] = side.entry_trailing_grid_ratio
    a[P.P_CLOSE_TRAILING_THRESHOLD_PCT] = side.close_trailing_threshold_pct
    a[P.P_CLOSE_TRAILING_RETRACEMENT_PCT] = side.close_trailing_retracement_pct
    a[P.P_CLOSE_TRAILING_GRID_RATIO] = side.close_trailing_grid_ratio
    a[P.P_CLOSE_TRAILING_QTY_PCT] = side.close_trailing_qty_pct
    a[P.P_FILTER_VOLUME_WINDOW] = side.filter_volume_rolling_window
    a[P.P_FILTER_VOLATILITY_WINDOW] = side.filter_volatility_rolling_window
    a[P.P_FILTER_VOLUME_DROP_PCT] = side.filter_volume_drop_pct
    return a


def hard_stop_params_array(config: Config) -> np.ndarray:
    """The hard stop's float64 parameter array (layout in ``bot.core.hard_stop``)."""
    hsl = config.bot.common.equity_hard_stop_loss
    a = np.zeros(H.N_HP)
    a[H.HP_ENABLED] = 1.0 if hsl.enabled else 0.0
    a[H.HP_RED_THRESHOLD] = hsl.red_threshold
    a[H.HP_EMA_ALPHA] = 2.0 / (hsl.ema_span_minutes + 1.0)
    a[H.HP_COOLDOWN_MINUTES] = hsl.cooldown_minutes_after_red
    a[H.HP_NO_RESTART_DRAWDOWN] = hsl.no_restart_drawdown_threshold
    a[H.HP_YELLOW_RATIO] = hsl.tier_ratios.yellow
    a[H.HP_ORANGE_RATIO] = hsl.tier_ratios.orange
    a[H.HP_ORANGE_MODE] = (
        H.ORANGE_GRACEFUL_STOP if hsl.orange_tier_mode == "graceful_stop" else H.ORANGE_TP_ONLY
    )
    return a


def check_config_leverage(
    config: Config, leverage: float, balance: float | None = None, tiers: np.ndarray | None = None
) -> LeverageCheck:
    """:func:`bot.core.margin.check_leverage` for a config's limits (both sides, per-position
    WELs), as `gridbot risk --config` and the live bot's start-up ask it."""
    lo, sh = config.bot.long, config.bot.short
    return check_leverage(
        leverage,
        lo.total_wallet_exposure_limit,
        sh.total_wallet_exposure_limit,
        long_enabled=lo.enabled,
        short_enabled=sh.enabled,
        balance=balance,
        wallet_exposure_limit_long=lo.wallet_exposure_limit,
        wallet_exposure_limit_short=sh.wallet_exposure_limit,
        tiers=tiers,
    )

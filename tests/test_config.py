"""Config loading: a user's mistake is an error that names the key and the value, never a
silent default; the bundled configs load; the template lists every key with its default."""

from __future__ import annotations

from pathlib import Path

import hjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import (
    Config,
    SideConfig,
    config_to_dict,
    load_config,
    parse_config,
)
from bot.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def error_of(data: object) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)  # type: ignore[arg-type]
    return str(exc.value)


# ---------------------------------------------------------------------------------------------
# The bundled configs.


def test_default_config_loads_with_the_documented_values() -> None:
    cfg = load_config(CONFIGS / "default.hjson")
    assert cfg.backtest.data == "data/sample/binance_spot_1m"
    assert cfg.backtest.symbols == ("BTCUSDT", "ETHUSDT", "DOGEUSDT")
    assert cfg.backtest.starting_balance == 10000.0
    assert cfg.bot.long.enabled and cfg.bot.short.enabled
    assert cfg.bot.long.total_wallet_exposure_limit == 1.5 and cfg.bot.long.n_positions == 3
    assert cfg.bot.short.total_wallet_exposure_limit == 0.5 and cfg.bot.short.n_positions == 3
    assert cfg.bot.long.wallet_exposure_limit == pytest.approx(0.5)
    assert cfg.live.leverage == 10.0
    # The leverage it ships with suffices for its limits (10 > 1.5 + 0.5).
    assert cfg.live.leverage > 1.5 + 0.5
    # The sample data it names exists.
    root = CONFIGS.parent
    for sym in cfg.backtest.symbols:
        assert list((root / cfg.backtest.data).glob(f"{sym}.csv*")), sym


def test_template_lists_every_key_with_its_default() -> None:
    path = CONFIGS / "template.hjson"
    raw = hjson.loads(path.read_text())
    defaults = config_to_dict(Config())

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            # Descend into sections, not into free-form maps (bounds, constraints).
            if isinstance(v, dict) and k not in ("bounds", "constraints"):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(raw) == keys(defaults)
    assert config_to_dict(load_config(path)) == defaults
    # Every key has a comment line right above it.
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if ":" in s and not s.startswith(("//", "{", '"')) and not s.endswith(("{", "[")):
            prev = lines[i - 1].strip()
            assert prev.startswith("//") or ":" in prev, f"template line {i + 1} has no comment"


# ---------------------------------------------------------------------------------------------
# Errors name the dotted key and the value.


def test_unknown_key_is_named_with_its_value_and_the_allowed_keys() -> None:
    msg = error_of({"bot": {"long": {"total_wallet_exposur_limit": 1.5}}})
    assert "bot.long.total_wallet_exposur_limit" in msg
    assert "1.5" in msg
    assert "unknown key" in msg
    assert "total_wallet_exposure_limit" in msg.split("allowed here:")[1]
    msg = error_of({"bots": {}})
    assert "bots" in msg and "unknown key" in msg


def test_wrong_type_is_named_with_its_value() -> None:
    msg = error_of({"bot": {"short": {"n_positions": "three"}}})
    assert "bot.short.n_positions" in msg and "'three'" in msg
    msg = error_of({"live": {"leverage": [10]}})
    assert "live.leverage" in msg and "[10]" in msg


def test_out_of_range_value_is_named_with_its_value_and_the_range() -> None:
    msg = error_of({"bot": {"long": {"total_wallet_exposure_limit": 500}}})
    assert "bot.long.total_wallet_exposure_limit = 500" in msg
    assert "100" in msg  # the allowed maximum
    msg = error_of({"live": {"leverage": 0}})
    assert "live.leverage = 0" in msg and "greater than 0" in msg
    msg = error_of({"bot": {"long": {"close_grid_qty_pct": 0.001}}})
    assert "bot.long.close_grid_qty_pct = 0.001" in msg and "0.01" in msg


def test_every_bad_key_is_reported_at_once() -> None:
    msg = error_of({"bot": {"long": {"n_positions": 0}}, "backtest": {"starting_balance": -5}})
    assert "bot.long.n_positions = 0" in msg
    assert "backtest.starting_balance = -5" in msg


def test_bad_optimize_bounds_name_the_key_and_the_values() -> None:
    msg = error_of({"optimize": {"bounds": {"bot.long.entry_grid_spacing_pct": [0.05, 0.005]}}})
    assert "optimize.bounds" in msg
    assert "bot.long.entry_grid_spacing_pct" in msg
    assert "0.05" in msg and "0.005" in msg
    msg = error_of({"optimize": {"bounds": {"bot.long.spacing": [0.0, 1.0]}}})
    assert "optimize.bounds" in msg and "bot.long.spacing" in msg and "unknown parameter" in msg
    msg = error_of({"optimize": {"bounds": {"bot.middle.n_positions": [1, 3]}}})
    assert "bot.middle.n_positions" in msg
    msg = error_of({"optimize": {"bounds": {"bot.long.n_positions": [1, 3, 0]}}})
    assert "bot.long.n_positions" in msg and "step" in msg


def test_unknown_metric_in_objectives_and_constraints() -> None:
    msg = error_of({"optimize": {"objectives": [{"metric": "profit", "direction": "maximize"}]}})
    assert "optimize.objectives.0.metric = 'profit'" in msg
    msg = error_of({"optimize": {"constraints": {"profit": {"max": 1}}}})
    assert "'profit'" in msg and "optimize.constraints" in msg


def test_top_level_must_be_an_object() -> None:
    assert "top level" in error_of([1, 2])


# ---------------------------------------------------------------------------------------------
# Files.


def test_bad_hjson_names_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "bad.hjson"
    p.write_text("{\n  bot: {\n    long: {\n      enabled: true\n    }\n  ]\n}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert str(p) in msg
    assert "line 6" in msg and "column" in msg


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "nope.hjson"
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert str(p) in msg and "cannot read config" in msg


def test_invalid_value_in_a_file_names_the_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "c.hjson"
    p.write_text("{bot: {long: {n_positions: 0}}}")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert str(p) in str(exc.value) and "bot.long.n_positions = 0" in str(exc.value)


def test_plain_json_loads_too(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text('{"bot": {"long": {"n_positions": 4}}}')
    assert load_config(p).bot.long.n_positions == 4


# ---------------------------------------------------------------------------------------------
# Round trip.


@pytest.mark.parametrize("name", ["default.hjson", "template.hjson"])
def test_round_trip_of_the_bundled_configs(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert parse_config(config_to_dict(cfg)) == cfg
    assert config_to_dict(parse_config(config_to_dict(cfg))) == config_to_dict(cfg)


def _side_values() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {
            "enabled": st.booleans(),
            "total_wallet_exposure_limit": st.floats(0.0, 100.0),
            "n_positions": st.integers(1, 1000),
            "entry_initial_qty_pct": st.floats(1e-6, 1.0),
            "entry_grid_spacing_pct": st.floats(1e-6, 1.0),
            "close_grid_qty_pct": st.floats(0.01, 1.0),
            "unstuck_ema_dist": st.floats(-0.1, 0.5),
        }
    )


@settings(max_examples=50, deadline=None, derandomize=True)
@given(long=_side_values(), short=_side_values(), leverage=st.floats(0.01, 125.0))
def test_round_trip_is_identical(long: dict, short: dict, leverage: float) -> None:
    cfg = parse_config({"bot": {"long": long, "short": short}, "live": {"leverage": leverage}})
    assert cfg.bot.long == SideConfig(**long)
    again = parse_config(config_to_dict(cfg))
    assert again == cfg
    assert config_to_dict(again) == config_to_dict(cfg)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("long", "enabled", "yes"), ("long", "n_positions", "3"), ("short", "n_positions", 2.5)],
)
def test_loosely_typed_values_are_refused_not_coerced(section, key, value):
    with pytest.raises(ConfigError) as err:
        parse_config({"bot": {section: {key: value}}})
    assert f"bot.{section}.{key} = {value!r}" in str(err.value)

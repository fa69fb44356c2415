"""`gridbot import`: a Passivbot v7 config becomes ours, every key that cannot come along is
named, and the imported config backtests."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "binance_spot_1m"

# A Passivbot v7 config as its users have them (early v7 names), trimmed of nothing.
EARLY_V7 = {
    "backtest": {
        "base_dir": "backtests",
        "compress_cache": True,
        "end_date": "now",
        "exchange": "binance",
        "start_date": "2021-05-10",
        "starting_balance": 1000.0,
    },
    "bot": {
        "long": {
            "close_grid_markup_range": 0.0155,
            "close_grid_min_markup": 0.0047,
            "close_grid_qty_pct": 0.84,
            "close_trailing_grid_ratio": 0.0,
            "close_trailing_qty_pct": 0.5,
            "close_trailing_retracement_pct": 0.01,
            "close_trailing_threshold_pct": 0.02,
            "ema_span_0": 1209.0,
            "ema_span_1": 1004.2,
            "entry_grid_double_down_factor": 0.894,
            "entry_grid_spacing_pct": 0.0375,
            "entry_grid_spacing_weight": 0.761,
            "entry_initial_ema_dist": -0.0058,
            "entry_initial_qty_pct": 0.0088,
            "entry_trailing_grid_ratio": 0.0,
            "entry_trailing_retracement_pct": 0.01,
            "entry_trailing_threshold_pct": 0.05,
            "filter_relative_volume_clip_pct": 0.51,
            "filter_rolling_window": 60,
            "n_positions": 3.2,
            "total_wallet_exposure_limit": 1.2,
            "unstuck_close_pct": 0.06,
            "unstuck_ema_dist": -0.08,
            "unstuck_loss_allowance_pct": 0.02,
            "unstuck_threshold": 0.89,
        },
        "short": {
            "close_grid_markup_range": 0.028,
            "close_grid_min_markup": 0.013,
            "close_grid_qty_pct": 0.6,
            "ema_span_0": 800.0,
            "ema_span_1": 300.0,
            "entry_grid_double_down_factor": 0.7,
            "entry_grid_spacing_pct": 0.05,
            "entry_grid_spacing_weight": 1.1,
            "entry_initial_ema_dist": 0.002,
            "entry_initial_qty_pct": 0.02,
            "n_positions": 0.0,
            "total_wallet_exposure_limit": 0.0,
            "unstuck_close_pct": 0.05,
            "unstuck_ema_dist": 0.0,
            "unstuck_loss_allowance_pct": 0.01,
            "unstuck_threshold": 0.9,
        },
    },
    "live": {
        "approved_coins": ["BTC", "ETH", "DOGE"],
        "auto_gs": True,
        "execution_delay_seconds": 2.0,
        "ignored_coins": [],
        "leverage": 10.0,
        "max_n_cancellations_per_batch": 5,
        "minimum_coin_age_days": 7.0,
        "price_distance_threshold": 0.002,
        "user": "binance_01",
    },
    "optimize": {"iters": 30000, "n_cpus": 5, "scoring": ["mdg", "sharpe_ratio"]},
}


def later_v7() -> dict:
    """The same config with the names Passivbot moved to later in v7."""
    cfg = json.loads(json.dumps(EARLY_V7))
    long = cfg["bot"]["long"]
    long["close_grid_markup_start"] = long.pop("close_grid_min_markup")
    long["close_grid_markup_end"] = round(long["close_grid_markup_start"] + 0.0155, 6)
    del long["close_grid_markup_range"]
    long["entry_grid_spacing_we_weight"] = long.pop("entry_grid_spacing_weight")
    long["entry_grid_spacing_volatility_weight"] = 0.0
    long["entry_grid_spacing_log_span_hours"] = 24.0
    long["filter_volume_ema_span"] = 1440.0
    long["filter_volatility_ema_span"] = 60.0
    cfg["live"]["approved_coins"] = {"long": ["BTC/USDT:USDT", "ETHUSDT", "DOGE"], "short": []}
    cfg["live"]["ignored_coins"] = {"long": ["XRP"], "short": []}
    cfg["coin_overrides"] = {"DOGE": {"bot": {"long": {"entry_grid_spacing_pct": 0.05}}}}
    # v7.9's account-wide equity hard stop loss, every key
    cfg["bot"]["common"] = {
        "equity_hard_stop_loss": {
            "enabled": True,
            "red_threshold": 0.08,
            "ema_span_minutes": 30.0,
            "cooldown_minutes_after_red": 240.0,
            "no_restart_drawdown_threshold": 0.5,
            "tier_ratios": {"yellow": 0.4, "orange": 0.7},
            "orange_tier_mode": "graceful_stop",
            "panic_close_order_type": "market",
        }
    }
    return cfg


def gridbot(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, cfg: dict, name: str = "pb.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(cfg, indent=4))
    return p


def test_early_v7_config_imports_with_the_same_meaning(tmp_path: Path) -> None:
    code, out, err = gridbot("import", str(write(tmp_path, EARLY_V7)))
    assert code == 0, err
    (tmp_path / "ours.hjson").write_text(out)
    cfg = load_config(tmp_path / "ours.hjson")
    lo, sh = cfg.bot.long, cfg.bot.short
    assert (lo.close_grid_min_markup, lo.close_grid_markup_range) == (0.0047, 0.0155)
    assert (lo.entry_grid_spacing_weight, lo.entry_initial_ema_dist) == (0.761, -0.0058)
    assert (lo.unstuck_threshold, lo.unstuck_loss_allowance_pct) == (0.89, 0.02)
    assert lo.n_positions == 3  # 3.2 rounded, as Passivbot does, and said so
    assert lo.total_wallet_exposure_limit == 1.2
    assert not sh.enabled  # n_positions 0: the side is off
    assert cfg.backtest.symbols == ("BTCUSDT", "ETHUSDT", "DOGEUSDT") == cfg.live.symbols
    assert (cfg.backtest.starting_balance, cfg.backtest.start_date) == (1000.0, "2021-05-10")
    assert cfg.live.leverage == 10.0
    named = [line for line in err.splitlines() if "not carried over" in line]
    for key in (
        "bot.long.n_positions = 3.2: rounded to 3",
        "live.user",
        "live.auto_gs",
        "backtest.base_dir",
        "optimize",
    ):
        assert any(key in line for line in named), (key, err)
    # Trailing and the forager's filters carry over under their names (early v7 names mapped).
    assert not any("trailing" in line or "filter" in line for line in named), err
    assert (lo.close_trailing_qty_pct, lo.entry_trailing_threshold_pct) == (0.5, 0.05)
    assert lo.filter_volume_drop_pct == 0.51
    assert lo.filter_volume_rolling_window == lo.filter_volatility_rolling_window == 60
    assert cfg.live.minimum_coin_age_days == 7.0


def test_later_v7_names_are_read(tmp_path: Path) -> None:
    code, out, err = gridbot("import", str(write(tmp_path, later_v7())))
    assert code == 0, err
    (tmp_path / "ours.hjson").write_text(out)
    lo = load_config(tmp_path / "ours.hjson").bot.long
    assert lo.close_grid_min_markup == 0.0047
    assert lo.close_grid_markup_range == pytest.approx(0.0155)
    assert lo.entry_grid_spacing_weight == 0.761
    assert (lo.filter_volume_rolling_window, lo.filter_volatility_rolling_window) == (1440, 60)
    assert "filter_" not in err
    assert "coin_overrides.DOGE: per-coin settings are not supported" in err
    assert "spacing_volatility" not in err  # weight 0: no effect, nothing lost
    # Per-side coins: the short side is off, so the long side's list is the list.
    assert load_config(tmp_path / "ours.hjson").backtest.symbols == (
        "BTCUSDT", "ETHUSDT", "DOGEUSDT",
    )  # fmt: skip


def test_what_cannot_carry_over_is_named(tmp_path: Path) -> None:
    cfg = later_v7()
    long = cfg["bot"]["long"]
    long["entry_grid_spacing_volatility_weight"] = 2.5
    long["entry_trailing_grid_ratio"] = 0.5
    long["enforce_exposure_limit"] = True
    long["close_grid_markup_start"], long["close_grid_markup_end"] = 0.02, 0.005
    cfg["bot"]["short"].update(n_positions=2, total_wallet_exposure_limit=0.5)
    cfg["live"]["approved_coins"]["short"] = ["BTC"]
    cfg["bot"]["common"]["equity_hard_stop_loss"]["panic_close_order_type"] = "limit"
    cfg["live"]["hsl_position_during_cooldown_policy"] = "tp_only"
    long["hsl_enabled"], long["hsl_signal_mode"] = True, "coin"
    code, out, err = gridbot("import", str(write(tmp_path, cfg)))
    assert code == 0, err
    for text in (
        "bot.common.equity_hard_stop_loss.panic_close_order_type = 'limit': not carried over",
        "live.hsl_position_during_cooldown_policy: not carried over",
        "bot.long.hsl_enabled: Passivbot's per-side / per-coin hard stop is not in gridbot",
        "bot.long.hsl_signal_mode: Passivbot's per-side / per-coin hard stop",
        "bot.long.entry_grid_spacing_volatility_weight = 2.5",
        "bot.long.close_grid_markup_end 0.005 < close_grid_markup_start 0.02",
        "live.approved_coins: different coins per side",
    ):
        assert text in err, (text, err)
    assert out.startswith("# imported from Passivbot config")
    (tmp_path / "ours.hjson").write_text(out)
    lo = load_config(tmp_path / "ours.hjson").bot.long
    assert lo.enforce_exposure_limit is True
    assert lo.entry_trailing_grid_ratio == 0.5  # trailing is ours too now
    hsl = load_config(tmp_path / "ours.hjson").bot.common.equity_hard_stop_loss
    assert hsl.enabled and hsl.panic_close_order_type == "market"  # ours closes at market


def test_strict_refuses_and_writes_nothing(tmp_path: Path) -> None:
    new = tmp_path / "new.hjson"
    code, out, err = gridbot(
        "import", str(write(tmp_path, EARLY_V7)), "--out", str(new), "--strict"
    )
    assert code == 2
    assert "--strict refuses" in err.splitlines()[0] and "live.user" in err.splitlines()[0]
    assert out == "" and not new.exists()


def test_out_never_overwrites(tmp_path: Path) -> None:
    old = tmp_path / "mine.hjson"
    old.write_text("{}")
    code, _, err = gridbot("import", str(write(tmp_path, EARLY_V7)), "--out", str(old))
    assert code == 2 and "already exists" in err
    assert old.read_text() == "{}"


def test_not_a_passivbot_config_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = gridbot("import", str(write(tmp_path, {"live": {}})))
    assert code == 2 and "no 'bot' section" in err
    (tmp_path / "bad.json").write_text("{ not json")
    code, _, err = gridbot("import", str(tmp_path / "bad.json"))
    assert code == 2 and "not valid hjson" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_an_imported_config_backtests(tmp_path: Path) -> None:
    new = tmp_path / "imported.hjson"
    code, _, err = gridbot("import", str(write(tmp_path, later_v7())), "--out", str(new))
    assert code == 0, err
    # live.minimum_coin_age_days 7 came along: a coin's age counts from its first candle in
    # the data (2021-05-10 for the bundled sample), so it trades from 2021-05-17 on.
    code, out, err = gridbot(
        "backtest", str(new), "--data", str(SAMPLE), "--no-plots", "--json",
        "--out", str(tmp_path / "res"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    hsl = load_config(new).bot.common.equity_hard_stop_loss
    assert (hsl.enabled, hsl.red_threshold, hsl.ema_span_minutes) == (True, 0.08, 30.0)
    assert (hsl.cooldown_minutes_after_red, hsl.no_restart_drawdown_threshold) == (240.0, 0.5)
    assert (hsl.tier_ratios.yellow, hsl.orange_tier_mode) == (0.4, "graceful_stop")
    assert report["hard_stop_triggers"] >= 1, "the crash trips the imported stop"
    assert report["symbols"] == ["BTCUSDT", "ETHUSDT", "DOGEUSDT"]
    assert report["n_fills"] > 0  # it traded: the imported strategy is live, not inert
    (fills,) = (tmp_path / "res").rglob("fills.csv")
    first = min(line.split(",")[0] for line in fills.read_text().splitlines()[1:] if line)
    assert first >= "2021-05-17", first  # ISO times: no coin opened before it was 7 days old

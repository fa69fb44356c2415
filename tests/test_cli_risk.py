"""`gridbot risk` through the real console entry: the seeds' numbers, a liquidation price
worked by hand from Binance's BTCUSDT tiers, the leverage check, and exit code 2 with a message
naming the bad argument."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "default.hjson")
KEYS = {
    "wallet_exposure_long",
    "wallet_exposure_short",
    "bankruptcy_price",
    "liquidation_price",
    "maintenance_margin",
    "bankruptcy_distance_pct",
    "liquidation_distance_pct",
    "leverage_ok",
    "leverage_reason",
}


def gridbot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "risk", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def risk_json(*args: str) -> dict:
    proc = gridbot(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    # Exactly one JSON object on stdout, one line.
    assert proc.stdout.count("\n") == 1 and proc.stdout.endswith("\n")
    for bad in ("NaN", "Infinity"):
        assert bad not in proc.stdout
    out = orjson.loads(proc.stdout)
    assert isinstance(out, dict) and KEYS <= out.keys()
    return out


def test_seed_example_long_100_at_35_on_1000() -> None:
    r = risk_json("--balance", "1000", "--long", "100@35")
    # WE = 100*35/1000 = 3.5; bankruptcy = 35*(1 - 1/3.5) = 25 -> (35-25)/35 = 28.57% away.
    assert r["wallet_exposure_long"] == 3.5
    assert r["wallet_exposure_short"] == 0.0
    assert r["bankruptcy_price"] == pytest.approx(25.0)
    assert r["bankruptcy_distance_pct"] == pytest.approx(100 * 10 / 35)
    # No symbol: no tiers, so no liquidation price or maintenance margin (and it says why).
    assert r["liquidation_price"] is None and r["maintenance_margin"] is None
    assert r["liquidation_distance_pct"] is None
    assert any("--symbol" in n for n in r["notes"])
    # No config: nothing to check the leverage against.
    assert r["leverage_ok"] is None and "--config" in r["leverage_reason"]


def test_liquidation_with_btc_tiers_and_the_default_config() -> None:
    r = risk_json(
        "--balance", "1000", "--long", "1@20000", "--symbol", "BTCUSDT", "--config", DEFAULT
    )  # fmt: skip
    # WE 20, bankruptcy 20000*(1 - 1/20) = 19000 -> 5% away.
    assert r["wallet_exposure_long"] == 20.0
    assert r["bankruptcy_price"] == pytest.approx(19000.0)
    assert r["bankruptcy_distance_pct"] == pytest.approx(5.0)
    # Tier 1 (0.4%, notional < 50000): 1000 + (p - 20000) = 0.004 p -> p = 19000/0.996.
    liq = 19000.0 / 0.996
    assert r["liquidation_price"] == pytest.approx(liq, rel=1e-12)
    assert r["liquidation_distance_pct"] == pytest.approx((20000.0 - liq) / 20000.0 * 100)
    # Maintenance margin at the position price: 20000 * 0.4% = 80.
    assert r["maintenance_margin"] == pytest.approx(80.0)
    # default.hjson: leverage 10 > 1.5 + 0.5, and within BTC's 125x for 1000*0.5 notional.
    assert r["leverage_ok"] is True
    assert r["leverage"] == 10.0


def test_tier_2_liquidation_measured_from_a_given_price() -> None:
    r = risk_json(
        "--balance", "10000", "--long", "2@60000", "--symbol", "BTCUSDT", "--price", "58000"
    )  # fmt: skip
    # Tier 2 (0.5%, maint amount 50): 10000 + 2p - 120000 = 0.01 p - 50 -> p = 109950/1.99.
    liq = 109950.0 / 1.99
    assert r["liquidation_price"] == pytest.approx(liq, rel=1e-12)
    # Bankruptcy: (120000 - 10000)/2 = 55000. Distances from 58000.
    assert r["bankruptcy_price"] == pytest.approx(55000.0)
    assert r["bankruptcy_distance_pct"] == pytest.approx(3000.0 / 58000.0 * 100)
    assert r["liquidation_distance_pct"] == pytest.approx((58000.0 - liq) / 58000.0 * 100)
    # At 58000 the notional is 116000 (tier 2): 116000*0.5% - 50 = 530.
    assert r["maintenance_margin"] == pytest.approx(530.0)


def test_short_mirrors_with_a_tier_change_on_the_way_up() -> None:
    r = risk_json("--balance", "10000", "--short", "1@45000", "--symbol", "BTCUSDT")
    assert r["wallet_exposure_short"] == 4.5 and r["wallet_exposure_long"] == 0.0
    # Bankruptcy: 45000*(1 + 1/4.5) = 55000 -> 22.22% above.
    assert r["bankruptcy_price"] == pytest.approx(55000.0)
    assert r["bankruptcy_distance_pct"] == pytest.approx(10000.0 / 45000.0 * 100)
    # Tier 2 at liquidation: 10000 + 45000 - p = 0.005 p - 50 -> p = 55050/1.005.
    liq = 55050.0 / 1.005
    assert r["liquidation_price"] == pytest.approx(liq, rel=1e-12)
    assert r["liquidation_distance_pct"] == pytest.approx((liq - 45000.0) / 45000.0 * 100)


def test_cross_margin_long_and_short_and_a_hedged_account() -> None:
    # (L*P_L - S*P_S - balance)/(L - S) = (200 - 120 - 50)/1 = 30.
    r = risk_json("--balance", "50", "--long", "2@100", "--short", "1@120")
    assert r["wallet_exposure_long"] == 4.0 and r["wallet_exposure_short"] == 2.4
    assert r["bankruptcy_price"] == pytest.approx(30.0)
    assert r["bankruptcy_distance_pct"] == pytest.approx(70.0)  # from the long's 100


def test_hedged_account_has_nulls_not_nan() -> None:
    r = risk_json("--balance", "100", "--long", "1@100", "--short", "1@110", "--symbol", "ETHUSDT")
    assert r["bankruptcy_price"] is None and r["bankruptcy_distance_pct"] is None
    assert r["liquidation_distance_pct"] is None


def test_leverage_not_above_the_sum_of_limits_is_refused(tmp_path: Path) -> None:
    # default.hjson: TWEL long 1.5 + short 0.5 = 2; --leverage 2 overrides live.leverage 10.
    r = risk_json("--balance", "1000", "--config", DEFAULT, "--leverage", "2")
    assert r["leverage_ok"] is False
    assert "(2)" in r["leverage_reason"] and "total_wallet_exposure_limit" in r["leverage_reason"]
    # A 10M account with WEL 1 (long only): notional 10M is in BTC's tier 4, max 50x.
    cfg = tmp_path / "big.hjson"
    cfg.write_text(
        "{bot: {long: {total_wallet_exposure_limit: 3, n_positions: 3}, short: {enabled: false}}}"
    )
    r = risk_json(
        "--balance", "10000000", "--symbol", "BTCUSDT", "--config", str(cfg), "--leverage", "75"
    )  # fmt: skip
    assert r["leverage_ok"] is False
    assert "maximum 50" in r["leverage_reason"]


def test_human_table_goes_to_stderr() -> None:
    proc = gridbot("--balance", "1000", "--long", "100@35")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "bankruptcy price" in proc.stderr and "3.5" in proc.stderr and "25" in proc.stderr


BAD_INPUT = [
    (["--balance", "0"], "--balance"),
    (["--balance=-5"], "--balance"),
    (["--balance", "1000", "--long", "5@abc"], "--long"),
    (["--balance", "1000", "--long", "0@100"], "--long"),
    (["--balance", "1000", "--short", "2@-1"], "--short"),
    (["--balance", "1000", "--long", "1@100", "--symbol", "FOOUSDT"], "--symbol"),
    (["--balance", "1000", "--config", "no/such/file.hjson"], "--config"),
]


def test_bad_input_exits_2_naming_the_argument() -> None:
    # All at once: each is a fresh interpreter, and the machine has cores to spare.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "risk", *args, "--json"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, _ in BAD_INPUT
    ]
    for proc, (args, named) in zip(procs, BAD_INPUT, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, stderr)
        assert stdout == "", args
        assert named in stderr and "error" in stderr, (args, stderr)


def test_distances_are_finite_numbers() -> None:
    # Guard the JSON contract: a long covered by the balance has bankruptcy price 0, 100% away.
    r = risk_json("--balance", "1000", "--long", "1@500", "--symbol", "BTCUSDT")
    assert r["bankruptcy_price"] == 0.0 and r["bankruptcy_distance_pct"] == 100.0
    assert r["liquidation_price"] == 0.0
    assert math.isfinite(r["liquidation_distance_pct"])

"""`gridbot soak` with the equity hard stop on (configs/scenarios/soak_hard_stop.hjson): a real
`gridbot live` under random faults (kill -9 included) goes red, halts and trades again, and
every check holds, the hard stop's among them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import config_to_dict, load_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HSL_CHECKS = (
    "no_entries_while_red", "flat_after_red", "halt_survived_restarts",
    "hard_stop_orders_closing_only",
)  # fmt: skip


@pytest.mark.parametrize(("exchange", "seed"), [("bybit", 3)])
def test_hard_stop_soak_goes_red_and_every_check_holds(tmp_path, exchange, seed):
    data = config_to_dict(load_config(ROOT / "configs/scenarios/soak_hard_stop.hjson"))
    data["backtest"]["results_dir"] = str(tmp_path / "results")
    data["backtest"]["data"] = str(ROOT / "data/sample/binance_spot_1m")
    path = tmp_path / "soak_hard_stop.json"
    path.write_text(json.dumps(data))
    cmd = [
        sys.executable, "-m", "bot.cli", "soak", str(path), "--exchange", exchange,
        "--seed", str(seed), "--minutes", "2", "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    s = json.loads(proc.stdout)
    h = s["hard_stop"]
    assert h is not None and all(c in s["checks"] for c in HSL_CHECKS)
    assert s["failed_checks"] == [], json.dumps(s, indent=1)[:4000]
    assert h["reds"] >= 1 and h["reds_logged"] == h["reds"]
    assert h["hard_stop_orders"] >= 1 and h["reds_with_positions_open"] >= 1
    assert h["entries_while_red"] == 0 and h["positions_not_closed_after_red"] == 0
    assert h["log_matches_state"] is True

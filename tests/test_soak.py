"""`gridbot soak` end to end: the venue over real candles, the live bot as a real subprocess,
every fault kind once in half a minute, on each dialect; the JSON carries every measure and
the checks hold.

Checks that fail only because of the live-bot bugs of issue 8 (being fixed on ``main``) turn
the test into an xfail that names them; anything else (a missing field, a duplicate order, a
harness error) fails it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_live_replay import TIGHT_GRID_SIDE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

FIELDS = (
    "faults", "restarts", "entries_past_limit", "max_wallet_exposure_ratio",
    "orders_on_phantom_positions", "duplicate_orders", "final_book_matches_exchange",
    "candles", "fills", "seed", "minutes", "exchange", "checks", "failed_checks",
)  # fmt: skip

# check -> the issue-8 bug that breaks it today (the lead's fixes on main close them)
KNOWN = {
    "final_book_matches_exchange": "items 1 and 4: the book is not reconciled with the exchange "
    "(an account reset below the trade-id cursor, a deleverage while the streams are silent, "
    "fills counted twice after kill -9)",
    "entries_past_limit": "items 1 and 2: the pre-trade guard's exchange position lags the "
    "fills on Bybit's private socket (an entry sized on a position missing a fill; "
    "benchmarks/README.md, Soak)",
    "orders_on_phantom_positions": "items 1 and 3: closes sent on positions the exchange lists "
    "as empty (one-way mode; a deleverage to zero during a silence followed by a reset)",
    "position_mode_reapplied": "item 3: the position mode is never re-applied",
    "bot_unexpected_exits": "found by the soak: a 5xx or 429 during start-up ends the bot "
    "(ExchangeNotAvailable / RateLimit, exit 2) instead of backing off",
}


def soak(tmp_path: Path, exchange: str, seed: int) -> tuple[dict, Path]:
    side = TIGHT_GRID_SIDE
    config = {
        "bot": {"long": side, "short": {**side, "enabled": True}},
        "live": {"leverage": 10, "symbols": ["BTCUSDT", "DOGEUSDT"]},
        "backtest": {
            "symbols": ["BTCUSDT", "DOGEUSDT"],
            "starting_balance": 1000,
            "data": str(ROOT / "data/sample/binance_spot_1m"),
            "results_dir": str(tmp_path / "results"),
        },
    }
    path = tmp_path / "soak.json"
    path.write_text(json.dumps(config))
    trades = tmp_path / "trades.csv"
    cmd = [
        sys.executable, "-m", "bot.cli", "soak", str(path), "--exchange", exchange,
        "--seed", str(seed), "--minutes", "0.5", "--trades-out", str(trades), "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert proc.returncode == (0 if summary["ok"] else 1)
    return summary, trades


@pytest.mark.parametrize(("exchange", "seed"), [("binance", 3), ("bybit", 4)])
def test_short_soak(tmp_path, exchange, seed):
    s, trades = soak(tmp_path, exchange, seed)
    for f in FIELDS:
        assert f in s, f
    assert s["exchange"] == exchange and s["seed"] == seed
    assert s["candles"] > 100 and s["orders_sent"] > 0
    assert s["faults_total"] >= 8 and s["restarts"] >= 1
    with open(trades) as f:
        rows = list(csv.DictReader(f))
    assert sum(r["kind"] in ("entry", "close") for r in rows) == s["fills"]
    assert s["duplicate_orders"] == 0, s["duplicate_detail"]
    failed = s["failed_checks"]
    unknown = [c for c in failed if c not in KNOWN]
    assert not unknown, f"{unknown}: {json.dumps(s, indent=1)[:3000]}"
    if failed:
        pytest.xfail("; ".join(f"{c}: {KNOWN[c]}" for c in failed))
    assert s["entries_past_limit"] == 0 and s["max_wallet_exposure_ratio"] <= 1.01
    assert s["final_book_matches_exchange"] is True

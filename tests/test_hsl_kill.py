"""The equity hard stop in real `gridbot live` processes against a real `gridbot venue`:
kill -9 right after red fired (its cancels and market closes in flight), a restart that comes
back red and finishes the panic exactly once per position, a halt that survives a plain
restart, and `--reset-hard-stop` that ends it."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from bot.core import hard_stop as H
from bot.exchange.registry import make_adapter
from tests.test_live_replay import TIGHT_GRID_SIDE
from tests.test_live_unattended import GRIDBOT, ROOT, SYMBOLS, _drain, _read_until


def _config(tmp: Path) -> Path:
    side = {**TIGHT_GRID_SIDE, "unstuck_close_pct": 0.0, "total_wallet_exposure_limit": 3.0}
    hsl = {
        "enabled": True,
        "red_threshold": 0.004,
        "ema_span_minutes": 1,
        "cooldown_minutes_after_red": 0,
    }  # fmt: skip  (0: a halt only the operator ends)
    cfg = {
        "bot": {"long": side, "short": {**side, "enabled": True},
                "common": {"equity_hard_stop_loss": hsl}},
        "live": {"symbols": list(SYMBOLS), "leverage": 10.0, "state_dir": str(tmp / "state"),
                 "status_port": 0, "log_file": str(tmp / "log" / "gridbot.jsonl")},
        "backtest": {"data": str(ROOT / "data/sample/binance_spot_1m"), "starting_balance": 1000},
    }  # fmt: skip
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _hsl_state(db: Path) -> tuple[list[float], dict]:
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = dict(con.execute("SELECT key, value FROM kv WHERE key LIKE 'hard_stop%'").fetchall())
    finally:
        con.close()
    return json.loads(rows["hard_stop"])["h"], json.loads(rows.get("hard_stop_closes", "{}"))


def _exchange_orders(argv: list[str], key_file: Path) -> tuple[list[dict], dict]:
    """Every order of the account and its positions, as the venue has them."""
    keys = json.loads(key_file.read_text())
    base_url = argv[argv.index("--base-url") + 1]

    async def ask() -> tuple[list[dict], dict]:
        ad = make_adapter("binance", keys["apiKey"], keys["secret"], base_url=base_url,
                          throttle=False)  # fmt: skip
        try:
            orders = []
            for sym in SYMBOLS:
                orders += await ad._call(ad.ex.fapiPrivateGetAllOrders, {"symbol": sym})
            snap = await ad.fetch_account(list(SYMBOLS))
            return orders, snap.positions
        finally:
            await ad.close()

    return asyncio.run(ask())


@pytest.mark.slow
def test_kill_9_after_red_restart_finishes_the_panic_once_and_reset_ends_the_halt(tmp_path):
    config = _config(tmp_path)
    db = tmp_path / "state" / "live.sqlite"
    venue = subprocess.Popen(
        [*GRIDBOT, "venue", "--data", "data/sample/binance_spot_1m", "--port", "0",
         "--ws-port", "0", "--speed", "120", "--results", str(tmp_path / "venue"),
         "--config", str(config), "--balance", "1000"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    bots: list[subprocess.Popen] = []
    outputs: list[list[str]] = []
    try:
        cmd, vout = _read_until(venue, r"^\s+(.* live .*--base-url .*)$", timeout=120)
        _drain(venue, [])
        key_file = Path(re.search(r"written to (\S+) \(mode 0600\)", vout).group(1))
        argv = shlex.split(cmd)

        def start_bot(*extra: str, until: str = r"(status page): http") -> subprocess.Popen:
            p = subprocess.Popen([*argv, *extra], cwd=ROOT, stderr=subprocess.PIPE, text=True)
            bots.append(p)
            _, seen = _read_until(p, until, timeout=240)
            out = seen.splitlines()
            outputs.append(out)
            _drain(p, out)
            return p

        # trade until red fires, then kill -9 at once: its cancels and closes in flight
        bot = start_bot(until=r"(hard stop red \(score [0-9.]+\): cancelling)")
        bot.send_signal(signal.SIGKILL)
        bot.wait(timeout=30)
        h_kill, in_flight_at_kill = _hsl_state(db)
        assert h_kill[H.H_HALTED] == 1.0  # and it never restarts by itself (cooldown 0)
        assert h_kill[H.H_TRIGGERS] == 1.0

        # restart: it comes back red, finishes the panic, stays halted and places nothing
        bot = start_bot(until=r"(hard stop halted since a red trigger)")
        time.sleep(8)  # a dozen replayed minutes
        h_back, in_flight = _hsl_state(db)
        orders, positions = _exchange_orders(argv, key_file)
        bot.send_signal(signal.SIGINT)
        bot.wait(timeout=60)
        # a plain restart: still halted
        bot = start_bot(until=r"(hard stop halted since a red trigger)")
        time.sleep(4)
        bot.send_signal(signal.SIGINT)
        bot.wait(timeout=60)
        h_plain, _ = _hsl_state(db)
        orders_plain, _ = _exchange_orders(argv, key_file)
        # the operator ends the halt: green, trading again
        bot = start_bot("--reset-hard-stop", until=r"(hard stop reset by the operator)")
        deadline = time.monotonic() + 60
        orders_reset = orders_plain
        while time.monotonic() < deadline and len(orders_reset) == len(orders_plain):
            time.sleep(1)
            orders_reset, _ = _exchange_orders(argv, key_file)
        h_reset, _ = _hsl_state(db)
        bot.send_signal(signal.SIGINT)
        bot.wait(timeout=60)
    finally:
        for p in (*bots, venue):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    trigger_close_ms = h_kill[H.H_LAST_MS] + 60_000
    # flat at the end of the panic: every position the exchange reports is closed
    assert all(v == 0.0 for pos in positions.values() for v in pos[0::2]), positions
    assert in_flight == {}  # every close recorded before the kill was asked for and settled
    # exactly one filled hard-stop close per position (none twice, after the kill or not)
    closes = [o for o in orders if o["clientOrderId"].startswith("gbh")]
    filled = [(o["symbol"], o["positionSide"]) for o in closes if float(o["executedQty"]) > 0]
    assert filled and len(filled) == len(set(filled)), closes
    # the halt placed nothing: no order of ours but the closes after the trigger
    late = [o for o in orders_plain if o["clientOrderId"].startswith("gb")
            and not o["clientOrderId"].startswith("gbh") and o["time"] > trigger_close_ms]  # fmt: skip
    assert late == []
    # each close on its position side's closing side: it could only reduce (hedge mode)
    assert all((o["side"] == "SELL") == (o["positionSide"] == "LONG") for o in closes), closes
    # the halt on disk is the one the kill left (peak, EMA, score, trigger, terminal)
    for h in (h_back, h_plain):
        for i in (H.H_PEAK, H.H_EMA, H.H_HALTED, H.H_TERMINAL, H.H_TRIGGER_SCORE, H.H_TRIGGERS):
            assert h[i] == h_kill[i], (i, h, h_kill)
    # --reset-hard-stop: green, not halted, the peak at the equity then, orders again
    assert h_reset[H.H_HALTED] == 0.0 and h_reset[H.H_TIER] != H.TIER_RED
    assert len(orders_reset) > len(orders_plain)
    text = "\n".join(line for out in outputs for line in out)
    assert "Traceback" not in text
    print("closes in flight at the kill:", in_flight_at_kill)

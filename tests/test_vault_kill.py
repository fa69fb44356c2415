"""kill -9 of a real `gridbot live` process in the middle of a vault unwind, then a restart:
the unwind resumes where it stopped, the ledger agrees with the exchange's record of every
close, and the payout is recorded once."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from bot.exchange.registry import make_adapter
from tests.test_live_replay import TIGHT_GRID_SIDE
from tests.test_live_unattended import GRIDBOT, ROOT, SYMBOLS, _drain, _read_until


def _config(tmp: Path) -> Path:
    side = {**TIGHT_GRID_SIDE, "unstuck_close_pct": 0.0}
    cfg = {
        "bot": {"long": side, "short": {**side, "enabled": True}},
        "live": {
            "symbols": list(SYMBOLS),
            "leverage": 10.0,
            "state_dir": str(tmp / "state"),
            "status_port": 0,
            "log_file": str(tmp / "log" / "gridbot.jsonl"),
        },  # fmt: skip
        "backtest": {"data": str(ROOT / "data/sample/binance_spot_1m"), "starting_balance": 1000},
        "vault": {"enabled": True, "payout_delay_hours": 0.0, "max_participation_pct": 1e-5},
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _q(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return
        except sqlite3.OperationalError:
            pass  # the bot has not created the tables yet
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*GRIDBOT, "vault", *args, "--config", str(config)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.slow
def test_kill_9_mid_unwind_then_restart_resumes_and_pays_once(tmp_path):
    config = _config(tmp_path)
    ledger = tmp_path / "state" / "vault.sqlite"
    venue = subprocess.Popen(
        [*GRIDBOT, "venue", "--data", "data/sample/binance_spot_1m", "--port", "0",
         "--ws-port", "0", "--speed", "120", "--results", str(tmp_path / "venue"),
         "--config", str(config)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    bots: list[subprocess.Popen] = []
    try:
        cmd, vout = _read_until(venue, r"^\s+(.* live .*--base-url .*)$", timeout=120)
        _drain(venue, [])
        key_file = Path(__import__("re").search(r"written to (\S+) \(mode 0600\)", vout).group(1))
        argv = shlex.split(cmd)

        def start_bot() -> subprocess.Popen:
            p = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
            bots.append(p)
            _read_until(p, r"status page: (http://127\.0\.0\.1:\d+)")
            _drain(p, [])
            return p

        bot = start_bot()
        _cli(config, "deposit", "--depositor", "alice", "--amount", "1000")
        _wait(lambda: _q(ledger, "SELECT status FROM requests") == [("done",)], 60, "deposit")
        time.sleep(20)  # the grid trades into positions
        _cli(config, "withdraw", "--depositor", "alice", "--shares", "90%")
        _wait(lambda: _q(ledger, "SELECT COUNT(*) FROM exits")[0][0] == 1, 60, "the exit")
        n_slices = _q(ledger, "SELECT COUNT(*) FROM slices")[0][0]
        assert n_slices >= 1
        # a few tranches in, not finished: kill -9
        _wait(lambda: _q(ledger, "SELECT COUNT(*) FROM unwind_orders WHERE status = 'filled'")[0][0]
              >= 2, 120, "tranches")  # fmt: skip
        bot.send_signal(signal.SIGKILL)
        bot.wait(timeout=30)
        status_at_kill = _q(ledger, "SELECT status, progress FROM exits")[0]
        assert status_at_kill[0] == "unwinding", status_at_kill
        bot = start_bot()
        _wait(lambda: _q(ledger, "SELECT status FROM exits")[0][0] == "paid", 300, "the payout")
        bot.send_signal(signal.SIGINT)
        bot.wait(timeout=60)
        orders = _q(ledger, "SELECT client_id, symbol, status, filled FROM unwind_orders")
        slices = _q(ledger, "SELECT symbol, side, qty, done FROM slices")
        payouts = _q(ledger, "SELECT COUNT(*) FROM history WHERE kind = 'payout'")[0][0]
        keys = json.loads(key_file.read_text())
        base_url = argv[argv.index("--base-url") + 1]

        async def exchange_view() -> dict[str, float]:
            ad = make_adapter("binance", keys["apiKey"], keys["secret"], base_url=base_url,
                             throttle=False)  # fmt: skip
            try:
                out = {}
                for sym in SYMBOLS:
                    raw = await ad._call(ad.ex.fapiPrivateGetAllOrders, {"symbol": sym})
                    for o in raw:
                        if o["clientOrderId"].startswith("gbv"):
                            out[o["clientOrderId"]] = float(o["executedQty"])
                return out
            finally:
                await ad.close()

        on_exchange = asyncio.run(exchange_view())
    finally:
        for p in (*bots, venue):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    assert payouts == 1  # paid once
    assert all(s == "filled" or (s == "missing" and f == 0.0) for _, _, s, f in orders)
    for sym, side, qty, done in slices:
        assert done == pytest.approx(qty), (sym, side)  # every slice closed, not more
    # the ledger's record of every close is the exchange's: nothing lost, nothing twice
    filled = {cid: f for cid, _, s, f in orders if f > 0.0 and cid.startswith("gbv")}
    assert {c: q for c, q in on_exchange.items() if q > 0.0} == pytest.approx(filled)

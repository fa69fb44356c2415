"""`gridbot live --dry-run`: the whole live loop against the in-process simulated venue, through
the real console entry, stopped by the clock or by SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CMD = [sys.executable, "-m", "bot.cli", "live", "configs/default.hjson", "--dry-run"]


@pytest.mark.slow
def test_dry_run_trades_the_simulated_venue_and_stops_cleanly():
    proc = subprocess.run(
        [*CMD, "--speed", "3000", "--max-minutes", "0.25"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "leverage 10" in proc.stderr  # the start-up check ran and passed
    m = re.search(r"stopped cleanly; (\d+) fills this session", proc.stderr)
    assert m and int(m.group(1)) > 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_dry_run_stops_cleanly_on_sigint():
    proc = subprocess.Popen([*CMD, "--speed", "600"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += line
            if "started:" in line or not line:
                break
        assert "started:" in seen, seen[-2000:]
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
        assert proc.returncode == 0, rest[-2000:]
        assert "stopped cleanly" in rest
    finally:
        if proc.poll() is None:
            proc.kill()

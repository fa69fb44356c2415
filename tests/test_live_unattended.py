"""End to end, through the real console entry: a dry run serves the status page and API, and a
real headless Chromium loads the page, sees every coin and sees it update; the README's paper
trading path (`gridbot venue` prints the `gridbot live` command, which trades it) with the log
file, `gridbot status`, alerts to a webhook that hangs (trading goes on) and no secret in any
output."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
GRIDBOT = [sys.executable, "-m", "bot.cli"]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "DOGEUSDT")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _config(tmp: Path, **live: object) -> Path:
    cfg = {
        "bot": {
            "long": {"total_wallet_exposure_limit": 1.5, "n_positions": 3},
            "short": {"enabled": True, "total_wallet_exposure_limit": 0.5, "n_positions": 3},
        },
        "live": {
            "symbols": list(SYMBOLS),
            "leverage": 10.0,
            "state_dir": str(tmp / "state"),
            "status_port": 0,
            "log_file": str(tmp / "log" / "gridbot.jsonl"),
            "heartbeat_minutes": 0.02,
            **live,
        },
        "backtest": {"data": str(ROOT / "data/sample/binance_spot_1m")},
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float = 120.0) -> tuple[str, str]:
    """stderr lines until one matches ``pattern``: (the match's group 1, everything read)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        m = re.search(pattern, line)
        if m:
            return m.group(1), seen
    raise AssertionError(f"no {pattern!r} in the output:\n{seen[-3000:]}")


def _drain(proc: subprocess.Popen, into: list[str]) -> threading.Thread:
    t = threading.Thread(target=lambda: into.extend(iter(proc.stderr.readline, "")), daemon=True)
    t.start()
    return t


def _dump_dom(chromium: str, url: str) -> str:
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_the_status_page_loads_in_a_real_browser_shows_each_coin_and_updates(tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip(
            "Chromium is not installed: .ci/setup-system.sh installs it with apt-get where it "
            "can (root and apt-get); here it could not, so the browser test cannot run"
        )
    config = _config(tmp_path)
    proc = subprocess.Popen(
        [*GRIDBOT, "live", str(config), "--dry-run", "--speed", "300"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rest: list[str] = []
    try:
        url, seen = _read_until(proc, r"status page: (http://127\.0\.0\.1:\d+)")
        _read_until(proc, r"(started:)")
        drain = _drain(proc, rest)
        time.sleep(3)
        dom1 = _dump_dom(chromium, url + "/")
        time.sleep(2.5)
        dom2 = _dump_dom(chromium, url + "/")
        with urllib.request.urlopen(url + "/api/status", timeout=10) as r:
            api = json.loads(r.read())
        # the first re-grid (an order cancelled) comes some 40 candles in (8 s at this speed):
        # wait for it in the log rather than race it
        log_path = tmp_path / "log/gridbot-dry-run.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and '"order_cancelled"' not in log_path.read_text():
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        drain.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = seen + "".join(rest)
    assert proc.returncode == 0, out[-3000:]
    for dom in (dom1, dom2):
        assert '<div id="error"></div>' in dom  # the script reached the API
        assert "dry run on binance" in dom
        for s in SYMBOLS:
            assert f'id="coin-{s}"' in dom, s  # the script rendered each coin's card
        assert "open orders" in dom
    t1 = float(re.search(r'id="updated" data-t="([\d.]+)"', dom1).group(1))
    t2 = float(re.search(r'id="updated" data-t="([\d.]+)"', dom2).group(1))
    assert t2 > t1  # the page updated (it polls the API)
    assert [c["symbol"] for c in api["coins"]] == list(SYMBOLS)
    assert api["streams"]["market"]["up"] and api["last_reconciliation_age_seconds"] is not None
    # the log file: the heartbeat, and each order created or cancelled, at INFO
    lines = [
        json.loads(x) for x in (tmp_path / "log/gridbot-dry-run.jsonl").read_text().splitlines()
    ]
    events = {x.get("event") for x in lines}
    assert {"heartbeat", "order_created", "order_cancelled"} <= events, events
    assert re.search(r"INFO gridbot\.live\.orders: \w+ created (BUY|SELL) (LONG|SHORT) ", out)


class _HangingHook:
    """A webhook on 127.0.0.1 (its own thread) that records each body and never answers."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._release: asyncio.Event | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        assert self._release is not None
        await self._release.wait()
        return web.Response(status=200)

    def __enter__(self) -> _HangingHook:
        async def start() -> None:
            self._release = asyncio.Event()
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._release is not None
            self._release.set()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.slow
def test_paper_trading_with_the_command_the_venue_prints(tmp_path):
    """The README's path: `gridbot venue` (history served, a key file written) prints the
    `gridbot live` command; that command trades it. Alerts go to a webhook that never answers:
    trading goes on. The page, the API, `gridbot status`, the log file and the alerts hold no
    secret."""
    token = "tok-" + "Q" * 24
    bot_token = "987654321:AAsecretTelegramTokenZZ"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDBOT_")}
    with _HangingHook() as hook:
        config = _config(tmp_path, alerts={"fills": True})
        env_bot = {**env, "GRIDBOT_STATUS_TOKEN": token,
                   "GRIDBOT_ALERTS_URL": f"{hook.url}/bot{bot_token}/sendMessage"}  # fmt: skip
        venue = subprocess.Popen(
            [*GRIDBOT, "venue", "--data", "data/sample/binance_spot_1m", "--port", "0",
             "--ws-port", "0", "--speed", "300", "--results", str(tmp_path / "venue"),
             "--config", str(config)],
            cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        bot = None
        try:
            cmd, vout = _read_until(venue, r"^\s+(.* live .*--base-url .*)$", timeout=120)
            venue_rest: list[str] = []
            _drain(venue, venue_rest)
            assert "history 720 candles" in vout  # the EMAs' warm-up, served as klines
            key_file = re.search(r"written to (\S+) \(mode 0600\)", vout).group(1)
            assert (tmp_path / "venue/venue_api_key.json").resolve() == Path(key_file)
            keys = json.loads(Path(key_file).read_text())
            argv = shlex.split(cmd)
            assert argv[:3] == [sys.executable, "-m", "bot.cli"]  # this very gridbot
            assert argv[3:6] == ["live", str(config), "--exchange"]
            assert "--key-file" in argv and "--base-url" in argv and "--ws-url" in argv
            bot = subprocess.Popen(
                [*argv, "--max-minutes", "0.5"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                env=env_bot,
            )  # fmt: skip
            url, seen = _read_until(bot, r"status page: (http://127\.0\.0\.1:\d+)")
            rest: list[str] = []
            drain = _drain(bot, rest)
            time.sleep(12)
            req = urllib.request.Request(url + "/api/status",
                                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=10) as r:
                api_text = r.read().decode()
            with urllib.request.urlopen(f"{url}/?token={token}", timeout=10) as r:
                page = r.read().decode()
            status = subprocess.run(
                [*GRIDBOT, "status", "--url", url, "--json"], cwd=ROOT, capture_output=True,
                text=True, timeout=60, env=env_bot,
            )  # fmt: skip
            no_token = subprocess.run(
                [*GRIDBOT, "status", "--url", url], cwd=ROOT, capture_output=True, text=True,
                timeout=60, env=env,
            )  # fmt: skip
            bot.wait(timeout=120)
            drain.join(10)
        finally:
            for p in (bot, venue):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGINT)
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
        alerts = list(hook.bodies)
    out = seen + "".join(rest)
    assert bot.returncode == 0, out[-3000:]
    m = re.search(r"stopped cleanly; (\d+) fills this session", out)
    assert m and int(m.group(1)) > 0, out[-3000:]  # trading went on while the webhook hung
    api = json.loads(api_text)
    assert api["dry_run"] is False and [c["symbol"] for c in api["coins"]] == sorted(SYMBOLS)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["symbols"] == sorted(SYMBOLS)
    assert no_token.returncode == 2 and "HTTP 401" in no_token.stderr
    # alerts were queued and posted (the first one hangs; the rest wait in the queue)
    assert alerts and alerts[0]["kind"] == "started"
    log_text = (tmp_path / "log/gridbot.jsonl").read_text()
    events = {json.loads(x).get("event") for x in log_text.splitlines()}
    assert {"heartbeat", "order_created", "fill"} <= events, events
    for secret in (keys["apiKey"], keys["secret"], token, bot_token):
        for name, text in (("api", api_text), ("page", page), ("status", status.stdout),
                           ("log file", log_text), ("stderr", out),
                           ("alerts", json.dumps(alerts))):  # fmt: skip
            assert secret not in text, f"a secret in the {name}"

"""Leaving the bot running: the alerts (against a local webhook on 127.0.0.1), the status
snapshot's numbers (from the core), the status API and its token, the JSON-lines log and its
heartbeat, `gridbot status`, and that no secret reaches any of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from bot.config import Config, parse_config
from bot.core import bankruptcy_price, liquidation_price
from bot.errors import ConfigError
from bot.exchange.registry import make_adapter
from bot.live.alerts import AlertSender, payload, public_origin
from bot.live.bot import LiveBot, LiveFill
from bot.live.monitor import Monitor, is_loopback, secret_parts_of_url
from bot.live.orders import LiveOrder
from bot.live.status import StatusServer
from bot.live.status_snapshot import build_status, distance_pct
from bot.markets import market_spec

ROOT = Path(__file__).resolve().parent.parent

API_KEY = "apikey-AAAAbbbbCCCCdddd"
API_SECRET = "secret-EEEEffffGGGGhhhh"
TOKEN = "status-token-IIIIjjjjKKKK"
BOT_TOKEN = "123456789:TELEGRAMtokenLLLLmmmm"
LISTEN_KEY = "listenkey-NNNNooooPPPP"
SECRETS = (API_KEY, API_SECRET, TOKEN, BOT_TOKEN, LISTEN_KEY)


# ---------------------------------------------------------------------------------------------
# a local webhook


class Hook:
    """An aiohttp server on 127.0.0.1 that records every POST; ``fail_first`` answers 503 that
    many times first; ``hang`` seconds of delay before each answer (the body is read first)."""

    def __init__(self, fail_first: int = 0, hang: float = 0.0, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.times: list[float] = []
        self.fail_first = fail_first
        self.hang = hang
        self.status = status
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.times.append(time.monotonic())
        self.paths.append(request.path)
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503, text="busy")
        self.bodies.append(body)
        if self.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hang)
        return web.json_response({"ok": True}, status=self.status)

    async def __aenter__(self) -> Hook:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        self.release.set()  # a hanging answer ends with the test
        await self.runner.cleanup()


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# a bot's book, without an exchange


def fake_bot(config: Config | None = None, balance: float = 1000.0) -> LiveBot:
    """A real LiveBot with its markets attached and no exchange behind it (never asked)."""
    config = config or Config()
    state = tempfile.mkdtemp(prefix="gridbot-monitor-")
    live = config.live.model_copy(update={"state_dir": state})
    config = config.model_copy(update={"live": live})
    adapter = make_adapter("binance", "k", "s", base_url="http://127.0.0.1:1")
    bot = LiveBot(config, adapter, symbols=["BTCUSDT", "ETHUSDT"], ws_url="ws://127.0.0.1:1")
    bot.attach_markets({s: market_spec(s) for s in bot.symbols}, balance)
    bot.coins["BTCUSDT"].last_price = 30000.0
    bot.coins["ETHUSDT"].last_price = 2000.0
    bot.feeds.listen_key = LISTEN_KEY
    return bot


def set_pos(bot: LiveBot, symbol: str, j: int, size: float, price: float) -> None:
    side = bot.book.coins[symbol].sides[j]
    side.size, side.price = size, price


def live_config(**alerts: object) -> Config:
    return parse_config({"live": {"status_port": 0, "log_file": None, "alerts": alerts}})


# ---------------------------------------------------------------------------------------------
# the status numbers


def test_status_numbers_come_from_the_core():
    bot = fake_bot(balance=1000.0)
    btc = bot.coins["BTCUSDT"]
    set_pos(bot, btc.symbol, 0, 0.1, 35000.0)  # WE 3.5 at 35000
    bot.book.coins["BTCUSDT"].open["gb1"] = LiveOrder("BTCUSDT", 1, 0.01, 29000.0, 2, 0, "gb1", "1")
    st = build_status(bot)
    c = st["coins"][0]
    assert c["symbol"] == "BTCUSDT"
    assert c["long"]["wallet_exposure"] == pytest.approx(3.5)
    assert c["long"]["wallet_exposure_limit"] == pytest.approx(1.0)
    assert c["long"]["exposure_of_limit_pct"] == pytest.approx(350.0)
    # one coin with a position: the account's bankruptcy is this coin's
    assert c["bankruptcy_price"] == pytest.approx(bankruptcy_price(1000.0, 0.1, 35000.0, 0, 0))
    assert c["bankruptcy_price"] == pytest.approx(25000.0)
    assert c["bankruptcy_distance_pct"] == pytest.approx((30000 - 25000) / 30000 * 100)
    liq = liquidation_price(1000.0, 0.1, 35000.0, 0.0, 0.0, btc.spec.tiers, 0.0, 0.0)
    assert c["liquidation_price"] == pytest.approx(liq)
    assert 25000 < liq < 30000
    assert st["account"]["equity"] == pytest.approx(1000.0 + 0.1 * (30000 - 35000))
    assert c["open_orders"] == [
        {
            "side": "BUY",
            "position_side": "LONG",
            "kind": "entry_grid",
            "qty": 0.01,
            "price": 29000.0,
        }
    ]
    assert st["coins"][1]["bankruptcy_price"] is None  # flat: no price


def test_cross_margin_counts_the_other_coins():
    bot = fake_bot(balance=1000.0)
    set_pos(bot, "BTCUSDT", 0, 0.1, 35000.0)
    set_pos(bot, "ETHUSDT", 0, 1.0, 2500.0)  # -500 unrealized at 2000
    c = build_status(bot)["coins"][0]
    assert c["bankruptcy_price"] == pytest.approx(
        bankruptcy_price(1000.0 - 500.0, 0.1, 35000.0, 0.0, 0.0)
    )
    assert distance_pct(100.0, 90.0, 1.0) == pytest.approx(10.0)
    assert distance_pct(100.0, 110.0, -1.0) == pytest.approx(10.0)
    assert distance_pct(100.0, 110.0, 0.0) is None


# ---------------------------------------------------------------------------------------------
# alerts


def test_alert_payload_formats():
    j = payload("json", "stopped", "stopped: cleanly", severity="warning", data={"a": 1}, when=0)
    assert j == {"source": "gridbot", "kind": "stopped", "severity": "warning",
                 "time": "1970-01-01T00:00:00Z", "text": "stopped: cleanly", "data": {"a": 1}}  # fmt: skip
    t = payload("telegram", "fill", "BTCUSDT fill", chat_id=-100123)
    assert t["chat_id"] == -100123 and "gridbot fill: BTCUSDT fill" in t["text"]
    d = payload("discord", "fill", "x" * 5000)
    assert d["username"] == "gridbot" and len(d["content"]) == 2000
    assert public_origin(f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage") == (
        "https://api.telegram.org"
    )
    parts = secret_parts_of_url(f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage?k=v")
    assert BOT_TOKEN in parts and "k=v" in parts and "sendMessage" not in parts
    discord = "https://discord.com/api/webhooks/123456789012345678/" + "T" * 68
    assert "T" * 68 in secret_parts_of_url(discord) and "webhooks" not in secret_parts_of_url(
        discord
    )


def test_alerts_are_retried_with_backoff_after_5xx():
    async def go():
        async with Hook(fail_first=3) as hook:
            s = AlertSender(hook.url + "/hook", "json", backoff_seconds=0.05, max_retries=5)
            await s.start()
            s.send("stopped", "stopped: test")
            await _until(lambda: s.sent == 1)
            await s.close()
            return hook, s

    hook, s = asyncio.run(go())
    assert [b["kind"] for b in hook.bodies] == ["stopped"]
    assert len(hook.times) == 4  # three 503s, then delivered
    gaps = [b - a for a, b in zip(hook.times, hook.times[1:], strict=False)]
    assert gaps[0] >= 0.05 * 0.75 - 0.01
    assert gaps[2] > gaps[0]  # exponential: 0.05, 0.1, 0.2 (x 0.75..1.25 jitter)
    assert s.failed == 0


def test_a_refusing_webhook_is_not_retried_and_a_full_queue_drops_the_oldest(caplog):
    async def go():
        async with Hook(status=400) as hook:
            s = AlertSender(
                hook.url + f"/bot{BOT_TOKEN}/x", "json", backoff_seconds=0.01, queue_size=3
            )
            for i in range(5):  # not started yet: nothing is sent, the queue fills
                s.send("fill", f"fill {i}")
            assert s.dropped == 2 and s.pending == 3
            await s.start()
            await _until(lambda: s.failed == 3)
            await s.close()
            return hook, s

    with caplog.at_level(logging.WARNING, logger="gridbot.live.alerts"):
        hook, s = asyncio.run(go())
    assert [b["text"] for b in hook.bodies] == ["fill 2", "fill 3", "fill 4"]  # oldest dropped
    assert "dropped the oldest alert" in caplog.text
    assert "HTTP 400" in caplog.text
    assert BOT_TOKEN not in caplog.text  # the URL's token is never logged


def test_a_hanging_webhook_never_blocks_the_sender():
    async def go():
        async with Hook(hang=30.0) as hook:
            s = AlertSender(hook.url, "json", timeout_seconds=60.0)
            await s.start()
            t0 = time.monotonic()
            for i in range(500):
                s.send("fill", f"fill {i}")
            queued = time.monotonic() - t0
            await _until(lambda: len(hook.bodies) == 1)
            t1 = time.monotonic()
            await s.close(timeout=0.2)  # bounded: the stop never waits for the webhook
            return queued, time.monotonic() - t1, s

    queued, closing, s = asyncio.run(go())
    assert queued < 0.5
    assert closing < 2.0
    assert s.dropped == 400  # a queue of 100


# ---------------------------------------------------------------------------------------------
# the monitor: each alert kind once, with the right payload


def _drive_every_alert(monitor: Monitor, bot: LiveBot) -> None:
    """Make the monitor raise each alert kind exactly once."""
    monitor.started()
    # a fill (fills: true)
    f = LiveFill(1_000, "BTCUSDT", 1, 0.1, 35000.0, 1, "gb1")
    bot.fills.append(f)
    monitor("fill", fill=f)
    # the exchange changed a position behind our back
    monitor("position_changed", symbol="BTCUSDT", j=0, ours=0.2, exchange=0.1)
    # WE 3.5 long at 35000, the price at 26000: liquidation is close
    set_pos(bot, "BTCUSDT", 0, 0.1, 35000.0)
    bot.coins["BTCUSDT"].last_price = 26000.0
    now = time.time()
    monitor("stream", name="market", up=True)
    monitor("stream", name="market", up=False)
    monitor.tick(now + 0.5)  # not down long enough yet
    monitor.tick(now + 5.0)  # stream_down (after 2 s), liquidation_risk
    monitor.tick(now + 6.0)  # nothing new: each alert once
    monitor("stream", name="market", up=True)  # stream_restored
    for i in range(4):  # repeated errors (3 in the window), the secret in an error text
        monitor("order_error", symbol="BTCUSDT", text=f"create refused {i} key={API_KEY}")
    monitor.stopped(f"ExchangeError: boom {API_SECRET}", error=True)


KINDS = ["started", "fill", "position_changed", "stream_down", "liquidation_risk",
         "stream_restored", "repeated_errors", "stopped"]  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "telegram", "discord"])
def test_each_alert_kind_once_with_the_right_payload(fmt, tmp_path):
    async def go():
        async with Hook() as hook:
            path = f"/bot{BOT_TOKEN}/sendMessage" if fmt == "telegram" else "/hook"
            cfg = live_config(
                url=hook.url + path,
                format=fmt,
                telegram_chat_id=-100123 if fmt == "telegram" else None,
                fills=True,
                stream_down_seconds=2.0,
                repeated_errors=3,
                liquidation_distance_pct=10.0,
            )
            bot = fake_bot(cfg)
            env = {"GRIDBOT_STATUS_TOKEN": TOKEN}
            m = Monitor(bot, cfg.live, secrets=[API_KEY, API_SECRET], env=env,
                        log_file=str(tmp_path / "g.jsonl"))  # fmt: skip
            await m.start()
            try:
                _drive_every_alert(m, bot)
                await _until(lambda: len(hook.bodies) >= len(KINDS))
                await asyncio.sleep(0.2)  # nothing more arrives
                status = json.dumps(m.status())
            finally:
                await m.close()
            return hook, status

    hook, status = asyncio.run(go())
    text = json.dumps(hook.bodies)
    for s in SECRETS:
        assert s not in text
        assert s not in status
        assert s not in (tmp_path / "g.jsonl").read_text()
    if fmt == "json":
        kinds = [b["kind"] for b in hook.bodies]
        assert sorted(kinds) == sorted(KINDS), kinds
        by = {b["kind"]: b for b in hook.bodies}
        assert by["liquidation_risk"]["severity"] == "critical"
        assert by["liquidation_risk"]["data"]["symbol"] == "BTCUSDT"
        assert 0 < by["liquidation_risk"]["data"]["distance_pct"] < 10
        assert by["position_changed"]["data"] == {
            "symbol": "BTCUSDT", "side": "long", "ours": 0.2, "exchange": 0.1
        }  # fmt: skip
        assert by["stream_down"]["data"] == {"stream": "market"}
        assert by["fill"]["data"]["price"] == 35000.0
        assert by["repeated_errors"]["data"]["errors"] == 3
        assert "ExchangeError: boom ***" in by["stopped"]["text"]
        assert set(hook.paths) == {"/hook"}
    elif fmt == "telegram":
        assert len(hook.bodies) == len(KINDS)
        assert all(b["chat_id"] == -100123 for b in hook.bodies)
        lines = [b["text"] for b in hook.bodies]
        for k in KINDS:
            assert sum(f"gridbot {k}:" in t for t in lines) == 1, k
        assert set(hook.paths) == {f"/bot{BOT_TOKEN}/sendMessage"}
    else:
        assert len(hook.bodies) == len(KINDS)
        lines = [b["content"] for b in hook.bodies]
        for k in KINDS:
            assert sum(f"gridbot {k}:" in t for t in lines) == 1, k
        assert all(b["username"] == "gridbot" for b in hook.bodies)


def test_the_monitor_never_raises_into_the_bot(caplog):
    bot = fake_bot()
    m = Monitor(bot, Config().live, env={}, log_file="")
    with caplog.at_level(logging.ERROR):
        m("fill", fill=None)  # a broken event: logged, not raised
    assert "handling the fill event failed" in caplog.text


# ---------------------------------------------------------------------------------------------
# the status page and API


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_status_api_checks_the_token_on_every_request():
    async def go():
        bot = fake_bot()
        set_pos(bot, "BTCUSDT", 0, 0.01, 30000.0)
        m = Monitor(bot, Config().live, env={"GRIDBOT_STATUS_TOKEN": TOKEN}, log_file="")
        server = StatusServer(m.status, "127.0.0.1", 0, m.token)
        url = await server.start()
        loop = asyncio.get_running_loop()
        try:
            return url, [
                await loop.run_in_executor(None, _get, url + "/api/status"),
                await loop.run_in_executor(None, _get, url + "/api/status?token=wrong"),
                await loop.run_in_executor(None, _get, url + f"/api/status?token={TOKEN}"),
                await loop.run_in_executor(
                    None, _get, url + "/api/status", {"Authorization": f"Bearer {TOKEN}"}
                ),
                await loop.run_in_executor(None, _get, url + f"/?token={TOKEN}"),
                await loop.run_in_executor(None, _get, url + "/"),
            ]
        finally:
            await server.stop()

    url, answers = asyncio.run(go())
    assert url.startswith("http://127.0.0.1:")
    (s1, _), (s2, _), (s3, b3), (s4, b4), (s5, page), (s6, _) = answers
    assert (s1, s2, s3, s4, s5, s6) == (401, 401, 200, 200, 200, 401)
    st = json.loads(b3)
    assert st["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert st["coins"][0]["long"]["size"] == 0.01
    for s in SECRETS:
        assert s not in b3 and s not in b4 and s not in page
    assert "api/status" in page


def test_binding_beyond_loopback_needs_a_token():
    cfg = parse_config({"live": {"status_host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="live.status_host.*GRIDBOT_STATUS_TOKEN"):
        Monitor(fake_bot(), cfg.live, env={}, log_file="").check()
    Monitor(fake_bot(), cfg.live, env={"GRIDBOT_STATUS_TOKEN": TOKEN}, log_file="").check()
    Monitor(fake_bot(), Config().live, env={}, log_file="").check()  # loopback: no token needed
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    tg = parse_config({"live": {"alerts": {"format": "telegram", "url": "https://x/bot1/y"}}})
    with pytest.raises(ConfigError, match="telegram_chat_id"):
        Monitor(fake_bot(), tg.live, env={}, log_file="").check()


def test_config_keys_are_validated_by_name():
    with pytest.raises(ConfigError, match="live.alerts.format"):
        parse_config({"live": {"alerts": {"format": "slack"}}})
    with pytest.raises(ConfigError, match="live.status_port"):
        parse_config({"live": {"status_port": 70000}})
    with pytest.raises(ConfigError, match="live.heartbeat_minutes"):
        parse_config({"live": {"heartbeat_minutes": -1}})
    assert parse_config({"live": {"status_port": None}}).live.status_port is None


# ---------------------------------------------------------------------------------------------
# the log file


def test_log_file_holds_orders_fills_and_the_heartbeat_as_json_lines(tmp_path):
    async def go():
        cfg = parse_config({"live": {"heartbeat_minutes": 0.01, "log_max_mb": 0.004,
                                     "log_backups": 2}})  # fmt: skip
        bot = fake_bot(cfg)
        set_pos(bot, "BTCUSDT", 0, 0.01, 30000.0)
        m = Monitor(bot, cfg.live, secrets=[API_KEY], env={}, log_file=str(tmp_path / "g.jsonl"))
        await m.start()
        try:
            o = LiveOrder("BTCUSDT", 1, 0.01, 29000.0, 2, 0, "gb1", "1")
            m("order_created", order=o)
            m("order_cancelled", order=o)
            f = LiveFill(1_000, "BTCUSDT", 1, 0.01, 29000.0, 1, "gb1")
            m("fill", fill=f)
            logging.getLogger("gridbot.live.bot").warning(
                "listen key %s key %s", LISTEN_KEY, API_KEY
            )
            m.tick()
            first = (tmp_path / "g.jsonl").read_text()
            for _ in range(40):  # rotation at ~4 kB, two backups kept
                m.tick(time.time() + 3600)
                m._next_heartbeat = 0.0
        finally:
            await m.close()
        return first

    first = asyncio.run(go())
    lines = [json.loads(x) for x in first.splitlines()]
    events = [x.get("event") for x in lines]
    assert "order_created" in events and "order_cancelled" in events and "fill" in events
    hb = next(x for x in lines if x.get("event") == "heartbeat")
    assert hb["level"] == "INFO" and hb["logger"] == "gridbot.live.heartbeat"
    assert hb["data"]["balance"] == 1000.0
    pos = hb["data"]["positions"][0]
    assert pos["symbol"] == "BTCUSDT" and pos["side"] == "long"
    assert pos["wallet_exposure"] == pytest.approx(0.3)
    assert pos["wallet_exposure_limit"] == pytest.approx(1.0)
    created = next(x for x in lines if x.get("event") == "order_created")
    assert created["message"] == "BTCUSDT created BUY LONG 0.01 @ 29000 (entry_grid)"
    assert created["time"].endswith("Z")
    assert LISTEN_KEY not in first and API_KEY not in first
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["g.jsonl", "g.jsonl.1", "g.jsonl.2"]


# ---------------------------------------------------------------------------------------------
# gridbot status


def test_gridbot_status_says_when_the_bot_is_not_reachable():
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "status", "--url", "http://127.0.0.1:9", "--timeout", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "cannot reach the bot's status API at http://127.0.0.1:9/api/status" in proc.stderr


def test_gridbot_status_prints_the_api_as_tables_and_json():
    import threading

    bot = fake_bot()
    set_pos(bot, "BTCUSDT", 0, 0.01, 30000.0)
    m = Monitor(bot, Config().live, env={}, log_file="")
    loop = asyncio.new_event_loop()
    server = StatusServer(m.status, "127.0.0.1", 0)
    url = loop.run_until_complete(server.start())
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        cmd = [sys.executable, "-m", "bot.cli", "status", "--url", url]
        js = subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        tab = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
    assert js.returncode == 0, js.stderr
    st = json.loads(js.stdout)
    assert [c["symbol"] for c in st["coins"]] == ["BTCUSDT", "ETHUSDT"]
    assert tab.returncode == 0, tab.stderr
    assert "BTCUSDT" in tab.stderr and "ETHUSDT" in tab.stderr and "balance" in tab.stderr


def test_a_taken_status_port_is_logged_and_trading_goes_on(caplog):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]

    async def go():
        cfg = parse_config({"live": {"status_port": port}})
        m = Monitor(fake_bot(cfg), cfg.live, env={}, log_file="")
        await m.start()  # does not raise
        await m.close()
        return m

    try:
        with caplog.at_level(logging.ERROR, logger="gridbot.live.monitor"):
            m = asyncio.run(go())
    finally:
        sock.close()
    assert m.status_url is None
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
    assert m.events[-1]["kind"] == "status_page"

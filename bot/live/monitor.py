"""Watching a running bot: its event sink, the status page, the log file, the heartbeat and
the alerts, in one place that :mod:`bot.commands.live` starts beside the bot.

The bot reports events through one callback, ``LiveBot.notify(kind, **fields)`` (a no-op by
default); :class:`Monitor` is that callback. Events the bot reports:

============================  ===============================================================
``fill``                      a fill of ours (``fill``: a LiveFill)
``order_created``             an order of ours placed (``order``: a LiveOrder)
``order_cancelled``           an order of ours cancelled (``order``)
``order_error``               an order refused or failed (``symbol``, ``text``)
``position_changed``          the exchange reports a position our fills do not explain
                              (deleverage, ADL, a manual trade): ``symbol``, ``j``, ``ours``,
                              ``exchange``
``stream``                    a stream connected or dropped (``name``, ``up``)
``reconciled``                the book was re-synced with the exchange over REST
``account_reset``             the exchange's history went backwards (``symbols``): a reset
============================  ===============================================================

Nothing here may slow the trading loop: every handler only records and queues; the page is
built on request, alerts are posted by their own task, and a failure in any of it is logged,
never raised into the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from bot.config import LiveConfig
from bot.errors import ConfigError
from bot.live.alerts import AlertSender, public_origin
from bot.live.logfile import heartbeat_fields, install_log_file
from bot.live.status_snapshot import build_status, warm_up
from bot.redaction import redact

__all__ = ["Monitor", "is_loopback", "secret_parts_of_url"]

log = logging.getLogger("gridbot.live.monitor")
orders_log = logging.getLogger("gridbot.live.orders")

_SIDE = ("long", "short")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secret_parts_of_url(url: str) -> list[str]:
    """What of a webhook URL must never be shown: all of it but the scheme and host (a Telegram
    bot token and a Discord webhook token live in the path; some services put keys in the
    query)."""
    parts = urlsplit(url)
    out = [url]
    for seg in parts.path.split("/"):
        if len(seg) >= 16:  # tokens, ids; not words like "sendMessage" or "webhooks"
            out.append(seg)
            if seg.startswith("bot") and ":" in seg:  # Telegram: bot<TOKEN>
                out.append(seg[3:])
    if parts.query:
        out.append(parts.query)
    if parts.password:
        out.append(parts.password)
    return out


class _ErrorCounter(logging.Handler):
    """Counts ERROR records of the gridbot loggers towards the repeated-errors alert."""

    def __init__(self, monitor: Monitor) -> None:
        super().__init__(level=logging.ERROR)
        self.monitor = monitor

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("gridbot.live.alerts"):
            return
        with contextlib.suppress(Exception):
            self.monitor._count_error(record.getMessage())


class _Redact(logging.Filter):
    """Redacts secrets known only at run time (the listen key) from the log file."""

    def __init__(self, monitor: Monitor) -> None:
        super().__init__()
        self.monitor = monitor

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(Exception):
            msg = record.getMessage()
            clean = self.monitor.clean(msg)
            if clean != msg:
                record.msg, record.args = clean, None
        return True


class Monitor:
    """The bot's event sink plus the page, log file, heartbeat and alert tasks around it.

    ``await start()`` (before the bot trades: checks the status binding, opens the log file,
    binds the page), ``started()`` once the bot is ready, ``stopped(reason)`` and
    ``await close()`` at the end.
    """

    def __init__(
        self,
        bot: Any,
        live: LiveConfig,
        *,
        secrets: list[str] | tuple[str, ...] = (),
        dry_run: bool = False,
        exchange: str = "binance",
        log_file: str | None = None,
        watch_interval_seconds: float = 2.0,
        curve_interval_seconds: float = 10.0,
        curve_points: int = 8640,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.bot = bot
        self.live = live
        self.dry_run = dry_run
        self.exchange = exchange
        self.watch_interval_seconds = watch_interval_seconds
        self.curve_interval_seconds = curve_interval_seconds
        env = os.environ if env is None else env
        self.token = env.get(live.status_token_env) or None
        a = live.alerts
        self.alert_url = a.url or env.get(a.url_env) or None
        self._secrets = [s for s in secrets if s]
        if self.token:
            self._secrets.append(self.token)
        if self.alert_url:
            self._secrets += secret_parts_of_url(self.alert_url)
        self.log_file = log_file if log_file is not None else live.log_file
        self.started_at = time.time()
        self.streams: dict[str, dict[str, Any]] = {}
        self.last_reconciled: float | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        self.equity_curve: deque[tuple[float, float]] = deque(maxlen=curve_points)
        self._last_curve = 0.0
        self._errors: deque[float] = deque()
        self._last_repeated_alert = -1e18
        self._liq_alerted: set[str] = set()
        self._down_alerted: set[str] = set()
        self._next_heartbeat = 0.0
        self.heartbeats = 0
        self.alerts: AlertSender | None = None
        self.server: Any = None
        self.status_url: str | None = None
        self._handlers: list[logging.Handler] = []
        self._level: int | None = None
        self._task: asyncio.Task | None = None
        bot.notify = self

    # ------------------------------------------------------------------ life cycle

    def check(self) -> None:
        """Config checks that must stop the start-up (before anything is traded)."""
        live = self.live
        if live.status_port is not None and not is_loopback(live.status_host) and not self.token:
            raise ConfigError(
                f"live.status_host = {live.status_host!r}: serving the status page beyond "
                f"this machine needs a token: set the environment variable "
                f"{live.status_token_env} (live.status_token_env)"
            )
        if (
            live.alerts.format == "telegram"
            and self.alert_url
            and live.alerts.telegram_chat_id is None
        ):
            raise ConfigError(
                "live.alerts.telegram_chat_id = null: the telegram format needs the chat id "
                "to send to"
            )

    async def start(self) -> None:
        """Log file, alerts and the status page (a port that cannot be bound is logged and
        alerted, never a reason to stop trading)."""
        self.check()
        warm_up()
        gl = logging.getLogger("gridbot")
        if self.log_file:
            self._level = gl.level
            if gl.getEffectiveLevel() > logging.INFO:
                gl.setLevel(logging.INFO)  # the file holds INFO whatever the terminal shows
            h = install_log_file(self.log_file, self.live.log_max_mb, self.live.log_backups)
            h.addFilter(_Redact(self))
            self._handlers.append(h)
            log.info("log file: %s (JSON lines)", self.log_file)
        counter = _ErrorCounter(self)
        gl.addHandler(counter)
        self._handlers.append(counter)
        if self.alert_url:
            a = self.live.alerts
            self.alerts = AlertSender(self.alert_url, a.format, chat_id=a.telegram_chat_id)
            await self.alerts.start()
            log.info("alerts: %s webhook at %s", a.format, public_origin(self.alert_url))
        if self.live.status_port is not None:
            from bot.live.status import StatusServer

            server = StatusServer(
                self.status, self.live.status_host, self.live.status_port, self.token
            )
            try:
                self.status_url = await server.start()
                self.server = server
                log.info("status page: %s (API: %s/api/status)", self.status_url, self.status_url)
            except OSError as exc:
                text = (
                    f"status page: cannot listen on {self.live.status_host}:"
                    f"{self.live.status_port}: {exc.strerror or exc}; trading goes on without it"
                )
                log.error("%s", text)
                self._event("status_page", "warning", text)

    def started(self) -> None:
        """The bot is trading: start watching (equity curve, alerts, heartbeat)."""
        self.started_at = time.time()
        mode = "dry run" if self.dry_run else "live"
        text = f"started ({mode}, {self.exchange}): {', '.join(self.bot.symbols)}"
        self._event("started", "info", text)
        self._alert("started", text, "info")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="monitor")

    def stopped(self, reason: str, *, error: bool = False) -> None:
        text = f"stopped: {self.clean(reason)}"
        self._event("stopped", "critical" if error else "warning", text)
        self._alert("stopped", text, "critical" if error else "warning")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.alerts is not None:
            await self.alerts.close(timeout=5.0)
        gl = logging.getLogger("gridbot")
        for h in self._handlers:
            gl.removeHandler(h)
            h.close()
        self._handlers.clear()
        if self._level is not None:
            gl.setLevel(self._level)
            self._level = None

    # ------------------------------------------------------------------ the status

    def status(self) -> dict[str, Any]:
        return build_status(self.bot, self)

    def status_fields(self, now: float) -> dict[str, Any]:
        """The monitor's part of the status (merged by :func:`build_status`)."""
        streams = {
            name: {"up": s["up"], "since": s["since"], "for_seconds": now - s["since"]}
            for name, s in self.streams.items()
        }
        a = self.alerts
        return {
            "exchange": self.exchange,
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "uptime_seconds": now - self.started_at,
            "streams": streams,
            "last_reconciliation_age_seconds": (
                None if self.last_reconciled is None else now - self.last_reconciled
            ),
            "equity_curve": self._curve(),
            "events": list(self.events)[::-1],
            "alerts": {
                "enabled": a is not None,
                "format": self.live.alerts.format if a is not None else None,
                "sent": a.sent if a else 0,
                "failed": a.failed if a else 0,
                "dropped": a.dropped if a else 0,
                "pending": a.pending if a else 0,
            },
            "heartbeat_minutes": self.live.heartbeat_minutes,
        }

    def _curve(self, max_points: int = 600) -> list[list[float]]:
        """The equity curve, thinned to at most ~``max_points`` (the last point kept)."""
        pts = list(self.equity_curve)
        step = max(1, -(-len(pts) // max_points))
        out = [list(p) for p in pts[::step]]
        if pts and out[-1] != list(pts[-1]):
            out.append(list(pts[-1]))
        return out

    # ------------------------------------------------------------------ events

    def clean(self, text: str) -> str:
        lk = getattr(self.bot, "listen_key", None)  # only to keep it out of every output
        return redact(text, [*self._secrets, lk] if lk else self._secrets)

    def __call__(self, kind: str, **f: Any) -> None:
        try:
            self._on(kind, f)
        except Exception:  # never into the trading loop
            log.exception("monitor: handling the %s event failed", kind)

    def _on(self, kind: str, f: dict[str, Any]) -> None:  # noqa: C901 -- one branch per bot event kind (debt)
        now = time.time()
        if kind in ("order_created", "order_cancelled"):
            o = f["order"]
            verb = "created" if kind == "order_created" else "cancelled"
            orders_log.info(
                "%s %s %s %s %g @ %g (%s)",
                o.symbol,
                verb,
                o.side,
                o.position_side,
                abs(o.qty),
                o.price,
                o.kind_name,
                extra={"event": kind, "data": _order(o)},
            )
        elif kind == "fill":
            x = f["fill"]
            side, ps = ("BUY" if x.qty > 0 else "SELL"), ("LONG" if x.pside > 0 else "SHORT")
            text = f"{x.symbol} fill {side} {ps} {abs(x.qty):g} @ {x.price:g}"
            data = {"symbol": x.symbol, "side": side, "position_side": ps,
                    "qty": abs(x.qty), "price": x.price, "time_ms": x.time_ms}  # fmt: skip
            orders_log.info("%s", text, extra={"event": "fill", "data": data})
            if self.live.alerts.fills:
                self._alert("fill", text, "info", data)
        elif kind == "order_error":
            text = self.clean(f["text"])
            self._event("refused", "warning", text)
            self._count_error(text)
        elif kind == "position_changed":
            side = _SIDE[f["j"]]
            text = (
                f"{f['symbol']} {side}: the exchange reports size {f['exchange']:g}, our fills "
                f"give {f['ours']:g}: deleverage, ADL or a manual trade; the grid follows it"
            )
            self._event("position_changed", "critical", text)
            self._alert("position_changed", text, "critical", {
                "symbol": f["symbol"], "side": side, "ours": f["ours"], "exchange": f["exchange"]
            })  # fmt: skip
        elif kind == "stream":
            name, up = f["name"], bool(f["up"])
            prev = self.streams.get(name)
            if prev is None or prev["up"] != up:
                self.streams[name] = {"up": up, "since": now}
            if up and prev is not None and not prev["up"]:
                text = f"{name} stream back after {now - prev['since']:.0f} s"
                self._event("stream_up", "info", text)
                if name in self._down_alerted:
                    self._down_alerted.discard(name)
                    self._alert("stream_restored", text, "info")
            elif not up and (prev is None or prev["up"]):
                self._event("stream_down", "warning", f"{name} stream down")
        elif kind == "reconciled":
            self.last_reconciled = now
        elif kind == "hard_stop":  # bot.live.hard_stop: every tier change, red's closes
            text = self.clean(f["text"])
            self._event("hard_stop", f["severity"], text)
            data = {k: f.get(k) for k in ("what", "tier", "score", "peak", "halted",
                                          "cooldown_left_minutes")}  # fmt: skip
            self._alert("hard_stop", text, f["severity"], data)
        elif kind.startswith("vault_"):  # bot.live.vault_sizing, bot.live.vault_exits
            self._event(kind, "info", self.clean(f["text"]))
        elif kind == "account_reset":
            text = (
                f"the exchange account went backwards on {', '.join(f['symbols'])} (a reset or "
                "another account behind the key): positions and orders adopted as they are"
            )
            self._event("account_reset", "critical", text)
            self._alert("account_reset", text, "critical", {"symbols": list(f["symbols"])})

    def _event(self, kind: str, severity: str, text: str) -> None:
        self.events.append({"time": time.time(), "kind": kind, "severity": severity, "text": text})

    def _alert(
        self, kind: str, text: str, severity: str = "warning", data: dict | None = None
    ) -> None:
        if self.alerts is not None:
            self.alerts.send(kind, self.clean(text), severity=severity, data=data)

    def _count_error(self, text: str) -> None:
        now = time.monotonic()
        window = self.live.alerts.repeated_errors_minutes * 60.0
        self._errors.append(now)
        while self._errors and self._errors[0] < now - window:
            self._errors.popleft()
        n = len(self._errors)
        if n >= self.live.alerts.repeated_errors and now - self._last_repeated_alert >= window:
            self._last_repeated_alert = now
            msg = (
                f"{n} errors in the last {self.live.alerts.repeated_errors_minutes:g} minutes; "
                f"the last: {self.clean(text)}"
            )
            self._event("repeated_errors", "critical", msg)
            self._alert("repeated_errors", msg, "critical", {"errors": n})

    # ------------------------------------------------------------------ the watch loop

    async def _watch(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("monitor: status check failed")
            await asyncio.sleep(self.watch_interval_seconds)

    def tick(self, now: float | None = None) -> dict[str, Any]:
        """One look at the bot: equity curve, liquidation and stream alerts, heartbeat."""
        now = time.time() if now is None else now
        st = self.status()
        eq = st["account"]["equity"]
        if eq is not None and (now - self._last_curve >= self.curve_interval_seconds):
            self.equity_curve.append((now, eq))
            self._last_curve = now
        thr = self.live.alerts.liquidation_distance_pct
        for c in st["coins"]:
            d = c["liquidation_distance_pct"]
            sym = c["symbol"]
            if d is not None and d < thr:
                if sym not in self._liq_alerted:
                    self._liq_alerted.add(sym)
                    text = (
                        f"{sym}: liquidation price {c['liquidation_price']:g} is {d:.2f}% from "
                        f"the price {c['price']:g} (alert below {thr:g}%)"
                    )
                    self._event("liquidation_risk", "critical", text)
                    self._alert("liquidation_risk", text, "critical", {
                        "symbol": sym, "price": c["price"],
                        "liquidation_price": c["liquidation_price"], "distance_pct": d,
                    })  # fmt: skip
            elif d is None or d > thr * 1.25:
                self._liq_alerted.discard(sym)  # re-armed once clearly out of range
        for name, s in self.streams.items():
            if not s["up"] and now - s["since"] >= self.live.alerts.stream_down_seconds:
                if name not in self._down_alerted:
                    self._down_alerted.add(name)
                    text = f"{name} stream down for {now - s['since']:.0f} s (REST fallback)"
                    self._event("stream_down", "critical", text)
                    self._alert("stream_down", text, "critical", {"stream": name})
        hb = self.live.heartbeat_minutes
        if hb > 0 and now >= self._next_heartbeat:
            self._next_heartbeat = now + hb * 60.0
            msg, data = heartbeat_fields(st)
            self.heartbeats += 1
            logging.getLogger("gridbot.live.heartbeat").info(
                "%s", msg, extra={"event": "heartbeat", "data": data}
            )
        return st


def _order(o: Any) -> dict[str, Any]:
    return {
        "symbol": o.symbol,
        "side": o.side,
        "position_side": o.position_side,
        "qty": abs(o.qty),
        "price": o.price,
        "kind": o.kind_name,
    }

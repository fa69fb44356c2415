"""Webhook alerts: a JSON POST per alert, in gridbot's own format, Telegram's Bot API format
(``sendMessage``) or Discord's webhook format.

Sending never blocks trading: :meth:`AlertSender.send` only puts the alert on a bounded queue
(when it is full the oldest alert is dropped, counted, and a warning logged); one background
task posts them in order, retrying connection errors, timeouts, 5xx and 429 answers with
exponential backoff and jitter (a 429's Retry-After is honoured). Another 4xx is not retried.

The webhook URL is a secret (a Telegram bot token lives in its path, a Discord webhook's token
too): it is never logged; log lines name only its scheme and host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import aiohttp

__all__ = ["FORMATS", "AlertSender", "payload", "public_origin"]

log = logging.getLogger("gridbot.live.alerts")

FORMATS = ("json", "telegram", "discord")
_ICON = {"critical": "\u203c", "warning": "\u26a0", "info": "\u2139"}


def public_origin(url: str) -> str:
    """scheme://host[:port] of ``url``: what may be shown of a webhook URL."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def payload(
    fmt: str,
    kind: str,
    text: str,
    *,
    severity: str = "warning",
    data: dict[str, Any] | None = None,
    when: float | None = None,
    chat_id: str | int | None = None,
) -> dict[str, Any]:
    """The JSON body for one alert in ``fmt`` (json, telegram or discord)."""
    when = time.time() if when is None else when
    line = f"{_ICON.get(severity, '')} gridbot {kind}: {text}".strip()
    if fmt == "telegram":
        return {"chat_id": chat_id, "text": line[:4096], "disable_web_page_preview": True}
    if fmt == "discord":
        return {"username": "gridbot", "content": line[:2000]}
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return {
        "source": "gridbot",
        "kind": kind,
        "severity": severity,
        "time": iso,
        "text": text,
        "data": data or {},
    }


class AlertSender:
    """Posts alerts to one webhook from a background task (:meth:`start` / :meth:`close`)."""

    def __init__(
        self,
        url: str,
        fmt: str = "json",
        *,
        chat_id: str | int | None = None,
        queue_size: int = 100,
        max_retries: int = 6,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"alert format {fmt!r}: one of {', '.join(FORMATS)}")
        self.url = url
        self.origin = public_origin(url)
        self.fmt = fmt
        self.chat_id = chat_id
        self.queue_size = queue_size
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    # ------------------------------------------------------------------ public

    def send(
        self,
        kind: str,
        text: str,
        *,
        severity: str = "warning",
        data: dict[str, Any] | None = None,
    ) -> None:
        """Queue an alert (never waits). A full queue drops its oldest alert, counted."""
        body = payload(self.fmt, kind, text, severity=severity, data=data, chat_id=self.chat_id)
        if len(self._queue) >= self.queue_size:
            old_kind, _ = self._queue.popleft()
            self.dropped += 1
            log.warning(
                "alert queue full (%d): dropped the oldest alert (%s); %d dropped so far",
                self.queue_size,
                old_kind,
                self.dropped,
            )
        self._queue.append((kind, body))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def start(self) -> None:
        if self._task is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds)
            )
            self._task = asyncio.create_task(self._worker(), name="alerts")

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within ``timeout`` seconds, then stop (the rest is dropped)."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            pass
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._queue:
            log.warning("stopping: %d alert(s) not delivered", len(self._queue))
        if self._session is not None:
            await self._session.close()
        self._task = None

    # ------------------------------------------------------------------ worker

    async def _worker(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            kind, body = self._queue[0]
            await self._deliver(kind, body)
            if self._queue and self._queue[0][1] is body:
                self._queue.popleft()

    async def _deliver(self, kind: str, body: dict[str, Any]) -> bool:
        assert self._session is not None
        delay = self.backoff_seconds
        for attempt in range(self.max_retries + 1):
            wait = delay
            try:
                async with self._session.post(self.url, json=body) as resp:
                    if resp.status < 300:
                        self.sent += 1
                        return True
                    if resp.status != 429 and resp.status < 500:
                        self.failed += 1
                        log.warning(
                            "alert %s refused by %s: HTTP %d (not retried)",
                            kind,
                            self.origin,
                            resp.status,
                        )
                        return False
                    retry_after = resp.headers.get("Retry-After")
                    if resp.status == 429 and retry_after:
                        with contextlib.suppress(ValueError):
                            wait = min(max(float(retry_after), delay), self.max_backoff_seconds)
                    reason = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = type(exc).__name__  # never str(exc): it may quote the URL
            if attempt == self.max_retries:
                break
            log.warning(
                "alert %s to %s failed (%s); retry %d/%d in %.1f s",
                kind,
                self.origin,
                reason,
                attempt + 1,
                self.max_retries,
                wait,
            )
            await asyncio.sleep(wait * (0.75 + random.random() / 2))
            delay = min(delay * 2, self.max_backoff_seconds)
        self.failed += 1
        log.warning("alert %s to %s not delivered after %d tries", kind, self.origin, attempt + 1)
        return False

"""The venue's one IP request budget, shared by every API dialect: request weight per rolling
minute, then a ban when a client keeps going after its 429s.

Neutral: :meth:`IpBudget.charge` says *whether* and *how* a request is refused (``Limited``);
each dialect answers in its own format (Binance: HTTP 429/418 with code -1003; Bybit: HTTP 403).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BudgetConfig", "IpBudget", "Limited"]

log = logging.getLogger("gridbot.venue.rest")

_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Limited:
    """A refused request: ``banned`` (else over the minute's weight), seconds to wait, and for a
    ban the wall time (ms) it ends."""

    banned: bool
    retry_after_seconds: int
    banned_until_ms: int = 0


class BudgetConfig(Protocol):
    """The limits, read at each request (a test may lower them on a running venue)."""

    weight_limit_per_minute: int
    ban_after_429s: int
    ban_seconds: float


class IpBudget:
    """Weight per rolling minute for the one client IP (127.0.0.1)."""

    def __init__(self, config: BudgetConfig) -> None:
        self.config = config
        self._weights: deque[tuple[float, int]] = deque()
        self._recent_429: deque[float] = deque()
        self._banned_until = 0.0

    def used_weight(self) -> int:
        return sum(w for _, w in self._weights)

    def charge(self, weight: int) -> Limited | None:
        """Spend ``weight`` on this request; a :class:`Limited` (nothing spent) when refused."""
        now = time.monotonic()
        while self._weights and now - self._weights[0][0] > _WINDOW_SECONDS:
            self._weights.popleft()
        while self._recent_429 and now - self._recent_429[0] > _WINDOW_SECONDS:
            self._recent_429.popleft()
        if now < self._banned_until:
            until_ms = int(time.time() * 1000) + int((self._banned_until - now) * 1000)
            return Limited(True, max(1, int(self._banned_until - now)), until_ms)
        cfg = self.config
        if self.used_weight() + weight > cfg.weight_limit_per_minute:
            self._recent_429.append(now)
            if len(self._recent_429) >= cfg.ban_after_429s:
                self._banned_until = now + cfg.ban_seconds
                log.warning("rate limit: banning 127.0.0.1 for %.0f s", cfg.ban_seconds)
            oldest = self._weights[0][0] if self._weights else now - _WINDOW_SECONDS + 1
            return Limited(False, max(1, int(_WINDOW_SECONDS - (now - oldest))))
        self._weights.append((now, weight))
        return None

    def reset(self) -> None:
        self._weights.clear()
        self._recent_429.clear()
        self._banned_until = 0.0

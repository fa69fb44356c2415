"""Randomized, reproducible fault schedules for the simulated venue (``gridbot soak``).

One ``random.Random(seed)`` draws the whole schedule up front (:func:`make_schedule`): when each
fault starts (seconds after the soak's start), how long it lasts and its parameters. The
window is cut into rounds; every round holds each fault kind once, at a random start time
with a random duration, so faults overlap (a deleverage during a silence during a REST delay
during a restart...). What happens when a fault fires still depends on the market at that
moment (which positions exist), so the schedule is reproducible and the run is not bit-exact.

:class:`Chaos` applies a :class:`Fault` to a :class:`~backtest.venue.server.Venue` through
its fault switches, keeps overlapping silences and delays consistent (a silence ends when the
last one that started ends), and logs every injection. Killing the bot is not the venue's
business: pass a ``killer`` (``kill9(in_flight: bool)``, ``arm_kill_on_fill(timeout_seconds)``).

Fault kinds (:data:`KINDS`):

- ``ws_drop``: every websocket aborted without a close frame (the client sees 1006);
- ``ws_close_1008``: every websocket closed with 1008 (policy violation);
- ``ws_silent``: sockets stay open but carry nothing for some seconds (sometimes also
  unanswered pings: a hung socket);
- ``rest_429_418``: the next REST calls answer 429 (-1003), then 418 (IP banned);
- ``rest_5xx``: the next REST calls answer 500/502/503/504;
- ``rest_delay``: every REST answer is late by 0.1 to 1.5 s for some seconds;
- ``order_reject_margin``: the next orders are refused with -2019 (Bybit 110007) margin
  insufficient;
- ``deleverage_while_silent``: the sockets go silent, then the exchange cuts a position (to
  0-70% of its size, sometimes to zero) without an order of ours, then the silence goes on;
- ``manual_change``: a position is cut or grown by hand (growth stays under 90% of its
  wallet exposure limit), streams up;
- ``account_reset``: the exchange restarts with a fresh account (balance restored, flat, no
  orders, trade ids from 1, one-way mode as a new account's, sockets dropped, listen keys
  forgotten); the bot must notice and switch hedge mode back on, as after a flip;
- ``position_mode_flip``: orders cancelled, positions closed at market, account switched to
  one-way mode; after the fault's duration the bot must have switched it back to hedge mode
  if an order of its was refused for the mode early enough (if not, it is counted in
  :attr:`Chaos.mode_not_reapplied`); the soak then switches it back itself;
- ``kill9``: ``kill -9`` of the bot, restarted on the same state dir after a pause;
- ``kill9_in_flight``: the same at the moment the venue books a fill of ours, before the fill
  goes out on the user stream;
- ``private_topic_delay`` (Bybit only; skipped on Binance, whose user stream is one ordered
  socket): the private ``execution`` (sometimes ``position`` or ``wallet``) messages held back
  0.2-2 s for some seconds, so an order reads filled before its fill and position arrive (the
  order-vs-fill race).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .refusals import Refused
from .server import Venue
from .wire import decimals

__all__ = ["KINDS", "Chaos", "Fault", "Killer", "make_schedule"]

log = logging.getLogger("gridbot.venue.chaos")

KINDS = (
    "ws_drop",
    "ws_close_1008",
    "ws_silent",
    "rest_429_418",
    "rest_5xx",
    "rest_delay",
    "order_reject_margin",
    "deleverage_while_silent",
    "manual_change",
    "account_reset",
    "position_mode_flip",
    "kill9",
    "kill9_in_flight",
    "private_topic_delay",
)


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: ``kind`` starts ``at_seconds`` seconds after the start, for ``duration_seconds``
    (0: instantaneous); ``params`` were drawn with the schedule."""

    at_seconds: float
    kind: str
    duration_seconds: float
    params: tuple[tuple[str, Any], ...] = ()

    def p(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)


def _draw(rng: random.Random, kind: str) -> tuple[float, dict[str, Any]]:
    """(duration, params) of one fault of ``kind``."""
    u = rng.random  # every kind draws the same number of values: adding a kind moves nothing
    a, b, c, d = u(), u(), u(), u()
    if kind == "ws_silent":
        return 2 + 8 * a, {"hang": b < 0.3}
    if kind == "rest_429_418":
        return 0.0, {"n429": 1 + int(3 * a), "n418": int(3 * b)}
    if kind == "rest_5xx":
        return 0.0, {"status": (500, 502, 503, 504)[int(4 * a)], "count": 1 + int(5 * b)}
    if kind == "rest_delay":
        return 2 + 6 * a, {"ms": round(100 + 1400 * b)}
    if kind == "order_reject_margin":
        return 0.0, {"n": 1 + int(3 * a)}
    if kind == "deleverage_while_silent":
        frac = 0.0 if c < 0.25 else 0.7 * d
        return 4 + 8 * a, {"change_after": 0.3 + 0.3 * b, "fraction": round(frac, 3), "pick": c}
    if kind == "manual_change":
        return 0.0, {"grow": a < 0.5, "fraction": round(0.2 + 0.6 * b, 3), "pick": c}
    if kind in ("position_mode_flip", "account_reset"):
        return 15 + 10 * a, {}
    if kind == "kill9":
        return 0.0, {"restart_after": round(0.5 + 3.5 * a, 2)}
    if kind == "kill9_in_flight":
        return 20.0, {"restart_after": round(0.5 + 3.5 * a, 2)}
    if kind == "private_topic_delay":
        topic = ("execution", "execution", "position", "wallet")[int(4 * b)]
        return 5 + 10 * a, {"topic": topic, "seconds": round(0.2 + 1.8 * c, 2)}
    return 0.0, {}  # ws_drop, ws_close_1008, account_reset


def make_schedule(
    seed: int | random.Random,
    window_seconds: float,
    *,
    round_seconds: float = 90.0,
    kinds: tuple[str, ...] = KINDS,
    lead_in_seconds: float | None = None,
) -> list[Fault]:
    """Every kind once per round (the window after a calm ``lead_in_seconds``, default the smaller of
    10 s and 15% of the window, cut into rounds of about ``round_seconds``), each at a uniform random
    time in its round, sorted by start time. Deterministic in ``seed``."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    lead = min(10.0, 0.15 * window_seconds) if lead_in_seconds is None else lead_in_seconds
    rounds = max(1, round((window_seconds - lead) / round_seconds))
    length = (window_seconds - lead) / rounds
    out: list[Fault] = []
    for r in range(rounds):
        for kind in kinds:
            duration, params = _draw(rng, kind)
            start = lead + r * length + rng.uniform(0.02, 0.9) * length
            out.append(Fault(round(start, 3), kind, round(duration, 3), tuple(params.items())))
    return sorted(out, key=lambda f: (f.at_seconds, f.kind))


class Killer(Protocol):
    def kill9(self, *, in_flight: bool, restart_after_seconds: float) -> bool: ...

    def arm_kill_on_fill(
        self, timeout_seconds: float, restart_after_seconds: float
    ) -> asyncio.Future: ...


@dataclass
class Chaos:
    """Applies faults to ``venue`` for the account ``api_key``; ``wel`` maps LONG/SHORT to the
    per-position wallet exposure limit (manual growth stays under 90% of it)."""

    venue: Venue
    api_key: str
    wel: dict[str, float]
    killer: Killer | None = None
    exchange: str = "binance"
    t0: float = field(default_factory=time.monotonic)
    injected: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    mode_not_reapplied: int = 0
    # a flip the bot has not undone within this long counts even when the soak ends first
    mode_grace_seconds: float = 10.0
    # monotonic times of orders refused because of the position mode (the bot's cue to check
    # it); when given, a flip counts as not re-applied only if one came mode_grace_seconds before
    # the end of the fault: a bot that sent nothing had no reason to look yet
    mode_refusals: Callable[[], Sequence[float]] | None = None
    _silent: int = 0
    _delays: list[float] = field(default_factory=list)
    # time.monotonic() of the latest switch to one-way mode (a flip or a reset): an earlier
    # fault's wait must not count the later one's one-way mode against the bot
    _one_way_since: float = -math.inf

    # ------------------------------------------------------------------ bookkeeping

    def note(self, kind: str, detail: str, *, skipped: bool = False) -> None:
        entry = {
            "t_seconds": round(time.monotonic() - self.t0, 3),
            "replay_ms": self.venue.engine.now_ms,
            "kind": kind,
            "detail": detail,
            "skipped": skipped,
        }
        self.events.append(entry)
        (self.skipped if skipped else self.injected)[kind] += 1
        log.info("fault %s%s: %s", kind, " (skipped)" if skipped else "", detail)

    def _silence(self, on: bool, *, hang: bool = False) -> None:
        self._silent += 1 if on else -1
        self.venue.set_ws_silent(self._silent > 0, hang=hang and on)

    def _delay(self, ms: float | None, remove: float | None = None) -> None:
        if ms is not None:
            self._delays.append(ms)
        if remove is not None and remove in self._delays:
            self._delays.remove(remove)
        self.venue.delay_rest(max(self._delays, default=0.0))

    def clear(self) -> None:
        """End every fault now (the soak's settle phase): no silence, delay or queued errors."""
        self._silent = 0
        self._delays.clear()
        self.venue.clear_faults()
        self.venue.engine.account(self.api_key).reject_next_margin = 0

    def _positions(self) -> list[tuple[str, str, float, float]]:
        acct = self.venue.engine.account(self.api_key)
        return sorted(
            (s, ps, p.amount, p.entry_price)
            for (s, ps), p in acct.positions.items()
            if p.amount != 0.0
        )

    def _on_step(self, symbol: str, size: float) -> float:
        step = self.venue.engine.specs[symbol].qty_step
        return float(f"{math.floor(size / step + 1e-9) * step:.{decimals(step)}f}")

    # ------------------------------------------------------------------ faults

    async def apply(self, f: Fault) -> None:  # noqa: C901 -- one branch per fault kind (debt)
        """Inject ``f``; timed faults sleep through their duration and always undo themselves
        (also when cancelled)."""
        v, k = self.venue, f.kind
        if k == "ws_drop":
            self.note(k, f"{v.drop_ws()} sockets aborted (1006)")
        elif k == "ws_close_1008":
            self.note(k, f"{await v.close_ws(1008)} sockets closed with 1008")
        elif k == "ws_silent":
            self._silence(True, hang=f.p("hang"))
            self.note(
                k, f"{f.duration_seconds:.1f} s" + (", pings unanswered" if f.p("hang") else "")
            )
            try:
                await asyncio.sleep(f.duration_seconds)
            finally:
                self._silence(False)
        elif k == "rest_429_418":
            v.rate_limit_next(n429=f.p("n429"), n418=f.p("n418"))
            self.note(k, f"next REST calls: {f.p('n429')} x 429, then {f.p('n418')} x 418")
        elif k == "rest_5xx":
            v.fail_rest(f.p("status"), f.p("count"))
            self.note(k, f"next {f.p('count')} REST calls answer {f.p('status')}")
        elif k == "rest_delay":
            ms = float(f.p("ms"))
            self._delay(ms)
            self.note(k, f"REST answers {ms:.0f} ms late for {f.duration_seconds:.1f} s")
            try:
                await asyncio.sleep(f.duration_seconds)
            finally:
                self._delay(None, remove=ms)
        elif k == "order_reject_margin":
            v.reject_next_order_margin(self.api_key, f.p("n"))
            self.note(k, f"next {f.p('n')} orders refused: margin insufficient")
        elif k == "deleverage_while_silent":
            await self._deleverage_while_silent(f)
        elif k == "manual_change":
            await self._manual_change(f)
        elif k == "account_reset":
            hedge = v.engine.account(self.api_key).hedge_mode
            self._one_way_since = time.monotonic()
            acct = v.reset_account(
                self.api_key, v.starting_balance(self.api_key), hedge_mode=False, restart=True
            )
            self.note(
                k,
                f"fresh account: balance {acct.balance:g}, flat, trade ids from 1, one-way "
                "mode, sockets dropped",
            )
            if hedge:
                await self._await_hedge(f, self._one_way_since)
        elif k == "position_mode_flip":
            await self._mode_flip(f)
        elif k == "private_topic_delay":
            if self.exchange != "bybit":
                self.note(k, "Binance's user stream is one ordered socket", skipped=True)
                return
            topic, seconds = f.p("topic"), float(f.p("seconds"))
            v.delay_private_topic(topic, seconds)
            self.note(
                k, f"Bybit {topic} messages {seconds:g} s late for {f.duration_seconds:.1f} s"
            )
            try:
                await asyncio.sleep(f.duration_seconds)
            finally:
                v.delay_private_topic(topic, 0)
        elif k in ("kill9", "kill9_in_flight"):
            await self._kill(f)
        else:
            raise ValueError(f"unknown fault kind {k!r}")

    async def _deleverage_while_silent(self, f: Fault) -> None:
        k = f.kind
        self._silence(True)
        start = time.monotonic()
        try:
            await asyncio.sleep(f.duration_seconds * f.p("change_after"))
            pos = await self._wait_position(start + f.duration_seconds - 1.0 - time.monotonic())
            if not pos:
                self.note(k, "no open position to cut", skipped=True)
            else:
                s, ps, amount, _ = pos[int(f.p("pick") * len(pos)) % len(pos)]
                size = self._on_step(s, abs(amount) * f.p("fraction"))
                self.venue.change_position(self.api_key, s, ps, size)
                self.note(
                    k,
                    f"{s} {ps} {abs(amount):g} -> {size:g} with the streams silent "
                    f"({f.duration_seconds:.1f} s of silence)",
                )
            await asyncio.sleep(max(1.0, start + f.duration_seconds - time.monotonic()))
        finally:
            self._silence(False)

    async def _wait_position(self, timeout_seconds: float) -> list[tuple[str, str, float, float]]:
        """The open positions, waiting up to ``timeout_seconds`` for one when the account is flat."""
        end = time.monotonic() + timeout_seconds
        pos = self._positions()
        while not pos and time.monotonic() < end:
            await asyncio.sleep(0.25)
            pos = self._positions()
        return pos

    async def _manual_change(self, f: Fault) -> None:
        k, v = f.kind, self.venue
        pos = await self._wait_position(10.0)
        acct = v.engine.account(self.api_key)
        if not pos:
            self.note(k, "no open position to change", skipped=True)
            return
        s, ps, amount, entry = pos[int(f.p("pick") * len(pos)) % len(pos)]
        side = "LONG" if amount > 0 else "SHORT"
        price = v.engine.prices[s]
        size = abs(amount)
        if f.p("grow"):
            room = 0.9 * self.wel.get(side, 0.0) * acct.balance - size * entry
            add = self._on_step(s, max(room, 0.0) / price * f.p("fraction"))
            if add > 0:
                new = self._on_step(s, size + add)
                v.change_position(self.api_key, s, ps, new)
                self.note(k, f"{s} {ps} grown by hand {size:g} -> {new:g} @ {price:g}")
                return
        new = self._on_step(s, size * (1 - f.p("fraction")))
        v.change_position(self.api_key, s, ps, new)
        self.note(k, f"{s} {ps} cut by hand {size:g} -> {new:g} @ {price:g}")

    async def _mode_flip(self, f: Fault) -> None:
        k, v = f.kind, self.venue
        acct = v.engine.account(self.api_key)
        if not acct.hedge_mode:
            self.note(k, "account already in one-way mode", skipped=True)
            return
        self._one_way_since = time.monotonic()
        closed = v.flip_position_mode(self.api_key, False, tag="chaos")
        self.note(k, f"one-way mode: orders cancelled, {closed} positions closed at market")
        await self._await_hedge(f, self._one_way_since)

    async def _await_hedge(self, f: Fault, t_flip: float) -> None:
        """Give the bot ``f.duration_seconds`` to switch hedge mode back on; count it if it did not,
        then switch back (also when cancelled: the soak ended). A later flip or reset in force by
        then is its own wait's to judge and undo."""
        try:
            await asyncio.sleep(f.duration_seconds)
        finally:
            if self._one_way_since <= t_flip:
                self._judge_hedge(f, t_flip)

    def _judge_hedge(self, f: Fault, t_flip: float) -> None:
        v = self.venue
        now = time.monotonic()
        held = now - t_flip >= min(f.duration_seconds, self.mode_grace_seconds)
        if held and self.mode_refusals is not None:
            held = any(t_flip <= t <= now - self.mode_grace_seconds for t in self.mode_refusals())
        acct = v.engine.account(self.api_key)  # a reset may have replaced it meanwhile
        if not acct.hedge_mode:
            if held:
                self.mode_not_reapplied += 1
                log.warning("the bot did not re-apply hedge mode within %.0f s", f.duration_seconds)
            try:
                v.flip_position_mode(self.api_key, True, tag="chaos")
            except Refused as exc:  # only a bug of ours can leave orders in one-way mode
                log.warning("could not switch the account back to hedge mode: %s", exc)

    async def _kill(self, f: Fault) -> None:
        k = f.kind
        if self.killer is None:
            self.note(k, "no bot process to kill", skipped=True)
            return
        restart = float(f.p("restart_after"))
        if k == "kill9":
            if self.killer.kill9(in_flight=False, restart_after_seconds=restart):
                self.note(k, f"kill -9 of the bot; restart in {restart:g} s")
            else:
                self.note(k, "the bot was not running", skipped=True)
            return
        fut = self.killer.arm_kill_on_fill(f.duration_seconds, restart)
        try:
            in_flight = await fut
        except asyncio.CancelledError:
            fut.cancel()
            raise
        if in_flight is None:
            self.note(k, "the bot was not running", skipped=True)
        elif in_flight:
            self.note(k, f"kill -9 as a fill of ours was booked; restart in {restart:g} s")
        else:
            self.note(
                "kill9",
                f"armed for a fill, none came within {f.duration_seconds:g} s: plain kill -9",
            )

"""The soak's equity hard stop checks (``gridbot soak`` with
``bot.common.equity_hard_stop_loss.enabled``).

When the bot was red comes from the bot itself: its log file's ``hard_stop_tier`` records (each
tier change with the kline it was sampled at) and ``hard_stop_loaded`` records (each start's
loaded state, with the latest kline then), cross-checked with the hard stop state it persisted
(red triggers and cooldown restarts counted there must equal those logged). What the bot did
comes from the venue (:class:`backtest.soak.VenueRecorder`'s order attempts and account rows,
the exchange's truth). All times are the venue's (kline ms): a soak replays hours of candles
per minute, so wall seconds of the bot's latency are converted to candles.

A halt window opens at the close of the red sample's minute (``kline_ms + 60 000``) and ends at
the close of the minute whose sample restarted trading (or at the soak's end). Checks:

- :func:`entries_while_red`: no entry (an order of ours that opens or adds) accepted by the
  venue inside a halt window, across kill -9 restarts;
- :func:`flat_after_red`: inside a halt window, every stretch with a position open (from the
  red close, or from an outside change that opened one) ends flat within a bound:
  :func:`flat_bound_ms`;
- :func:`halt_survived_restarts`: every start of the bot inside a halt window loaded a halted
  state, and the logged reds and restarts equal the persisted state's counts;
- :func:`hard_stop_closes`: the hard stop's own orders (client ids ``gbh...``) were closing
  orders (reduce-only or the position side's closing side) of at most the position.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "HaltWindow",
    "flat_after_red",
    "flat_bound_ms",
    "halt_survived_restarts",
    "halt_windows",
    "hard_stop_closes",
    "hard_stop_report",
    "entries_while_red",
    "read_hard_stop_events",
    "read_hard_stop_state",
    "red_close_lag",
]

MINUTE_MS = 60_000
CLOSE_PREFIX = "gbh"  # bot.live.hard_stop.CLOSE_PREFIX (the soak does not import the bot)
CHECK_CANDLES = 3  # the red's closes go out right after the sample: 3 candles is generous
# a kill -9: the soak restarts the bot 0.5-4 s later and it needs some seconds to start up
# (imports, markets, reconciliation) on a shared machine
KILL_ALLOWANCE_SECONDS = 4.0 + 15.0
_DETAIL = 20


@dataclass(frozen=True)
class HaltWindow:
    """A red halt: ``red_kline_ms`` is the open of the minute whose sample went red; the halt
    holds from that minute's close (``start_ms``) until ``end_ms`` (the close of the minute
    whose sample restarted trading; None: still halted at the soak's end)."""

    red_kline_ms: int
    end_ms: int | None
    score: float = math.nan
    known_unix: float = math.nan  # when the bot logged the red (time.time()); nan: unknown

    @property
    def start_ms(self) -> int:
        return self.red_kline_ms + MINUTE_MS

    def holds(self, time_ms: int, end_of_soak_ms: int | None = None) -> bool:
        end = self.end_ms if self.end_ms is not None else end_of_soak_ms
        return time_ms >= self.start_ms and (end is None or time_ms < end)


# ---------------------------------------------------------------------- the bot's records


def read_hard_stop_events(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The ``hard_stop_tier`` / ``hard_stop_loaded`` records of the bot's JSON-lines log files
    (rotated ones first: ``gridbot.jsonl.2``, ``.1``, then ``gridbot.jsonl``), in order, each
    as ``{"event", "time", **data}``."""
    out: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if '"hard_stop_' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by kill -9
            if rec.get("event") in ("hard_stop_tier", "hard_stop_loaded"):
                out.append({"event": rec["event"], "time": rec.get("time"), **rec["data"]})
    return out


def log_files(log_file: Path) -> list[Path]:
    """``gridbot.jsonl`` and its rotations, oldest first."""
    rotated = sorted(
        log_file.parent.glob(log_file.name + ".*"),
        key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0,
    )
    return [*rotated, log_file]


def read_hard_stop_state(state_dir: Path) -> list[float] | None:
    """The persisted hard stop state ``h`` (bot.core.hard_stop's array) from the bot's SQLite
    state, read-only; None when there is none."""
    for path in sorted(state_dir.glob("*.sqlite")):
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = db.execute("SELECT value FROM kv WHERE key = 'hard_stop'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            continue
        if row is not None:
            return [float(x) for x in json.loads(row[0])["h"]]
    return None


def halt_windows(events: Sequence[Mapping[str, Any]]) -> list[HaltWindow]:
    """The halts the bot logged: a tier change to red opens one, a change from red (the
    cooldown restart) closes it."""
    out: list[HaltWindow] = []
    open_: Mapping[str, Any] | None = None
    for e in events:
        if e["event"] != "hard_stop_tier":
            continue
        if e["tier"] == "red" and open_ is None:
            open_ = e
        elif e["tier"] != "red" and open_ is not None:
            out.append(_window(open_, int(e["kline_ms"]) + MINUTE_MS))
            open_ = None
    if open_ is not None:
        out.append(_window(open_, None))
    return out


def _window(red: Mapping[str, Any], end_ms: int | None) -> HaltWindow:
    return HaltWindow(int(red["kline_ms"]), end_ms, float(red.get("score", math.nan)),
                      _unix(red.get("time")))  # fmt: skip


def _unix(iso: Any) -> float:
    """The log's ``time`` ("2026-12-02T11:31:42.954Z") as seconds since the epoch; nan if
    absent or unreadable."""
    try:
        return datetime.strptime(str(iso), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return math.nan


def _window_of(
    windows: Sequence[HaltWindow], time_ms: int, end_of_soak_ms: int | None
) -> HaltWindow | None:
    return next((w for w in windows if w.holds(time_ms, end_of_soak_ms)), None)


# ---------------------------------------------------------------------- the checks


def entries_while_red(
    attempts: Iterable[Any], windows: Sequence[HaltWindow], end_of_soak_ms: int | None = None
) -> dict[str, Any]:
    """Orders of ours accepted by the venue inside a halt window once the bot knew it was red
    (placed after its red record): entries must be none; any other order that is not one of
    the hard stop's closes is counted (informational). Orders accepted after the red minute
    closed but placed before the bot took that sample (it learns of a minute late when its
    streams lag, and a soak replays a minute in 0.15 s) are counted apart: the bot could not
    know yet, and red's cancel-all and closes undo them."""
    entries: list[dict[str, Any]] = []
    others = before_known = 0
    for a in attempts:
        if not a.ours or not a.accepted:
            continue
        w = _window_of(windows, a.time_ms, end_of_soak_ms)
        if w is None:
            continue
        if a.unix_seconds < w.known_unix:  # False when either is nan: counted as known
            before_known += 1
        elif not a.closing:
            entries.append(_attempt_detail(a, w))
        elif not a.client_order_id.startswith(CLOSE_PREFIX):
            others += 1
    return {
        "entries_while_red": len(entries),
        "entries_while_red_detail": entries[:_DETAIL],
        "other_orders_while_red": others,
        "orders_before_red_known": before_known,
    }


def red_close_lag(attempts: Iterable[Any], windows: Sequence[HaltWindow]) -> dict[str, Any]:
    """For each halt, candles from the red minute's close to the first of the hard stop's
    closes the venue saw (the bot's lag in learning of the minute, sampling, cancelling):
    the largest, informational."""
    lags: list[float] = []
    attempts = [a for a in attempts if a.client_order_id.startswith(CLOSE_PREFIX)]
    for w in windows:
        first = next((a.time_ms for a in attempts if w.holds(a.time_ms)), None)
        if first is not None:
            lags.append((first - w.start_ms) / MINUTE_MS)
    return {"first_close_after_red_candles_max": round(max(lags), 1) if lags else None}


def _attempt_detail(a: Any, w: HaltWindow | None = None) -> dict[str, Any]:
    d = {
        "time_ms": a.time_ms,
        "wall_seconds": round(a.wall_seconds, 3),
        "symbol": a.symbol,
        "side": a.side,
        "position_side": a.position_side,
        "qty": a.qty,
        "price": a.price,
        "client_order_id": a.client_order_id,
        "reduce_only": a.reduce_only,
        "accepted": a.accepted,
        "position": a.position,
    }
    if w is not None:
        d["red_kline_ms"] = w.red_kline_ms
    return d


def flat_bound_ms(candle_seconds: float, recovery_seconds: float, killed: bool) -> int:
    """How long a halted account may hold a position, in venue ms: :data:`CHECK_CANDLES`
    candles, plus the bot's own recovery window (``recovery_seconds``: stream silence timeout
    + REST sync + 2 s, as REST errors, delays and silences may stall the closes that long),
    plus :data:`KILL_ALLOWANCE_SECONDS` when the bot was killed during the stretch; seconds
    are converted to candles at the soak's pace (``candle_seconds`` per candle)."""
    seconds = recovery_seconds + (KILL_ALLOWANCE_SECONDS if killed else 0.0)
    return int((CHECK_CANDLES + seconds / candle_seconds) * MINUTE_MS)


def _open_stretches(
    rows: Sequence[Any], w: HaltWindow, end_ms: int
) -> list[tuple[int, int | None, list[str]]]:
    """(from ms, flat again at ms or None, what was open) for each stretch of the halt
    ``w`` (until ``end_ms``) with a position open on the venue."""
    pos: dict[tuple[str, str], float] = {}
    out: list[tuple[int, int | None, list[str]]] = []
    since: int | None = None
    what: list[str] = []
    started = False

    def open_now() -> list[str]:
        return [f"{s} {ps} {a:g}" for (s, ps), a in sorted(pos.items()) if a != 0.0]

    for r in rows:
        if r.time_ms >= end_ms:
            break
        if r.time_ms >= w.start_ms and not started:
            started = True
            if open_now():  # open when the red minute closed
                since, what = w.start_ms, open_now()
        _apply(pos, r)
        if not started:
            continue
        now_open = open_now()
        if since is None and now_open:  # opened during the halt (an outside change)
            since, what = r.time_ms, now_open
        elif since is not None and not now_open:
            out.append((since, r.time_ms, what))
            since = None
    if not started and open_now():
        since, what = w.start_ms, open_now()
    if since is not None:
        out.append((since, None, what))
    return out


def _apply(pos: dict[tuple[str, str], float], r: Any) -> None:
    if r.kind == "reset":
        pos.clear()
    elif r.symbol and r.kind not in ("funding", "transfer"):
        pos[(r.symbol, r.position_side)] = float(r.position_after)


def flat_after_red(
    rows: Sequence[Any],
    windows: Sequence[HaltWindow],
    end_of_soak_ms: int,
    candle_seconds: float,
    recovery_seconds: float,
    kill_ms: Sequence[int] = (),
) -> dict[str, Any]:
    """Inside each halt, every stretch with a position open on the venue (from the red close,
    or from an outside change that opened one) must end flat within :func:`flat_bound_ms`
    (with the kill allowance when a kill -9 of the bot fell in the stretch or its allowance
    before it). A stretch still open at the end of the halt (the soak's end) counts until
    then."""
    late: list[dict[str, Any]] = []
    longest_candles = 0.0
    stretches = 0
    at_red = 0  # halts that began with a position open: the red's closes had work to do
    kill_ms_allow = int(KILL_ALLOWANCE_SECONDS / candle_seconds * MINUTE_MS)
    for w in windows:
        end = w.end_ms if w.end_ms is not None else end_of_soak_ms
        for since, flat_ms, what in _open_stretches(rows, w, end):
            stretches += 1
            at_red += since == w.start_ms
            until = flat_ms if flat_ms is not None else end
            killed = any(since - kill_ms_allow <= k <= until for k in kill_ms)
            bound = flat_bound_ms(candle_seconds, recovery_seconds, killed)
            longest_candles = max(longest_candles, (until - since) / MINUTE_MS)
            if until - since > bound or (flat_ms is None and w.end_ms is not None):
                late.append({
                    "red_kline_ms": w.red_kline_ms, "open_from_ms": since, "flat_at_ms": flat_ms,
                    "candles": round((until - since) / MINUTE_MS, 1),
                    "bound_candles": round(bound / MINUTE_MS, 1), "killed": killed, "open": what,
                })  # fmt: skip
    return {
        "positions_not_closed_after_red": len(late),
        "not_closed_detail": late[:_DETAIL],
        "open_stretches_while_red": stretches,
        "reds_with_positions_open": at_red,
        "longest_open_while_red_candles": round(longest_candles, 1),
    }


def halt_survived_restarts(
    events: Sequence[Mapping[str, Any]], state: Sequence[float] | None
) -> dict[str, Any]:
    """Every start logged while the log shows a halt in force (a red record not yet followed
    by a restart record; the log file is appended by every start in turn, so its order is
    the truth) loaded a halted state; the reds and cooldown restarts the log shows equal the
    persisted state's counts (``state``: bot.core.hard_stop's ``h``; H_TRIGGERS 10,
    H_RESTARTS 11). A start inside the red minute itself, killed before it sampled it, is not
    a halted start: the restarted bot takes that sample."""
    forgot: list[dict[str, Any]] = []
    starts_halted = 0
    red: Mapping[str, Any] | None = None
    for e in events:
        if e["event"] == "hard_stop_tier":
            red = e if e["tier"] == "red" else None
        elif red is not None and e.get("halted"):
            starts_halted += 1
        elif red is not None:
            forgot.append({"red_kline_ms": red["kline_ms"], **dict(e)})
            red = None  # what it does next is its own (a second red is a second halt)
    reds = sum(1 for e in events if e["event"] == "hard_stop_tier" and e["tier"] == "red")
    restarts = sum(1 for e in events if e["event"] == "hard_stop_tier" and e.get("before") == "red")
    counted = (int(state[10]), int(state[11])) if state is not None else None
    return {
        "halts_lost_on_restart": len(forgot),
        "halts_lost_detail": forgot[:_DETAIL],
        "starts_while_halted": starts_halted,
        "reds_logged": reds,
        "cooldown_restarts_logged": restarts,
        "state_reds_restarts": list(counted) if counted is not None else None,
        "log_matches_state": counted == (reds, restarts),
    }


def hard_stop_closes(attempts: Iterable[Any], qty_steps: Mapping[str, float]) -> dict[str, Any]:
    """The hard stop's orders (client ids ``gbh...``): each must close (reduce-only, or the
    closing side of its position side) and ask for at most the position the exchange held
    when it came (half a qty step of slack)."""
    bad: list[dict[str, Any]] = []
    n = 0
    for a in attempts:
        if not a.client_order_id.startswith(CLOSE_PREFIX):
            continue
        n += 1
        step = qty_steps.get(a.symbol, 0.0)
        if not a.closing or a.qty > abs(a.position) + step / 2 + 1e-12:
            bad.append(_attempt_detail(a))
    return {
        "hard_stop_orders": n,
        "hard_stop_orders_not_closing": len(bad),
        "hard_stop_orders_detail": bad[:_DETAIL],
    }


def hard_stop_report(
    *,
    attempts: Sequence[Any],
    rows: Sequence[Any],
    log_file: Path,
    state_dir: Path,
    qty_steps: Mapping[str, float],
    end_of_soak_ms: int,
    candle_seconds: float,
    recovery_seconds: float,
    kill_ms: Sequence[int],
) -> tuple[dict[str, bool], dict[str, Any]]:
    """(checks, figures) of a soak run with the hard stop on."""
    events = read_hard_stop_events(log_files(log_file))
    windows = halt_windows(events)
    state = read_hard_stop_state(state_dir)
    entries = entries_while_red(attempts, windows, end_of_soak_ms)
    flat = flat_after_red(rows, windows, end_of_soak_ms, candle_seconds, recovery_seconds,
                          kill_ms)  # fmt: skip
    halts = halt_survived_restarts(events, state)
    closes = hard_stop_closes(attempts, qty_steps)
    tiers = [e["tier"] for e in events if e["event"] == "hard_stop_tier"]
    figures: dict[str, Any] = {
        "reds": len(windows),
        "oranges": tiers.count("orange"),
        "halts": [
            {"red_kline_ms": w.red_kline_ms, "end_ms": w.end_ms, "score": round(w.score, 5)}
            for w in windows[:_DETAIL]
        ],
        **entries, **red_close_lag(attempts, windows), **flat, **halts, **closes,
    }  # fmt: skip
    checks = {
        "no_entries_while_red": entries["entries_while_red"] == 0,
        "flat_after_red": flat["positions_not_closed_after_red"] == 0,
        "halt_survived_restarts": halts["halts_lost_on_restart"] == 0
        and halts["log_matches_state"],
        "hard_stop_orders_closing_only": closes["hard_stop_orders_not_closing"] == 0,
    }
    return checks, figures

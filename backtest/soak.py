"""Soak: the live bot, as a real subprocess, against the simulated venue under random faults.

:func:`run_soak` starts the venue in-process on 127.0.0.1 (ephemeral ports) over real candles
(rounded to ticks, the warm-up served as history), writes a config that points the bot at it
(``live.base_url``, ``live.ws_url``, a mode-0600 ``live.key_file``, ``live.state_dir`` in the
run's folder, short ``rest_sync_interval_seconds`` / ``stream_silence_timeout_seconds`` so
recoveries happen within the soak) and runs ``python -m bot.cli live`` on it. Candles replay
fast (``speed`` x real time); the faults of :mod:`backtest.venue.chaos` fire on a schedule drawn
from the seed. After ``minutes`` the faults stop, the candles stop, the bot gets a settle
period, then it is stopped and its book (its SQLite state) is compared with the exchange's.

Every measurement comes from the venue's own records (:class:`VenueRecorder`), never from the
bot: the fills with the balance and position after each one, every order the bot tried to
place with the exchange's position at that moment and the outcome. The pure functions
(:func:`exposure_report`, :func:`phantom_orders`, :func:`duplicates_among`,
:func:`compare_books`) take plain rows, so tests can feed them hand-built lists. With the
equity hard stop on, :mod:`backtest.soak_hard_stop` adds its checks (the halts from the bot's
log records, what was placed and filled from the venue's).
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import math
import os
import random
import secrets
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backtest.data import Candles
from backtest.replay import round_to_ticks
from backtest.runner import warmup_candles
from backtest.soak_hard_stop import hard_stop_report
from backtest.venue.binance.errors import to_api_error
from backtest.venue.bybit.rest import BybitError, to_bybit_error
from backtest.venue.chaos import KINDS, Chaos, make_schedule
from backtest.venue.matching import AccountUpdate, OrderUpdate
from backtest.venue.refusals import Refused
from backtest.venue.server import AccountReset, Venue, VenueConfig
from bot.config import Config, config_to_dict
from bot.errors import ConfigError
from bot.markets import market_spec

__all__ = [
    "CSV_COLUMNS",
    "OrderAttempt",
    "SoakOptions",
    "TradeRow",
    "VenueRecorder",
    "compare_books",
    "duplicates_among",
    "exposure_report",
    "phantom_orders",
    "read_bot_book",
    "run_soak",
    "write_trades_csv",
]

log = logging.getLogger("gridbot.soak")

# not the bot's: the soak's own market orders, the venue's liquidations and id-less orders
OUTSIDE_PREFIXES = ("chaos-", "manual-", "autoclose-", "venue-")
# refusals that mean "that position side does not exist here"
PHANTOM_CODES = {-4061, -2022, 110017}
CSV_COLUMNS = (
    "time_ms", "symbol", "side", "position_side", "qty", "price", "fee", "realized_pnl",
    "balance_after", "kind", "trade_id", "client_order_id", "position_after",
    "entry_price_after",
)  # fmt: skip


def ours(client_order_id: str | None) -> bool:
    """An order of the bot's: anything on the account the soak itself did not place."""
    return bool(client_order_id) and not str(client_order_id).startswith(OUTSIDE_PREFIXES)


# ---------------------------------------------------------------------- records


@dataclass
class TradeRow:
    """One change of the account as the venue booked it.

    ``kind``: ``entry`` / ``close`` (fills of ours that grew / shrank the position),
    ``outside`` (fills of orders not ours), ``liquidation``, ``adjustment`` (a position changed
    without an order: deleverage, manual change), ``funding`` and ``transfer`` (a deposit or
    withdrawal; symbol empty, qty 0) and ``reset`` (a fresh account: ``balance_after`` is its balance, every position flat).
    ``position_after`` is signed (+ long, - short); ``balance_before`` is the balance just
    before this change; ``placed_balance`` the balance when the order was accepted (fills)."""

    time_ms: int
    symbol: str
    side: str
    position_side: str
    qty: float
    price: float
    fee: float
    realized_pnl: float
    balance_after: float
    kind: str
    trade_id: int = 0
    client_order_id: str = ""
    position_after: float = 0.0
    entry_price_after: float = 0.0
    balance_before: float = math.nan
    placed_balance: float = math.nan
    wall_seconds: float = 0.0


@dataclass
class OrderAttempt:
    """One order the venue was asked to place, with the exchange's view at that moment.

    ``position`` is the exchange's size of the order's position side at placement (0: empty
    or no such side in the account's mode); ``empty_for_seconds`` how long that side (or the
    account's position mode, for a mode refusal) had been so when the order came."""

    wall_seconds: float
    time_ms: int
    symbol: str
    side: str
    position_side: str
    qty: float
    price: float | None
    client_order_id: str
    reduce_only: bool
    accepted: bool
    code: int | None = None
    msg: str = ""
    position: float = 0.0
    empty_for_seconds: float = 0.0
    order_id: int | None = None
    unix_seconds: float = math.nan  # time.time() at placement: compared with the bot's log

    @property
    def ours(self) -> bool:
        return ours(self.client_order_id)

    @property
    def closing(self) -> bool:
        ps, side = self.position_side, self.side
        return (
            self.reduce_only
            or (ps == "LONG" and side == "SELL")
            or (ps == "SHORT" and side == "BUY")
        )


# ---------------------------------------------------------------------- measurements


def _wel_of(position_side: str, position: float, wel: Mapping[str, float]) -> float:
    if position_side in ("LONG", "SHORT"):
        return wel[position_side]
    return wel["LONG" if position >= 0 else "SHORT"]


def exposure_report(
    rows: Iterable[TradeRow],
    wel: Mapping[str, float],
    qty_steps: Mapping[str, float],
) -> dict[str, Any]:
    """Exposure checks over the venue's rows (``wel``: LONG/SHORT -> per-position limit).

    An ``entry`` row is past the limit when the position after it, at the larger of the
    balance when the order was accepted and the balance just before the fill, exceeds the WEL
    by more than one qty step: ``size * avg / balance > WEL + qty_step * avg / balance``. That
    reference balance keeps fees, funding and other coins' losses booked between the decision
    and the fill from counting against the bot, and catches any entry sized past the limit.
    Closes, outside fills, adjustments (a deleverage, a manual change) are never entries.

    ``max_wallet_exposure_ratio``: the highest WE / WEL right after an entry (same
    reference). ``max_wallet_exposure_ratio_any``: the highest WE / WEL of any position after
    any row at the balance of that moment (includes drift: fees, funding, losses, outside
    changes)."""
    rows = list(rows)
    past: list[dict[str, Any]] = []
    max_ratio = 0.0
    max_any = 0.0
    book: dict[tuple[str, str], tuple[float, float]] = {}
    for r in rows:
        if r.kind == "reset":
            book.clear()
        elif r.symbol:
            book[(r.symbol, r.position_side)] = (r.position_after, r.entry_price_after)
        if r.kind == "entry" and r.position_after != 0.0:
            size, avg = abs(r.position_after), r.entry_price_after
            known = [b for b in (r.balance_before, r.placed_balance) if not math.isnan(b)]
            ref = max(known) if known else r.balance_after
            limit = _wel_of(r.position_side, r.position_after, wel)
            if ref > 0 and limit > 0:
                we = size * avg / ref
                ratio = we / limit
                max_ratio = max(max_ratio, ratio)
                tol = qty_steps.get(r.symbol, 0.0) * avg / ref
                if we > limit + tol + 1e-12:
                    past.append(
                        {
                            "time_ms": r.time_ms,
                            "symbol": r.symbol,
                            "position_side": r.position_side,
                            "qty": r.qty,
                            "price": r.price,
                            "position_after": r.position_after,
                            "wallet_exposure": round(we, 6),
                            "limit": limit,
                            "ratio": round(ratio, 6),
                        }
                    )
        if r.balance_after > 0:
            for (_, ps), (amt, avg) in book.items():
                if amt != 0.0:
                    limit = _wel_of(ps, amt, wel)
                    if limit > 0:
                        max_any = max(max_any, abs(amt) * avg / r.balance_after / limit)
    return {
        "entries_past_limit": len(past),
        "entries_past_limit_detail": past[:20],
        "max_wallet_exposure_ratio": round(max_ratio, 6),
        "max_wallet_exposure_ratio_any": round(max_any, 6),
        "entries": sum(1 for r in rows if r.kind == "entry"),
    }


def is_phantom(a: OrderAttempt) -> bool:
    """A close of ours on a side the exchange lists as empty, or refused because of it."""
    if not a.ours or not a.closing:
        return False
    if a.accepted:
        return a.position == 0.0
    return a.code in PHANTOM_CODES or (a.code == 10001 and "position idx" in a.msg)


def phantom_orders(attempts: Iterable[OrderAttempt], grace_seconds: float) -> dict[str, Any]:
    """Closes on phantom positions: ``orders_on_phantom_positions`` counts those sent when the
    side (or the mode) had been empty (changed) for longer than ``grace_seconds``, the bot's own
    recovery window (stream silence timeout + REST sync interval + 2 s): until then it cannot
    know; ``closes_on_empty_positions_total`` counts them all."""
    all_ = [a for a in attempts if is_phantom(a)]
    late = [a for a in all_ if a.empty_for_seconds > grace_seconds]
    return {
        "orders_on_phantom_positions": len(late),
        "closes_on_empty_positions_total": len(all_),
        "phantom_detail": [
            {
                "wall_seconds": round(a.wall_seconds, 3),
                "symbol": a.symbol,
                "side": a.side,
                "position_side": a.position_side,
                "qty": a.qty,
                "price": a.price,
                "accepted": a.accepted,
                "code": a.code,
                "empty_for_seconds": round(a.empty_for_seconds, 2),
            }
            for a in late[:20]
        ],
    }


def duplicates_among(orders: Iterable[Any], new: Any) -> bool:
    """Whether ``new`` (an order just accepted) duplicates another open order of ours: the same
    client id, or the same symbol, side, position side, price and quantity."""
    if not ours(new.client_order_id):
        return False
    shape = (new.symbol, new.side, new.position_side, new.price, new.orig_qty)
    for o in orders:
        if o.order_id == new.order_id or not ours(o.client_order_id):
            continue
        if o.client_order_id == new.client_order_id or (
            (o.symbol, o.side, o.position_side, o.price, o.orig_qty) == shape
        ):
            return True
    return False


def compare_books(
    bot: Mapping[str, Sequence[Sequence[float]]] | None,
    exchange: Mapping[str, Mapping[str, tuple[float, float]]],
    qty_steps: Mapping[str, float],
) -> tuple[bool, list[dict[str, Any]]]:
    """The bot's book (``pos:SYMBOL`` = [[long size, price], [short size, price]]) against the
    exchange's positions (symbol -> LONG/SHORT/BOTH -> (signed amount, entry price)): equal
    when every side's size is within one qty step (a one-way BOTH position counts as the side
    of its sign). ``None``: the bot's state could not be read (not equal)."""
    rows: list[dict[str, Any]] = []
    ok = bot is not None
    for symbol in sorted(set(exchange) | set(bot or {})):
        ex = exchange.get(symbol, {})
        ex_long = ex.get("LONG", (0.0, 0.0))
        ex_short = ex.get("SHORT", (0.0, 0.0))
        both = ex.get("BOTH", (0.0, 0.0))
        if both[0] > 0:
            ex_long = both
        elif both[0] < 0:
            ex_short = both
        mine = (bot or {}).get(symbol)
        for j, (name, (amt, price)) in enumerate((("long", ex_long), ("short", ex_short))):
            size = abs(amt)
            b_size, b_price = (float(mine[j][0]), float(mine[j][1])) if mine else (math.nan, 0)
            match = mine is not None and abs(b_size - size) <= qty_steps.get(symbol, 0.0) + 1e-12
            ok = ok and (match or (mine is None and size == 0.0 and bot is not None))
            rows.append(
                {
                    "symbol": symbol,
                    "side": name,
                    "exchange_size": size,
                    "exchange_price": price,
                    "bot_size": None if mine is None else b_size,
                    "bot_price": None if mine is None else b_price,
                    "match": bool(match or (mine is None and size == 0.0 and bot is not None)),
                }
            )
    return ok, rows


def read_bot_book(state_dir: Path, exchange: str) -> dict[str, list[list[float]]] | None:
    """``pos:SYMBOL`` from the bot's SQLite state (read-only); None if there is none."""
    names = ["live-bybit.sqlite"] if exchange == "bybit" else ["live.sqlite"]
    paths = [state_dir / n for n in names if (state_dir / n).exists()]
    paths += [p for p in sorted(state_dir.glob("*.sqlite")) if p not in paths]
    for path in paths:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                found = db.execute("SELECT key, value FROM kv WHERE key LIKE 'pos:%'").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.warning("cannot read the bot's state %s: %s", path, exc)
            continue
        if found:
            return {k[4:]: json.loads(v) for k, v in found}
    return None


def scan_bot_logs(paths: Iterable[Path], keep: int = 10) -> dict[str, Any]:
    """Counts of WARNING / ERROR lines and tracebacks in the bot's logs (informational: the
    checks never read the bot), with the first few distinct messages."""
    out: dict[str, Any] = {"warnings": 0, "errors": 0, "tracebacks": 0, "first": []}
    seen: set[str] = set()
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Traceback"):
                out["tracebacks"] += 1
            level = " WARNING " in line and "warnings" or " ERROR " in line and "errors"
            if not level:
                continue
            out[level] += 1
            msg = line.split(": ", 1)[-1][:200]
            key = msg[:60]
            if key not in seen and len(out["first"]) < keep:
                seen.add(key)
                out["first"].append(f"{path.name}: {msg}")
    return out


def exchange_book(venue: Venue, api_key: str) -> dict[str, dict[str, tuple[float, float]]]:
    acct = venue.engine.account(api_key)
    out: dict[str, dict[str, tuple[float, float]]] = {s: {} for s in venue.engine.symbols}
    for (s, ps), p in acct.positions.items():
        out.setdefault(s, {})[ps] = (p.amount, p.entry_price)
    return out


def write_trades_csv(rows: Iterable[TradeRow], path: str | Path) -> int:
    """The venue's rows as CSV (:data:`CSV_COLUMNS`); returns how many were written."""
    n = 0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            d = asdict(r)
            w.writerow([d[c] for c in CSV_COLUMNS])
            n += 1
    return n


# ---------------------------------------------------------------------- the recorder


class VenueRecorder:
    """Records, from the venue's side, every change of ``api_key``'s account
    (:class:`TradeRow`) and every order placement (:class:`OrderAttempt`), and counts
    duplicates as orders are accepted. Attaches itself to the venue: an observer of its events
    and a wrapper around order placement (both dialects)."""

    def __init__(self, venue: Venue, api_key: str) -> None:
        self.venue = venue
        self.api_key = api_key
        self.t0 = time.monotonic()
        self.rows: list[TradeRow] = []
        self.attempts: list[OrderAttempt] = []
        self.duplicates: list[dict[str, Any]] = []
        self.mode_refusals: list[float] = []  # time.monotonic() of orders refused for the mode
        self.on_our_fill: list[Callable[[], None]] = []
        self._pos: dict[tuple[str, str], float] = {}
        self._empty_since: dict[tuple[str, str], float] = {}
        self._placed_balance: dict[int, float] = {}
        self._hedge: bool | None = None
        self._mode_since = 0.0
        self._start = 0.0  # when recording began, on the recorder's clock
        self._pending: list[OrderUpdate] = []
        venue.observers.append(self._on_events)
        eng = venue.engine
        self._place = eng.place_order
        eng.place_order = self._place_order  # type: ignore[method-assign]
        route = ("POST", "/v5/order/create")
        handler, security = venue.bybit_rest.routes[route]
        venue.bybit_rest.routes[route] = (self._bybit_create(handler), security)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def rebase(self, t0: float) -> None:
        """Count wall time from ``t0`` (the soak's start) from now on, records included."""
        d = t0 - self.t0
        self.t0 = t0
        for a in self.attempts:
            a.wall_seconds -= d
        for r in self.rows:
            r.wall_seconds -= d
        self._empty_since = {k: v - d for k, v in self._empty_since.items()}
        self._mode_since -= d
        self._start = -d

    def _empty_for(self, symbol: str, ps: str) -> float:
        now = self.now()
        if self._pos.get((symbol, ps), 0.0) != 0.0:
            return 0.0
        return now - self._empty_since.get((symbol, ps), self._start)

    def _check_mode(self) -> None:
        hedge = self.venue.engine.account(self.api_key).hedge_mode
        if hedge != self._hedge:
            if self._hedge is not None:
                self._mode_since = self.now()
            self._hedge = hedge

    # -- placement

    def _place_order(
        self,
        api_key: str,
        symbol: str,
        side: str,
        type_: str,
        quantity: float,
        price: float | None = None,
        **kw: Any,
    ) -> Any:
        if api_key != self.api_key:
            return self._place(api_key, symbol, side, type_, quantity, price, **kw)
        self._check_mode()
        eng = self.venue.engine
        acct = eng.account(api_key)
        ps = str(kw.get("position_side") or "BOTH").upper()
        pos = acct.positions.get((symbol, ps))
        attempt = OrderAttempt(
            wall_seconds=self.now(),
            unix_seconds=time.time(),
            time_ms=eng.now_ms,
            symbol=symbol,
            side=str(side).upper(),
            position_side=ps,
            qty=float(quantity or 0.0),
            price=price,
            client_order_id=str(kw.get("client_order_id") or ""),
            reduce_only=bool(kw.get("reduce_only")),
            accepted=False,
            position=pos.amount if pos is not None else 0.0,
            empty_for_seconds=self._empty_for(symbol, ps),
        )
        balance = acct.balance
        try:
            order = self._place(api_key, symbol, side, type_, quantity, price, **kw)
        except Refused as refused:
            err = to_api_error(refused)  # the report speaks Binance's codes
            attempt.code, attempt.msg = err.code, err.msg
            if err.code == -4061:
                attempt.empty_for_seconds = min(
                    attempt.empty_for_seconds, self.now() - self._mode_since
                )
                self.mode_refusals.append(time.monotonic())
            self.attempts.append(attempt)
            raise
        attempt.accepted, attempt.order_id = True, order.order_id
        self.attempts.append(attempt)
        self._placed_balance[order.order_id] = balance
        if order.order_id in acct.open_orders and duplicates_among(
            acct.open_orders.values(), order
        ):
            self.duplicates.append(
                {
                    "wall_seconds": round(attempt.wall_seconds, 3),
                    "symbol": symbol,
                    "side": order.side,
                    "position_side": order.position_side,
                    "price": order.price,
                    "qty": order.orig_qty,
                    "client_order_id": order.client_order_id,
                }
            )
        return order

    def _bybit_create(self, handler: Callable[[dict[str, Any], str], Any]) -> Callable:
        def create(params: dict[str, Any], key: str) -> Any:
            n = len(self.attempts)
            try:
                return handler(params, key)
            except (BybitError, Refused) as exc:
                err = to_bybit_error(exc) if isinstance(exc, Refused) else exc
                if len(self.attempts) == n and key == self.api_key:  # refused before the engine
                    self._check_mode()
                    idx = str(params.get("positionIdx") or "0")
                    ps = {"1": "LONG", "2": "SHORT"}.get(idx, "BOTH")
                    symbol = str(params.get("symbol") or "")
                    empty = self._empty_for(symbol, ps)
                    if err.code == 10001 and "position idx" in err.msg:
                        empty = min(empty, self.now() - self._mode_since)
                        self.mode_refusals.append(time.monotonic())
                    self.attempts.append(
                        OrderAttempt(
                            wall_seconds=self.now(),
                            unix_seconds=time.time(),
                            time_ms=self.venue.engine.now_ms,
                            symbol=symbol,
                            side=str(params.get("side") or "").upper(),
                            position_side=ps,
                            qty=float(params.get("qty") or 0.0),
                            price=float(params["price"]) if params.get("price") else None,
                            client_order_id=str(params.get("orderLinkId") or ""),
                            reduce_only=str(params.get("reduceOnly")).lower() == "true",
                            accepted=False,
                            code=err.code,
                            msg=err.msg,
                            empty_for_seconds=empty,
                        )
                    )
                raise

        return create

    # -- events

    def _set_pos(self, symbol: str, ps: str, amount: float) -> float:
        before = self._pos.get((symbol, ps), 0.0)
        self._pos[(symbol, ps)] = amount
        if amount == 0.0 and before != 0.0:
            self._empty_since[(symbol, ps)] = self.now()
        return before

    def _on_events(self, events: list[Any]) -> None:  # noqa: C901 -- one branch per venue event kind (debt)
        fired = False
        for ev in events:
            if isinstance(ev, AccountReset):
                if ev.api_key != self.api_key:
                    continue
                for key in list(self._pos):
                    self._set_pos(key[0], key[1], 0.0)
                self._pending.clear()
                self._mode_since = self.now()  # a fresh account: the mode is its default
                self.rows.append(
                    TradeRow(ev.time_ms, "", "", "", 0.0, 0.0, 0.0, 0.0, ev.balance, "reset",
                             balance_before=math.nan, wall_seconds=self.now())
                )  # fmt: skip
                continue
            if getattr(ev, "api_key", None) != self.api_key:
                continue
            if isinstance(ev, OrderUpdate):
                if ev.fill is not None:
                    self._pending.append(ev)
                continue
            if not isinstance(ev, AccountUpdate):
                continue
            before_balance = ev.balance - ev.balance_change
            if ev.reason == "ORDER" and self._pending:
                fired |= self._fill_row(self._pending.pop(0), ev, before_balance)
            elif ev.reason == "INSURANCE_CLEAR":
                while self._pending:
                    self._fill_row(self._pending.pop(0), ev, before_balance, liquidation=True)
            elif ev.reason in ("FUNDING", "DEPOSIT", "WITHDRAW"):
                kind = "funding" if ev.reason == "FUNDING" else "transfer"
                self.rows.append(
                    TradeRow(ev.time_ms, "", "", "", 0.0, 0.0, 0.0, ev.balance_change,
                             ev.balance, kind, balance_before=before_balance, wall_seconds=self.now())
                )  # fmt: skip
                self._adjustments(ev, before_balance, pnl=0.0)
            else:  # ADJUSTMENT and anything else that moves positions without a fill
                self._adjustments(ev, before_balance, pnl=ev.balance_change)
        if fired:
            for fn in list(self.on_our_fill):
                fn()

    def _adjustments(self, ev: AccountUpdate, before_balance: float, pnl: float) -> None:
        """Rows for the positions an account update changed without a fill (the realized pnl
        on the first of them)."""
        for p in ev.positions:
            was = self._set_pos(p.symbol, p.position_side, p.amount)
            delta = p.amount - was
            if delta == 0.0:
                continue
            self.rows.append(
                TradeRow(
                    ev.time_ms, p.symbol, "BUY" if delta > 0 else "SELL", p.position_side,
                    abs(delta), p.entry_price, 0.0, pnl, ev.balance, "adjustment",
                    position_after=p.amount, entry_price_after=p.entry_price,
                    balance_before=before_balance, wall_seconds=self.now(),
                )
            )  # fmt: skip
            pnl = 0.0

    def _fill_row(
        self, ou: OrderUpdate, au: AccountUpdate, before_balance: float, liquidation: bool = False
    ) -> bool:
        f = ou.fill
        assert f is not None
        snap = next(
            (p for p in au.positions if (p.symbol, p.position_side) == (f.symbol, f.position_side)),
            None,
        )
        amount = snap.amount if snap is not None else self._pos.get((f.symbol, f.position_side), 0)
        entry = snap.entry_price if snap is not None else 0.0
        was = self._set_pos(f.symbol, f.position_side, amount)
        mine = ours(f.client_order_id)
        if liquidation or ou.execution_type == "CALCULATED":
            kind = "liquidation"
        elif not mine:
            kind = "outside"
        else:
            kind = "entry" if abs(amount) > abs(was) + 1e-15 else "close"
        self.rows.append(
            TradeRow(
                f.time_ms, f.symbol, f.side, f.position_side, f.qty, f.price, f.commission,
                f.realized_pnl, au.balance, kind, f.trade_id, f.client_order_id, amount, entry,
                balance_before=before_balance,
                placed_balance=self._placed_balance.get(f.order_id, math.nan),
                wall_seconds=self.now(),
            )
        )  # fmt: skip
        return mine and kind in ("entry", "close")


# ---------------------------------------------------------------------- the bot process


class BotProcess:
    """``python -m bot.cli live CONFIG --exchange X`` as a subprocess, killed and restarted on
    demand (same state dir); unexpected exits are counted and the bot restarted (at most
    ``max_unexpected`` times)."""

    def __init__(
        self, cmd: list[str], log_dir: Path, *, cwd: Path, max_unexpected: int = 5
    ) -> None:
        self.cmd = cmd
        self.log_dir = log_dir
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0
        self.unexpected: list[dict[str, Any]] = []
        self.max_unexpected = max_unexpected
        self.stopping = False
        self._expected = False
        self._watch: asyncio.Task | None = None
        self._restart: asyncio.Task | None = None
        self._armed: asyncio.Future | None = None
        self._armed_restart = 1.0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_path(self, n: int) -> Path:
        return self.log_dir / f"bot-{n}.log"

    async def start(self) -> None:
        self.starts += 1
        logf = open(self.log_path(self.starts), "wb")  # noqa: SIM115 (the child keeps it)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            logf.close()
        self._expected = False
        self._watch = asyncio.create_task(self._watch_exit(self.proc, self.starts))
        log.info("bot started (pid %d, log %s)", self.proc.pid, self.log_path(self.starts))

    async def _watch_exit(self, proc: asyncio.subprocess.Process, n: int) -> None:
        rc = await proc.wait()
        if self._expected or self.stopping or proc is not self.proc:
            return
        tail = self.log_path(n).read_text(errors="replace")[-1500:]
        self.unexpected.append({"start": n, "returncode": rc, "log_tail": tail})
        log.warning("the bot exited by itself (code %s); log %s", rc, self.log_path(n))
        if len(self.unexpected) <= self.max_unexpected:
            self._schedule_restart(3.0)

    def _schedule_restart(self, after_seconds: float) -> None:
        async def later() -> None:
            await asyncio.sleep(after_seconds)
            if not self.stopping and not self.running:
                await self.start()

        self._restart = asyncio.create_task(later())

    def kill9(self, *, in_flight: bool = False, restart_after_seconds: float = 1.0) -> bool:
        if not self.running or self._restart is not None and not self._restart.done():
            return False
        assert self.proc is not None
        self._expected = True
        os.kill(self.proc.pid, signal.SIGKILL)
        self.kills += 1
        self._schedule_restart(restart_after_seconds)
        return True

    def arm_kill_on_fill(
        self, timeout_seconds: float, restart_after_seconds: float
    ) -> asyncio.Future:
        """A future: True once the bot was killed at a fill of ours, False if no fill came
        within ``timeout_seconds`` (then it is killed anyway), None if it was not running."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        if not self.running:
            fut.set_result(None)
            return fut
        self._armed, self._armed_restart = fut, restart_after_seconds

        def timeout() -> None:
            if self._armed is fut and not fut.done():
                self._armed = None
                fut.set_result(
                    False if self.kill9(restart_after_seconds=restart_after_seconds) else None
                )

        loop.call_later(timeout_seconds, timeout)
        return fut

    def on_our_fill(self) -> None:
        fut = self._armed
        if fut is not None and not fut.done():
            self._armed = None
            fut.set_result(
                True
                if self.kill9(in_flight=True, restart_after_seconds=self._armed_restart)
                else None
            )

    async def ensure_running(self) -> None:
        if self._restart is not None and not self._restart.done():
            await self._restart
        if not self.running and not self.stopping:
            await self.start()

    async def stop(self, timeout_seconds: float = 20.0) -> int | None:
        """SIGTERM (a clean stop), SIGKILL after ``timeout_seconds``; returns the exit code."""
        self.stopping = True
        if self._restart is not None:
            self._restart.cancel()
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        self._expected = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_seconds)
        except TimeoutError:
            log.warning("the bot did not stop within %.0f s of SIGTERM: kill -9", timeout_seconds)
            self.proc.kill()
            return await self.proc.wait()


# ---------------------------------------------------------------------- the run


@dataclass
class SoakOptions:
    config: Config
    candles: Candles
    exchange: str = "binance"
    seed: int = 1
    minutes: float = 5.0
    speed: float = 400.0  # a 1m candle every 0.15 s
    start_ms: int | None = None
    out_dir: Path | None = None
    trades_out: Path | None = None
    rest_sync_interval_seconds: float = 3.0
    stream_silence_timeout_seconds: float = 3.0
    execution_delay_seconds: float = 0.5
    settle_seconds: float | None = None  # default: 2 x rest sync + silence timeout + 5 s
    round_seconds: float = 90.0
    kinds: tuple[str, ...] = KINDS
    ready_timeout_seconds: float = 120.0
    python: str = sys.executable


@dataclass
class SoakResult:
    summary: dict[str, Any]
    rows: list[TradeRow] = field(default_factory=list)
    attempts: list[OrderAttempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.summary.get("ok"))


def soak_live_config(
    config: Config,
    *,
    base_url: str,
    ws_url: str,
    key_file: str,
    state_dir: str,
    exchange: str,
    symbols: Sequence[str],
    opts: SoakOptions,
) -> dict[str, Any]:
    """The bot's config for the soak: the user's, pointed at the venue, with short recovery
    timers (a soak minute holds hours of candles)."""
    data = config_to_dict(config)
    data["live"].update(
        {
            "exchange": exchange,
            "symbols": list(symbols),
            "base_url": base_url,
            "ws_url": ws_url,
            "key_file": key_file,
            "state_dir": state_dir,
            "rest_sync_interval_seconds": opts.rest_sync_interval_seconds,
            "stream_silence_timeout_seconds": opts.stream_silence_timeout_seconds,
            "execution_delay_seconds": min(
                config.live.execution_delay_seconds, opts.execution_delay_seconds
            ),
            "cancel_orders_on_stop": False,
            "status_port": 0,  # any free port: restarts and parallel soaks never collide
            "log_file": str(Path(state_dir).parent / "gridbot.jsonl"),
        }
    )
    return data


def _write_private(path: Path, data: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.chmod(path, 0o600)


async def _wait_ready(
    venue: Venue, bot: BotProcess, symbols: Sequence[str], timeout: float
) -> bool:
    """Until the bot subscribed to every symbol's klines (either dialect) or it died."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        binance = all(venue.streams.has_subscribers(f"{s.lower()}@kline_1m") for s in symbols)
        bybit = all(venue.bybit_streams.has_subscribers(f"kline.1.{s}") for s in symbols)
        if binance or bybit:
            return True
        if bot.proc is not None and bot.proc.returncode is not None:
            return False  # it died during start-up
        await asyncio.sleep(0.2)
    return False


def plan(opts: SoakOptions, rng: random.Random) -> tuple[int, float, int]:
    """(start index, speed, candles needed): the start is drawn from the seed unless given; the
    speed drops when the data cannot fill ``minutes`` at the asked speed."""
    c = opts.candles
    n = len(c.timestamps)
    tf_seconds = c.timeframe_ms / 1000
    warm = min(max(1, warmup_candles(opts.config, c.timeframe_ms)), n - 1)
    window_seconds = opts.minutes * 60
    speed = opts.speed
    need = math.ceil(window_seconds / (tf_seconds / speed)) + 2
    available = n - warm - 1
    if available < 10:
        raise ValueError(
            f"the data has {n} candles, {warm} of them warm-up: too few to soak (need > {warm + 10})"
        )
    if need > available:
        speed = tf_seconds * available / window_seconds
        need = available
    draw = rng.randrange(0, available - need + 1)
    if opts.start_ms is not None:
        import numpy as np

        start = int(np.searchsorted(c.timestamps, opts.start_ms))
        if start < warm:
            raise ValueError(
                f"the start leaves {start} candles of warm-up before it; the config needs {warm}"
            )
        if start >= n - 10:
            raise ValueError("the start is at the end of the data")
    else:
        start = warm + draw
    return start, speed, need


def _new_run_dir(config: Config, exchange: str, seed: int) -> Path:
    """A folder no other run uses: two soaks started in the same second (another scenario,
    another shell) must not share a state folder and read each other's bot state."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    base = Path(config.backtest.results_dir).resolve() / f"soak_{stamp}_{exchange}_s{seed}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        out = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            out.mkdir()
            return out
        except FileExistsError:
            continue
    raise ConfigError(f"{base}: 999 soak folders of this second exist already")


async def run_soak(opts: SoakOptions) -> SoakResult:
    config = opts.config
    exchange = opts.exchange
    if exchange not in ("binance", "bybit"):
        raise ValueError(f"exchange must be binance or bybit, not {exchange!r}")
    loop_t0 = time.monotonic()
    rng = random.Random(opts.seed)
    candles = round_to_ticks(opts.candles)
    opts.candles = candles
    symbols = list(candles.symbols)
    start, speed, _ = plan(opts, rng)
    window_seconds = opts.minutes * 60
    schedule = make_schedule(
        rng, window_seconds, round_seconds=opts.round_seconds, kinds=opts.kinds
    )
    out = opts.out_dir.resolve() if opts.out_dir else _new_run_dir(config, exchange, opts.seed)
    out.mkdir(parents=True, exist_ok=True)
    state_dir = out / "state"
    wel = {
        "LONG": config.bot.long.wallet_exposure_limit,
        "SHORT": config.bot.short.wallet_exposure_limit,
    }
    steps = {s: market_spec(s).qty_step for s in symbols}
    grace_seconds = opts.stream_silence_timeout_seconds + opts.rest_sync_interval_seconds + 2.0
    settle_seconds = opts.settle_seconds
    if settle_seconds is None:
        settle_seconds = (
            2 * opts.rest_sync_interval_seconds + opts.stream_silence_timeout_seconds + 5.0
        )

    venue = Venue(
        candles,
        VenueConfig(
            maker_fee=config.backtest.maker_fee,
            taker_fee=config.backtest.taker_fee,
            funding_rate=config.backtest.funding_rate_8h,
            start_index=start,
            weight_limit_per_minute=10**9,  # hours of candles per minute: 429s come from faults
        ),
    )
    api_key, api_secret = "soak-" + secrets.token_hex(12), secrets.token_hex(32)
    venue.add_account(api_key, api_secret, config.backtest.starting_balance)
    recorder = VenueRecorder(venue, api_key)
    await venue.start()
    key_file = out / "api_key.json"
    _write_private(key_file, {"apiKey": api_key, "secret": api_secret})
    cfg = soak_live_config(
        config,
        base_url=venue.rest_url,
        ws_url=venue.ws_url,
        key_file=str(key_file),
        state_dir=str(state_dir),
        exchange=exchange,
        symbols=symbols,
        opts=opts,
    )
    cfg_path = out / "bot_config.json"
    cfg_path.write_text(json.dumps(cfg, indent=1))
    (out / "schedule.json").write_text(
        json.dumps([{**asdict(f), "params": dict(f.params)} for f in schedule], indent=1)
    )
    cmd = [opts.python, "-m", "bot.cli", "live", str(cfg_path), "--exchange", exchange]
    root = Path(__file__).resolve().parent.parent
    bot = BotProcess(cmd, out, cwd=root)
    recorder.on_our_fill.append(bot.on_our_fill)
    chaos = Chaos(
        venue,
        api_key,
        wel,
        killer=bot,
        exchange=exchange,
        mode_grace_seconds=grace_seconds,
        mode_refusals=lambda: recorder.mode_refusals,
    )
    stop_feed = asyncio.Event()
    feed: asyncio.Task | None = None
    tasks: list[asyncio.Task] = []
    book_running: dict[str, Any] | None = None
    ready = False
    first_index = venue.index
    try:
        await bot.start()
        ready = await _wait_ready(venue, bot, symbols, opts.ready_timeout_seconds)
        if not ready:
            raise RuntimeError(
                f"the bot did not subscribe to the venue's streams within "
                f"{opts.ready_timeout_seconds:.0f} s; see {bot.log_path(bot.starts)}"
            )
        t0 = time.monotonic()
        chaos.t0 = t0
        recorder.rebase(t0)
        feed = asyncio.create_task(venue.run(speed, stop=stop_feed))

        async def fire(f: Any) -> None:
            await asyncio.sleep(max(0.0, t0 + f.at_seconds - time.monotonic()))
            await chaos.apply(f)

        tasks = [asyncio.create_task(fire(f)) for f in schedule]
        await asyncio.sleep(max(0.0, t0 + window_seconds - time.monotonic()))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        chaos.clear()
        await bot.ensure_running()
        stop_feed.set()
        await feed
        await asyncio.sleep(settle_seconds)
        book_running = read_bot_book(state_dir, exchange)
        running_ok, _ = compare_books(book_running, exchange_book(venue, api_key), steps)
    finally:
        stop_feed.set()
        for t in tasks:
            t.cancel()
        rc = await bot.stop()
        if feed is not None and not feed.done():
            feed.cancel()
        final_exchange = exchange_book(venue, api_key)
        end_ms = venue.engine.now_ms
        await venue.stop()
    book = read_bot_book(state_dir, exchange)
    book_ok, book_rows = compare_books(book, final_exchange, steps)
    rows, attempts = recorder.rows, recorder.attempts
    expo = exposure_report(rows, wel, steps)
    phantom = phantom_orders(attempts, grace_seconds)
    fills_ours = sum(1 for r in rows if r.kind in ("entry", "close"))
    if opts.trades_out is not None:
        write_trades_csv(rows, opts.trades_out)
    write_trades_csv(rows, out / "trades.csv")
    (out / "faults.jsonl").write_text("".join(json.dumps(e) + "\n" for e in chaos.events))
    checks = {
        "entries_past_limit": expo["entries_past_limit"] == 0,
        "orders_on_phantom_positions": phantom["orders_on_phantom_positions"] == 0,
        "duplicate_orders": not recorder.duplicates,
        "final_book_matches_exchange": book_ok and running_ok,
        "bot_unexpected_exits": not bot.unexpected,
        "position_mode_reapplied": chaos.mode_not_reapplied == 0,
    }
    hard_stop: dict[str, Any] | None = None
    if config.bot.common.equity_hard_stop_loss.enabled:
        hsl_checks, hard_stop = hard_stop_report(
            attempts=attempts, rows=rows, log_file=out / "gridbot.jsonl", state_dir=state_dir,
            qty_steps=steps, end_of_soak_ms=end_ms,
            candle_seconds=candles.timeframe_ms / 1000 / speed, recovery_seconds=grace_seconds,
            kill_ms=[e["replay_ms"] for e in chaos.events
                     if e["kind"] in ("kill9", "kill9_in_flight") and not e["skipped"]],
        )  # fmt: skip
        checks.update(hsl_checks)
    ts = candles.timestamps
    summary: dict[str, Any] = {
        "ok": all(checks.values()),
        "failed_checks": [k for k, v in checks.items() if not v],
        "checks": checks,
        "seed": opts.seed,
        "exchange": exchange,
        "minutes": opts.minutes,
        "speed": round(speed, 3),
        "symbols": symbols,
        "start": datetime.fromtimestamp(int(ts[start]) / 1000, UTC).strftime("%Y-%m-%dT%H:%M"),
        "candles": venue.index - first_index,
        "fills": fills_ours,
        "faults": dict(sorted(chaos.injected.items())),
        "faults_total": sum(chaos.injected.values()),
        "faults_skipped": dict(sorted(chaos.skipped.items())),
        "restarts": max(0, bot.starts - 1),
        "kills": bot.kills,
        "bot_unexpected_exits": len(bot.unexpected),
        "bot_unexpected_exit_detail": bot.unexpected[:3],
        "entries_past_limit": expo["entries_past_limit"],
        "max_wallet_exposure_ratio": expo["max_wallet_exposure_ratio"],
        "max_wallet_exposure_ratio_any": expo["max_wallet_exposure_ratio_any"],
        "entries_past_limit_detail": expo["entries_past_limit_detail"],
        "orders_on_phantom_positions": phantom["orders_on_phantom_positions"],
        "closes_on_empty_positions_total": phantom["closes_on_empty_positions_total"],
        "phantom_detail": phantom["phantom_detail"],
        "phantom_grace_seconds": grace_seconds,
        "orders_sent": sum(1 for a in attempts if a.ours),
        "orders_rejected": dict(
            Counter(str(a.code) for a in attempts if a.ours and not a.accepted).most_common()
        ),
        "duplicate_orders": len(recorder.duplicates),
        "duplicate_detail": recorder.duplicates[:20],
        "final_book_matches_exchange": bool(book_ok and running_ok),
        "final_book_matches_while_running": bool(running_ok) if book_running is not None else False,
        "final_book": book_rows,
        "position_mode_not_reapplied": chaos.mode_not_reapplied,
        "bot_exit_code": rc,
        "hard_stop": hard_stop,
        "bot_log": scan_bot_logs(bot.log_path(n) for n in range(1, bot.starts + 1)),
        "results_dir": str(out),
        "seconds": round(time.monotonic() - loop_t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return SoakResult(summary, rows, attempts)


def summary_lines(s: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, verdict) rows for the human table."""

    def v(ok: bool) -> str:
        return "ok" if ok else "FAIL"

    c = s["checks"]
    faults = ", ".join(f"{k} {n}" for k, n in s["faults"].items()) or "none"
    return [
        ("exchange / seed", f"{s['exchange']} / {s['seed']}", ""),
        ("minutes, speed", f"{s['minutes']:g} min at {s['speed']:g}x from {s['start']}", ""),
        ("candles, fills of ours", f"{s['candles']}, {s['fills']}", ""),
        ("faults injected", f"{s['faults_total']}: {faults}", ""),
        ("bot restarts (kill -9)", f"{s['restarts']} ({s['kills']})", ""),
        ("entries past the limit", str(s["entries_past_limit"]), v(c["entries_past_limit"])),
        ("max WE / WEL at entries", f"{s['max_wallet_exposure_ratio']:.4f}", ""),
        ("max WE / WEL any time", f"{s['max_wallet_exposure_ratio_any']:.4f}", "drift included"),
        (
            "orders on phantom positions",
            f"{s['orders_on_phantom_positions']} (all, incl. grace: "
            f"{s['closes_on_empty_positions_total']})",
            v(c["orders_on_phantom_positions"]),
        ),
        ("duplicate orders", str(s["duplicate_orders"]), v(c["duplicate_orders"])),
        (
            "final book = exchange",
            str(s["final_book_matches_exchange"]),
            v(c["final_book_matches_exchange"]),
        ),  # fmt: skip
        (
            "position mode re-applied",
            f"{s['position_mode_not_reapplied']} not",
            v(c["position_mode_reapplied"]),
        ),  # fmt: skip
        ("bot exits of its own", str(s["bot_unexpected_exits"]), v(c["bot_unexpected_exits"])),
        *_hard_stop_lines(s.get("hard_stop"), c, v),
    ]


def _hard_stop_lines(
    h: Mapping[str, Any] | None, c: Mapping[str, bool], v: Callable[[bool], str]
) -> list[tuple[str, str, str]]:
    if h is None:
        return []
    starts = h["starts_while_halted"] + h["halts_lost_on_restart"]
    return [
        ("hard stop: reds, oranges", f"{h['reds']}, {h['oranges']}", ""),
        (
            "hard stop: entries while red",
            f"{h['entries_while_red']} (other orders {h['other_orders_while_red']})",
            v(c["no_entries_while_red"]),
        ),
        (
            "hard stop: flat after red",
            f"{h['positions_not_closed_after_red']} late; longest "
            f"{h['longest_open_while_red_candles']:g} candles",
            v(c["flat_after_red"]),
        ),
        (
            "hard stop: halt kept on restart",
            f"{h['halts_lost_on_restart']} lost of {starts}; log = state {h['log_matches_state']}",
            v(c["halt_survived_restarts"]),
        ),
        (
            "hard stop: closes within position",
            f"{h['hard_stop_orders_not_closing']} bad of {h['hard_stop_orders']}",
            v(c["hard_stop_orders_closing_only"]),
        ),
    ]

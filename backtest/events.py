"""Outside events for backtests and replays: parse ``--event`` specs, build the core's arrays.

An outside event changes the account without an order of the bot's: a deposit, a withdrawal,
a position reduced by the exchange (deleverage) or every position reduced by a fraction (a
vault's pro-rata exit). ``bot.core.book.apply_event`` books them, at the top of the first
candle that opens at or after the event's time, in the backtest engine and in the simulated
venue alike.

Spec syntax (``gridbot backtest --event`` / ``gridbot replay --event``, repeatable)::

    deposit:1000@2021-05-15T00:00              add 1000 USDT
    withdraw:500@2021-05-15                    take 500 USDT out (at most the balance)
    withdraw:50%@2021-05-15T12:00              take half the balance out
    reduce:BTCUSDT:long:0.01@2021-05-19T13:00  the exchange closes 0.01 of the BTC long at the
                                               previous close, without an order or a fee
    reduce:BTCUSDT:short:0.01:41000@...        ... at 41000
    reduce_all:0.5@2021-05-19T13:00            every position shrinks by half (to qty steps)
    reduce_all:25%@...
    deleverage:0.5@2021-05-19T13:00            every position in profit at the previous close
                                               shrinks by half: an exchange's deleverage stress
    deleverage:100%@...
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.core.book import (
    E_FRACTION,
    E_KIND,
    E_PRICE,
    E_SIDE,
    E_SYMBOL,
    E_TIME,
    E_VALUE,
    EV_NAMES,
    N_E,
)
from bot.errors import ConfigError

__all__ = ["OutsideEvent", "events_array", "parse_event", "parse_events"]

_KINDS = {name: kind for kind, name in EV_NAMES.items()}


@dataclass(frozen=True)
class OutsideEvent:
    """One outside event. ``amount``: USDT (deposit, withdraw) or qty (reduce); ``fraction``:
    of the balance (withdraw with no amount) or of every position (reduce_all); ``price`` of a
    reduce (nan: the previous close)."""

    time_ms: int
    kind: str  # deposit / withdraw / reduce / reduce_all / deleverage
    amount: float = 0.0
    fraction: float = 0.0
    symbol: str = ""
    side: int = 0  # reduce: 1 long, -1 short
    price: float = math.nan

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"event kind {self.kind!r}: use one of {', '.join(_KINDS)}")


def _number(text: str, spec: str, what: str, *, percent: bool = False) -> tuple[float, bool]:
    """(value, was a percentage) of a positive number, or a ConfigError naming the spec."""
    t = text.strip()
    pct = percent and t.endswith("%")
    if pct:
        t = t[:-1]
    try:
        x = float(t)
    except ValueError:
        raise ConfigError(f"--event {spec!r}: {what} {text!r} is not a number") from None
    if not (math.isfinite(x) and x > 0):
        raise ConfigError(f"--event {spec!r}: {what} must be a positive number, not {text!r}")
    return (x / 100.0 if pct else x), pct


def parse_event(spec: str) -> OutsideEvent:
    """``KIND:ARGS@TIME`` (see the module docstring) -> an :class:`OutsideEvent`."""
    from backtest.data import parse_date_ms

    body, at, when = spec.partition("@")
    if not at or not when.strip():
        raise ConfigError(f"--event {spec!r}: give a time after '@', e.g. withdraw:50%@2021-05-15")
    kind, *args = (a.strip() for a in body.split(":"))
    if kind not in _KINDS:
        raise ConfigError(
            f"--event {spec!r}: unknown kind {kind!r}; use one of {', '.join(_KINDS)}"
        )
    try:
        t = parse_date_ms(when.strip())
    except Exception as exc:  # noqa: BLE001 - any bad date: one message naming the spec
        raise ConfigError(f"--event {spec!r}: bad time {when!r} ({exc})") from None
    usage = {
        "deposit": "deposit:AMOUNT@TIME",
        "withdraw": "withdraw:AMOUNT@TIME or withdraw:PCT%@TIME",
        "reduce": "reduce:SYMBOL:long|short:QTY[:PRICE]@TIME",
        "reduce_all": "reduce_all:FRACTION@TIME or reduce_all:PCT%@TIME",
        "deleverage": "deleverage:FRACTION@TIME or deleverage:PCT%@TIME",
    }[kind]
    if len(args) not in ((3, 4) if kind == "reduce" else (1,)):
        raise ConfigError(f"--event {spec!r}: expected {usage}")
    if kind == "deposit":
        return OutsideEvent(t, kind, amount=_number(args[0], spec, "amount")[0])
    if kind == "withdraw":
        x, pct = _number(args[0], spec, "amount", percent=True)
        if pct and x > 1:
            raise ConfigError(f"--event {spec!r}: a withdrawal takes at most 100% of the balance")
        return OutsideEvent(t, kind, fraction=x) if pct else OutsideEvent(t, kind, amount=x)
    if kind in ("reduce_all", "deleverage"):
        x, _ = _number(args[0], spec, "fraction", percent=True)
        if x > 1:
            raise ConfigError(f"--event {spec!r}: the fraction is at most 1 (100%)")
        return OutsideEvent(t, kind, fraction=x)
    side = {"long": 1, "short": -1}.get(args[1].lower())
    if side is None:
        raise ConfigError(f"--event {spec!r}: side {args[1]!r} must be long or short")
    qty = _number(args[2], spec, "qty")[0]
    price = _number(args[3], spec, "price")[0] if len(args) == 4 else math.nan
    return OutsideEvent(t, kind, amount=qty, symbol=args[0].upper(), side=side, price=price)


def parse_events(specs: Iterable[str] | None) -> list[OutsideEvent]:
    return [parse_event(s) for s in specs or ()]


def events_array(events: Sequence[OutsideEvent], symbols: Sequence[str]) -> np.ndarray:
    """The core's (n, N_E) rows, sorted by time (events at one time keep their given order)."""
    out = np.zeros((len(events), N_E))
    order = sorted(range(len(events)), key=lambda i: events[i].time_ms)
    for r, i in enumerate(order):
        ev = events[i]
        s = -1
        if ev.kind == "reduce":
            if ev.symbol not in symbols:
                raise ConfigError(
                    f"event reduce:{ev.symbol}: {ev.symbol} is not traded here "
                    f"(symbols: {', '.join(symbols)})"
                )
            s = list(symbols).index(ev.symbol)
        out[r, E_TIME] = ev.time_ms
        out[r, E_KIND] = _KINDS[ev.kind]
        out[r, E_SYMBOL] = s
        out[r, E_SIDE] = ev.side
        out[r, E_VALUE] = ev.amount
        out[r, E_PRICE] = ev.price
        out[r, E_FRACTION] = ev.fraction
    return out

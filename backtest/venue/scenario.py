"""Scenario files for the venue's risk engine (``gridbot exchange-sim``): hjson -> validated.

A scenario puts accounts besides the bot's on one symbol of the simulated exchange: synthetic
traders with a position each, a liquidity provider with a finite capacity per candle, the
market's capacity for liquidation orders per candle, an insurance fund and the ranking formula
of deleverage events. Every bad value is a :class:`ConfigError` naming the key (the CLI exits
with code 2). The format is documented in the README ("The exchange's side of risk").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hjson

from bot.core.deleverage import RANK_NAMES
from bot.errors import ConfigError

__all__ = ["BotAccount", "Scenario", "Trader", "load_scenario", "parse_scenario"]


@dataclass(frozen=True)
class Trader:
    """A synthetic trader: one position in an account whose wallet balance is ``margin``."""

    name: str
    side: int  # 1 long, -1 short
    size: float  # coins
    entry_price: float
    margin: float  # USDT: the account's wallet balance
    leverage: float  # size x entry_price / margin
    opened_ms: int | None = None  # the position opens at the first candle at or after it


@dataclass(frozen=True)
class BotAccount:
    """The bot's grid as one of the accounts: its config, backtested on the scenario's candles."""

    config: str
    name: str = "bot"


@dataclass(frozen=True)
class Scenario:
    symbol: str
    traders: tuple[Trader, ...]
    data: str | None = None
    start: str | None = None
    end: str | None = None
    insurance_fund: float = 0.0
    ranking: str = "seed"
    steps_per_candle: int = 1
    step: str = "tiers"  # "tiers" or "chunk"
    chunk_pct: float = 0.25
    fee_rate: float = 0.005
    market_capacity: float = math.inf  # coins per candle per side for liquidation orders
    lp_capacity: float = 0.0  # coins per candle the liquidity provider takes over
    bot: BotAccount | None = None
    source: str = field(default="", compare=False)


_TOP = {
    "symbol", "data", "start", "end", "insurance_fund", "ranking", "liquidation", "market",
    "liquidity_provider", "traders", "bot",
}  # fmt: skip


def _err(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


def _num(d: dict, key: str, where: str, *, lo: float = 0.0, strict: bool = True,
         default: Any = None, integer: bool = False) -> Any:  # fmt: skip
    if key not in d or d[key] is None:
        if default is None:
            raise _err(f"{where}.{key}" if where else key, "missing (required)")
        return default
    x = d[key]
    name = f"{where}.{key}" if where else key
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise _err(name, f"{x!r} is not a finite number")
    if integer and int(x) != x:
        raise _err(name, f"{x!r} must be a whole number")
    if x < lo or (strict and x == lo):
        raise _err(name, f"{x!r} must be {'>' if strict else '>='} {lo:g}")
    return int(x) if integer else float(x)


def _keys(d: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise _err(where, f"must be an object, not {type(d).__name__}")
    extra = sorted(set(d) - allowed)
    if extra:
        raise _err(
            f"{where}.{extra[0]}" if where != "scenario" else extra[0],
            f"unknown key; allowed: {', '.join(sorted(allowed))}",
        )
    return d


def _trader(i: int, d: Any, names: set[str]) -> Trader:
    where = f"traders[{i}]"
    d = _keys(d, {"name", "side", "size", "entry_price", "leverage", "margin", "opened_at"}, where)
    name = str(d.get("name") or f"trader{i}")
    if name in names:
        raise _err(f"{where}.name", f"{name!r} is used twice")
    side = {"long": 1, "short": -1}.get(str(d.get("side", "")).lower())
    if side is None:
        raise _err(f"{where}.side", f"{d.get('side')!r} must be long or short")
    entry = _num(d, "entry_price", where)
    given = [k for k in ("size", "leverage", "margin") if d.get(k) is not None]
    if len(given) < 2:
        raise _err(where, "give two of size, leverage and margin (the third follows)")
    size = _num(d, "size", where, default=0.0) if "size" in given else 0.0
    lev = _num(d, "leverage", where, default=0.0) if "leverage" in given else 0.0
    margin = _num(d, "margin", where, default=0.0) if "margin" in given else 0.0
    if "size" not in given:
        size = margin * lev / entry
    elif "margin" not in given:
        margin = size * entry / lev
    elif "leverage" not in given:
        lev = size * entry / margin
    elif abs(size * entry / margin - lev) > 1e-6 * lev:
        raise _err(
            f"{where}.leverage",
            f"{lev:g} disagrees with size x entry_price / margin = {size * entry / margin:g}; "
            "give two of the three",
        )
    opened = None
    if d.get("opened_at") is not None:
        from backtest.data import parse_date_ms

        try:
            opened = parse_date_ms(str(d["opened_at"]))
        except ConfigError as exc:
            raise _err(f"{where}.opened_at", str(exc)) from None
    return Trader(name, side, size, entry, margin, lev, opened)


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:  # noqa: C901 -- checks every scenario key in order (debt)
    """Validate a scenario's decoded hjson; errors name the key."""
    d = _keys(data, _TOP, "scenario")
    sym = d.get("symbol")
    if not isinstance(sym, str) or not sym.strip():
        raise _err("symbol", "missing: the one symbol the accounts trade, e.g. BTCUSDT")
    liq = _keys(d.get("liquidation") or {}, {"steps_per_candle", "step", "chunk_pct", "fee_rate"},
                "liquidation")  # fmt: skip
    step = str(liq.get("step", "tiers"))
    if step not in ("tiers", "chunk"):
        raise _err("liquidation.step", f"{step!r} must be tiers or chunk")
    chunk = _num(liq, "chunk_pct", "liquidation", default=0.25)
    if chunk > 1:
        raise _err("liquidation.chunk_pct", f"{chunk!r} must be at most 1")
    fee_rate = _num(liq, "fee_rate", "liquidation", strict=False, default=0.005)
    if fee_rate >= 1:
        raise _err("liquidation.fee_rate", f"{fee_rate!r} must be below 1")
    market = _keys(d.get("market") or {}, {"capacity"}, "market")
    lp = _keys(d.get("liquidity_provider") or {}, {"capacity"}, "liquidity_provider")
    ranking = str(d.get("ranking", "seed"))
    if ranking not in RANK_NAMES:
        raise _err("ranking", f"{ranking!r}: use one of {', '.join(RANK_NAMES)}")
    traders_raw = d.get("traders")
    if not isinstance(traders_raw, list) or not traders_raw:
        raise _err("traders", "give a list of traders (side, entry_price and two of size, "
                   "leverage, margin)")  # fmt: skip
    names: set[str] = set()
    traders = []
    for i, t in enumerate(traders_raw):
        tr = _trader(i, t, names)
        names.add(tr.name)
        traders.append(tr)
    bot = None
    if d.get("bot") is not None:
        b = _keys(d["bot"], {"config", "name"}, "bot")
        if not isinstance(b.get("config"), str):
            raise _err("bot.config", "give the path of the bot's config (hjson)")
        bot = BotAccount(b["config"], str(b.get("name") or "bot"))
        if bot.name in names:
            raise _err("bot.name", f"{bot.name!r} is also a trader's name")
    for key in ("data", "start", "end"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise _err(key, f"{d[key]!r} must be a string")
    if d.get("start") is not None or d.get("end") is not None:
        from backtest.data import parse_date_ms

        for key in ("start", "end"):
            if d.get(key) is not None:
                try:
                    parse_date_ms(d[key])
                except ConfigError as exc:
                    raise _err(key, str(exc)) from None
    return Scenario(
        symbol=sym.strip().upper(),
        traders=tuple(traders),
        data=d.get("data"),
        start=d.get("start"),
        end=d.get("end"),
        insurance_fund=_num(d, "insurance_fund", "", strict=False, default=0.0),
        ranking=ranking,
        steps_per_candle=_num(
            liq, "steps_per_candle", "liquidation", lo=1, strict=False, default=1, integer=True
        ),  # fmt: skip
        step=step,
        chunk_pct=chunk,
        fee_rate=fee_rate,
        market_capacity=_num(market, "capacity", "market", strict=False, default=math.inf),
        lp_capacity=_num(lp, "capacity", "liquidity_provider", strict=False, default=0.0),
        bot=bot,
        source=source,
    )


def load_scenario(path: str | Path) -> Scenario:
    from bot.inputs import MAX_CONFIG_BYTES, decode_text, read_file

    p = Path(path)
    # a device, a folder, a huge or binary file: one message naming the file, never a hang
    text = decode_text(read_file(p, what="scenario", limit=MAX_CONFIG_BYTES), str(p), "scenario")
    try:
        data = hjson.loads(text)
    except RecursionError:
        raise ConfigError(f"{p}: scenario nests too deep to be a scenario") from None
    except hjson.HjsonDecodeError as exc:
        raise ConfigError(
            f"{p}: not valid hjson at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    try:
        return parse_scenario(_plain(data), str(p))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x

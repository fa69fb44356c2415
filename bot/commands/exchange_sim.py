"""`gridbot exchange-sim SCENARIO [--data PATH] [--json]`: the venue's risk engine over candles.

Runs :mod:`backtest.venue.risk` (incremental liquidation, insurance fund, deleverage events)
with a scenario's accounts over one symbol's candles. When the scenario names the bot's config,
the bot's grid is one of the accounts: the backtester runs it on the same candles, and each
deleverage that closes part of the bot's position goes back into that backtest as an outside
event (``reduce`` at the bankruptcy price, at the top of the candle it happened in), until the
two agree. The result says what the grid did after, and gives the ``--event`` specs to stress
a backtest with the same cuts. Human output on stderr; ``--json``: one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bot import inputs
from bot.errors import ConfigError

__all__ = ["ExchangeSimResult", "add_parser", "run", "run_scenario"]

MAX_ROUNDS = 12


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "exchange-sim",
        help="run the exchange's risk engine (liquidation, insurance fund, deleverage) "
        "over a scenario",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument(
        "scenario", help="scenario file (hjson), e.g. configs/scenarios/deleverage.hjson"
    )
    p.add_argument("--data", help="candles: a folder of SYMBOL.csv(.gz) or one file "
                   "(default: the scenario's data)")  # fmt: skip
    p.add_argument(
        "--start",
        type=inputs.date_text,
        help="first candle (UTC date), overrides the scenario's start",
    )
    p.add_argument(
        "--end", type=inputs.date_text, help="end (exclusive), overrides the scenario's end"
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run)


@dataclass
class ExchangeSimResult:
    risk: dict[str, Any]
    symbol: str
    candles: int
    rounds: int = 0
    bot: dict[str, Any] | None = None
    events: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "candles": self.candles,
            **self.risk,
            "bot": self.bot,
            "bot_events": self.events,
            "rounds": self.rounds,
        }


def _resolve(path: str, base: Path, what: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for c in (Path.cwd() / p, base.resolve().parent / p):
        if c.exists():
            return c
    raise ConfigError(f"{what} = {path!r}: not found here or next to {base}")


def run_scenario(  # noqa: C901 -- rounds of backtest and risk engine until they agree (debt)
    scenario_path: str | Path,
    *,
    data: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> ExchangeSimResult:
    """Load and run a scenario (see the module docstring)."""
    from backtest.data import format_ms, load_candles_with_report, parse_date_ms
    from backtest.events import OutsideEvent
    from backtest.venue.risk import RiskEngine, run_candles
    from backtest.venue.scenario import load_scenario
    from bot.markets import market_spec

    path = Path(scenario_path)
    sc = load_scenario(path)
    try:
        spec = market_spec(sc.symbol)
    except Exception:  # noqa: BLE001 - an unknown symbol: one message naming the key
        raise ConfigError(f"{path}: symbol {sc.symbol!r}: no market spec for it") from None
    data_arg = data or sc.data
    if data_arg is None:
        raise ConfigError(f"{path}: give the candles with data: in the scenario or --data")
    data_path = _resolve(data_arg, path, "data") if data is None else Path(data)

    def when(value: str | None, flag: str) -> int | None:
        if value is None:
            return None
        try:
            return parse_date_ms(value)
        except ConfigError as exc:
            raise ConfigError(f"{flag}: {exc}") from None

    start_ms = when(start, "--start") if start else when(sc.start, "start")
    end_ms = when(end, "--end") if end else when(sc.end, "end")
    candles, _ = load_candles_with_report(data_path, [sc.symbol], start_ms=start_ms, end_ms=end_ms)
    ts, ohlcv = candles.timestamps, candles.ohlcv[0]

    def engine() -> RiskEngine:
        return RiskEngine(sc, spec)

    if sc.bot is None:
        alone = run_candles(engine(), ts, ohlcv)
        return ExchangeSimResult(alone.as_dict(), sc.symbol, len(ts))

    from backtest.runner import run_backtest
    from bot.config import config_to_dict, load_config, parse_config

    cfg_path = _resolve(sc.bot.config, path, "bot.config")
    d = config_to_dict(load_config(cfg_path))
    d["backtest"]["symbols"] = [sc.symbol]
    config = parse_config(d, f"{cfg_path} (symbol {sc.symbol} of scenario {path})")
    bot_name = sc.bot.name
    events: list[OutsideEvent] = []
    risk = None
    bt = None
    rounds = 0
    for rounds in range(1, MAX_ROUNDS + 1):  # noqa: B007 - reported
        bt = run_backtest(config, candles, events)
        out = bt.output
        first = bt.inputs.trade_start

        def bot_state(k: int, out: Any = out) -> tuple:
            pos = out.positions[k - 1, 0]
            return out.balance[k - 1], (pos[0], pos[1]), (pos[2], pos[3])

        risk = run_candles(engine(), ts, ohlcv, start=max(1, first), bot_state=bot_state)
        wanted = [
            OutsideEvent(
                ev["time_ms"],
                "reduce",
                amount=cp["qty"],
                symbol=sc.symbol,
                side=1 if cp["side"] == "long" else -1,
                price=cp["price"],
            )  # fmt: skip
            for ev in risk.deleverage_events
            for cp in ev["counterparties"]
            if cp["account"] == bot_name
        ]
        if wanted == events:
            break
        events = wanted
    assert risk is not None and bt is not None
    out = bt.output
    fills = out.fills
    from backtest.engine import F_K, F_KIND
    from bot.core.params import KIND_OUTSIDE

    after = []
    for ev in risk.deleverage_events:
        if any(cp["account"] == bot_name for cp in ev["counterparties"]):
            k = int((ts < ev["time_ms"]).sum())
            n_after = int(((fills[:, F_K] >= k) & (fills[:, F_KIND] != KIND_OUTSIDE)).sum())
            after.append({"time": ev["time"], "bot_fills_after": n_after})
    bot = {
        "account": bot_name,
        "config": str(cfg_path.resolve()),
        "deleveraged": after,
        "final_balance": float(out.balance[-1]),
        "final_equity": float(out.equity[-1]),
        "liquidated": out.liquidated_k >= 0,
    }
    specs = [
        f"reduce:{e.symbol}:{'long' if e.side > 0 else 'short'}:{e.amount:g}:{e.price:.8g}"
        f"@{format_ms(e.time_ms)}"
        for e in events
    ]
    return ExchangeSimResult(risk.as_dict(), sc.symbol, len(ts), rounds, bot, specs)


def _print(res: ExchangeSimResult, took: float) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(file=sys.stderr)
    r = res.as_dict()
    con.print(f"{res.symbol}: {res.candles} candles")
    t = Table(title="liquidations")
    for c in ("account", "time", "kind", "qty", "price", "fee"):
        t.add_column(c)
    for liq in r["liquidations"]:
        for s in liq["steps"]:
            t.add_row(liq["account"], s["time"], s["kind"], f"{s['qty']:g}", f"{s['price']:.2f}",
                      f"{s['fee']:.2f}")  # fmt: skip
    con.print(t)
    fund = r["insurance_fund"]
    con.print(f"insurance fund: {fund[0]['balance']:.2f} at the start, {fund[-1]['balance']:.2f} "
              f"at the end, lowest {min(f['balance'] for f in fund):.2f}")  # fmt: skip
    for ev in r["deleverage_events"]:
        con.print(
            f"[bold]deleverage[/] {ev['time']}: {ev['bankrupt_account']} ({ev['side']}) "
            f"bankrupt at {ev['bankruptcy_price']:.2f}; checks "
            + ", ".join(f"{k}={v}" for k, v in ev["checks"].items())
        )
        for i, cp in enumerate(ev["counterparties"], 1):
            con.print(f"  {i}. {cp['account']} ({cp['side']}) score {cp['score']:.4g}: "
                      f"closed {cp['qty']:g} at {cp['price']:.2f}, pnl {cp['realized_pnl']:.2f}")  # fmt: skip
    if not r["deleverage_events"]:
        con.print("no deleverage event")
    if res.bot is not None:
        con.print(f"bot: final balance {res.bot['final_balance']:.2f}, equity "
                  f"{res.bot['final_equity']:.2f}; deleveraged {len(res.bot['deleveraged'])} "
                  f"time(s)")  # fmt: skip
        for spec in res.events:
            con.print(f"  backtest the same cut: --event {spec}")
    con.print(f"exchange-sim took {took:.2f} s")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    res = run_scenario(args.scenario, data=args.data, start=args.start, end=args.end)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(res.as_dict(), option=orjson.OPT_SERIALIZE_NUMPY))
        sys.stdout.write("\n")
    else:
        _print(res, time.perf_counter() - t0)
    return 0

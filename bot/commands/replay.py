"""`gridbot replay CONFIG --data PATH [--exchange binance|bybit]`: the live bot against the
simulated venue in lockstep, compared fill by fill with the backtester on the same candles.

``--exchange bybit`` trades the venue's Bybit v5 face (REST ``/v5``, public and private
websockets) instead of its Binance USDT-M one; the decisions are the same core's.

Trading starts at ``--start`` (or the data's start plus the warm-up); the warm-up candles
before it (``bot.config.warmup_candles``) are served as klines for the bot's EMA seeding.
``--event SPEC`` (repeatable, :mod:`backtest.events`) applies outside events (deposit,
withdraw, reduce, reduce_all) to the venue's account and to the backtest alike.
``--vault-withdraw FRACTION@TIME`` / ``--vault-deposit AMOUNT@TIME`` replay a `gridbot stress`
scenario instead: the config as a vault (``vault.enabled``), with the events the stress run books
for those requests (the leavers' slice leaving at the mark, their claim withdrawn).

Human output goes to stderr; ``--json`` prints one JSON object (ok, final_balance_live,
final_balance_backtest, final_equity_live, final_equity_backtest, first_divergence,
fills_live, fills_backtest, matched, mismatches, trades_venue, ...) on stdout. Exit code 0
when every fill matches in order, with its fee, and the final balance and equity agree; 1
otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from bot import inputs
from bot.config import load_config
from bot.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        help="replay candles through the live bot and the simulated venue; compare with backtest",
        description="Run the live bot against the simulated venue over candles, in lockstep, "
        "then the backtester on the same candles, and compare the fills.",
    )
    p.add_argument("config", help="config file (hjson)")
    p.add_argument("--data", required=True, help="candle folder or file")
    p.add_argument(
        "--symbols", type=inputs.symbols, help="comma-separated symbols (default: backtest.symbols)"
    )
    p.add_argument(
        "--start",
        type=inputs.date_text,
        help="first trading day (UTC, inclusive), e.g. 2021-05-18",
    )
    p.add_argument("--end", type=inputs.date_text, help="end (UTC, exclusive), e.g. 2021-05-19")
    p.add_argument(
        "--exchange",
        choices=("binance", "bybit"),
        default="binance",
        help="which of the venue's API formats the bot trades through (default binance)",
    )
    p.add_argument(
        "--event",
        action="append",
        metavar="SPEC",
        help="an outside event, repeatable: deposit:AMOUNT@TIME, withdraw:AMOUNT|PCT%%@TIME, "
        "reduce:SYMBOL:long|short:QTY[:PRICE]@TIME, reduce_all:FRACTION|PCT%%@TIME, "
        "deleverage:FRACTION|PCT%%@TIME (profitable positions only)",
    )
    p.add_argument("--scenario", metavar="FILE",
                   help="an exchange-sim scenario (hjson) run in the venue's candle loop: its "
                   "deleverage events reach the bot, and the backtest gets them as outside "
                   "events")  # fmt: skip
    p.add_argument(
        "--vault-withdraw",
        action="append",
        default=[],
        metavar="FRACTION@TIME",
        help="replay `gridbot stress`'s scenario: a withdrawal of FRACTION (0.9 or 90%%) of the "
        "vault's shares at TIME, booked as the stress run books it; repeatable; implies "
        "vault.enabled",
    )
    p.add_argument(
        "--vault-deposit",
        action="append",
        default=[],
        metavar="AMOUNT@TIME",
        help="with --vault-withdraw: a deposit of AMOUNT USDT at TIME, repeatable",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=run)


def _stress_events(config, candles, args: argparse.Namespace) -> tuple[Any, list]:  # noqa: ANN001
    """(the config as a vault, the events `gridbot stress` books for the requests)."""
    from backtest.stress import parse_request, run_stress

    if args.event:
        raise ConfigError("--vault-withdraw / --vault-deposit: not with --event")
    reqs = [parse_request(x, "withdraw") for x in args.vault_withdraw]
    reqs += [parse_request(x, "deposit") for x in args.vault_deposit]
    vault = config.vault.model_copy(update={"enabled": True})
    config = config.model_copy(update={"vault": vault})
    return config, run_stress(config, candles, reqs).events


def run(args: argparse.Namespace) -> int:
    from backtest.data import load_candles, parse_date_ms
    from backtest.events import parse_events
    from backtest.replay import replay
    from bot.config import warmup_candles

    console = Console(stderr=True)
    config = load_config(args.config)
    events = parse_events(getattr(args, "event", None))
    scenario = None
    if args.scenario:
        from backtest.venue.scenario import load_scenario

        scenario = load_scenario(args.scenario)
    symbols = list(args.symbols) if args.symbols else list(config.backtest.symbols)
    start = parse_date_ms(args.start) if args.start else None
    end = parse_date_ms(args.end) if args.end else None
    if start is not None:
        start -= warmup_candles(config, 60_000) * 60_000  # the warm-up comes before the start
    candles = load_candles(
        Path(args.data), symbols, start_ms=start, end_ms=end,
        max_gap_minutes=config.backtest.max_gap_minutes,
    )  # fmt: skip
    console.print(
        f"replaying {len(candles.timestamps)} candles of {', '.join(candles.symbols)} "
        f"through the live bot on the venue's {args.exchange} API (lockstep) ..."
    )
    if scenario is not None and scenario.symbol not in candles.symbols:
        raise ConfigError(
            f"--scenario {args.scenario}: symbol {scenario.symbol} is not among the replayed "
            f"symbols ({', '.join(candles.symbols)})"
        )
    if args.vault_withdraw or args.vault_deposit:
        config, events = _stress_events(config, candles, args)
    result = asyncio.run(
        replay(config, candles, exchange=args.exchange, events=events, scenario=scenario)
    )
    console.print(
        f"fills: live {len(result.fills_live)}, backtest {len(result.fills_backtest)}, "
        f"matched {result.matched}, mismatches {len(result.mismatches)} "
        f"({result.seconds:.1f} s)"
    )
    console.print(
        f"final balance: live {result.final_balance_live:.8f}, backtest "
        f"{result.final_balance_backtest:.8f}; equity: live {result.final_equity_live:.8f}, "
        f"backtest {result.final_equity_backtest:.8f}"
    )
    for m in result.mismatches[:20]:
        console.print(f"[red]mismatch[/red] {m}")
    if result.risk is not None:
        evs = result.risk["deleverage_events"]
        mine = result.risk["venue_deleverages"]
        console.print(f"scenario: {len(evs)} deleverage event(s), {len(mine)} on the bot: "
                      + ", ".join(f"{d['side']} {d['qty']:g} at {d['price']:.8g}" for d in mine))  # fmt: skip
    if result.first_divergence is not None:
        console.print(f"[red]first divergence[/red] {result.first_divergence}")
    if args.json:
        print(orjson.dumps(result.as_dict()).decode(), flush=True)
    return 0 if result.ok else 1

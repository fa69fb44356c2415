"""`gridbot risk`: the pre-trade calculator.

Given a balance and positions (``SIZE@PRICE``), it reports what the seeds' risk model says:
wallet exposure per side, the cross-margin bankruptcy price, the liquidation price and
maintenance margin from the symbol's leverage tiers, how far the price can move against the
position before each, and (with ``--config``) whether the leverage suffices for the configured
limits. Human output is a table on stderr; ``--json`` prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from bot import inputs
from bot.errors import ConfigError

__all__ = ["add_parser", "assess", "run"]


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(x) and x > 0.0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return x


def _position(text: str) -> tuple[float, float]:
    size_s, sep, price_s = text.partition("@")
    try:
        if not sep:
            raise ValueError
        size, price = float(size_s), float(price_s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SIZE@PRICE (coins @ average entry price, e.g. 0.5@60000), got {text!r}"
        ) from None
    if not (math.isfinite(size) and size > 0.0):
        raise argparse.ArgumentTypeError(f"size must be a positive number of coins, got {text!r}")
    if not (math.isfinite(price) and price > 0.0):
        raise argparse.ArgumentTypeError(f"price must be a positive number, got {text!r}")
    return size, price


def add_parser(subparsers: Any) -> None:
    """Register ``gridbot risk``."""
    p = subparsers.add_parser(
        "risk",
        help="pre-trade calculator: exposure, bankruptcy and liquidation prices, leverage check",
        description=(
            "Wallet exposure, bankruptcy and liquidation prices (cross margin, long and short "
            "of one coin together) and the leverage check, from a balance and positions."
        ),
    )
    p.add_argument("--balance", type=_positive, metavar="USDT",
                   help="unleveraged wallet balance (required unless --exchange reads it)")  # fmt: skip
    p.add_argument("--long", type=_position, metavar="SIZE@PRICE",
                   help="long position: coins @ average entry price")  # fmt: skip
    p.add_argument("--short", type=_position, metavar="SIZE@PRICE",
                   help="short position: coins @ average entry price")  # fmt: skip
    p.add_argument("--symbol", help="market (e.g. BTCUSDT) whose leverage tiers to use")
    p.add_argument("--leverage", type=_positive, help="exchange leverage (overrides live.leverage)")
    p.add_argument("--price", type=_positive,
                   help="price to measure distances from (default: the net side's position price)")  # fmt: skip
    p.add_argument("--config", metavar="FILE", help="config whose limits to check the leverage for")
    p.add_argument("--ranking", choices=("seed", "bitmex"),
                   help="deleverage ranking formula (default: the scenario's, else seed)")  # fmt: skip
    p.add_argument("--scenario", metavar="FILE",
                   help="an exchange-sim scenario: where the position ranks among its traders' "
                   "for deleverage at the reference price")  # fmt: skip
    p.add_argument("--exchange", choices=("binance", "bybit"),
                   help="read the balance, the position on --symbol, its price and the "
                   "exchange's published ADL quantile from this exchange (keys as for "
                   "`gridbot live`: --key-file or $GRIDBOT_API_KEY / $GRIDBOT_API_SECRET)")  # fmt: skip
    p.add_argument("--base-url", type=inputs.url,
                   help="with --exchange: its REST URL (e.g. a `gridbot venue`'s)")  # fmt: skip
    p.add_argument("--key-file", help="with --exchange: a mode-0600 JSON key file")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=run)


def _finite(x: float | None) -> float | None:
    """JSON has no NaN or inf: those become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def assess(  # noqa: C901 -- the risk calculator's inputs and report (debt)
    balance: float,
    long: tuple[float, float] | None = None,
    short: tuple[float, float] | None = None,
    *,
    symbol: str | None = None,
    leverage: float | None = None,
    price: float | None = None,
    config_path: str | None = None,
    ranking: str | None = None,
    scenario_path: str | None = None,
) -> dict[str, Any]:
    """Every number of the report, as a JSON-ready dict (null where not applicable)."""
    # Imported here so that argument errors answer without compiling anything.
    from bot.config import check_config_leverage, load_config
    from bot.core import (
        bankruptcy_price,
        liquidation_price,
        maintenance_margin,
        unrealized_pnl,
        wallet_exposure,
    )
    from bot.core.params import LONG, SHORT
    from bot.markets import market_spec

    ls, lp = long if long else (0.0, 0.0)
    ss, sp = short if short else (0.0, 0.0)
    notes: list[str] = []
    tiers = None
    if symbol is not None:
        try:
            spec = market_spec(symbol)
        except ConfigError as exc:
            raise ConfigError(f"--symbol: {exc}") from None
        symbol, tiers = spec.symbol, spec.tiers

    net = ls - ss
    net_side = "long" if net > 0 else "short" if net < 0 else ("hedged" if ls > 0 else None)
    ref = price if price is not None else (lp if net > 0 else sp if net < 0 else (lp or None))

    out: dict[str, Any] = {
        "balance": balance,
        "symbol": symbol,
        "long_size": ls,
        "long_price": lp if ls else None,
        "short_size": ss,
        "short_price": sp if ss else None,
        "net_side": net_side,
        "reference_price": ref,
        "wallet_exposure_long": wallet_exposure(ls, lp, balance),
        "wallet_exposure_short": wallet_exposure(ss, sp, balance),
        "equity": None,
        "bankruptcy_price": None,
        "bankruptcy_distance_pct": None,
        "liquidation_price": None,
        "liquidation_distance_pct": None,
        "maintenance_margin": None,
        "leverage": None,
        "leverage_ok": None,
        "leverage_reason": None,
        "leverage_required_above": None,
        "leverage_max_allowed": None,
    }
    if ref is not None:
        out["equity"] = (
            balance + unrealized_pnl(LONG, ls, lp, ref) + unrealized_pnl(SHORT, ss, sp, ref)
        )

    def distance(p: float | None) -> float | None:
        # Positive: how far the price can move against the net position before reaching p.
        if p is None or ref is None or net == 0:
            return None
        return (ref - p) / ref * 100.0 if net > 0 else (p - ref) / ref * 100.0

    if net == 0:
        if ls > 0:
            notes.append("long and short of equal size: equity does not move with the price")
    else:
        bkr = _finite(bankruptcy_price(balance, ls, lp, ss, sp))
        out["bankruptcy_price"] = bkr
        out["bankruptcy_distance_pct"] = _finite(distance(bkr))
        if bkr == 0.0:
            notes.append(
                "bankruptcy price 0: the balance covers the long at any price"
                if net > 0
                else "bankruptcy price 0: equity is negative at any price (already bankrupt)"
            )

    if ls > 0 or ss > 0:
        if tiers is None:
            notes.append(
                "liquidation price and maintenance margin need the leverage tiers: give --symbol"
            )
        else:
            liq = _finite(liquidation_price(balance, ls, lp, ss, sp, tiers))
            out["liquidation_price"] = liq
            out["liquidation_distance_pct"] = _finite(distance(liq))
            if ref is not None:
                out["maintenance_margin"] = maintenance_margin(
                    ls * ref, tiers
                ) + maintenance_margin(ss * ref, tiers)

    if config_path is None:
        out["leverage"] = leverage
        out["leverage_reason"] = "give --config to check the leverage against its limits"
    else:
        try:
            cfg = load_config(config_path)
        except ConfigError as exc:
            raise ConfigError(f"--config: {exc}") from None
        lev = leverage if leverage is not None else cfg.live.leverage
        check = check_config_leverage(cfg, lev, balance, tiers)
        reason = check.reason
        if check.ok:
            reason = (
                f"leverage {lev:g} exceeds {check.required_above:g}, the sum of the enabled "
                "sides' total_wallet_exposure_limit"
            )
            if tiers is not None:
                reason += f", and is within the exchange's maximum {check.max_allowed:g}"
            else:
                reason += "; the exchange's maximum per notional is not checked (no --symbol)"
        out.update(
            leverage=lev,
            leverage_ok=check.ok,
            leverage_reason=reason,
            leverage_required_above=check.required_above,
            leverage_max_allowed=_finite(check.max_allowed),
        )
    out.update(_deleverage(balance, ls, lp, ss, sp, ref, ranking, scenario_path))
    out["notes"] = notes
    return {k: _finite(v) if isinstance(v, float) else v for k, v in out.items()}


def _deleverage(
    balance: float,
    ls: float,
    lp: float,
    ss: float,
    sp: float,
    ref: float | None,
    ranking: str | None,
    scenario_path: str | None,
) -> dict[str, Any]:
    """Each side's deleverage score at the reference price (``bot.core.deleverage``; the
    account's equity apart from this position counts as its balance) and, with a scenario,
    where it ranks among the scenario's traders on the same side (1 = deleveraged first)."""
    from bot.core.account import unrealized_pnl
    from bot.core.deleverage import RANK_NAMES, deleverage_score

    sc = None
    if scenario_path is not None:
        from backtest.venue.scenario import load_scenario

        try:
            sc = load_scenario(scenario_path)
        except ConfigError as exc:
            raise ConfigError(f"--scenario: {exc}") from None
    name = ranking or (sc.ranking if sc is not None else "seed")
    formula = RANK_NAMES[name]
    out: dict[str, Any] = {
        "deleverage_ranking": name,
        "deleverage_score_long": None,
        "deleverage_score_short": None,
        "deleverage_rank_long": None,
        "deleverage_rank_short": None,
    }
    if ref is None:
        return out
    for side, size, price, key in ((1, ls, lp, "long"), (-1, ss, sp, "short")):
        if size <= 0:
            continue
        other = unrealized_pnl(-side, ss if side > 0 else ls, sp if side > 0 else lp, ref)
        score = float(deleverage_score(formula, side, size, price, ref, balance + other))
        out[f"deleverage_score_{key}"] = score
        if sc is not None:
            others = [
                (
                    t.name,
                    float(deleverage_score(formula, side, t.size, t.entry_price, ref, t.margin)),
                )
                for t in sc.traders
                if t.side == side
            ]
            ahead = sorted((n for n, s in others if s > score), key=lambda n: -dict(others)[n])
            out[f"deleverage_rank_{key}"] = {
                "rank": len(ahead) + 1,
                "of": len(others) + 1,
                "ahead": ahead,
            }
    return out


def _table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(x: Any, unit: str = "") -> str:
        if x is None:
            return "-"
        if isinstance(x, bool):
            return "yes" if x else "NO"
        if isinstance(x, float):
            return f"{x:,.6g}{unit}"
        return f"{x}{unit}"

    t = Table(title=f"gridbot risk{' ' + r['symbol'] if r['symbol'] else ''}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("balance", fmt(r["balance"], " USDT"))
    t.add_row("wallet exposure long", fmt(r["wallet_exposure_long"]))
    t.add_row("wallet exposure short", fmt(r["wallet_exposure_short"]))
    t.add_row("reference price", fmt(r["reference_price"]))
    t.add_row("equity at reference", fmt(r["equity"], " USDT"))
    t.add_row("bankruptcy price", fmt(r["bankruptcy_price"]))
    t.add_row("  distance", fmt(r["bankruptcy_distance_pct"], " %"))
    t.add_row("liquidation price", fmt(r["liquidation_price"]))
    t.add_row("  distance", fmt(r["liquidation_distance_pct"], " %"))
    t.add_row("maintenance margin", fmt(r["maintenance_margin"], " USDT"))
    t.add_row("leverage", fmt(r["leverage"]))
    t.add_row("leverage ok", fmt(r["leverage_ok"]))
    for key in ("long", "short"):
        if r[f"deleverage_score_{key}"] is not None:
            t.add_row(f"deleverage score {key} ({r['deleverage_ranking']})",
                      fmt(r[f"deleverage_score_{key}"]))  # fmt: skip
        rank = r[f"deleverage_rank_{key}"]
        if rank is not None:
            t.add_row(f"  rank in scenario ({key})", f"{rank['rank']} of {rank['of']}")
        if r.get(f"adl_queue_{key}"):
            t.add_row(f"  {r['adl_exchange']} ADL ({key})", r[f"adl_queue_{key}"])
    console = Console(stderr=True)
    console.print(t)
    for line in [*r["notes"], r["leverage_reason"]]:
        if line:
            console.print(f"- {line}", highlight=False)


def run(args: argparse.Namespace) -> int:
    """Compute and print the report; bad input raises ConfigError (exit 2)."""
    balance, long, short, price, adl = args.balance, args.long, args.short, args.price, None
    if args.exchange is None:
        if args.base_url or args.key_file:
            raise ConfigError("--base-url and --key-file read an exchange: give --exchange too")
        if balance is None:
            raise ConfigError("--balance: required (or --exchange to read it from the account)")
    else:
        from bot.commands.risk_exchange import adl_report, read_exchange

        view = read_exchange(args.exchange, args.base_url, args.key_file, args.symbol)
        # what is given on the command line wins; the rest is the account's
        balance = balance if balance is not None else view.balance
        if long is None and short is None:
            long, short = view.long, view.short
        price = price if price is not None else view.price
        adl = adl_report(view, args.exchange)
        if balance <= 0:
            raise ConfigError("--exchange: the account's wallet balance is 0; give --balance")
    report = assess(
        balance,
        long,
        short,
        symbol=args.symbol,
        leverage=args.leverage,
        price=price,
        config_path=args.config,
        ranking=args.ranking,
        scenario_path=args.scenario,
    )
    if adl is not None:
        report.update(adl)
    if args.json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(report) + b"\n")
        sys.stdout.flush()
    else:
        _table(report)
    return 0

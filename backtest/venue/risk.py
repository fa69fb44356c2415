"""The exchange's side of risk: incremental liquidation, an insurance fund, deleverage events.

Many accounts on one symbol of the simulated exchange, candle by candle (the seed
``deleverage_events.md``). Parties, each an account booked with :func:`bot.core.book.book_fill`
(every transfer is a fill between two parties at one price, so value is conserved):

- the scenario's synthetic traders (one position each, wallet balance = their margin);
- the bot's grid (optional): its position and balance are the backtester's, candle by candle;
- ``market``: everyone outside the scenario. It holds the other side of the traders' starting
  positions and buys or sells liquidation orders up to ``market.capacity`` coins per candle
  and side at or better than the bankrupt's price;
- ``liquidity_provider``: takes over a bankrupt position at its bankruptcy price, up to its
  ``capacity`` coins per candle;
- ``insurance_fund``: fed by liquidation fees, pays for closes worse than bankruptcy.

In each candle, accounts in the scenario's order (the bot is only a counterparty here: its own
liquidation is the backtester's):

1. **Incremental liquidation.** A trader whose equity at the candle's adverse extreme (the low
   for a long, the high for a short) is at or below its maintenance margin
   (:func:`bot.core.margin.maintenance_margin`, by the symbol's risk-limit tiers) is reduced in
   steps: down to the floor of the next lower tier (``liquidation.step: tiers``) or by
   ``chunk_pct`` of the position (``chunk``), at most ``steps_per_candle`` steps per candle.
   Each step is an IOC order at the liquidation price (:func:`bot.core.margin.liquidation_price`,
   or the open when the candle gapped past it), filled against the market's remaining
   capacity; the trader realizes the pnl and pays ``fee_rate`` x notional to the fund (never
   more than the equity left). Steps stop once the account is back above maintenance margin.
2. **Bankruptcy.** If the extreme crosses the account's bankruptcy price
   (:func:`bot.core.exposure.bankruptcy_price`, equity 0) with a position left, the exchange
   takes the rest over at that price (the trader ends at a balance of 0) and disposes of it:
   a. the market's remaining capacity, at the bankruptcy price (the fund neither gains nor pays);
   b. the liquidity provider, at the bankruptcy price;
   c. the insurance fund: the rest is sold at the candle's extreme, worse than bankruptcy, and
      the fund pays the difference, as far as its balance goes (never below 0);
   d. a **deleverage event** for what is left, which happens exactly when all four of the
      seed's conditions hold: bankrupt, no capacity at the bankruptcy price, no liquidity
      provider, a fund of 0. The rest closes at the bankruptcy price against the other side's
      positions ranked by :func:`bot.core.deleverage.deleverage_score` at that price, highest
      first, each closed (in part) at the bankruptcy price. No haircut: every counterparty
      realizes its profit at that price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backtest.venue.scenario import Scenario
from bot.core.account import unrealized_pnl
from bot.core.book import book_fill
from bot.core.deleverage import RANK_NAMES, deleverage_score
from bot.core.exposure import bankruptcy_price
from bot.core.margin import liquidation_price, maintenance_margin, tier_index
from bot.core.params import T_FLOOR
from bot.core.rounding import round_dn, round_nearest
from bot.markets import MarketSpec

__all__ = ["MARKET", "FUND", "LP", "Party", "RiskEngine", "RiskResult"]

MARKET = "market"
FUND = "insurance_fund"
LP = "liquidity_provider"
_EPS = 1e-9


@dataclass
class Party:
    """One account on the symbol: hedge-mode sizes (magnitudes) and average prices."""

    name: str
    balance: float = 0.0
    size: list[float] = field(default_factory=lambda: [0.0, 0.0])  # long, short
    price: list[float] = field(default_factory=lambda: [0.0, 0.0])
    kind: str = "trader"  # trader / bot / market / lp / fund
    bankrupt: bool = False

    def equity(self, mark: float) -> float:
        return (
            self.balance
            + unrealized_pnl(1, self.size[0], self.price[0], mark)
            + unrealized_pnl(-1, self.size[1], self.price[1], mark)
        )


@dataclass
class RiskResult:
    liquidations: list[dict[str, Any]]
    insurance_fund: list[dict[str, Any]]
    deleverage_events: list[dict[str, Any]]
    bankruptcies: list[dict[str, Any]]
    final: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "liquidations": self.liquidations,
            "insurance_fund": self.insurance_fund,
            "deleverage_events": self.deleverage_events,
            "checks": [e["checks"] for e in self.deleverage_events],
            "bankruptcies": self.bankruptcies,
            "final": self.final,
        }


def _iso(ts: int) -> str:
    from backtest.data import format_ms

    return format_ms(ts)


class RiskEngine:
    """The risk engine over one symbol's candles (see the module docstring)."""

    def __init__(self, scenario: Scenario, spec: MarketSpec) -> None:
        self.sc = scenario
        self.spec = spec
        self.tiers = spec.tiers
        self.formula = RANK_NAMES[scenario.ranking]
        self.parties: dict[str, Party] = {}
        self._add(Party(MARKET, kind="market"))
        self._add(Party(LP, kind="lp"))
        self._add(Party(FUND, balance=scenario.insurance_fund, kind="fund"))
        self.traders: list[Party] = []
        self._pending = list(scenario.traders)
        self._open_due(None)
        self.bot: Party | None = None
        if scenario.bot is not None:
            self.bot = self._add(Party(scenario.bot.name, kind="bot"))
        self.liquidations: dict[str, dict[str, Any]] = {}
        self.fund_log: list[dict[str, Any]] = [
            {"time": None, "event": "start", "balance": scenario.insurance_fund}
        ]
        self.adl: list[dict[str, Any]] = []
        self.bankruptcies: list[dict[str, Any]] = []

    def _open_due(self, ts: int | None) -> None:
        """Open the traders' positions due by ``ts`` (None: those without ``opened_at``), each
        with the market on the other side at its entry price."""
        market = self.parties[MARKET]
        for t in list(self._pending):
            if t.opened_ms is not None and (ts is None or t.opened_ms > ts):
                continue
            self._pending.remove(t)
            j = 0 if t.side > 0 else 1
            p = self._add(Party(t.name, balance=t.margin, kind="trader"))
            self.traders.append(p)
            self._book(p, j, t.side * round_nearest(t.size, self.spec.qty_step), t.entry_price)
            self._net(market, -t.side * p.size[j], t.entry_price)

    def _add(self, p: Party) -> Party:
        self.parties[p.name] = p
        return p

    # ------------------------------------------------------------------ booking

    def _book(self, p: Party, j: int, qty: float, price: float) -> float:
        """Book signed ``qty`` (+buy / -sell) into ``p``'s side ``j`` (``book_fill``); the
        realized pnl is added to the balance and returned."""
        side = 1 if j == 0 else -1
        size, avg, _, pnl, _ = book_fill(side, p.size[j], p.price[j], qty, price, 0.0)
        p.size[j], p.price[j] = size, avg
        p.balance += pnl
        return pnl

    def _net(self, p: Party, qty: float, price: float) -> None:
        """A buy (qty > 0) or sell into a party that nets (market, LP, fund): it reduces the
        opposite side first, the rest opens."""
        opp = 1 if qty > 0 else 0  # a buy reduces a short
        take = min(abs(qty), p.size[opp])
        if take > 0:
            self._book(p, opp, math.copysign(take, qty), price)
        rest = abs(qty) - take
        if rest > _EPS:
            self._book(p, 1 - opp, math.copysign(rest, qty), price)

    def trade(self, closer: Party, j: int, q: float, price: float, other: Party) -> float:
        """``closer`` closes ``q`` of its side ``j`` at ``price``; ``other`` takes the other side
        (nets it when it is the market, the LP or the fund, closes its side ``1 - j`` when it is
        a trader or the bot: a deleverage). Returns the closer's realized pnl."""
        sign = -1.0 if j == 0 else 1.0  # closing a long sells
        pnl = self._book(closer, j, sign * q, price)
        if other.kind in ("trader", "bot"):
            self._book(other, 1 - j, -sign * q, price)
        else:
            self._net(other, -sign * q, price)
        return pnl

    def _fund_log(self, ts: int, event: str, account: str) -> None:
        self.fund_log.append(
            {"time": _iso(ts), "event": event, "account": account,
             "balance": self.parties[FUND].balance}
        )  # fmt: skip

    # ------------------------------------------------------------------ the candle

    def total_value(self, mark: float) -> float:
        """Every party's equity at ``mark``: constant when value is conserved (positions net
        to zero across the parties, so the mark drops out)."""
        return sum(p.equity(mark) for p in self.parties.values() if p.kind != "bot")

    def set_bot(
        self, balance: float, long: tuple[float, float], short: tuple[float, float]
    ) -> None:
        b = self.bot
        if b is not None:
            b.balance = balance
            b.size[0], b.price[0] = long
            b.size[1], b.price[1] = short

    def candle(self, ts: int, open_: float, high: float, low: float) -> None:
        cap = [self.sc.market_capacity, self.sc.market_capacity]  # by the bankrupt's side
        lp = [self.sc.lp_capacity]
        if self._pending:
            self._open_due(ts)
        for p in self.traders:
            if p.bankrupt:
                continue
            for j in range(2):
                if p.size[j] > 0.0:
                    self._liquidate(p, j, ts, open_, high, low, cap, lp)

    def _state(self, p: Party, j: int, x: float) -> tuple[float, float]:
        """(equity, maintenance margin) of a one-position account at price x."""
        return p.equity(x), maintenance_margin(p.size[j] * x, self.tiers)

    def _step_qty(self, size: float, price: float) -> float:
        step = self.spec.qty_step
        if self.sc.step == "chunk":
            q = round_nearest(size * self.sc.chunk_pct, step)
            return min(size, max(q, step))
        i = tier_index(self.tiers, size * price)
        if i == 0:
            return size
        floor_qty = round_dn(self.tiers[i, T_FLOOR] / price, step)
        return min(size, max(size - floor_qty, step))

    def _liquidate(
        self, p: Party, j: int, ts: int, o: float, h: float, lo: float, cap: list, lp: list
    ) -> None:
        side = 1 if j == 0 else -1
        x = lo if side > 0 else h
        eq, mm = self._state(p, j, x)
        if eq > mm:
            return
        market, fund = self.parties[MARKET], self.parties[FUND]
        ls, lpx, ss, spx = p.size[0], p.price[0], p.size[1], p.price[1]
        liq = liquidation_price(p.balance, ls, lpx, ss, spx, self.tiers)
        f = min(liq, o) if side > 0 else max(liq, o)
        f = round_nearest(max(f, lo) if side > 0 else min(f, h), self.spec.price_step)
        rec = self.liquidations.setdefault(p.name, {"account": p.name, "steps": []})
        steps = 0
        while steps < self.sc.steps_per_candle and p.size[j] > 0.0 and eq <= mm and cap[j] > 0:
            b = bankruptcy_price(p.balance, ls, lpx, ss, spx)
            if not (f - b) * side > 0:  # no fill better than bankruptcy: the takeover below
                break
            q = min(self._step_qty(p.size[j], f), cap[j])
            q = round_dn(q, self.spec.qty_step) if q < p.size[j] else q
            if q <= 0.0:
                break
            self.trade(p, j, q, f, market)
            cap[j] -= q
            fee = max(0.0, min(self.sc.fee_rate * q * f, p.equity(f)))
            p.balance -= fee
            fund.balance += fee
            steps += 1
            rec["steps"].append(
                {"time": _iso(ts), "qty": q, "price": f, "fee": fee,
                 "size_left": p.size[j], "kind": "step"}
            )  # fmt: skip
            self._fund_log(ts, "liquidation_fee", p.name)
            ls, lpx, ss, spx = p.size[0], p.price[0], p.size[1], p.price[1]
            eq, mm = self._state(p, j, x)
        if p.size[j] <= 0.0 or p.equity(x) > 0.0:
            return  # survived this candle (or closed): no bankruptcy
        self._bankrupt(p, j, ts, x, cap, lp, rec)

    def _bankrupt(
        self, p: Party, j: int, ts: int, x: float, cap: list, lp: list, rec: dict
    ) -> None:
        side = 1 if j == 0 else -1
        market, fund, lpp = self.parties[MARKET], self.parties[FUND], self.parties[LP]
        b = bankruptcy_price(p.balance, p.size[0], p.price[0], p.size[1], p.price[1])
        q = p.size[j]
        # the exchange takes the position over at the bankruptcy price: equity 0
        self.trade(p, j, q, b, fund)
        if p.balance != 0.0:  # float noise of the exact price: the fund's
            fund.balance += p.balance
            p.balance = 0.0
        p.bankrupt = True
        rec["steps"].append(
            {"time": _iso(ts), "qty": q, "price": b, "fee": 0.0, "size_left": 0.0,
             "kind": "takeover"}
        )  # fmt: skip
        step = self.spec.qty_step
        rem = q
        # a. the market at the bankruptcy price
        q_m = min(rem, cap[j])
        if q_m > 0:
            self._net_pair(fund, market, side, q_m, b)
            cap[j] -= q_m
            rem = max(0.0, round_nearest(rem - q_m, step))
        after_market = rem
        # b. the liquidity provider at the bankruptcy price
        q_lp = min(rem, lp[0])
        if q_lp > 0:
            self._net_pair(fund, lpp, side, q_lp, b)
            lp[0] -= q_lp
            rem = max(0.0, round_nearest(rem - q_lp, step))
        after_lp = rem
        # c. the insurance fund pays for a close at the candle's extreme (worse)
        loss_per = abs(b - x)
        q_f = 0.0
        if rem > 0:
            if loss_per <= 0.0:
                q_f = rem
            else:
                q_f = min(rem, round_dn(max(fund.balance, 0.0) / loss_per, step))
            if q_f > 0:
                self._net_pair(fund, market, side, q_f, b)  # at b into the fund's book ...
                # ... and the fund pays the difference to the buyer at the extreme
                fund.balance -= q_f * loss_per
                market.balance += q_f * loss_per
                rem = max(0.0, round_nearest(rem - q_f, step))
        # the seed's four conditions, each as it stood when it was asked
        checks = {
            "bankrupt": True,
            "no_capacity_at_bankruptcy_price": after_market > 0,
            "no_liquidity_provider": after_lp > 0,
            "insurance_fund_empty": rem > 0,  # it could not pay for the rest (one qty step)
        }
        self.bankruptcies.append(
            {"time": _iso(ts), "account": p.name, "side": "long" if side > 0 else "short",
             "bankruptcy_price": b, "qty": q, "market_qty": q_m, "liquidity_provider_qty": q_lp,
             "insurance_fund_qty": q_f, "deleverage_qty": rem, "checks": checks}
        )  # fmt: skip
        self._fund_log(ts, "bankruptcy", p.name)
        if rem > 0 and all(checks.values()):
            self._deleverage(p, j, ts, b, rem, checks)

    def _net_pair(self, fund: Party, other: Party, side: int, q: float, price: float) -> None:
        """The fund hands ``q`` of a taken-over position (of the bankrupt's ``side``) to
        ``other`` at ``price``: the fund sells a long (buys back a short), the other nets."""
        sign = -1.0 if side > 0 else 1.0
        self._net(fund, sign * q, price)
        self._net(other, -sign * q, price)

    def ranking(
        self, bankrupt_side: int, price: float, exclude: str = ""
    ) -> list[tuple[Party, float]]:
        """The other side's positions (traders and the bot), highest score first."""
        j = 1 if bankrupt_side > 0 else 0
        side = 1 if j == 0 else -1
        out = []
        for p in self.parties.values():
            if p.kind in ("trader", "bot") and p.name != exclude and p.size[j] > 0.0:
                s = deleverage_score(self.formula, side, p.size[j], p.price[j], price, p.balance)
                out.append((p, s))
        out.sort(key=lambda t: -t[1])  # stable: ties keep the scenario's order
        return out

    def _deleverage(self, p: Party, j: int, ts: int, b: float, rem: float, checks: dict) -> None:
        side = 1 if j == 0 else -1
        fund = self.parties[FUND]
        cps = []
        for cp, score in self.ranking(side, b, exclude=p.name):
            if rem <= 0:
                break
            q = round_nearest(min(rem, cp.size[1 - j]), self.spec.qty_step)
            if q <= 0.0:
                continue
            before = cp.balance
            # the counterparty closes at the bankruptcy price against the taken-over position
            sign = -1.0 if side > 0 else 1.0
            self._net(fund, sign * q, b)
            self._book(cp, 1 - j, -sign * q, b)
            rem = max(0.0, round_nearest(rem - q, self.spec.qty_step))
            cps.append(
                {"account": cp.name, "score": score, "qty": q, "price": b,
                 "side": "short" if side > 0 else "long", "realized_pnl": cp.balance - before,
                 "size_left": cp.size[1 - j]}
            )  # fmt: skip
        self.adl.append(
            {"time": _iso(ts), "time_ms": ts, "bankrupt_account": p.name,
             "side": "long" if side > 0 else "short", "bankruptcy_price": b,
             "counterparties": cps, "unfilled_qty": rem, "checks": dict(checks)}
        )  # fmt: skip
        self._fund_log(ts, "deleverage", p.name)

    # ------------------------------------------------------------------ the run

    def result(self, mark: float) -> RiskResult:
        final = {
            name: {"balance": q.balance, "long": q.size[0], "short": q.size[1],
                   "equity": q.equity(mark)}
            for name, q in self.parties.items()
        }  # fmt: skip
        return RiskResult(
            liquidations=[r for r in self.liquidations.values() if r["steps"]],
            insurance_fund=self.fund_log,
            deleverage_events=self.adl,
            bankruptcies=self.bankruptcies,
            final=final,
        )


def run_candles(
    engine: RiskEngine,
    timestamps: np.ndarray,
    ohlcv: np.ndarray,
    start: int = 1,
    bot_state: Any = None,
) -> RiskResult:
    """Run ``engine`` over candles ``start..`` (ohlcv rows of one symbol: open, high, low,
    close, volume). ``bot_state(k)`` -> (balance, (long size, price), (short size, price)) of
    the bot before candle k."""
    for k in range(start, len(timestamps)):
        if bot_state is not None:
            engine.set_bot(*bot_state(k))
        o, h, lo = ohlcv[k, 0], ohlcv[k, 1], ohlcv[k, 2]
        engine.candle(int(timestamps[k]), float(o), float(h), float(lo))
    return engine.result(float(ohlcv[-1, 3]))

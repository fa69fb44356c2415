"""The risk engine inside the venue's candle loop (``gridbot venue|replay --scenario FILE``).

:class:`VenueRisk` puts a scenario's accounts (synthetic traders, the market's capacity, a
liquidity provider, the insurance fund: :mod:`.risk`) beside the venue's own accounts on the
scenario's symbol. At the top of candle k, before the matching engine applies it, the risk
engine runs candle k over the scenario's traders with the venue's accounts as they came into
it (as ``gridbot exchange-sim`` does with the backtest's): incremental liquidation, the fund,
and deleverage events. A deleverage that closes part of a venue account's position is booked
by :meth:`MatchingEngine.deleverage` at the bankrupt trader's price, stamped at the candle's
open (where the backtest applies an outside event), and pushed on the user stream with candle
k's events in the dialect's format. The venue accounts' own liquidation stays the backtest's
(all at once), so a replay with a scenario still matches the backtest fill for fill once the
deleverages are given to it as outside events.

The same ranking answers the exchange's published ADL quantile (:func:`adl_quantile`):
Binance's ``GET /fapi/v1/adlQuantile`` (0..4) and Bybit's ``adlRankIndicator`` (1..5, 0 for no
position) in ``/v5/position/list``.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from .risk import Party, RiskEngine
from .scenario import Scenario

if TYPE_CHECKING:
    from .host import VenueHost
    from .server import Venue

__all__ = ["VenueRisk", "adl_quantile", "binance_adl_quantile", "quantile_of_rank"]

log = logging.getLogger("gridbot.venue.risk")

N_QUANTILES = 5  # Binance 0..4, Bybit 1..5


def quantile_of_rank(rank: int, of: int, score: float) -> int:
    """Binance's quantile (0..4, 4 = deleveraged first) of the position ranked ``rank``
    (1 = first) among ``of`` positions on its side; a position with no profit (score <= 0) is
    in the lowest quantile."""
    if of <= 0 or score <= 0.0:
        return 0
    return N_QUANTILES - 1 - min(N_QUANTILES - 1, (rank - 1) * N_QUANTILES // of)


class VenueRisk:
    """A scenario's risk engine run by a :class:`Venue` after each candle (module docstring)."""

    def __init__(self, venue: Venue, scenario: Scenario) -> None:
        symbol = scenario.symbol
        if symbol not in venue.candles.symbols:
            from bot.errors import ConfigError

            raise ConfigError(
                f"scenario {scenario.source or ''}: symbol {symbol} is not among the venue's "
                f"symbols ({', '.join(venue.candles.symbols)})"
            )
        self.venue = venue
        self.symbol = symbol
        self.col = list(venue.candles.symbols).index(symbol)
        self.engine = RiskEngine(scenario, venue.engine.specs[symbol])
        self.names: dict[str, str] = {}  # party name -> api key (never printed: a secret)
        self.booked: list[dict[str, Any]] = []  # the venue accounts' deleverage fills

    # ------------------------------------------------------------------ the venue's accounts

    def _party(self, api_key: str) -> Party:
        for name, key in self.names.items():
            if key == api_key:
                return self.engine.parties[name]
        bot = self.engine.bot  # the scenario's bot account: the venue's first account
        if bot is not None and bot.name not in self.names:
            self.names[bot.name] = api_key
            return bot
        name = "bot" if "bot" not in self.engine.parties else f"bot{len(self.names) + 1}"
        self.names[name] = api_key
        return self.engine._add(Party(name, kind="bot"))

    def sync(self) -> None:
        """Each venue account's balance and position on the symbol into its party."""
        eng = self.venue.engine
        for key, acct in eng.accounts.items():
            p = self._party(key)
            p.balance = acct.balance
            p.size, p.price = [0.0, 0.0], [0.0, 0.0]
            for ps in ("LONG", "SHORT", "BOTH"):
                pos = acct.positions.get((self.symbol, ps))
                if pos is None or pos.amount == 0.0:
                    continue
                j = 0 if pos.amount > 0 else 1
                p.size[j], p.price[j] = abs(pos.amount), pos.entry_price

    # ------------------------------------------------------------------ the candle loop

    def at_candle(self, k: int) -> None:
        """Run the risk engine over candle ``k`` and book its deleverages of venue accounts at
        the candle's top, before its fills (as exchange-sim and the backtest's outside events)."""
        c = self.venue.candles
        ts = int(c.timestamps[k])
        o, h, lo = (float(x) for x in c.ohlcv[self.col, k, :3])
        self.sync()
        n_events = len(self.engine.adl)
        self.engine.candle(ts, o, h, lo)
        for ev in self.engine.adl[n_events:]:
            log.info("deleverage at %s: %s bankrupt at %.8g", ev["time"],
                     ev["bankrupt_account"], ev["bankruptcy_price"])  # fmt: skip
            for cp in ev["counterparties"]:
                key = self.names.get(cp["account"])
                if key is None:
                    continue
                acct = self.venue.engine.account(key)
                side = "LONG" if cp["side"] == "long" else "SHORT"
                ps = side if acct.hedge_mode else "BOTH"
                fill = self.venue.engine.deleverage(
                    key, self.symbol, ps, cp["qty"], cp["price"], ts=ts
                )
                if fill is not None:
                    self.booked.append({"time_ms": ts, "account": cp["account"],
                                        "side": cp["side"], "qty": fill.qty,
                                        "price": fill.price})  # fmt: skip

    # ------------------------------------------------------------------ the published ranking

    def ranking(self, side: int, price: float) -> list[tuple[Party, float]]:
        """The positions on ``side`` (1 long, -1 short), highest deleverage score first."""
        self.sync()
        return self.engine.ranking(-side, price)

    def result(self) -> dict[str, Any]:
        close = float(self.venue.engine.prices[self.symbol])
        return {**self.engine.result(close).as_dict(), "venue_deleverages": self.booked}


def adl_quantile(venue: VenueHost, api_key: str, symbol: str, side: int) -> tuple[int, int, int]:
    """(Binance quantile 0..4, rank 1 = first, of how many) of the account's position on
    ``side`` of ``symbol``: among the scenario's positions on that side when the venue runs
    one on this symbol, else among the venue's accounts. (0, 0, 0) without a position."""
    from bot.core.deleverage import RANK_SEED, deleverage_score

    eng = venue.engine
    price = float(eng.prices[symbol])
    risk: VenueRisk | None = getattr(venue, "risk", None)
    if risk is not None and risk.symbol == symbol and not math.isnan(price):
        me = risk._party(api_key)
        ranked = risk.ranking(side, price)
        for i, (p, score) in enumerate(ranked, 1):
            if p is me:
                return quantile_of_rank(i, len(ranked), score), i, len(ranked)
        return 0, 0, 0
    scores: list[tuple[str, float]] = []
    for key, acct in eng.accounts.items():
        for pos in acct.positions.values():
            if pos.symbol != symbol or pos.amount * side <= 0.0 or math.isnan(price):
                continue
            s = deleverage_score(RANK_SEED, side, abs(pos.amount), pos.entry_price, price,
                                 acct.balance)  # fmt: skip
            scores.append((key, float(s)))
    scores.sort(key=lambda t: -t[1])
    for i, (key, score) in enumerate(scores, 1):
        if key == api_key:
            return quantile_of_rank(i, len(scores), score), i, len(scores)
    return 0, 0, 0


def binance_adl_quantile(venue: VenueHost, acct: Any, api_key: str, symbol: str | None) -> list:
    """``GET /fapi/v1/adlQuantile``: for each symbol with a position, ``LONG`` and ``SHORT``
    (hedge mode; ``HEDGE`` is only a sign) or ``BOTH`` (one-way mode, LONG and SHORT 0)."""
    out = []
    for s in venue.engine.symbols:
        if symbol is not None and s != symbol:
            continue
        held = {1: False, -1: False}
        for (ps_sym, _), pos in acct.positions.items():
            if ps_sym == s and pos.amount != 0.0:
                held[1 if pos.amount > 0 else -1] = True
        if not any(held.values()):
            continue
        q = {side: adl_quantile(venue, api_key, s, side)[0] if held[side] else 0
             for side in (1, -1)}  # fmt: skip
        if acct.hedge_mode:
            row = {"LONG": q[1], "SHORT": q[-1], "HEDGE": 0}
        else:
            row = {"LONG": 0, "SHORT": 0, "BOTH": q[1] if held[1] else q[-1]}
        out.append({"symbol": s, "adlQuantile": row})
    return out

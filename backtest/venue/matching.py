"""The simulated exchange's accounts and matching engine: pure Python, no I/O, no clock.

One booking path with the backtester (:mod:`bot.core.book`, DESIGN.md): a candle applies, in
this order, the outside events scheduled by its open (:meth:`MatchingEngine.schedule_events`,
``bot.core.book.apply_event``), funding (at candles whose open time is a multiple of 8 h, at
the open price), the liquidation check with the positions held, the candle's fills in the
order of ``bot.core.book.candle_fill_order`` (an order resting before candle k fills when
``low < price`` (buy) or ``high > price`` (sell), strictly, at its price, maker fee), each
booked by ``bot.core.book.book_fill``, and the liquidation check again
(``liquidation_prices`` / ``book_liquidation``: tick-rounded prices, each close's fee its
maintenance margin capped at what is left, any deficit to the insurance fund).

Trade-by-trade mode (:meth:`MatchingEngine.apply_trade`) fills resting orders a trade price
crosses strictly; fed the four trades of a candle it fills the same orders at the same prices
as :meth:`MatchingEngine.apply_candle` (only the liquidation check differs: it runs at each
trade's price instead of along the candle's path).

Every timestamp here is replay time (candle times), never the wall clock.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bot.core.account import candle_low_first, funding_payment
from bot.core.book import (
    E_KIND,
    E_PRICE,
    E_SIDE,
    E_SYMBOL,
    E_TIME,
    E_VALUE,
    EV_DEPOSIT,
    EV_REDUCE,
    EV_WITHDRAW,
    N_E,
    N_R,
    R_FEE,
    R_PNL,
    R_PRICE,
    R_QTY,
    R_SIDE,
    R_SYMBOL,
    apply_event,
    book_fill,
    book_liquidation,
    candle_fill_order,
    liquidation_prices,
    market_fill_price,
)
from bot.core.margin import maintenance_margin, stack_tiers
from bot.core.rounding import is_on_step
from bot.markets import MarketSpec, market_spec

from .refusals import Refusal, Refused

__all__ = [
    "FUNDING_INTERVAL_MS",
    "Account",
    "AccountUpdate",
    "CashEntry",
    "Fill",
    "MatchingEngine",
    "Order",
    "OrderUpdate",
    "Position",
    "ADL_CLIENT_ID",
    "candle_trades",
]

FUNDING_INTERVAL_MS = 8 * 3600 * 1000
_EPS = 1e-12
_MAX_CLOSED_ORDERS = 10_000  # per account: enough for queries, bounded for long replays
_PSIDE = {"LONG": 1, "SHORT": -1}  # the core's tie-break: long before one-way before short
ADL_CLIENT_ID = "adl_autoclose"  # Binance's client order id of an auto-deleverage order


@dataclass
class Order:
    """One order as Binance describes it (quantities are magnitudes, side says the way)."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str  # BUY / SELL
    position_side: str  # BOTH / LONG / SHORT
    type: str  # LIMIT / MARKET (orig type; liquidation orders are LIQUIDATION)
    time_in_force: str
    price: float
    orig_qty: float
    reduce_only: bool
    time_ms: int
    executed_qty: float = 0.0
    cum_quote: float = 0.0
    status: str = "NEW"
    update_time_ms: int = 0

    @property
    def remaining(self) -> float:
        return max(self.orig_qty - self.executed_qty, 0.0)

    @property
    def avg_price(self) -> float:
        return self.cum_quote / self.executed_qty if self.executed_qty > 0 else 0.0

    @property
    def sign(self) -> int:
        return 1 if self.side == "BUY" else -1


@dataclass
class Position:
    """A position: ``amount`` is signed (+long / -short); hedge-mode LONG >= 0, SHORT <= 0."""

    symbol: str
    position_side: str
    amount: float = 0.0
    entry_price: float = 0.0
    update_time_ms: int = 0


@dataclass
class Fill:
    """One trade of an order (what ``userTrades`` lists)."""

    trade_id: int
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    position_side: str
    price: float
    qty: float
    commission: float
    realized_pnl: float
    maker: bool
    time_ms: int


@dataclass(frozen=True)
class OrderUpdate:
    """An order changed (Binance ORDER_TRADE_UPDATE); ``order`` is a snapshot."""

    api_key: str
    execution_type: str  # NEW / TRADE / CANCELED / EXPIRED / CALCULATED (liquidation)
    order: Order
    fill: Fill | None
    time_ms: int


@dataclass(frozen=True)
class AccountUpdate:
    """Balance or positions changed (Binance ACCOUNT_UPDATE)."""

    api_key: str
    reason: str  # ORDER / FUNDING / ADJUSTMENT / INSURANCE_CLEAR / DEPOSIT / WITHDRAW
    balance: float
    balance_change: float
    positions: tuple[Position, ...]  # snapshots of the positions that changed
    time_ms: int


@dataclass(frozen=True)
class CashEntry:
    """A balance change that is not a fill: funding of one position, or money moved in or out
    (what an exchange's account log lists besides trades; the Bybit dialect serves it)."""

    seq: int  # the account's own numbering: unique, in booking order
    time_ms: int
    kind: str  # SETTLEMENT (funding) / TRANSFER_IN / TRANSFER_OUT
    symbol: str  # "" for a transfer
    change: float  # signed, USDT
    balance_after: float
    trades_before: int  # how many trades the account had then (orders it among them)


@dataclass
class Account:
    """One API key's futures account (cross margin, USDT)."""

    api_key: str
    api_secret: str
    balance: float
    hedge_mode: bool = False
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)  # CROSSED / ISOLATED (label only)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    open_orders: dict[int, Order] = field(default_factory=dict)
    closed_orders: dict[int, Order] = field(default_factory=dict)
    # how many of closed_orders carry each client id (a lookup, not a scan of 10,000 orders)
    closed_client_ids: Counter[str] = field(default_factory=Counter)
    trades: list[Fill] = field(default_factory=list)
    reject_next_margin: int = 0  # fault injection: refuse the next N orders with -2019
    liquidated: bool = False
    insurance_deficit: float = 0.0  # what its liquidation left below zero (the fund paid it)
    events: list[np.ndarray] = field(default_factory=list)  # scheduled outside events (E_* rows)
    cash_log: list[CashEntry] = field(default_factory=list)  # funding and transfers, in order

    def log_cash(self, time_ms: int, kind: str, symbol: str, change: float) -> None:
        """Record a funding payment or transfer already applied to ``balance``."""
        n = len(self.cash_log) + 1
        entry = CashEntry(n, time_ms, kind, symbol, change, self.balance, len(self.trades))
        self.cash_log.append(entry)

    def position(self, symbol: str, position_side: str) -> Position:
        key = (symbol, position_side)
        if key not in self.positions:
            self.positions[key] = Position(symbol, position_side)
        return self.positions[key]

    def find_order(self, order_id: int | None, client_order_id: str | None) -> Order | None:
        for book in (self.open_orders, self.closed_orders):
            if order_id is not None and order_id in book:
                return book[order_id]
        if client_order_id is not None:
            for book in (self.open_orders, self.closed_orders):
                if book is self.closed_orders and client_order_id not in self.closed_client_ids:
                    break
                for o in book.values():
                    if o.client_order_id == client_order_id:
                        return o
        return None


def candle_trades(open_: float, high: float, low: float, close: float) -> tuple[float, ...]:
    """The four trade prices a candle stands for: open, nearer extreme, farther extreme, close."""
    if candle_low_first(open_, high, low):
        return (open_, low, high, close)
    return (open_, high, low, close)


class MatchingEngine:
    """Accounts, orders and fills for a set of symbols, driven candle by candle or trade by trade."""

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        maker_fee: float = 0.0002,
        taker_fee: float = 0.0005,
        funding_rate: float = 0.0001,
        default_leverage: int = 20,
        timeframe_ms: int = 60_000,
        specs: Mapping[str, MarketSpec] | None = None,
        candles: Any = None,
    ) -> None:
        self.symbols = tuple(symbols)
        self.specs = {s: (specs[s] if specs else market_spec(s)) for s in self.symbols}
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self.funding_rate = funding_rate
        self.default_leverage = default_leverage
        self.timeframe_ms = timeframe_ms
        self.candles = candles  # Candles-like (symbols, timestamps, ohlcv) for step_candle
        # the rate charged at each candle's top, (n_symbols, n) aligned with ``candles``
        # (backtest.funding: the exchange's history, as the backtest charges it); None: the
        # constant funding_rate every 8 h
        self.funding_table: np.ndarray | None = None
        self.last_funding: dict[str, float] = {}
        if candles is not None and not specs:
            # listed at its first candle (the exchange info says so, as a real one does)
            t0 = int(candles.timestamps[0])
            self.specs = {s: replace(m, listed_ms=t0) for s, m in self.specs.items()}
        self.tiers = stack_tiers([self.specs[s].tiers for s in self.symbols])
        self.price_steps = np.array([self.specs[s].price_step for s in self.symbols])
        self.qty_steps = np.array([self.specs[s].qty_step for s in self.symbols])
        self.prices: dict[str, float] = {s: math.nan for s in self.symbols}
        self.now_ms = 0
        self.accounts: dict[str, Account] = {}
        self.events: list[OrderUpdate | AccountUpdate] = []
        self._order_ids = itertools.count(1_000_001)
        self._trade_ids = itertools.count(1)
        # a vault's closes priced by the impact model (backtest.venue.vault_impact); None: off
        self.vault_impact: Any = None

    # ------------------------------------------------------------------ accounts and state

    def add_account(
        self, api_key: str, api_secret: str, balance: float, *, hedge_mode: bool = False
    ) -> Account:
        acct = Account(api_key, api_secret, float(balance), hedge_mode=hedge_mode)
        self.accounts[api_key] = acct
        return acct

    def account(self, api_key: str) -> Account:
        try:
            return self.accounts[api_key]
        except KeyError:
            raise Refused(
                Refusal.BAD_API_KEY, "Invalid API-key, IP, or permissions for action."
            ) from None

    def set_prices(self, prices: Mapping[str, float], now_ms: int) -> None:
        """Set the last trade prices and the replay clock (before the first candle)."""
        for s, p in prices.items():
            self.prices[s] = float(p)
        self.now_ms = int(now_ms)

    def drain_events(self) -> list[OrderUpdate | AccountUpdate]:
        out, self.events = self.events, []
        return out

    def spec(self, symbol: str) -> MarketSpec:
        if symbol not in self.specs:
            raise Refused(Refusal.UNKNOWN_SYMBOL, "Invalid symbol.")
        return self.specs[symbol]

    def leverage(self, acct: Account, symbol: str) -> int:
        return acct.leverage.get(symbol, self.default_leverage)

    def unrealized_pnl(self, acct: Account) -> float:
        return sum(
            p.amount * (self.prices[p.symbol] - p.entry_price)
            for p in acct.positions.values()
            if p.amount != 0.0
        )

    def position_initial_margin(self, acct: Account, symbol: str | None = None) -> float:
        return sum(
            abs(p.amount) * self.prices[p.symbol] / self.leverage(acct, p.symbol)
            for p in acct.positions.values()
            if p.amount != 0.0 and (symbol is None or p.symbol == symbol)
        )

    def _order_margin_qty(self, acct: Account, o: Order) -> float:
        """The part of an order that would open exposure (closing orders need no margin)."""
        if o.reduce_only:
            return 0.0
        if o.position_side == "LONG":
            return o.remaining if o.side == "BUY" else 0.0
        if o.position_side == "SHORT":
            return o.remaining if o.side == "SELL" else 0.0
        pos = acct.positions.get((o.symbol, "BOTH"))
        amt = pos.amount if pos else 0.0
        if amt * o.sign < 0:  # one-way: the part beyond the position opens the other side
            return max(o.remaining - abs(amt), 0.0)
        return o.remaining

    def order_initial_margin(self, acct: Account, symbol: str | None = None) -> float:
        return sum(
            self._order_margin_qty(acct, o) * o.price / self.leverage(acct, o.symbol)
            for o in acct.open_orders.values()
            if symbol is None or o.symbol == symbol
        )

    def maint_margin(self, acct: Account, symbol: str | None = None) -> float:
        total = 0.0
        for p in acct.positions.values():
            if p.amount != 0.0 and (symbol is None or p.symbol == symbol):
                notional = abs(p.amount) * self.prices[p.symbol]
                total += maintenance_margin(notional, self.specs[p.symbol].tiers)
        return total

    def available_balance(self, acct: Account) -> float:
        """Cross margin: wallet balance + unrealized pnl - initial margin of positions and orders."""
        return (
            acct.balance
            + self.unrealized_pnl(acct)
            - self.position_initial_margin(acct)
            - self.order_initial_margin(acct)
        )

    # ------------------------------------------------------------------ settings

    def set_leverage(self, api_key: str, symbol: str, leverage: int) -> int:
        acct = self.account(api_key)
        spec = self.spec(symbol)
        if not 1 <= leverage <= int(spec.max_leverage):
            raise Refused(Refusal.BAD_LEVERAGE, f"Leverage {leverage} is not valid")
        acct.leverage[symbol] = int(leverage)
        return int(leverage)

    def set_margin_type(self, api_key: str, symbol: str, margin_type: str) -> None:
        acct = self.account(api_key)
        self.spec(symbol)
        mt = margin_type.upper()
        if mt not in ("CROSSED", "ISOLATED"):
            raise Refused(
                Refusal.MISSING_PARAMETER,
                "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed.",
            )
        if acct.margin_type.get(symbol, "CROSSED") == mt:
            raise Refused(Refusal.MARGIN_TYPE_UNCHANGED, "No need to change margin type.")
        if any(o.symbol == symbol for o in acct.open_orders.values()):
            raise Refused(
                Refusal.MARGIN_TYPE_LOCKED_BY_ORDERS,
                "Margin type cannot be changed if there exists open orders.",
            )
        if any(p.symbol == symbol and p.amount != 0 for p in acct.positions.values()):
            raise Refused(
                Refusal.MARGIN_TYPE_LOCKED_BY_POSITION,
                "Margin type cannot be changed if there exists position.",
            )
        acct.margin_type[symbol] = mt  # the engine books everything as cross margin

    def set_position_mode(self, api_key: str, hedge_mode: bool) -> None:
        acct = self.account(api_key)
        if acct.hedge_mode == hedge_mode:
            raise Refused(Refusal.POSITION_MODE_UNCHANGED, "No need to change position side.")
        if acct.open_orders:
            raise Refused(
                Refusal.POSITION_MODE_LOCKED_BY_ORDERS,
                "Position side cannot be changed if there exists open orders.",
            )
        if any(p.amount != 0 for p in acct.positions.values()):
            raise Refused(
                Refusal.POSITION_MODE_LOCKED_BY_POSITION,
                "Position side cannot be changed if there exists position.",
            )
        acct.hedge_mode = hedge_mode
        acct.positions.clear()

    # ------------------------------------------------------------------ orders

    @staticmethod
    def _check_shape(
        acct: Account,
        spec: MarketSpec,
        side: str,
        type_: str,
        ps: str,
        reduce_only: bool,
        quantity: float,
    ) -> None:
        """Side, type, position side (against the account's mode) and quantity."""
        if side not in ("BUY", "SELL"):
            raise Refused(Refusal.BAD_SIDE, "Invalid side.")
        if type_ not in ("LIMIT", "MARKET"):
            raise Refused(Refusal.BAD_ORDER_TYPE, "Invalid orderType.")
        if ps not in (("LONG", "SHORT") if acct.hedge_mode else ("BOTH",)):
            raise Refused(
                Refusal.POSITION_SIDE_MISMATCH,
                "Order's position side does not match user's setting.",
            )
        if acct.hedge_mode and reduce_only:
            raise Refused(
                Refusal.REDUCE_ONLY_NOT_ALLOWED, "Parameter 'reduceonly' sent when not required."
            )
        if not quantity or quantity <= 0:
            raise Refused(Refusal.BAD_QUANTITY, "Quantity less than or equal to zero.")
        if not is_on_step(quantity, spec.qty_step):
            raise Refused(Refusal.OFF_STEP, "Precision is over the maximum defined for this asset.")
        if quantity < spec.min_qty - _EPS:
            raise Refused(
                Refusal.BAD_QUANTITY, f"Quantity less than minimum quantity {spec.min_qty:g}."
            )

    @staticmethod
    def _check_price(
        spec: MarketSpec, type_: str, price: float | None, time_in_force: str | None, last: float
    ) -> tuple[float, str]:
        """The order's price and time in force (a market order: the last price, GTC)."""
        if type_ == "LIMIT":
            if price is None or price <= 0:
                raise Refused(Refusal.BAD_PRICE, "Price less than 0.")
            if not is_on_step(price, spec.price_step):
                raise Refused(
                    Refusal.OFF_STEP, "Precision is over the maximum defined for this asset."
                )
            tif = (time_in_force or "").upper()
            if tif not in ("GTC", "GTX", "IOC", "FOK"):
                raise Refused(
                    Refusal.MISSING_PARAMETER,
                    "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
                )
        else:
            price, tif = last, "GTC"
        if math.isnan(last):
            raise Refused(
                Refusal.OVERLOADED,
                "Internal error; unable to process your request. Please try again.",
            )
        return price, tif

    def _taker_price(self, order: Order, last: float) -> float:
        """A crossing order fills at the last price; a vault's exit close (when the venue models
        it) at the last price moved by the impact model (backtest.venue.vault_impact); either on
        the tick (``bot.core.book.market_fill_price``, as the backtester's market closes)."""
        step = self.spec(order.symbol).price_step
        vi = self.vault_impact
        if vi is None or not vi.applies(order.client_order_id, order.type):
            return market_fill_price(last, step)
        ps, side = order.position_side, order.side
        pside = 1 if ps == "LONG" or (ps == "BOTH" and side == "SELL") else -1
        return market_fill_price(
            vi.price(order.symbol, pside, order.orig_qty, last, self.now_ms), step
        )

    def place_order(
        self,
        api_key: str,
        symbol: str,
        side: str,
        type_: str,
        quantity: float,
        price: float | None = None,
        *,
        time_in_force: str | None = None,
        reduce_only: bool = False,
        position_side: str | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """Validate and accept an order; a crossing order fills at once as taker."""
        acct = self.account(api_key)
        spec = self.spec(symbol)
        side, type_ = side.upper(), type_.upper()
        ps = (position_side or "BOTH").upper()
        self._check_shape(acct, spec, side, type_, ps, reduce_only, quantity)
        last = self.prices[symbol]
        price, tif = self._check_price(spec, type_, price, time_in_force, last)
        closing = (
            reduce_only or (ps == "LONG" and side == "SELL") or (ps == "SHORT" and side == "BUY")
        )
        if not closing and quantity * price < spec.min_cost - 1e-9:
            raise Refused(
                Refusal.NOTIONAL_TOO_SMALL,
                f"Order's notional must be no smaller than {spec.min_cost:g} (unless you choose reduce only).",
            )
        if reduce_only:
            pos = acct.positions.get((symbol, "BOTH"))
            if pos is None or pos.amount * (1 if side == "BUY" else -1) >= 0:
                raise Refused(Refusal.REDUCE_ONLY_REJECTED, "ReduceOnly Order is rejected.")
        if client_order_id is None:
            client_order_id = f"venue-{next(self._order_ids)}"
        if any(o.client_order_id == client_order_id for o in acct.open_orders.values()):
            raise Refused(Refusal.DUPLICATE_CLIENT_ID, "ClientOrderId is duplicated.")
        crosses = type_ == "MARKET" or (price > last if side == "BUY" else price < last)
        if crosses and tif == "GTX":
            raise Refused(
                Refusal.POST_ONLY_WOULD_TAKE,
                "Due to the order could not be executed as maker, the Post Only order will be rejected.",
            )
        order = Order(
            order_id=next(self._order_ids),
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            position_side=ps,
            type=type_,
            time_in_force=tif,
            price=float(price) if type_ == "LIMIT" else 0.0,
            orig_qty=float(quantity),
            reduce_only=reduce_only,
            time_ms=self.now_ms,
            update_time_ms=self.now_ms,
        )
        margin_order = replace(order, price=float(price))
        need = self._order_margin_qty(acct, margin_order) * price / self.leverage(acct, symbol)
        if acct.reject_next_margin > 0:
            acct.reject_next_margin -= 1
            raise Refused(Refusal.INSUFFICIENT_MARGIN, "Margin is insufficient.")
        if need > 0 and need > self.available_balance(acct) + 1e-9:
            raise Refused(Refusal.INSUFFICIENT_MARGIN, "Margin is insufficient.")
        if not crosses and tif in ("IOC", "FOK"):
            order.status = "EXPIRED"  # nothing to take at once: an IOC/FOK limit just expires
            self._close(acct, order)
            self.events.append(OrderUpdate(api_key, "EXPIRED", replace(order), None, self.now_ms))
            return order
        acct.open_orders[order.order_id] = order
        self.events.append(OrderUpdate(api_key, "NEW", replace(order), None, self.now_ms))
        if crosses:
            px = self._taker_price(order, last)
            self._fill(acct, order, order.orig_qty, px, maker=False, ts=self.now_ms)
            if order.order_id in acct.open_orders:  # a capped reduce: the rest expires
                order.status = "EXPIRED"
                self._close(acct, order)
                self.events.append(
                    OrderUpdate(api_key, "EXPIRED", replace(order), None, self.now_ms)
                )
        return order

    def _order_account(
        self, api_key: str, symbol: str, order_id: int | None, client_order_id: str | None
    ) -> Account:
        """The account of a cancel / query, after checking the symbol and that an id is given."""
        acct = self.account(api_key)
        self.spec(symbol)
        if order_id is None and client_order_id is None:
            raise Refused(
                Refusal.MISSING_PARAMETER,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        return acct

    def cancel_order(
        self,
        api_key: str,
        symbol: str,
        order_id: int | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        acct = self._order_account(api_key, symbol, order_id, client_order_id)
        order = None
        for o in acct.open_orders.values():
            if o.symbol == symbol and (
                (order_id is not None and o.order_id == order_id)
                or (order_id is None and o.client_order_id == client_order_id)
            ):
                order = o
                break
        if order is None:
            raise Refused(Refusal.CANCEL_UNKNOWN_ORDER, "Unknown order sent.")
        order.status = "CANCELED"
        order.update_time_ms = self.now_ms
        self._close(acct, order)
        self.events.append(OrderUpdate(api_key, "CANCELED", replace(order), None, self.now_ms))
        return order

    def query_order(
        self,
        api_key: str,
        symbol: str,
        order_id: int | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        acct = self._order_account(api_key, symbol, order_id, client_order_id)
        o = acct.find_order(order_id, None if order_id is not None else client_order_id)
        if o is None or o.symbol != symbol:
            raise Refused(Refusal.UNKNOWN_ORDER, "Order does not exist.")
        return o

    def cancel_at_once(
        self,
        acct: Account,
        symbol: str,
        side: str,
        position_side: str,
        qty: float,
        price: float,
        client_order_id: str | None,
    ) -> Order:
        """A post-only limit order that would take, accepted and cancelled at once (Bybit's
        way; Binance refuses it instead): it gets an order id and a CANCELED update only."""
        now = self.now_ms
        o = Order(
            order_id=next(self._order_ids),
            client_order_id=client_order_id or f"venue-{next(self._order_ids)}",
            symbol=symbol,
            side=side.upper(),
            position_side=position_side,
            type="LIMIT",
            time_in_force="GTX",
            price=price,
            orig_qty=qty,
            reduce_only=False,
            time_ms=now,
            status="CANCELED",
            update_time_ms=now,
        )
        self._close(acct, o)
        self.events.append(OrderUpdate(acct.api_key, "CANCELED", replace(o), None, now))
        return o

    def _close(self, acct: Account, order: Order) -> None:
        acct.open_orders.pop(order.order_id, None)
        acct.closed_orders[order.order_id] = order
        acct.closed_client_ids[order.client_order_id] += 1
        if len(acct.closed_orders) > _MAX_CLOSED_ORDERS:
            old = acct.closed_orders.pop(next(iter(acct.closed_orders)))
            acct.closed_client_ids[old.client_order_id] -= 1
            if not acct.closed_client_ids[old.client_order_id]:
                del acct.closed_client_ids[old.client_order_id]

    # ------------------------------------------------------------------ booking fills

    def _book(
        self,
        acct: Account,
        symbol: str,
        ps: str,
        signed_qty: float,
        price: float,
        ts: int,
        fee_rate: float = 0.0,
    ) -> tuple[float, float, float]:
        """Book a signed fill into the position (``bot.core.book.book_fill``); return (qty
        booked, realized pnl, fee).

        Hedge sides and reduce-only never reduce past zero; a one-way (BOTH) position flips:
        the part beyond the position opens the other side (booked as two legs).
        """
        pos = acct.position(symbol, ps)
        if ps in ("LONG", "SHORT"):
            side = 1 if ps == "LONG" else -1
            size, avg, booked, pnl, fee = book_fill(
                side, abs(pos.amount), pos.entry_price, signed_qty, price, fee_rate
            )
            pos.amount, pos.entry_price = size * side, avg
        else:
            side = 1 if pos.amount > 0 or (pos.amount == 0.0 and signed_qty > 0) else -1
            size, avg, booked, pnl, fee = book_fill(
                side, abs(pos.amount), pos.entry_price, signed_qty, price, fee_rate
            )
            pos.amount, pos.entry_price = size * side, avg
            rest = abs(signed_qty) - booked
            if rest > _EPS:  # the rest opens the other side
                size, avg, b2, _, fee2 = book_fill(
                    -side, 0.0, 0.0, math.copysign(rest, signed_qty), price, fee_rate
                )
                pos.amount, pos.entry_price = -side * size, avg
                booked += b2
                fee += fee2
        pos.update_time_ms = ts
        return booked, pnl, fee

    def _fill(
        self, acct: Account, order: Order, qty: float, price: float, *, maker: bool, ts: int
    ) -> Fill | None:
        signed = qty * order.sign
        if order.reduce_only:
            pos = acct.positions.get((order.symbol, "BOTH"))
            room = abs(pos.amount) if pos and pos.amount * order.sign < 0 else 0.0
            signed = math.copysign(min(qty, room), signed)
        elif order.position_side in ("LONG", "SHORT"):
            closing = (order.position_side == "LONG") != (order.side == "BUY")
            if closing:
                pos = acct.positions.get((order.symbol, order.position_side))
                signed = math.copysign(min(qty, abs(pos.amount) if pos else 0.0), signed)
        if abs(signed) <= _EPS:  # nothing left to reduce: the order expires (Binance does the same)
            order.status = "EXPIRED"
            order.update_time_ms = ts
            self._close(acct, order)
            self.events.append(OrderUpdate(acct.api_key, "EXPIRED", replace(order), None, ts))
            return None
        rate = self.maker_fee if maker else self.taker_fee
        booked, pnl, fee = self._book(
            acct, order.symbol, order.position_side, signed, price, ts, rate
        )
        before = acct.balance
        acct.balance += pnl - fee
        order.executed_qty += booked
        order.cum_quote += booked * price
        order.update_time_ms = ts
        order.status = "FILLED" if order.remaining <= _EPS else "PARTIALLY_FILLED"
        if order.status == "FILLED":
            self._close(acct, order)
        fill = Fill(
            trade_id=next(self._trade_ids),
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            position_side=order.position_side,
            price=price,
            qty=booked,
            commission=fee,
            realized_pnl=pnl,
            maker=maker,
            time_ms=ts,
        )
        acct.trades.append(fill)
        self.events.append(OrderUpdate(acct.api_key, "TRADE", replace(order), fill, ts))
        self._account_update(
            acct, "ORDER", acct.balance - before, [(order.symbol, order.position_side)], ts
        )
        return fill

    def _account_update(
        self, acct: Account, reason: str, change: float, keys: Sequence[tuple[str, str]], ts: int
    ) -> None:
        snaps = tuple(replace(acct.position(s, ps)) for s, ps in dict.fromkeys(keys))
        self.events.append(AccountUpdate(acct.api_key, reason, acct.balance, change, snaps, ts))

    # ------------------------------------------------------------------ candles and trades

    def _resting(self, symbol: str) -> list[tuple[Account, Order]]:
        out: list[tuple[Account, Order]] = []
        for acct in self.accounts.values():
            out.extend(
                (acct, o)
                for o in acct.open_orders.values()
                if o.symbol == symbol and o.type == "LIMIT"
            )
        return out

    def step_candle(self, k: int) -> list[Fill]:
        """Apply candle ``k`` of every symbol of ``self.candles`` at once (lockstep)."""
        c = self.candles
        ohlc = {}
        for s in self.symbols:
            o, h, lo, cl = (float(x) for x in c.ohlcv[c.symbols.index(s), k, :4])
            ohlc[s] = (o, h, lo, cl)
        return self.apply_candle(int(c.timestamps[k]), ohlc)

    def apply_candle(
        self, ts_ms: int, ohlc: Mapping[str, tuple[float, float, float, float]]
    ) -> list[Fill]:
        """Funding if due, then every symbol's fills in path order, then the liquidation check.

        Fills are stamped at the candle's last millisecond (the candle is only known then).
        """
        fill_ts = ts_ms + self.timeframe_ms - 1
        for s in self.symbols:
            if math.isnan(self.prices[s]):
                self.prices[s] = float(ohlc[s][0])
        ref = np.array([self.prices[s] for s in self.symbols], dtype=np.float64)
        self._apply_due_events(ts_ms, ref)
        rates = self.funding_due(ts_ms)
        if rates:
            self._funding({s: ohlc[s][0] for s in self.symbols}, ts_ms, rates)
        lows = np.array([ohlc[s][2] for s in self.symbols], dtype=np.float64)
        highs = np.array([ohlc[s][1] for s in self.symbols], dtype=np.float64)
        # As the backtester: liquidation with the positions held coming into the candle (their
        # orders are cancelled, nothing fills), then again after the candle's fills.
        self._liquidations(ref, lows, highs, fill_ts)
        fills: list[Fill] = []
        for s in self.symbols:
            o, h, lo, _ = ohlc[s]
            fills += self._fill_resting(s, o, h, lo, fill_ts)
        self._liquidations(ref, lows, highs, fill_ts)
        for s in self.symbols:
            self.prices[s] = float(ohlc[s][3])
        self.now_ms = ts_ms + self.timeframe_ms
        return fills

    def _fill_resting(
        self, symbol: str, open_: float, high: float, low: float, ts: int
    ) -> list[Fill]:
        """Fill the resting orders of ``symbol`` a candle (or one trade: open = high = low)
        crosses, in the core's within-candle order, at their prices as maker."""
        resting = self._resting(symbol)
        if not resting:
            return []
        qtys = np.array([o.remaining * o.sign for _, o in resting], dtype=np.float64)
        prices = np.array([o.price for _, o in resting], dtype=np.float64)
        psides = np.array([_PSIDE.get(o.position_side, 0) for _, o in resting], dtype=np.float64)
        order = np.zeros(len(resting), dtype=np.int64)
        n = candle_fill_order(qtys, prices, psides, open_, high, low, order)
        fills: list[Fill] = []
        for i in order[:n]:
            acct, o = resting[int(i)]
            if o.order_id not in acct.open_orders:
                continue  # expired by an earlier fill of this candle
            f = self._fill(acct, o, o.remaining, o.price, maker=True, ts=ts)
            if f is not None:
                fills.append(f)
        return fills

    def begin_candle(self, ts_ms: int, open_prices: Mapping[str, float]) -> None:
        """Trade-by-trade mode: a candle opens (outside events, then funding at the open,
        before fills)."""
        ref = np.array([self.prices[s] for s in self.symbols], dtype=np.float64)
        if not np.isnan(ref).any():
            self._apply_due_events(ts_ms, ref)
        rates = self.funding_due(ts_ms)
        if rates:
            self._funding(dict(open_prices), ts_ms, rates)

    def apply_trade(self, symbol: str, price: float, ts_ms: int) -> list[Fill]:
        """Trade-by-trade mode: resting orders this trade crosses strictly fill at their price."""
        fills = self._fill_resting(symbol, price, price, price, ts_ms)
        self.prices[symbol] = float(price)
        now = np.array([self.prices[s] for s in self.symbols], dtype=np.float64)
        self._liquidations(now, now, now, ts_ms)
        self.now_ms = max(self.now_ms, ts_ms)
        return fills

    def funding_due(self, ts_ms: int) -> dict[str, float]:
        """The symbols charged funding at the candle opening at ``ts_ms``, with their rates
        (empty: none): the funding table's nonzero rates, else every symbol at 00:00, 08:00 and
        16:00 UTC at the constant rate."""
        if self.funding_table is None or self.candles is None:
            due = ts_ms % FUNDING_INTERVAL_MS == 0
            return {s: self.funding_rate for s in self.symbols} if due else {}
        ts = self.candles.timestamps
        k = int(np.searchsorted(ts, ts_ms))
        if k >= len(ts) or int(ts[k]) != ts_ms:
            return {}
        col = {s: list(self.candles.symbols).index(s) for s in self.symbols}
        rates = {s: float(self.funding_table[col[s], k]) for s in self.symbols}
        return {s: r for s, r in rates.items() if r != 0.0}

    def _funding(self, marks: Mapping[str, float], ts: int, rates: Mapping[str, float]) -> None:
        self.last_funding = dict(rates)  # what the streams report with the FUNDING update
        for acct in self.accounts.values():
            keys, total = [], 0.0
            pays: list[tuple[str, float]] = []
            for (s, ps), pos in acct.positions.items():
                if pos.amount == 0.0 or s not in marks or s not in rates:
                    continue
                side = 1 if pos.amount > 0 else -1
                pay = funding_payment(side, abs(pos.amount), marks[s], rates[s])
                total -= pay
                keys.append((s, ps))
                pays.append((s, pay))
            if keys:
                start = acct.balance
                for s, pay in pays:  # one settlement row per position, as an account log has
                    acct.balance -= pay
                    acct.log_cash(ts, "SETTLEMENT", s, -pay)
                acct.balance = start + total
                self._account_update(acct, "FUNDING", total, keys, ts)

    def _book_arrays(self, acct: Account) -> tuple[np.ndarray, np.ndarray]:
        """The account's positions as the core's (2, n_coins) size and price arrays (a one-way
        position goes to the row of its direction)."""
        n = len(self.symbols)
        size, pprice = np.zeros((2, n)), np.zeros((2, n))
        for i, s in enumerate(self.symbols):
            for ps in ("LONG", "SHORT", "BOTH"):
                pos = acct.positions.get((s, ps))
                if pos is None or pos.amount == 0.0:
                    continue
                j = 0 if pos.amount > 0 else 1
                size[j, i], pprice[j, i] = abs(pos.amount), pos.entry_price
        return size, pprice

    @staticmethod
    def _position_key(acct: Account, symbol: str, side: int) -> tuple[str, str]:
        if acct.hedge_mode:
            return symbol, "LONG" if side > 0 else "SHORT"
        return symbol, "BOTH"

    def _liquidations(self, ref: np.ndarray, lows: np.ndarray, highs: np.ndarray, ts: int) -> None:
        for acct in self.accounts.values():
            if not any(p.amount != 0.0 for p in acct.positions.values()):
                continue
            size, pprice = self._book_arrays(acct)
            liq = liquidation_prices(
                acct.balance, size, pprice, ref, lows, highs, self.tiers, self.price_steps
            )
            if liq.shape[0]:
                self._liquidate(acct, size, pprice, liq, ts)

    def _liquidate(
        self, acct: Account, size: np.ndarray, pprice: np.ndarray, prices: np.ndarray, ts: int
    ) -> None:
        """Cancel every order and close every position at ``prices`` (``book_liquidation``:
        each close's fee is its maintenance margin, capped at what is left; a deficit goes to
        the insurance fund)."""
        for o in list(acct.open_orders.values()):
            o.status = "CANCELED"
            o.update_time_ms = ts
            self._close(acct, o)
            self.events.append(OrderUpdate(acct.api_key, "CANCELED", replace(o), None, ts))
        before = acct.balance
        rows = np.zeros((2 * len(self.symbols), N_R))
        balance, deficit, n = book_liquidation(acct.balance, size, pprice, prices, self.tiers, rows)
        keys = []
        for r in rows[:n]:
            s = self.symbols[int(r[R_SYMBOL])]
            key = self._position_key(acct, s, int(r[R_SIDE]))
            pos = acct.position(*key)
            qty, p = abs(float(r[R_QTY])), float(r[R_PRICE])
            fee, pnl = float(r[R_FEE]), float(r[R_PNL])
            order = Order(
                order_id=next(self._order_ids),
                client_order_id=f"autoclose-{ts}",
                symbol=s,
                side="SELL" if r[R_QTY] < 0 else "BUY",
                position_side=key[1],
                type="LIQUIDATION",
                time_in_force="IOC",
                price=p,
                orig_qty=qty,
                reduce_only=key[1] == "BOTH",
                time_ms=ts,
                update_time_ms=ts,
                executed_qty=qty,
                cum_quote=qty * p,
                status="FILLED",
            )
            pos.amount, pos.entry_price, pos.update_time_ms = 0.0, 0.0, ts
            self._close(acct, order)
            fill = Fill(
                next(self._trade_ids), order.order_id, order.client_order_id, s, order.side,
                key[1], p, qty, fee, pnl, False, ts,
            )  # fmt: skip
            acct.trades.append(fill)
            self.events.append(OrderUpdate(acct.api_key, "CALCULATED", replace(order), fill, ts))
            keys.append(key)
        acct.balance = float(balance)
        acct.insurance_deficit += float(deficit)
        acct.liquidated = True
        self._account_update(acct, "INSURANCE_CLEAR", acct.balance - before, keys, ts)

    # ------------------------------------------------------------------ outside events

    def schedule_events(self, api_key: str, events: np.ndarray) -> None:
        """Outside events for an account (``bot.core.book`` ``E_*`` rows, coin indices into
        ``self.symbols``; ``backtest.events.events_array`` builds them): each applies at the top
        of the first candle opening at or after its time, before funding and fills."""
        acct = self.account(api_key)
        rows = [np.asarray(r, dtype=np.float64) for r in np.asarray(events).reshape(-1, N_E)]
        acct.events = sorted([*acct.events, *rows], key=lambda r: r[E_TIME])

    def _apply_due_events(self, ts_ms: int, ref: np.ndarray) -> None:
        for acct in self.accounts.values():
            while acct.events and acct.events[0][E_TIME] <= ts_ms:
                ev = acct.events.pop(0)
                if not acct.liquidated:
                    self.apply_event(acct.api_key, ev, ref, ts_ms)

    def apply_event(
        self, api_key: str, event: np.ndarray, ref: np.ndarray | None = None, ts: int | None = None
    ) -> None:
        """Apply one outside event to an account now (``bot.core.book.apply_event``) and report
        it as an exchange does: ACCOUNT_UPDATE with reason DEPOSIT or WITHDRAW for a transfer,
        ADJUSTMENT (a deleverage; no order, no fee) for a reduced position."""
        acct = self.account(api_key)
        ts = self.now_ms if ts is None else ts
        if ref is None:
            ref = np.array([self.prices[s] for s in self.symbols], dtype=np.float64)
        size, pprice = self._book_arrays(acct)
        rows = np.zeros((2 * len(self.symbols), N_R))
        before = acct.balance
        balance, _, n = apply_event(
            np.asarray(event, dtype=np.float64), acct.balance, 0.0, size, pprice, ref,
            self.qty_steps, rows,
        )  # fmt: skip
        acct.balance = float(balance)
        kind = int(event[E_KIND])
        keys = []
        for r in rows[:n]:
            i, side = int(r[R_SYMBOL]), int(r[R_SIDE])
            key = self._position_key(acct, self.symbols[i], side)
            pos = acct.position(*key)
            j = 0 if side > 0 else 1
            pos.amount = side * float(size[j, i])
            pos.entry_price = float(pprice[j, i])
            pos.update_time_ms = ts
            keys.append(key)
        if kind in (EV_DEPOSIT, EV_WITHDRAW):
            reason = "DEPOSIT" if kind == EV_DEPOSIT else "WITHDRAW"
            log_kind = "TRANSFER_IN" if kind == EV_DEPOSIT else "TRANSFER_OUT"
            acct.log_cash(ts, log_kind, "", acct.balance - before)
        elif n == 0:
            return  # no position to reduce: nothing changed, nothing to report
        else:
            reason = "ADJUSTMENT"
        self._account_update(acct, reason, acct.balance - before, keys, ts)

    def deleverage(
        self,
        api_key: str,
        symbol: str,
        position_side: str,
        qty: float,
        price: float,
        ts: int | None = None,
    ) -> Fill | None:
        """An exchange deleverage (ADL) of this account's position: ``qty`` closes at ``price``
        (the bankrupt account's price, from ``backtest.venue.risk``) with no fee, booked by
        ``bot.core.book.apply_event`` (a reduce). Reported as an exchange does, as a filled
        order that is not the account's: in the trade history, on Binance's stream an
        ORDER_TRADE_UPDATE of execution type CALCULATED with client order id
        ``adl_autoclose``, on Bybit's an execution of type ``AdlTrade``; then ACCOUNT_UPDATE
        (reason ORDER) with the balance and the smaller position."""
        acct = self.account(api_key)
        ts = self.now_ms if ts is None else ts
        side = _PSIDE.get(position_side.upper(), 0)
        key = self._position_key(acct, symbol, side)
        pos = acct.position(*key)
        side = side or (1 if pos.amount > 0 else -1)
        event = np.zeros(N_E)
        event[E_KIND], event[E_SYMBOL], event[E_SIDE] = EV_REDUCE, self.symbols.index(symbol), side
        event[E_VALUE], event[E_PRICE] = qty, price
        size, pprice = self._book_arrays(acct)
        rows = np.zeros((2, N_R))
        ref = np.array([self.prices[s] for s in self.symbols], dtype=np.float64)
        before = acct.balance
        balance, _, n = apply_event(
            event, acct.balance, 0.0, size, pprice, ref, self.qty_steps, rows
        )
        if n == 0:
            return None
        r = rows[0]
        q, pnl = abs(float(r[R_QTY])), float(r[R_PNL])
        j = 0 if side > 0 else 1
        pos.amount = side * float(size[j, self.symbols.index(symbol)])
        pos.entry_price = float(pprice[j, self.symbols.index(symbol)])
        pos.update_time_ms = ts
        acct.balance = float(balance)
        order = Order(
            order_id=next(self._order_ids),
            client_order_id=ADL_CLIENT_ID,
            symbol=symbol,
            side="SELL" if r[R_QTY] < 0 else "BUY",
            position_side=key[1],
            type="MARKET",
            time_in_force="IOC",
            price=price,
            orig_qty=q,
            reduce_only=True,
            time_ms=ts,
            update_time_ms=ts,
            executed_qty=q,
            cum_quote=q * price,
            status="FILLED",
        )
        self._close(acct, order)
        fill = Fill(
            next(self._trade_ids), order.order_id, ADL_CLIENT_ID, symbol, order.side, key[1],
            price, q, 0.0, pnl, False, ts,
        )  # fmt: skip
        acct.trades.append(fill)
        self.events.append(OrderUpdate(acct.api_key, "CALCULATED", replace(order), fill, ts))
        self._account_update(acct, "ORDER", acct.balance - before, [key], ts)
        return fill

    # ------------------------------------------------------------------ fault-injection hooks

    def change_position(
        self, api_key: str, symbol: str, side: str, size: float, price: float
    ) -> None:
        """Set a position behind the bot's back (e.g. an exchange deleverage), at ``price``.

        ``size`` is the new magnitude; the reduced part realizes pnl at ``price``, an increase
        averages in at ``price``. Emits ACCOUNT_UPDATE with reason ADJUSTMENT.
        """
        acct = self.account(api_key)
        self.spec(symbol)
        ps = side.upper()
        pos = acct.position(symbol, ps)
        sign = {"LONG": 1, "SHORT": -1}.get(ps, 1 if pos.amount >= 0 else -1)
        before = acct.balance
        delta = size - abs(pos.amount)
        if delta != 0:
            _, pnl, _ = self._book(acct, symbol, ps, delta * sign, price, self.now_ms)
            acct.balance += pnl
        self._account_update(acct, "ADJUSTMENT", acct.balance - before, [(symbol, ps)], self.now_ms)

    def partial_fill(
        self, api_key: str, order_id: int, qty: float, price: float | None = None
    ) -> Fill | None:
        """Fill only ``qty`` of a resting order, as maker at its price (or ``price``)."""
        acct = self.account(api_key)
        order = acct.open_orders.get(order_id)
        if order is None:
            raise Refused(Refusal.UNKNOWN_ORDER, "Order does not exist.")
        qty = min(qty, order.remaining)
        return self._fill(
            acct, order, qty, order.price if price is None else price, maker=True, ts=self.now_ms
        )

    def reject_next_order_margin(self, api_key: str, n: int = 1) -> None:
        """Refuse the next ``n`` orders of this account with -2019 Margin is insufficient."""
        self.account(api_key).reject_next_margin += n

    def restart_trade_ids(self) -> None:
        """Trade ids start again at 1 (an exchange that lost its history: fault injection)."""
        self._trade_ids = itertools.count(1)

"""The simulated exchange's accounts and matching engine: pure Python, no I/O, no clock.

Fills use the backtester's rule from :mod:`bot.core.account` (one fill model, DESIGN.md):
an order resting before candle k fills in candle k when ``low < price`` (buy) or
``high > price`` (sell), strictly, at the order's price, paying the maker fee. Within a candle
the path is open -> nearer extreme -> farther extreme -> close (``candle_low_first``), so the
orders on the nearer extreme's side fill first, nearest to the open first. Funding is charged
at candles whose open time is a multiple of 8 h, at the open price, before that candle's fills.
After a candle's fills every account is checked with ``bot.core.margin.account_liquidation``;
a liquidated account has every position closed at the returned prices with a fee equal to
that position's maintenance margin (so its balance ends near zero).

Trade-by-trade mode (:meth:`MatchingEngine.apply_trade`) fills resting orders a trade price
crosses strictly; fed the four trades of a candle it fills the same orders at the same prices
as :meth:`MatchingEngine.apply_candle` (only the liquidation check differs: it runs at each
trade's price instead of along the candle's path).

Every timestamp here is replay time (candle times), never the wall clock.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bot.core.account import apply_fill, candle_low_first, funding_payment, order_fills
from bot.core.margin import account_liquidation, maintenance_margin, stack_tiers
from bot.core.rounding import is_on_step
from bot.markets import MarketSpec, market_spec

__all__ = [
    "FUNDING_INTERVAL_MS",
    "Account",
    "AccountUpdate",
    "ApiError",
    "Fill",
    "MatchingEngine",
    "Order",
    "OrderUpdate",
    "Position",
    "candle_trades",
]

FUNDING_INTERVAL_MS = 8 * 3600 * 1000
_EPS = 1e-12
_MAX_CLOSED_ORDERS = 10_000  # per account: enough for queries, bounded for long replays


class ApiError(Exception):
    """A refusal in Binance's terms: ``{"code": code, "msg": msg}`` with an HTTP status."""

    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


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
    reason: str  # ORDER / FUNDING / ADJUSTMENT / INSURANCE_CLEAR
    balance: float
    balance_change: float
    positions: tuple[Position, ...]  # snapshots of the positions that changed
    time_ms: int


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
    trades: list[Fill] = field(default_factory=list)
    reject_next_margin: int = 0  # fault injection: refuse the next N orders with -2019
    liquidated: bool = False

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
        self.tiers = stack_tiers([self.specs[s].tiers for s in self.symbols])
        self.prices: dict[str, float] = {s: math.nan for s in self.symbols}
        self.now_ms = 0
        self.accounts: dict[str, Account] = {}
        self.events: list[OrderUpdate | AccountUpdate] = []
        self._order_ids = itertools.count(1_000_001)
        self._trade_ids = itertools.count(1)

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
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401) from None

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
            raise ApiError(-1121, "Invalid symbol.")
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
            raise ApiError(-4028, f"Leverage {leverage} is not valid")
        acct.leverage[symbol] = int(leverage)
        return int(leverage)

    def set_margin_type(self, api_key: str, symbol: str, margin_type: str) -> None:
        acct = self.account(api_key)
        self.spec(symbol)
        mt = margin_type.upper()
        if mt not in ("CROSSED", "ISOLATED"):
            raise ApiError(
                -1102,
                "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed.",
            )
        if acct.margin_type.get(symbol, "CROSSED") == mt:
            raise ApiError(-4046, "No need to change margin type.")
        if any(o.symbol == symbol for o in acct.open_orders.values()):
            raise ApiError(-4047, "Margin type cannot be changed if there exists open orders.")
        if any(p.symbol == symbol and p.amount != 0 for p in acct.positions.values()):
            raise ApiError(-4048, "Margin type cannot be changed if there exists position.")
        acct.margin_type[symbol] = mt  # the engine books everything as cross margin

    def set_position_mode(self, api_key: str, hedge_mode: bool) -> None:
        acct = self.account(api_key)
        if acct.hedge_mode == hedge_mode:
            raise ApiError(-4059, "No need to change position side.")
        if acct.open_orders:
            raise ApiError(-4067, "Position side cannot be changed if there exists open orders.")
        if any(p.amount != 0 for p in acct.positions.values()):
            raise ApiError(-4068, "Position side cannot be changed if there exists position.")
        acct.hedge_mode = hedge_mode
        acct.positions.clear()

    # ------------------------------------------------------------------ orders

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
        side = side.upper()
        type_ = type_.upper()
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        if type_ not in ("LIMIT", "MARKET"):
            raise ApiError(-1116, "Invalid orderType.")
        ps = (position_side or "BOTH").upper()
        if acct.hedge_mode and ps not in ("LONG", "SHORT"):
            raise ApiError(-4061, "Order's position side does not match user's setting.")
        if not acct.hedge_mode and ps != "BOTH":
            raise ApiError(-4061, "Order's position side does not match user's setting.")
        if acct.hedge_mode and reduce_only:
            raise ApiError(-1106, "Parameter 'reduceonly' sent when not required.")
        if not quantity or quantity <= 0:
            raise ApiError(-4003, "Quantity less than or equal to zero.")
        if not is_on_step(quantity, spec.qty_step):
            raise ApiError(-1111, "Precision is over the maximum defined for this asset.")
        if quantity < spec.min_qty - _EPS:
            raise ApiError(-4003, f"Quantity less than minimum quantity {spec.min_qty:g}.")
        last = self.prices[symbol]
        if type_ == "LIMIT":
            if price is None or price <= 0:
                raise ApiError(-4001, "Price less than 0.")
            if not is_on_step(price, spec.price_step):
                raise ApiError(-1111, "Precision is over the maximum defined for this asset.")
            tif = (time_in_force or "").upper()
            if tif not in ("GTC", "GTX", "IOC", "FOK"):
                raise ApiError(
                    -1102,
                    "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.",
                )
        else:
            price, tif = last, "GTC"
        if math.isnan(last):
            raise ApiError(
                -1001, "Internal error; unable to process your request. Please try again.", 503
            )
        closing = (
            reduce_only or (ps == "LONG" and side == "SELL") or (ps == "SHORT" and side == "BUY")
        )
        if not closing and quantity * price < spec.min_cost - 1e-9:
            raise ApiError(
                -4164,
                f"Order's notional must be no smaller than {spec.min_cost:g} (unless you choose reduce only).",
            )
        if reduce_only:
            pos = acct.positions.get((symbol, "BOTH"))
            if pos is None or pos.amount * (1 if side == "BUY" else -1) >= 0:
                raise ApiError(-2022, "ReduceOnly Order is rejected.")
        if client_order_id is None:
            client_order_id = f"venue-{next(self._order_ids)}"
        if any(o.client_order_id == client_order_id for o in acct.open_orders.values()):
            raise ApiError(-4116, "ClientOrderId is duplicated.")
        crosses = type_ == "MARKET" or (price > last if side == "BUY" else price < last)
        if crosses and tif == "GTX":
            raise ApiError(
                -5022,
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
            raise ApiError(-2019, "Margin is insufficient.")
        if need > 0 and need > self.available_balance(acct) + 1e-9:
            raise ApiError(-2019, "Margin is insufficient.")
        if not crosses and tif in ("IOC", "FOK"):
            order.status = "EXPIRED"  # nothing to take at once: an IOC/FOK limit just expires
            self._close(acct, order)
            self.events.append(OrderUpdate(api_key, "EXPIRED", replace(order), None, self.now_ms))
            return order
        acct.open_orders[order.order_id] = order
        self.events.append(OrderUpdate(api_key, "NEW", replace(order), None, self.now_ms))
        if crosses:
            self._fill(acct, order, order.orig_qty, last, maker=False, ts=self.now_ms)
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
            raise ApiError(
                -1102,
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
            raise ApiError(-2011, "Unknown order sent.")
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
            raise ApiError(-2013, "Order does not exist.")
        return o

    def _close(self, acct: Account, order: Order) -> None:
        acct.open_orders.pop(order.order_id, None)
        acct.closed_orders[order.order_id] = order
        if len(acct.closed_orders) > _MAX_CLOSED_ORDERS:
            acct.closed_orders.pop(next(iter(acct.closed_orders)))

    # ------------------------------------------------------------------ booking fills

    def _book(
        self, acct: Account, symbol: str, ps: str, signed_qty: float, price: float, ts: int
    ) -> tuple[float, float]:
        """Apply a signed fill to the position; return (qty actually booked, realized pnl).

        Hedge sides and reduce-only never reduce past zero (the core's apply_fill caps); a
        one-way (BOTH) position flips: the part beyond the position opens the other side.
        """
        pos = acct.position(symbol, ps)
        if ps in ("LONG", "SHORT"):
            side = 1 if ps == "LONG" else -1
            size, avg, pnl = apply_fill(side, abs(pos.amount), pos.entry_price, signed_qty, price)
            booked = (
                abs(signed_qty)
                if (signed_qty > 0) == (side > 0)
                else min(abs(signed_qty), abs(pos.amount))
            )
            pos.amount, pos.entry_price = size * side, avg
        else:
            booked = abs(signed_qty)
            pnl = 0.0
            if pos.amount == 0.0 or (pos.amount > 0) == (signed_qty > 0):
                side = 1 if signed_qty > 0 else -1
                size, avg, _ = apply_fill(side, abs(pos.amount), pos.entry_price, signed_qty, price)
                pos.amount, pos.entry_price = size * side, avg
            else:
                side = 1 if pos.amount > 0 else -1
                reduce = min(abs(signed_qty), abs(pos.amount))
                size, avg, pnl = apply_fill(
                    side, abs(pos.amount), pos.entry_price, -side * reduce, price
                )
                pos.amount, pos.entry_price = size * side, avg
                rest = abs(signed_qty) - reduce
                if rest > _EPS:
                    pos.amount, pos.entry_price = -side * rest, price
        pos.update_time_ms = ts
        return booked, pnl

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
        booked, pnl = self._book(acct, order.symbol, order.position_side, signed, price, ts)
        fee = booked * price * (self.maker_fee if maker else self.taker_fee)
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
        out = []
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
        ohlc = {
            s: tuple(float(x) for x in c.ohlcv[c.symbols.index(s), k, :4]) for s in self.symbols
        }
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
        if ts_ms % FUNDING_INTERVAL_MS == 0:
            self._funding({s: ohlc[s][0] for s in self.symbols}, ts_ms)
        lows = np.array([ohlc[s][2] for s in self.symbols], dtype=np.float64)
        highs = np.array([ohlc[s][1] for s in self.symbols], dtype=np.float64)
        # As the backtester: liquidation with the positions held coming into the candle (their
        # orders are cancelled, nothing fills), then again after the candle's fills.
        self._liquidations(ref, lows, highs, fill_ts)
        fills: list[Fill] = []
        for s in self.symbols:
            o, h, lo, _ = ohlc[s]
            resting = self._resting(s)
            buys = sorted((r for r in resting if r[1].side == "BUY"), key=lambda r: -r[1].price)
            sells = sorted((r for r in resting if r[1].side == "SELL"), key=lambda r: r[1].price)
            for group in (buys, sells) if candle_low_first(o, h, lo) else (sells, buys):
                for acct, order in group:
                    if order.order_id not in acct.open_orders:
                        continue  # expired by an earlier fill of this candle
                    if order_fills(order.remaining * order.sign, order.price, h, lo):
                        f = self._fill(
                            acct, order, order.remaining, order.price, maker=True, ts=fill_ts
                        )
                        if f is not None:
                            fills.append(f)
        self._liquidations(ref, lows, highs, fill_ts)
        for s in self.symbols:
            self.prices[s] = float(ohlc[s][3])
        self.now_ms = ts_ms + self.timeframe_ms
        return fills

    def begin_candle(self, ts_ms: int, open_prices: Mapping[str, float]) -> None:
        """Trade-by-trade mode: a candle opens (funding is charged at the open, before fills)."""
        if ts_ms % FUNDING_INTERVAL_MS == 0:
            self._funding(dict(open_prices), ts_ms)

    def apply_trade(self, symbol: str, price: float, ts_ms: int) -> list[Fill]:
        """Trade-by-trade mode: resting orders this trade crosses strictly fill at their price."""
        fills: list[Fill] = []
        resting = self._resting(symbol)
        buys = sorted(
            (r for r in resting if r[1].side == "BUY" and price < r[1].price),
            key=lambda r: -r[1].price,
        )
        sells = sorted(
            (r for r in resting if r[1].side == "SELL" and price > r[1].price),
            key=lambda r: r[1].price,
        )
        for acct, order in buys + sells:
            if order.order_id in acct.open_orders:
                f = self._fill(acct, order, order.remaining, order.price, maker=True, ts=ts_ms)
                if f is not None:
                    fills.append(f)
        self.prices[symbol] = float(price)
        now = np.array([self.prices[s] for s in self.symbols], dtype=np.float64)
        self._liquidations(now, now, now, ts_ms)
        self.now_ms = max(self.now_ms, ts_ms)
        return fills

    def _funding(self, marks: Mapping[str, float], ts: int) -> None:
        for acct in self.accounts.values():
            keys, total = [], 0.0
            for (s, ps), pos in acct.positions.items():
                if pos.amount == 0.0 or s not in marks:
                    continue
                side = 1 if pos.amount > 0 else -1
                total -= funding_payment(side, abs(pos.amount), marks[s], self.funding_rate)
                keys.append((s, ps))
            if keys:
                acct.balance += total
                self._account_update(acct, "FUNDING", total, keys, ts)

    def _liquidations(self, ref: np.ndarray, lows: np.ndarray, highs: np.ndarray, ts: int) -> None:
        n = len(self.symbols)
        for acct in self.accounts.values():
            if not any(p.amount != 0.0 for p in acct.positions.values()):
                continue
            ls, lp, ss, sp = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
            for i, s in enumerate(self.symbols):
                for ps in ("LONG", "SHORT", "BOTH"):
                    pos = acct.positions.get((s, ps))
                    if pos is None or pos.amount == 0.0:
                        continue
                    if pos.amount > 0:
                        ls[i], lp[i] = pos.amount, pos.entry_price
                    else:
                        ss[i], sp[i] = -pos.amount, pos.entry_price
            liq = account_liquidation(acct.balance, ls, lp, ss, sp, ref, lows, highs, self.tiers)
            if liq.shape[0]:
                self._liquidate(acct, {s: float(liq[i]) for i, s in enumerate(self.symbols)}, ts)

    def _liquidate(self, acct: Account, prices: Mapping[str, float], ts: int) -> None:
        """Close everything at the liquidation prices; each close pays its maintenance margin."""
        for o in list(acct.open_orders.values()):
            o.status = "CANCELED"
            o.update_time_ms = ts
            self._close(acct, o)
            self.events.append(OrderUpdate(acct.api_key, "CANCELED", replace(o), None, ts))
        before = acct.balance
        keys = []
        for (s, ps), pos in list(acct.positions.items()):
            if pos.amount == 0.0:
                continue
            p = prices[s]
            qty = abs(pos.amount)
            fee = maintenance_margin(qty * p, self.specs[s].tiers)
            order = Order(
                order_id=next(self._order_ids),
                client_order_id=f"autoclose-{ts}",
                symbol=s,
                side="SELL" if pos.amount > 0 else "BUY",
                position_side=ps,
                type="LIQUIDATION",
                time_in_force="IOC",
                price=p,
                orig_qty=qty,
                reduce_only=ps == "BOTH",
                time_ms=ts,
                update_time_ms=ts,
            )
            booked, pnl = self._book(acct, s, ps, -math.copysign(qty, pos.amount), p, ts)
            acct.balance += pnl - fee
            order.executed_qty, order.cum_quote, order.status = booked, booked * p, "FILLED"
            self._close(acct, order)
            fill = Fill(
                next(self._trade_ids),
                order.order_id,
                order.client_order_id,
                s,
                order.side,
                ps,
                p,
                booked,
                fee,
                pnl,
                False,
                ts,
            )
            acct.trades.append(fill)
            self.events.append(OrderUpdate(acct.api_key, "CALCULATED", replace(order), fill, ts))
            keys.append((s, ps))
        acct.balance = max(acct.balance, 0.0)  # the insurance fund takes any deficit
        acct.liquidated = True
        self._account_update(acct, "INSURANCE_CLEAR", acct.balance - before, keys, ts)

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
            _, pnl = self._book(acct, symbol, ps, delta * sign, price, self.now_ms)
            acct.balance += pnl
        self._account_update(acct, "ADJUSTMENT", acct.balance - before, [(symbol, ps)], self.now_ms)

    def partial_fill(
        self, api_key: str, order_id: int, qty: float, price: float | None = None
    ) -> Fill | None:
        """Fill only ``qty`` of a resting order, as maker at its price (or ``price``)."""
        acct = self.account(api_key)
        order = acct.open_orders.get(order_id)
        if order is None:
            raise ApiError(-2013, "Order does not exist.")
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

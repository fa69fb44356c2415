"""Binance USDT-M futures wire formats (REST bodies and websocket events), built from engine state.

Field names and string-encoded numbers follow Binance's documentation and what ccxt 4.5's
``binanceusdm`` parses. Pure functions: no I/O, no clock (callers pass times).
"""

from __future__ import annotations

import math

from bot.core.margin import maintenance_margin
from bot.markets import MarketSpec

from ..matching import Account, AccountUpdate, Fill, MatchingEngine, Order, OrderUpdate, Position
from ..wire import decimals, fmt, liquidation_price_of, num

__all__ = [
    "account_json",
    "account_update_event",
    "agg_trade_event",
    "book_ticker_event",
    "exchange_info_json",
    "kline_event",
    "kline_row",
    "leverage_bracket_json",
    "mark_price_event",
    "order_json",
    "order_trade_update_event",
    "position_risk_json",
    "trade_json",
]

_ORDER_TYPES = [
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
]


def _base(symbol: str) -> str:
    return symbol[:-4] if symbol.endswith("USDT") else symbol


def exchange_info_json(
    specs: dict[str, MarketSpec], server_time_ms: int, weight_limit: int
) -> dict:
    symbols = []
    for s, m in specs.items():
        pd, qd = decimals(m.price_step), decimals(m.qty_step)
        symbols.append(
            {
                "symbol": s,
                "pair": s,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": m.listed_ms or 1569398400000,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": _base(s),
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "pricePrecision": pd,
                "quantityPrecision": qd,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "settlePlan": 0,
                "triggerProtect": "0.0500",
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
                "maxMoveOrderLimit": 10000,
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": fmt(m.price_step, pd),
                        "maxPrice": fmt(1_000_000.0, pd),
                        "tickSize": fmt(m.price_step, pd),
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "stepSize": fmt(m.qty_step, qd),
                        "maxQty": fmt(1_000_000.0, qd),
                        "minQty": fmt(m.min_qty, qd),
                    },
                    {
                        "filterType": "MARKET_LOT_SIZE",
                        "stepSize": fmt(m.qty_step, qd),
                        "maxQty": fmt(1_000_000.0, qd),
                        "minQty": fmt(m.min_qty, qd),
                    },
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                    {"filterType": "MIN_NOTIONAL", "notional": f"{m.min_cost:g}"},
                ],
                "orderTypes": _ORDER_TYPES,
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            }
        )
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": symbols,
    }


def leverage_bracket_json(spec: MarketSpec) -> dict:
    brackets = []
    for i, row in enumerate(spec.tiers):
        floor, cap, mmr, lev, cum = (float(x) for x in row)
        brackets.append(
            {
                "bracket": i + 1,
                "initialLeverage": int(lev),
                "notionalCap": int(cap) if math.isfinite(cap) else 9_223_372_036_854_775_807,
                "notionalFloor": int(floor),
                "maintMarginRatio": mmr,
                "cum": cum,
            }
        )
    return {"symbol": spec.symbol, "notionalCoef": 1.0, "brackets": brackets}


def kline_row(
    ts: int, o: float, h: float, lo: float, c: float, v: float, tf_ms: int, pd: int
) -> list:
    """One Binance kline array: open time, o, h, l, c, volume, close time, quote volume, trades,
    taker buy base, taker buy quote, ignore."""
    del pd  # candle data keeps its own precision (spot samples have finer ticks)
    return [
        ts,
        num(o),
        num(h),
        num(lo),
        num(c),
        num(v),
        ts + tf_ms - 1,
        fmt(v * c, 8),
        4,
        "0",
        "0",
        "0",
    ]


def order_json(o: Order, spec: MarketSpec, *, with_time: bool = True) -> dict:
    pd, qd = decimals(spec.price_step), decimals(spec.qty_step)
    d = {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_order_id,
        "price": fmt(o.price, pd),
        "avgPrice": fmt(o.avg_price, pd + 2),
        "origQty": fmt(o.orig_qty, qd),
        "executedQty": fmt(o.executed_qty, qd),
        "cumQty": fmt(o.executed_qty, qd),
        "cumQuote": fmt(o.cum_quote, 8),
        "timeInForce": o.time_in_force,
        "type": o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": False,
        "side": o.side,
        "positionSide": o.position_side,
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": o.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
        "updateTime": o.update_time_ms,
    }
    if with_time:
        d["time"] = o.time_ms
    return d


def trade_json(f: Fill, spec: MarketSpec) -> dict:
    pd, qd = decimals(spec.price_step), decimals(spec.qty_step)
    return {
        "buyer": f.side == "BUY",
        "commission": fmt(f.commission, 8),
        "commissionAsset": "USDT",
        "id": f.trade_id,
        "maker": f.maker,
        "orderId": f.order_id,
        "price": fmt(f.price, pd),
        "qty": fmt(f.qty, qd),
        "quoteQty": fmt(f.qty * f.price, 8),
        "realizedPnl": fmt(f.realized_pnl, 8),
        "side": f.side,
        "positionSide": f.position_side,
        "symbol": f.symbol,
        "time": f.time_ms,
    }


def position_risk_json(eng: MatchingEngine, acct: Account, p: Position) -> dict:
    spec = eng.specs[p.symbol]
    pd, qd = decimals(spec.price_step), decimals(spec.qty_step)
    mark = eng.prices[p.symbol]
    lev = eng.leverage(acct, p.symbol)
    notional = p.amount * mark
    im = abs(notional) / lev
    return {
        "symbol": p.symbol,
        "positionSide": p.position_side,
        "positionAmt": fmt(p.amount, qd),
        "entryPrice": fmt(p.entry_price, pd + 2),
        "breakEvenPrice": fmt(p.entry_price, pd + 2),
        "markPrice": fmt(mark, pd + 2),
        "unRealizedProfit": fmt(p.amount * (mark - p.entry_price), 8),
        "liquidationPrice": fmt(liquidation_price_of(eng, acct, p.symbol), pd + 2),
        "isolatedMargin": "0",
        "notional": fmt(notional, 8),
        "marginAsset": "USDT",
        "isolatedWallet": "0",
        "initialMargin": fmt(im, 8),
        "maintMargin": fmt(maintenance_margin(abs(notional), spec.tiers), 8),
        "positionInitialMargin": fmt(im, 8),
        "openOrderInitialMargin": "0",
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
        "leverage": str(lev),
        "marginType": "cross",
        "isAutoAddMargin": "false",
        "maxNotionalValue": fmt(float(spec.tiers[0, 1]), 0),
        "updateTime": p.update_time_ms,
    }


def account_json(eng: MatchingEngine, acct: Account) -> dict:
    upnl = eng.unrealized_pnl(acct)
    pos_im = eng.position_initial_margin(acct)
    ord_im = eng.order_initial_margin(acct)
    mm = eng.maint_margin(acct)
    avail = eng.available_balance(acct)
    ts = max(eng.now_ms, 1)
    asset = {
        "asset": "USDT",
        "walletBalance": fmt(acct.balance),
        "unrealizedProfit": fmt(upnl),
        "marginBalance": fmt(acct.balance + upnl),
        "maintMargin": fmt(mm),
        "initialMargin": fmt(pos_im + ord_im),
        "positionInitialMargin": fmt(pos_im),
        "openOrderInitialMargin": fmt(ord_im),
        "crossWalletBalance": fmt(acct.balance),
        "crossUnPnl": fmt(upnl),
        "availableBalance": fmt(avail),
        "maxWithdrawAmount": fmt(max(avail, 0.0)),
        "marginAvailable": True,
        "updateTime": ts,
    }
    positions = []
    for p in acct.positions.values():
        spec = eng.specs[p.symbol]
        mark = eng.prices[p.symbol]
        lev = eng.leverage(acct, p.symbol)
        positions.append(
            {
                "symbol": p.symbol,
                "positionSide": p.position_side,
                "positionAmt": fmt(p.amount, decimals(spec.qty_step)),
                "unrealizedProfit": fmt(p.amount * (mark - p.entry_price)),
                "isolatedMargin": "0",
                "notional": fmt(p.amount * mark),
                "isolatedWallet": "0",
                "initialMargin": fmt(abs(p.amount) * mark / lev),
                "maintMargin": fmt(eng.maint_margin(acct, p.symbol)),
                "entryPrice": fmt(p.entry_price, decimals(spec.price_step) + 2),
                "leverage": str(lev),
                "isolated": False,
                "updateTime": p.update_time_ms,
            }
        )
    return {
        "feeTier": 0,
        "canTrade": True,
        "canDeposit": True,
        "canWithdraw": True,
        "updateTime": 0,
        "multiAssetsMargin": False,
        "totalInitialMargin": fmt(pos_im + ord_im),
        "totalMaintMargin": fmt(mm),
        "totalWalletBalance": fmt(acct.balance),
        "totalUnrealizedProfit": fmt(upnl),
        "totalMarginBalance": fmt(acct.balance + upnl),
        "totalPositionInitialMargin": fmt(pos_im),
        "totalOpenOrderInitialMargin": fmt(ord_im),
        "totalCrossWalletBalance": fmt(acct.balance),
        "totalCrossUnPnl": fmt(upnl),
        "availableBalance": fmt(avail),
        "maxWithdrawAmount": fmt(max(avail, 0.0)),
        "assets": [asset],
        "positions": positions,
    }


# ---------------------------------------------------------------------------- websocket events


def order_trade_update_event(ev: OrderUpdate, spec: MarketSpec) -> dict:
    o, f = ev.order, ev.fill
    pd, qd = decimals(spec.price_step), decimals(spec.qty_step)
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": ev.time_ms,
        "T": ev.time_ms,
        "o": {
            "s": o.symbol,
            "c": o.client_order_id,
            "S": o.side,
            "o": o.type,
            "f": o.time_in_force,
            "q": fmt(o.orig_qty, qd),
            "p": fmt(o.price, pd),
            "ap": fmt(o.avg_price, pd + 2),
            "sp": "0",
            "x": ev.execution_type,
            "X": o.status,
            "i": o.order_id,
            "l": fmt(f.qty if f else 0.0, qd),
            "z": fmt(o.executed_qty, qd),
            "L": fmt(f.price if f else 0.0, pd),
            "N": "USDT",
            "n": fmt(f.commission if f else 0.0, 8),
            "T": ev.time_ms,
            "t": f.trade_id if f else 0,
            "b": "0",
            "a": "0",
            "m": bool(f.maker) if f else False,
            "R": o.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": o.type,
            "ps": o.position_side,
            "cp": False,
            "rp": fmt(f.realized_pnl if f else 0.0, 8),
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_MAKER",
            "pm": "NONE",
            "gtd": 0,
        },
    }


def account_update_event(ev: AccountUpdate, eng: MatchingEngine) -> dict:
    positions = []
    for p in ev.positions:
        spec = eng.specs[p.symbol]
        mark = eng.prices[p.symbol]
        positions.append(
            {
                "s": p.symbol,
                "pa": fmt(p.amount, decimals(spec.qty_step)),
                "ep": fmt(p.entry_price, decimals(spec.price_step) + 2),
                "bep": fmt(p.entry_price, decimals(spec.price_step) + 2),
                "cr": "0",
                "up": fmt(p.amount * (mark - p.entry_price)),
                "mt": "cross",
                "iw": "0",
                "ps": p.position_side,
            }
        )
    return {
        "e": "ACCOUNT_UPDATE",
        "E": ev.time_ms,
        "T": ev.time_ms,
        "a": {
            "m": ev.reason,
            "B": [
                {
                    "a": "USDT",
                    "wb": fmt(ev.balance),
                    "cw": fmt(ev.balance),
                    "bc": fmt(ev.balance_change),
                }
            ],
            "P": positions,
        },
    }


def agg_trade_event(
    symbol: str, agg_id: int, price: float, qty: float, ts: int, buyer_maker: bool, spec: MarketSpec
) -> dict:
    return {
        "e": "aggTrade",
        "E": ts,
        "s": symbol,
        "a": agg_id,
        "p": num(price),
        "q": fmt(qty, decimals(spec.qty_step)),
        "f": agg_id,
        "l": agg_id,
        "T": ts,
        "m": buyer_maker,
    }


def kline_event(
    symbol: str,
    ts: int,
    ohlcv: tuple[float, ...],
    tf_ms: int,
    closed: bool,
    event_ms: int,
    spec: MarketSpec,
    first_id: int,
    last_id: int,
) -> dict:
    o, h, lo, c, v = ohlcv
    return {
        "e": "kline",
        "E": event_ms,
        "s": symbol,
        "k": {
            "t": ts,
            "T": ts + tf_ms - 1,
            "s": symbol,
            "i": "1m" if tf_ms == 60_000 else f"{tf_ms // 60_000}m",
            "f": first_id,
            "L": last_id,
            "o": num(o),
            "c": num(c),
            "h": num(h),
            "l": num(lo),
            "v": num(v),
            "n": last_id - first_id + 1,
            "x": closed,
            "q": fmt(v * c, 8),
            "V": "0",
            "Q": "0",
            "B": "0",
        },
    }


def book_ticker_event(
    symbol: str, update_id: int, bid: float, ask: float, ts: int, spec: MarketSpec
) -> dict:
    return {
        "e": "bookTicker",
        "u": update_id,
        "s": symbol,
        "b": num(bid),
        "B": "1000",
        "a": num(ask),
        "A": "1000",
        "T": ts,
        "E": ts,
    }


def mark_price_event(
    symbol: str, price: float, funding_rate: float, next_funding_ms: int, ts: int, spec: MarketSpec
) -> dict:
    pd = decimals(spec.price_step) + 2
    return {
        "e": "markPriceUpdate",
        "E": ts,
        "s": symbol,
        "p": fmt(price, pd),
        "i": fmt(price, pd),
        "P": fmt(price, pd),
        "r": fmt(funding_rate, 8),
        "T": next_funding_ms,
    }

"""Bybit v5 (linear USDT perpetuals) wire formats, built from the shared engine's state.

Field names follow Bybit's v5 documentation and what ccxt 4.5's ``bybit`` parses. Numbers are
strings, times are millisecond strings in REST bodies. Order and execution ids are UUID strings
as on Bybit (``uuid.UUID(int=engine_id)``, see :func:`order_id` / :func:`parse_order_id`).
Pure functions: no I/O, no clock (callers pass times).
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np

from bot.core.margin import maintenance_margin
from bot.markets import MarketSpec

from ..matching import Account, Fill, MatchingEngine, Order, Position
from ..wire import decimals, fmt, num

__all__ = [
    "POSITION_IDX",
    "instrument_json",
    "interval_of",
    "kline_rows",
    "order_id",
    "order_json",
    "order_status",
    "parse_order_id",
    "position_json",
    "risk_limit_json",
    "ticker_json",
    "wallet_json",
    "exec_type",
    "execution_json",
    "funding_execution_json",
]

POSITION_IDX = {"BOTH": 0, "LONG": 1, "SHORT": 2}
_STATUS = {
    "NEW": "New",
    "PARTIALLY_FILLED": "PartiallyFilled",
    "FILLED": "Filled",
    "CANCELED": "Cancelled",
    "EXPIRED": "Cancelled",  # Bybit: an IOC/FOK remainder or a capped reduce is Cancelled
    "REJECTED": "Rejected",
}
_TIF = {"GTC": "GTC", "GTX": "PostOnly", "IOC": "IOC", "FOK": "FOK"}
_BIG = 1_000_000_000.0  # stands for an unbounded tier cap
_AUTO_LINK_PREFIX = "venue-"  # the engine's generated client ids: Bybit shows "" instead


def order_id(engine_id: int) -> str:
    return str(uuid.UUID(int=engine_id))


def parse_order_id(value: Any) -> int | None:
    """Engine id of a Bybit order id (UUID string; a plain integer is accepted too)."""
    if value is None or value == "":
        return None
    s = str(value)
    try:
        return uuid.UUID(s).int
    except ValueError:
        try:
            return int(s)
        except ValueError:
            return -1  # matches no order


def exec_id(trade_id: int) -> str:
    return str(uuid.UUID(int=(1 << 64) | trade_id))  # distinct from order ids


def link_id(o: Order) -> str:
    cid = o.client_order_id
    auto = cid.startswith((_AUTO_LINK_PREFIX, "autoclose-")) or cid == "adl_autoclose"
    return "" if auto else cid


def interval_of(tf_ms: int) -> str:
    minutes = tf_ms // 60_000
    return {1440: "D", 10080: "W"}.get(minutes, str(minutes))


def order_status(o: Order) -> str:
    if o.status == "CANCELED" and o.executed_qty > 0:
        return "PartiallyFilledCanceled"
    return _STATUS.get(o.status, o.status)


def _base(symbol: str) -> str:
    return symbol[:-4] if symbol.endswith("USDT") else symbol


# ---------------------------------------------------------------------------- market data


def instrument_json(spec: MarketSpec) -> dict:
    pd, qd = decimals(spec.price_step), decimals(spec.qty_step)
    return {
        "symbol": spec.symbol,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": _base(spec.symbol),
        "quoteCoin": "USDT",
        "launchTime": str(spec.listed_ms or 1585526400000),
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(pd),
        "leverageFilter": {
            "minLeverage": "1",
            "maxLeverage": fmt(spec.max_leverage, 2),
            "leverageStep": "0.01",
        },
        "priceFilter": {
            "minPrice": fmt(spec.price_step, pd),
            "maxPrice": fmt(1_000_000.0, pd),
            "tickSize": fmt(spec.price_step, pd),
        },
        "lotSizeFilter": {
            "maxOrderQty": fmt(1_000_000.0, qd),
            "minOrderQty": fmt(spec.min_qty, qd),
            "qtyStep": fmt(spec.qty_step, qd),
            "postOnlyMaxOrderQty": fmt(1_000_000.0, qd),
            "maxMktOrderQty": fmt(1_000_000.0, qd),
            "minNotionalValue": f"{spec.min_cost:g}",
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": "USDT",
        "copyTrading": "both",
        "upperFundingRate": "0.00375",
        "lowerFundingRate": "-0.00375",
        "isPreListing": False,
        "preListingInfo": None,
        "displayName": "",
    }


def risk_limit_json(spec: MarketSpec) -> list[dict]:
    """Bybit risk-limit rows from the tiers (cap, maintenance rate, 1/leverage, deduction)."""
    out = []
    for i, row in enumerate(spec.tiers):
        _, cap, mmr, lev, cum = (float(x) for x in row)
        out.append(
            {
                "id": i + 1,
                "symbol": spec.symbol,
                "riskLimitValue": fmt(cap if math.isfinite(cap) else _BIG, 0),
                "maintenanceMargin": num(mmr),
                "initialMargin": num(round(1.0 / lev, 8)),
                "isLowestRisk": 1 if i == 0 else 0,
                "maxLeverage": fmt(lev, 2),
                "mmDeduction": num(cum) if i else "",
            }
        )
    return out


def kline_rows(ts: np.ndarray, ohlcv: np.ndarray, i0: int, i1: int) -> list[list[str]]:
    """Bybit kline rows [start, o, h, l, c, volume, turnover], newest first."""
    rows = []
    for i in range(i1 - 1, i0 - 1, -1):
        o, h, lo, c, v = (float(x) for x in ohlcv[i])
        rows.append([str(int(ts[i])), num(o), num(h), num(lo), num(c), num(v), fmt(v * c, 4)])
    return rows


def ticker_json(
    spec: MarketSpec,
    last: float,
    day: tuple[float, float, float, float, float, float],
    funding_rate: float,
    next_funding_ms: int,
    tick_direction: str,
) -> dict:
    """A linear ticker; ``day`` = (prev price 24h, high, low, volume, turnover, prev price 1h).

    The venue has no book: bid1 = ask1 = mark = index = last trade price (as the Binance side).
    """
    prev24, high, low, vol, turnover, prev1h = day
    p = num(last)  # candle data keeps its own precision (spot samples have finer ticks)
    pcnt = (last / prev24 - 1.0) if prev24 > 0 else 0.0
    return {
        "symbol": spec.symbol,
        "tickDirection": tick_direction,
        "price24hPcnt": fmt(pcnt, 6),
        "lastPrice": p,
        "prevPrice24h": num(prev24),
        "highPrice24h": num(high),
        "lowPrice24h": num(low),
        "prevPrice1h": num(prev1h),
        "markPrice": p,
        "indexPrice": p,
        "openInterest": "0",
        "openInterestValue": "0.00",
        "turnover24h": fmt(turnover, 4),
        "volume24h": fmt(vol, decimals(spec.qty_step)),
        "nextFundingTime": str(next_funding_ms),
        "fundingRate": fmt(funding_rate, 6),
        "bid1Price": p,
        "bid1Size": "1000",
        "ask1Price": p,
        "ask1Size": "1000",
        "predictedDeliveryPrice": "",
        "basisRate": "",
        "deliveryFeeRate": "",
        "deliveryTime": "0",
        "basis": "",
        "preOpenPrice": "",
        "preQty": "",
        "curPreListingPhase": "",
    }


# ---------------------------------------------------------------------------- account data


def order_fee(acct: Account, o: Order, upto_trade_id: int | None = None) -> float:
    """Fees paid by ``o`` (up to a trade id), scanning the trades back to the order's creation
    (trades are appended in time order)."""
    total = 0.0
    for f in reversed(acct.trades):
        if f.time_ms < o.time_ms:
            break
        if f.order_id == o.order_id and (upto_trade_id is None or f.trade_id <= upto_trade_id):
            total += f.commission
    return total


def order_json(
    o: Order,
    spec: MarketSpec,
    *,
    fee: float,
    reduce_only: bool | None = None,
    reject_reason: str | None = None,
    last_price: float | None = None,
) -> dict:
    pd, qd = decimals(spec.price_step), decimals(spec.qty_step)
    liq = o.type == "LIQUIDATION"
    status = order_status(o)
    leaves = 0.0 if status not in ("New", "PartiallyFilled") else o.remaining
    d: dict[str, Any] = {
        "orderId": order_id(o.order_id),
        "orderLinkId": link_id(o),
        "blockTradeId": "",
        "symbol": o.symbol,
        "price": fmt(o.price, pd) if o.type != "MARKET" else "0",
        "qty": fmt(o.orig_qty, qd),
        "side": "Buy" if o.side == "BUY" else "Sell",
        "isLeverage": "",
        "positionIdx": POSITION_IDX.get(o.position_side, 0),
        "orderStatus": status,
        "createType": "CreateByLiq" if liq else "CreateByUser",
        "cancelType": "CancelByUser" if o.status == "CANCELED" and not reject_reason else "UNKNOWN",
        "rejectReason": reject_reason or "EC_NoError",
        "avgPrice": fmt(o.avg_price, pd + 2) if o.executed_qty > 0 else "",
        "leavesQty": fmt(leaves, qd),
        "leavesValue": fmt(leaves * o.price, 8),
        "cumExecQty": fmt(o.executed_qty, qd),
        "cumExecValue": fmt(o.cum_quote, 8),
        "cumExecFee": fmt(fee, 8),
        "timeInForce": "IOC" if o.type in ("MARKET", "LIQUIDATION") else _TIF.get(o.time_in_force),
        "orderType": "Limit" if o.type == "LIMIT" else "Market",
        "stopOrderType": "",
        "orderIv": "",
        "marketUnit": "",
        "triggerPrice": "",
        "takeProfit": "",
        "stopLoss": "",
        "tpslMode": "",
        "ocoTriggerBy": "",
        "tpLimitPrice": "",
        "slLimitPrice": "",
        "tpTriggerBy": "",
        "slTriggerBy": "",
        "triggerDirection": 0,
        "triggerBy": "",
        "lastPriceOnCreated": num(last_price) if last_price else "",
        "basePrice": "",
        "reduceOnly": o.reduce_only if reduce_only is None else reduce_only,
        "closeOnTrigger": False,
        "placeType": "",
        "smpType": "None",
        "smpGroup": 0,
        "smpOrderId": "",
        "createdTime": str(o.time_ms),
        "updatedTime": str(o.update_time_ms or o.time_ms),
        "category": "linear",
    }
    if fee:
        d["cumFeeDetail"] = {"USDT": fmt(fee, 8)}
    return d


def _closed_size(f: Fill) -> float:
    if f.position_side == "LONG":
        return f.qty if f.side == "SELL" else 0.0
    if f.position_side == "SHORT":
        return f.qty if f.side == "BUY" else 0.0
    return f.qty if f.realized_pnl != 0.0 else 0.0  # one-way: approximated by realized pnl


_CREATE_TYPE = {
    "BustTrade": "CreateByLiq",
    "AdlTrade": "CreateByAdl_PassThrough",
    "Trade": "CreateByUser",
}


def exec_type(order: Order | None) -> str:
    """``execType`` of a fill: BustTrade (a liquidation), AdlTrade (an auto-deleverage: the
    venue's ADL order), Trade."""
    if order is not None and order.type == "LIQUIDATION":
        return "BustTrade"
    if order is not None and order.client_order_id == "adl_autoclose":
        return "AdlTrade"
    return "Trade"


def execution_json(
    f: Fill, spec: MarketSpec, order: Order | None, mark: float, fee_rate: float
) -> dict:
    pd, qd = decimals(spec.price_step), decimals(spec.qty_step)
    return {
        "category": "linear",
        "symbol": f.symbol,
        "execId": exec_id(f.trade_id),
        "execPrice": num(f.price),
        "execQty": fmt(f.qty, qd),
        "execValue": fmt(f.price * f.qty, 8),
        "execFee": fmt(f.commission, 8),
        "execPnl": fmt(f.realized_pnl, 8),
        "feeRate": fmt(fee_rate, 6),
        "feeCurrency": "",
        "execType": exec_type(order),
        "execTime": str(f.time_ms),
        "isMaker": bool(f.maker),
        "orderId": order_id(f.order_id),
        "orderLinkId": link_id(order) if order is not None else "",
        "side": "Buy" if f.side == "BUY" else "Sell",
        "orderType": ("Market" if order.type != "LIMIT" else "Limit") if order else "UNKNOWN",
        "orderPrice": fmt(order.price, pd) if order else "",
        "orderQty": fmt(order.orig_qty, qd) if order else "",
        "leavesQty": fmt(order.remaining if order else 0.0, qd),
        "closedSize": fmt(_closed_size(f), qd),
        "stopOrderType": "UNKNOWN",
        "markPrice": num(mark),
        "indexPrice": num(mark),
        "underlyingPrice": "",
        "tradeIv": "",
        "markIv": "",
        "blockTradeId": "",
        "createType": _CREATE_TYPE[exec_type(order)],
        "seq": f.trade_id,
    }


def funding_execution_json(
    p: Position, spec: MarketSpec, price: float, rate: float, fee: float, ts: int, seq: int
) -> dict:
    """A funding settlement as Bybit reports it: an execution of type Funding (fee > 0: paid)."""
    qd = decimals(spec.qty_step)
    size = abs(p.amount)
    return {
        "category": "linear",
        "symbol": p.symbol,
        "execId": str(uuid.UUID(int=(2 << 64) | seq)),
        "execPrice": num(price),
        "execQty": fmt(size, qd),
        "execValue": fmt(size * price, 8),
        "execFee": fmt(fee, 8),
        "execPnl": "0",
        "feeRate": fmt(rate, 6),
        "feeCurrency": "",
        "execType": "Funding",
        "execTime": str(ts),
        "isMaker": False,
        "orderId": "",
        "orderLinkId": "",
        "side": "Buy" if p.amount > 0 else "Sell",
        "orderType": "UNKNOWN",
        "orderPrice": "0",
        "orderQty": "0",
        "leavesQty": "0",
        "closedSize": "0",
        "stopOrderType": "UNKNOWN",
        "markPrice": num(price),
        "indexPrice": num(price),
        "underlyingPrice": "",
        "tradeIv": "",
        "markIv": "",
        "blockTradeId": "",
        "createType": "",
        "seq": seq,
    }


def position_json(
    eng: MatchingEngine,
    acct: Account,
    p: Position,
    *,
    liq_price: float,
    cum_realised: float,
) -> dict:
    spec = eng.specs[p.symbol]
    pd, qd = decimals(spec.price_step), decimals(spec.qty_step)
    mark = eng.prices[p.symbol]
    lev = eng.leverage(acct, p.symbol)
    size = abs(p.amount)
    side = "" if size == 0.0 else ("Buy" if p.amount > 0 else "Sell")
    value = size * p.entry_price
    return {
        "positionIdx": POSITION_IDX.get(p.position_side, 0),
        "riskId": 1,
        "riskLimitValue": fmt(float(spec.tiers[0, 1]), 0),
        "symbol": p.symbol,
        "side": side,
        "size": fmt(size, qd),
        "avgPrice": fmt(p.entry_price, pd + 2),
        "entryPrice": fmt(p.entry_price, pd + 2),
        "sessionAvgPrice": "",
        "positionValue": fmt(value, 8),
        "tradeMode": 0,
        "positionStatus": "Normal",
        "autoAddMargin": 0,
        "adlRankIndicator": 2 if size else 0,
        "leverage": str(lev),
        "positionBalance": fmt(value / lev, 8),
        "markPrice": num(mark),
        "liqPrice": fmt(liq_price, pd) if liq_price > 0 else "",
        "bustPrice": "",
        "positionIM": fmt(size * mark / lev, 8),
        "positionMM": fmt(maintenance_margin(size * mark, spec.tiers), 8),
        "positionIMByMp": fmt(size * mark / lev, 8),
        "positionMMByMp": fmt(maintenance_margin(size * mark, spec.tiers), 8),
        "takeProfit": "0",
        "stopLoss": "0",
        "trailingStop": "0",
        "tpslMode": "Full",
        "unrealisedPnl": fmt(p.amount * (mark - p.entry_price), 8),
        "curRealisedPnl": fmt(cum_realised, 8),
        "cumRealisedPnl": fmt(cum_realised, 8),
        "seq": p.update_time_ms,
        "isReduceOnly": False,
        "mmrSysUpdatedTime": "",
        "leverageSysUpdatedTime": "",
        "createdTime": str(p.update_time_ms),  # the engine keeps no open time
        "updatedTime": str(p.update_time_ms),
        "category": "linear",
    }


def wallet_json(
    eng: MatchingEngine, acct: Account, *, cum_realised: float, balance: float | None = None
) -> dict:
    """A UNIFIED account with one coin, USDT (cross margin; ``balance`` overrides the wallet)."""
    wallet = acct.balance if balance is None else balance
    upnl = eng.unrealized_pnl(acct)
    pos_im = eng.position_initial_margin(acct)
    ord_im = eng.order_initial_margin(acct)
    mm = eng.maint_margin(acct)
    equity = wallet + upnl
    avail = wallet + upnl - pos_im - ord_im
    return {
        "accountType": "UNIFIED",
        "accountIMRate": fmt((pos_im + ord_im) / equity if equity > 0 else 0.0, 4),
        "accountMMRate": fmt(mm / equity if equity > 0 else 0.0, 4),
        "accountLTV": "0",
        "totalEquity": fmt(equity),
        "totalWalletBalance": fmt(wallet),
        "totalMarginBalance": fmt(equity),
        "totalAvailableBalance": fmt(max(avail, 0.0)),
        "totalPerpUPL": fmt(upnl),
        "totalInitialMargin": fmt(pos_im + ord_im),
        "totalMaintenanceMargin": fmt(mm),
        "coin": [
            {
                "coin": "USDT",
                "equity": fmt(equity),
                "usdValue": fmt(equity),
                "walletBalance": fmt(wallet),
                "free": "",
                "locked": "0",
                "spotHedgingQty": "0",
                "borrowAmount": "0",
                "availableToBorrow": "",
                "availableToWithdraw": fmt(max(avail, 0.0)),
                "accruedInterest": "0",
                "totalOrderIM": fmt(ord_im),
                "totalPositionIM": fmt(pos_im),
                "totalPositionMM": fmt(mm),
                "unrealisedPnl": fmt(upnl),
                "cumRealisedPnl": fmt(cum_realised),
                "bonus": "0",
                "collateralSwitch": True,
                "marginCollateral": True,
            }
        ],
    }

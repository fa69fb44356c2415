"""Bybit v5 REST (category linear, USDT perpetuals, unified account, hedge mode) as a
:class:`bot.exchange.base.ExchangeAdapter`: the same methods, the same gridbot terms.

Spoken through ccxt ``bybit``'s implicit v5 methods (``privatePostV5OrderCreate`` ...): ccxt
signs (X-BAPI-* headers), throttles and maps ``retCode``s to its exceptions, which
:func:`bot.exchange.ccxt_base.translate` turns into :mod:`bot.errors`; no unified
``load_markets`` (it would pull spot, inverse and options markets and query the account type).

Bybit's quirks, kept here as data:
- post-only is ``timeInForce: PostOnly``; our client id goes in ``orderLinkId`` (<= 36 chars);
- hedge mode: ``positionIdx`` 1 long / 2 short; mode 3 = both sides (``switch-mode``);
- "already so" answers: 110025 (position mode not modified), 110043 (leverage not modified);
- lists are paged with ``nextPageCursor``; klines come newest first, at most 1000 a page;
- fills are ordered by ``execTime`` (execIds are UUIDs): the catch-up cursor is a time,
  inclusive, and duplicates are dropped by execId;
- deposits and withdrawals are read from the transaction log (the wallet topic gives no
  reason): :mod:`bot.exchange.bybit.ledger`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import ccxt.async_support as ccxt_async
import numpy as np

from bot.errors import ConfigError, ExchangeError, PositionModeError
from bot.exchange.base import AccountSnapshot
from bot.exchange.bybit import format as bybit_format
from bot.exchange.bybit.ledger import fetch_ledger
from bot.exchange.ccxt_base import CcxtBase
from bot.exchange.ccxt_base import num as _num
from bot.exchange.events import FillEvent, LedgerRow
from bot.exchange.order import LiveOrder
from bot.markets import MarketSpec

__all__ = ["BybitAdapter", "tiers_from_risk_limits"]

log = logging.getLogger("gridbot.live.exchange")

CATEGORY = "linear"
SETTLE = "USDT"
HEDGE_MODE = 3  # switch-mode: 0 merged single (one-way), 3 both sides (hedge)
POSITION_IDX = {1: 1, -1: 2}
NOT_MODIFIED = ("110025", "110043")
KLINE_PAGE = 1000  # Bybit's maximum per request
_MAX_PAGES = 200  # bounded paging everywhere


def tiers_from_risk_limits(rows: list[dict[str, Any]]) -> np.ndarray:
    """Bybit risk-limit rows -> tier rows [floor, cap, maint rate, max leverage, maint amount].

    ``mmDeduction`` is Bybit's maintenance amount; when absent it follows from continuity
    (the maintenance margin is the same on both sides of each tier boundary).
    """
    rows = sorted(rows, key=lambda r: float(r["riskLimitValue"]))
    out = []
    floor, prev_mmr, cum = 0.0, 0.0, 0.0
    for r in rows:
        cap = float(r["riskLimitValue"])
        mmr = float(r["maintenanceMargin"])
        cum = cum + floor * (mmr - prev_mmr)
        ded = r.get("mmDeduction")
        amount = float(ded) if ded not in (None, "") else cum
        out.append([floor, cap, mmr, float(r["maxLeverage"]), amount])
        floor, prev_mmr, cum = cap, mmr, amount
    return np.array(out, dtype=np.float64).reshape(-1, 5)


def _result(raw: dict[str, Any]) -> dict[str, Any]:
    return raw.get("result") or {}


class BybitAdapter(CcxtBase):
    """Bybit v5 linear (unified account, hedge mode) for one account."""

    kind = "bybit"
    fill_cursor = "time"  # execTime, inclusive: ids are deduplicated by the bot
    uses_listen_key = False
    client_ids_reusable = False  # orderLinkId: "always unique", history included
    transfers_from_log = True  # the wallet topic gives no reason: the transaction log does

    async def fetch_ledger(self, since_ms: int) -> list[LedgerRow]:
        """The transaction log from ``since_ms`` (:mod:`bot.exchange.bybit.ledger`)."""
        return await fetch_ledger(self, since_ms)

    def _new_exchange(self, opts: dict[str, Any]) -> Any:
        return ccxt_async.bybit({**opts, "options": {"defaultType": "swap"}})

    async def _pages(self, fn: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        """All rows of a cursor-paged list endpoint (bounded)."""
        rows: list[dict[str, Any]] = []
        cursor = ""
        for _ in range(_MAX_PAGES):
            p = {**params, "cursor": cursor} if cursor else params
            res = _result(await self._call(fn, p))
            rows += res.get("list") or []
            cursor = res.get("nextPageCursor") or ""
            if not cursor:
                break
        return rows

    # ------------------------------------------------------------------ markets

    async def list_markets(self) -> list[str]:
        """The USDT linear perpetuals trading now (instruments-info: LinearPerpetual, USDT)."""
        q = {"category": CATEGORY, "status": "Trading", "limit": 1000}
        rows = await self._pages(self.ex.publicGetV5MarketInstrumentsInfo, q)
        return sorted(
            str(m["symbol"])
            for m in rows
            if m.get("contractType") == "LinearPerpetual"
            and m.get("quoteCoin") == "USDT"
            and m.get("settleCoin", "USDT") == "USDT"
            and m.get("status", "Trading") == "Trading"
        )

    async def load_markets(self, symbols: Sequence[str]) -> dict[str, MarketSpec]:
        """Steps and minimums (instruments-info) and tiers (risk-limit) of ``symbols``."""
        out = {}
        for sym in symbols:
            sid = self.market_id(sym)
            q = {"category": CATEGORY, "symbol": sid}
            res = _result(await self._call(self.ex.publicGetV5MarketInstrumentsInfo, q))
            m = next((m for m in res.get("list") or [] if m.get("symbol") == sid), None)
            if m is None:
                raise ExchangeError(f"{sid}: not a linear market on bybit")
            risk = await self._pages(self.ex.publicGetV5MarketRiskLimit, q)
            tiers = tiers_from_risk_limits([r for r in risk if r.get("symbol", sid) == sid])
            if tiers.shape[0] == 0:  # no risk limits: one tier up to the instrument's leverage
                lev = float(m["leverageFilter"]["maxLeverage"])
                tiers = np.array([[0.0, 1e18, 0.5 / lev, lev, 0.0]])
            lot, price = m["lotSizeFilter"], m["priceFilter"]
            out[sid] = MarketSpec(
                symbol=sid,
                qty_step=float(lot["qtyStep"]),
                price_step=float(price["tickSize"]),
                min_qty=float(lot["minOrderQty"]),
                min_cost=float(lot.get("minNotionalValue") or 0.0),
                tiers=tiers,
                listed_ms=int(float(m.get("launchTime") or 0)),
            )
        return out

    # ------------------------------------------------------------------ account

    async def setup_account(self, symbols: Sequence[str], leverage: int) -> None:
        """Hedge mode for USDT perpetuals and ``leverage`` both ways on every symbol.

        Cross margin is the unified account's default (REGULAR_MARGIN, account-wide): it is
        not switched from here, since that would change every other position on the account.
        """
        await self.ensure_hedge_mode()
        lev = str(int(leverage))
        for sym in symbols:
            params = {
                "category": CATEGORY,
                "symbol": self.market_id(sym),
                "buyLeverage": lev,
                "sellLeverage": lev,
            }
            try:
                await self._call(self.ex.privatePostV5PositionSetLeverage, params)
            except ExchangeError as exc:
                if not any(c in str(exc) for c in NOT_MODIFIED):
                    raise

    async def ensure_hedge_mode(self) -> bool:
        """Hedge mode for USDT perpetuals (v5 has no query: the switch answers 110025 "not
        modified" when it already is); True if it had to be switched."""
        try:
            await self._call(
                self.ex.privatePostV5PositionSwitchMode,
                {"category": CATEGORY, "coin": SETTLE, "mode": HEDGE_MODE},
            )
        except PositionModeError as exc:
            raise PositionModeError(
                "the account is in one-way position mode and Bybit will not switch it to "
                f"hedge mode now ({exc}): close its positions and orders, then restart"
            ) from None
        except ExchangeError as exc:
            if any(c in str(exc) for c in NOT_MODIFIED):
                return False
            raise
        return True

    async def fetch_account(self, symbols: Sequence[str] | None = None) -> AccountSnapshot:
        """USDT ``walletBalance`` of the unified account and the hedge-mode positions."""
        raw = await self._call(
            self.ex.privateGetV5AccountWalletBalance, {"accountType": "UNIFIED", "coin": SETTLE}
        )
        bal = bybit_format.parse_wallet(_result(raw).get("list") or [], -1)
        balance = bal[-1].balance if bal else 0.0
        rows = await self._pages(
            self.ex.privateGetV5PositionList,
            {"category": CATEGORY, "settleCoin": SETTLE, "limit": 200},
        )
        positions: dict[str, list[float]] = {}
        for d in rows:
            p = bybit_format.parse_position(d)
            if p is None or (symbols is not None and p.symbol not in symbols):
                continue
            row = positions.setdefault(p.symbol, [0.0, 0.0, 0.0, 0.0])
            j = 0 if p.pside > 0 else 2
            row[j], row[j + 1] = p.size, p.price
        return AccountSnapshot.from_rows(balance, positions)

    adl_scale = (1, 5)  # adlRankIndicator; 0 means no position

    async def fetch_adl_quantiles(self, symbol: str) -> dict[str, int | None]:
        """``adlRankIndicator`` (1..5, 5 deleveraged first) of the account's ``long`` and
        ``short`` on ``symbol`` from ``/v5/position/list``; None: no position there."""
        q = {"category": CATEGORY, "symbol": self.market_id(symbol)}
        rows = _result(await self._call(self.ex.privateGetV5PositionList, q)).get("list") or []
        out: dict[str, int | None] = {"long": None, "short": None}
        for d in rows:
            side = {"Buy": "long", "Sell": "short"}.get(d.get("side", ""))
            rank = int(d.get("adlRankIndicator") or 0)
            if side is not None and rank > 0:
                out[side] = rank
        return out

    async def latest_fill_cursor(self, symbol: str) -> int:
        q = {"category": CATEGORY, "symbol": self.market_id(symbol), "limit": 1}
        res = _result(await self._call(self.ex.privateGetV5ExecutionList, q))
        rows = res.get("list") or []
        return int(rows[0]["execTime"]) if rows else 0

    async def fetch_fills(self, symbol: str, cursor: int) -> list[FillEvent]:
        """Fills on ``symbol`` since ``cursor`` (execTime, inclusive), oldest first."""
        q: dict[str, Any] = {"category": CATEGORY, "symbol": self.market_id(symbol), "limit": 100}
        if cursor > 0:
            q["startTime"] = cursor
        rows = await self._pages(self.ex.privateGetV5ExecutionList, q)
        fills = [f for f in map(bybit_format.parse_execution, rows) if f is not None]
        # newest first on the wire; stable sort keeps same-millisecond fills in booking order
        return sorted(reversed(fills), key=lambda f: f.time_ms)

    #: one execution query serves every coin's catch-up (Bybit: symbol optional)
    fills_in_one_query = True

    async def fetch_fills_many(self, cursors: dict[str, int]) -> dict[str, list[FillEvent]]:
        """Every coin's fills since its own cursor (execTime, inclusive): the coins with a
        cursor in one query from the oldest of them (rows before a coin's cursor dropped).

        A coin without a cursor (no fill yet) is asked alone: its fills may predate the others'
        cursors. When the shared query needs more than one page (cursors far apart, a busy
        coin), the coins are asked one by one instead, so one query never costs more than a
        page beyond what the per-coin ones cost.
        """
        alone = {s: c for s, c in cursors.items() if c <= 0}
        shared = {s: c for s, c in cursors.items() if c > 0}
        out = await super().fetch_fills_many(alone)
        if len(shared) < 2:
            return {**out, **await super().fetch_fills_many(shared)}
        q = {"category": CATEGORY, "limit": 100, "startTime": min(shared.values())}
        res = _result(await self._call(self.ex.privateGetV5ExecutionList, q))
        if res.get("nextPageCursor"):
            return {**out, **await super().fetch_fills_many(shared)}
        start = {self.market_id(s): (s, c) for s, c in shared.items()}
        fills = [f for f in map(bybit_format.parse_execution, res.get("list") or []) if f]
        out.update({s: [] for s in shared})
        for f in sorted(reversed(fills), key=lambda f: f.time_ms):  # oldest first, stable
            sym, cursor = start.get(f.symbol, (None, 0))
            if sym is not None and f.time_ms >= cursor:
                out[sym].append(f)
        return out

    async def fetch_open_orders(self, symbol: str | None = None) -> list[LiveOrder]:
        q: dict[str, Any] = {"category": CATEGORY, "openOnly": 0, "limit": 50}
        if symbol:
            q["symbol"] = self.market_id(symbol)
        else:
            q["settleCoin"] = SETTLE
        out = []
        for d in await self._pages(self.ex.privateGetV5OrderRealtime, q):
            o = bybit_format.parse_order(d)
            if o is not None and o.open:
                out.append(
                    LiveOrder(o.symbol, o.pside, o.qty, o.price, 0, 0, o.client_id, o.order_id)
                )
        return out

    # ------------------------------------------------------------------ market data

    async def fetch_klines(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None, limit: int = 500
    ) -> np.ndarray:
        """1m klines [open_time, o, h, l, c, v], oldest first (the open one included).

        Bybit returns the newest ``limit`` rows of [start, end]: paging forward from
        ``start_ms`` bounds each page's end; without it, pages go backward from the newest.
        """
        sid = self.market_id(symbol)
        q: dict[str, Any] = {"category": CATEGORY, "symbol": sid, "interval": "1"}
        got: dict[int, list[float]] = {}
        end: int | None = end_ms
        if start_ms is not None:
            since = int(start_ms)
            for _ in range(_MAX_PAGES):
                n = min(KLINE_PAGE, limit - len(got))
                end = since + n * 60_000 - 1
                if end_ms is not None:
                    end = min(end, int(end_ms))
                page = await self._klines({**q, "start": since, "end": end, "limit": n})
                got.update((int(r[0]), r) for r in page)
                if len(page) < n or len(got) >= limit or (end_ms is not None and end >= end_ms):
                    break
                since = max(int(r[0]) for r in page) + 60_000
        else:
            for _ in range(_MAX_PAGES):
                n = min(KLINE_PAGE, limit - len(got))
                page = await self._klines({**q, "limit": n, **({"end": end} if end else {})})
                got.update((int(r[0]), r) for r in page)
                if len(page) < n or len(got) >= limit:
                    break
                end = min(int(r[0]) for r in page) - 1
        rows = [got[t] for t in sorted(got)]
        rows = rows[:limit] if start_ms is not None else rows[-limit:]
        return np.array(rows, dtype=np.float64).reshape(-1, 6)

    async def _klines(self, q: dict[str, Any]) -> list[list[float]]:
        res = _result(await self._call(self.ex.publicGetV5MarketKline, q))
        return [[float(x) for x in r[:6]] for r in res.get("list") or []]

    async def fetch_last_prices(self, symbols: Sequence[str]) -> dict[str, float]:
        want = {self.market_id(s) for s in symbols}
        q: dict[str, Any] = {"category": CATEGORY}
        if len(want) == 1:
            q["symbol"] = next(iter(want))
        res = _result(await self._call(self.ex.publicGetV5MarketTickers, q))
        return {
            r["symbol"]: float(r["lastPrice"])
            for r in res.get("list") or []
            if r.get("symbol") in want and r.get("lastPrice") not in (None, "")
        }

    async def server_time_offset_ms(self) -> int:
        raw = await self._call(self.ex.publicGetV5MarketTime)
        res = _result(raw)
        if res.get("timeNano"):
            server = int(res["timeNano"]) // 1_000_000
        else:
            server = int(raw.get("time") or int(res["timeSecond"]) * 1000)
        return server - int(time.time() * 1000)

    # ------------------------------------------------------------------ orders

    @classmethod
    def _order_params(cls, o: LiveOrder) -> dict[str, Any]:
        """Post-only limit order in hedge mode, as Bybit's order parameters (no category)."""
        return {
            "symbol": cls.market_id(o.symbol),
            "side": "Buy" if o.qty > 0 else "Sell",
            "orderType": "Limit",
            "qty": _num(abs(o.qty)),
            "price": _num(o.price),
            "timeInForce": "PostOnly",  # maker only: one that would take is cancelled
            "positionIdx": POSITION_IDX[o.pside],
            "orderLinkId": o.client_id,
        }

    @staticmethod
    def _with_id(o: LiveOrder, order_id: Any) -> LiveOrder:
        return LiveOrder(
            o.symbol, o.pside, o.qty, o.price, o.kind, o.level, o.client_id, str(order_id)
        )

    @classmethod
    def _order_ref(cls, o: LiveOrder) -> dict[str, Any]:
        ref: dict[str, Any] = {"symbol": cls.market_id(o.symbol)}
        if o.order_id:
            ref["orderId"] = o.order_id
        else:
            ref["orderLinkId"] = o.client_id
        return ref

    async def create_order(self, o: LiveOrder) -> LiveOrder:
        """Post-only limit order in hedge mode; returns it with Bybit's order id."""
        params = {"category": CATEGORY, **self._order_params(o)}
        raw = await self._call(self.ex.privatePostV5OrderCreate, params)
        return self._with_id(o, _result(raw)["orderId"])

    async def create_market_close(
        self, symbol: str, pside: int, qty: float, client_id: str
    ) -> tuple[float, float]:
        """A taker close (Market, reduce-only, hedge mode) of ``qty`` of the ``pside``
        position (the equity hard stop's panic close); (filled qty, average price). Bybit's
        create answers with the order id only: the fill is asked for by the client id."""
        params = {
            "category": CATEGORY,
            "symbol": self.market_id(symbol),
            "side": "Sell" if pside > 0 else "Buy",
            "orderType": "Market",
            "qty": _num(qty),
            "positionIdx": POSITION_IDX[pside],
            "reduceOnly": True,
            "orderLinkId": client_id,
        }
        _result(await self._call(self.ex.privatePostV5OrderCreate, params))
        got = await self.query_order_fill(symbol, client_id)
        return got if got is not None else (0.0, 0.0)

    async def fetch_funding_rates(self, symbols: Sequence[str]) -> dict[str, float]:
        raise ConfigError("vault exits: the live bot unwinds on Binance only (not yet on Bybit)")

    async def query_order_fill(self, symbol: str, client_id: str) -> tuple[float, float] | None:
        """(filled qty, average price) of the order ``client_id``; None: Bybit has none."""
        q = {"category": CATEGORY, "symbol": self.market_id(symbol), "orderLinkId": client_id}
        rows = _result(await self._call(self.ex.privateGetV5OrderRealtime, q)).get("list") or []
        if not rows:
            return None
        return float(rows[0].get("cumExecQty") or 0.0), float(rows[0].get("avgPrice") or 0.0)

    async def cancel_order(self, o: LiveOrder) -> None:
        params = {"category": CATEGORY, **self._order_ref(o)}
        await self._call(self.ex.privatePostV5OrderCancel, params)

    #: /v5/order/create-batch and /v5/order/cancel-batch take 20 linear orders each
    batch_create_max = 20
    batch_cancel_max = 20

    def _items(self, raw: dict[str, Any], n: int, path: str) -> list[Any]:
        """Per item: its result row, or the error its retExtInfo code maps to."""
        rows = _result(raw).get("list") or []
        codes = (raw.get("retExtInfo") or {}).get("list") or []
        if len(rows) != n or len(codes) != n:
            bad = ExchangeError(f"bybit: {path} answered {len(rows)}/{len(codes)} items of {n}")
            return [bad] * n
        url = f"{self.ex.urls.get('api', {}).get('private', '')}/{path}"
        return [
            r if str(c.get("code")) == "0" else self._item_error(
                {"retCode": c.get("code"), "retMsg": c.get("msg", "")}, url
            )
            for r, c in zip(rows, codes, strict=True)
        ]  # fmt: skip

    async def _create_batch(self, orders: list[LiveOrder]) -> list[Any]:
        params = {"category": CATEGORY, "request": [self._order_params(o) for o in orders]}
        raw = await self._call(self.ex.privatePostV5OrderCreateBatch, params)
        items = self._items(raw, len(orders), "v5/order/create-batch")
        return [
            r if isinstance(r, Exception) else self._with_id(o, r["orderId"])
            for o, r in zip(orders, items, strict=True)
        ]

    async def _cancel_batch(self, orders: list[LiveOrder]) -> list[Any]:
        params = {"category": CATEGORY, "request": [self._order_ref(o) for o in orders]}
        raw = await self._call(self.ex.privatePostV5OrderCancelBatch, params)
        items = self._items(raw, len(orders), "v5/order/cancel-batch")
        return [r if isinstance(r, Exception) else None for r in items]

    # ------------------------------------------------------------------ user stream

    def ws_auth_args(self, expires_ms: int) -> list[Any]:
        """Args of the private stream's ``auth`` op, signed here: the secret stays inside."""
        from bot.exchange.bybit.streams import bybit_auth_args

        return bybit_auth_args(self.ex.apiKey, self.ex.secret, expires_ms)

    async def listen_key(self) -> str:
        raise NotImplementedError("bybit: the private stream authenticates with the API key")

    async def keepalive_listen_key(self) -> None:
        return None

    async def close_listen_key(self) -> None:
        return None

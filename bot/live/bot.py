"""The live loop: exchange state -> ``bot.core.ideal_orders`` -> diff -> cancel/create.

Exchange-agnostic: the adapter (``CcxtAdapter``: Binance USDT-M or Bybit v5 linear) speaks
REST, and each exchange's stream messages arrive here already normalized into
:mod:`bot.exchange.events` (fills, order statuses, balance, positions, prices, klines); the
only per-exchange code is the stream wiring in :meth:`LiveBot._make_streams`.

One asyncio task per coin, one shared account. The loop decides nothing itself: every price
and quantity comes from the core, with the same inputs the backtester gives it (balance,
balance peak, position, EMAs of closed 1m candles, bid = ask = the latest price, may_open from
``opening_slots`` over the account's coins). So the same candles, fed as a price stream through
the simulated venue, give the backtester's fills (``gridbot replay`` checks it).

State sources, in order of trust:
- positions: booked from our own fills (``apply_fill``, the backtester's arithmetic, exact);
  the exchange's reported size (user-stream position events, REST every
  ``rest_sync_interval_seconds``) overrides when they disagree: a deleverage, ADL or manual
  trade changed the position without a fill of ours;
- balance: the exchange's walletBalance (USDT, unleveraged, realized);
- open orders: REST answers to our creates/cancels, user-stream order updates, REST re-sync.

Lockstep (replay): a cycle runs only on a closed kline, with no delay and zero tolerances,
and :meth:`LiveBot.wait_done` lets the replay driver wait until every coin has reconciled
the candle before the venue applies the next one. Candle k's fills must be booked before
candle k's cycle: on Binance the user stream rides the market connection (same order as the
venue sent them); on Bybit private data has its own socket, so at each closed kline the bot
takes fills, balance and positions by REST (:meth:`LiveBot._candle_state`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from backtest.runner import warmup_candles
from bot.config import Config, LiveConfig, check_config_leverage, side_params_array
from bot.core import (
    apply_fill,
    ema_alphas,
    ema_seed,
    ema_update,
    ideal_orders,
    opening_slots,
)
from bot.errors import (
    AuthenticationError,
    ConfigError,
    DuplicateOrderError,
    ExchangeError,
    InsufficientMarginError,
    OrderRejectedError,
    RateLimitError,
    TransientExchangeError,
    UnknownOrderError,
)
from bot.exchange.bybit_format import UNKNOWN_REASON
from bot.exchange.ccxt_adapter import CcxtAdapter
from bot.exchange.events import (
    FUNDING,
    ORDER,
    BalanceEvent,
    Event,
    FillEvent,
    KlineEvent,
    OrderEvent,
    PositionEvent,
    PriceEvent,
    StreamExpired,
)
from bot.exchange.streams import (
    BinanceStreams,
    BybitPrivateStream,
    BybitPublicStream,
    BybitStreams,
    binance_events,
)
from bot.live.orders import PREFIX, LiveOrder, batches, diff_orders, orders_from_rows
from bot.live.state import StateStore
from bot.markets import MarketSpec

__all__ = ["LiveBot", "LiveFill", "StartupRefused"]

log = logging.getLogger("gridbot.live.bot")

MINUTE_MS = 60_000
_SIDES = (1, -1)


def _ignore(kind: str, **fields: Any) -> None:
    """The default event sink: nothing listens."""


class StartupRefused(ConfigError):
    """The bot will not trade with this config on this account (the message says why)."""


@dataclass(frozen=True)
class LiveFill:
    """A fill of ours as the user stream (or REST catch-up) reported it."""

    time_ms: int
    symbol: str
    pside: int  # +1 long, -1 short
    qty: float  # signed: + buy, - sell
    price: float
    trade_id: int | str  # Binance: the trade id; Bybit: the execId
    client_id: str


@dataclass
class Coin:
    """Per-symbol state; index 0 = long, 1 = short."""

    symbol: str
    spec: MarketSpec
    market: np.ndarray
    emas: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)))
    last_kline_ts: int = -1  # open time of the last closed kline in the EMAs
    last_price: float = math.nan
    pos: list[list[float]] = field(default_factory=lambda: [[0.0, 0.0], [0.0, 0.0]])
    exch: list[list[float] | None] = field(default_factory=lambda: [None, None])
    exch_time: list[int] = field(default_factory=lambda: [-1, -1])  # -1: a REST snapshot
    booked: int = 0  # fills booked so far (stream or REST)
    exch_booked: int = 0  # ``booked`` when the last REST snapshot was taken
    fill_time: list[int] = field(default_factory=lambda: [-1, -1])
    open: dict[str, LiveOrder] = field(default_factory=dict)  # ours, by client id
    closed_ids: deque[str] = field(default_factory=lambda: deque(maxlen=2000))
    last_trade_id: int = -1  # fill cursor: Binance trade id, Bybit exec time (ms)
    cursor_ids: list[str] = field(default_factory=list)  # fills seen at the cursor itself
    id_gen: dict[str, int] = field(default_factory=dict)  # Bybit: client id -> next suffix
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    done_ts: int = -1  # lockstep: last kline whose orders are reconciled
    busy: bool = False  # a cycle is running (woken and not yet finished)
    catching_up: bool = False


class LiveBot:
    """Trade ``symbols`` on one account through ``adapter`` and websocket streams at ``ws_url``."""

    def __init__(
        self,
        config: Config,
        adapter: CcxtAdapter,
        *,
        symbols: Sequence[str] | None = None,
        ws_url: str,
        lockstep: bool = False,
        state_name: str = "live",
        user_in_market: bool | None = None,
        market_path: str = "/market",
        listen_key_keepalive_s: float = 1800.0,
        max_rest_retries: int = 60,
        ws_ping_interval_s: float = 20.0,
    ) -> None:
        self.config = config
        self.live: LiveConfig = config.live
        self.adapter = adapter
        self.symbols = tuple(
            CcxtAdapter.market_id(s) for s in (symbols or config.live.symbols or ())
        )
        if not self.symbols:
            raise ConfigError("live.symbols: no symbols to trade (set live.symbols or --symbols)")
        self.ws_url = ws_url
        self.lockstep = lockstep
        # Binance can carry the user stream on the market connection; Bybit cannot
        shared = adapter.uses_listen_key
        self.user_in_market = shared and (lockstep if user_in_market is None else user_in_market)
        # lockstep with private data on its own socket: REST state at each closed kline
        self._candle_sync = lockstep and not self.user_in_market
        self._synced_ts = -1
        self._fill_since_balance = False
        self.ws_ping_interval_s = ws_ping_interval_s
        self.market_path = market_path
        self.listen_key_keepalive_s = listen_key_keepalive_s
        self.max_rest_retries = max_rest_retries
        self.state = StateStore(self.live.state_dir, state_name)
        self.params = [side_params_array(config.bot.long), side_params_array(config.bot.short)]
        self.n_positions = [config.bot.long.n_positions, config.bot.short.n_positions]
        self.alphas = [
            ema_alphas(config.bot.long.ema_span_0, config.bot.long.ema_span_1),
            ema_alphas(config.bot.short.ema_span_0, config.bot.short.ema_span_1),
        ]
        self.coins: dict[str, Coin] = {}
        self.balance = math.nan
        self.balance_peak = math.nan
        self.fills: list[LiveFill] = []
        self._seen_trades: set[tuple[str, int]] = set()
        self._user_seq = 0  # bumps on every user-stream event: REST snapshots check it
        self._stop = asyncio.Event()
        self._sync_wanted = asyncio.Event()
        self._done = asyncio.Condition()
        self._ready = asyncio.Event()
        self._backoff_s = 0.0
        self._backoff_until = 0.0
        self._market_up = False
        self.market_connected = False
        self._listen_key: str | None = None
        self.streams: BinanceStreams | BybitStreams | None = None
        self.errors: list[str] = []  # noteworthy errors, for tests and the summary
        self._recoveries: set[asyncio.Task] = set()
        self._clock_offset_ms = 0  # server minus local clock (Bybit's ws auth expiry)
        self.cycles = 0
        self.notify: Callable[..., None] = _ignore  # events: bot.live.monitor sets it

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        """Markets, leverage check (refuses with the reason), account set-up, EMAs, state."""
        specs = await self.adapter.load_markets(self.symbols)
        snap = await self.adapter.fetch_account(self.symbols)
        self.balance = snap.balance
        self._check_leverage(specs, snap.balance)
        await self.adapter.setup_account(self.symbols, int(self.live.leverage))
        for s in self.symbols:
            spec = specs[s]
            self.coins[s] = Coin(s, spec, spec.as_array())
        self._load_state(snap)
        for s in self.symbols:
            await self._seed_emas(self.coins[s])
        await self._sync()
        log.info(
            "started: %s, balance %.2f (peak %.2f), leverage %g",
            ", ".join(self.symbols),
            self.balance,
            self.balance_peak,
            self.live.leverage,
        )

    def _check_leverage(self, specs: dict[str, MarketSpec], balance: float) -> None:
        lev = float(self.live.leverage)
        if lev != int(lev):
            raise StartupRefused(f"live.leverage = {lev:g}: exchanges take whole numbers")
        for s in self.symbols:
            res = check_config_leverage(self.config, lev, balance, specs[s].tiers)
            if not res.ok:
                raise StartupRefused(f"refusing to start on {s}: {res.reason}")

    def _load_state(self, snap: Any) -> None:
        self.balance_peak = max(float(self.state.get("balance_peak", snap.balance)), snap.balance)
        self.state.set("balance_peak", self.balance_peak)
        for s, c in self.coins.items():
            ex = snap.positions.get(s, (0.0, 0.0, 0.0, 0.0))
            c.exch = [[ex[0], ex[1]], [ex[2], ex[3]]]
            saved = self.state.get(f"pos:{s}")
            c.last_trade_id = int(self.state.get(f"last_trade_id:{s}", -1))
            c.cursor_ids = [str(x) for x in self.state.get(f"cursor_ids:{s}", [])]
            self._seen_trades.update((s, x) for x in c.cursor_ids)  # Bybit: inclusive cursor
            for j in range(2):
                if saved is not None and abs(saved[j][0] - c.exch[j][0]) <= c.spec.qty_step / 2:
                    c.pos[j] = list(saved[j])  # our exact average, not the rounded one
                else:
                    c.pos[j] = list(c.exch[j])
            emas = self.state.get(f"emas:{s}")
            if emas is not None:
                c.emas = np.array(emas, dtype=np.float64).reshape(2, 3)
                c.last_kline_ts = int(self.state.get(f"last_kline_ts:{s}", -1))

    async def _seed_emas(self, c: Coin) -> None:
        """EMAs of closed 1m closes: the backtester's warm-up length, seeded with ``ema_seed``;
        or, after a restart, the saved EMAs advanced through the klines missed since."""
        if c.last_kline_ts >= 0 and await self._catch_up_klines(c, max_gap=10_000):
            if math.isnan(c.last_price):  # nothing new since the restart: the last close
                rows = await self._rest(self.adapter.fetch_klines, c.symbol, limit=2)
                rows = rows[rows[:, 0] <= c.last_kline_ts]
                if rows.shape[0]:
                    c.last_price = float(rows[-1, 4])
            if not self.lockstep:  # live: the latest trade beats the last close
                prices = await self._rest(self.adapter.fetch_last_prices, [c.symbol])
                c.last_price = prices.get(c.symbol, c.last_price)
            return
        n = max(1, warmup_candles(self.config, MINUTE_MS))
        now_ms = int(time.time() * 1000) + await self._time_offset()
        rows = await self._rest(self.adapter.fetch_klines, c.symbol, limit=n + 1)
        if self.lockstep:
            pass  # the venue serves closed candles only (replay time is not the wall clock)
        else:
            rows = rows[rows[:, 0] + MINUTE_MS <= now_ms]  # drop the candle still open
        rows = rows[-n:]
        if rows.shape[0] == 0:
            raise ExchangeError(f"{c.symbol}: no klines to seed the EMAs from")
        if rows.shape[0] < n:
            log.warning("%s: only %d of %d klines for the EMAs", c.symbol, rows.shape[0], n)
        closes = np.ascontiguousarray(rows[:, 4])
        c.emas = np.stack([ema_seed(closes, self.alphas[0]), ema_seed(closes, self.alphas[1])])
        c.last_kline_ts = int(rows[-1, 0])
        c.last_price = float(closes[-1])
        self._save_emas(c)

    async def _time_offset(self) -> int:
        if self.lockstep:
            return 0
        try:
            self._clock_offset_ms = await self.adapter.server_time_offset_ms()
        except ExchangeError:
            return 0
        return self._clock_offset_ms

    def _save_emas(self, c: Coin) -> None:
        self.state.set_many(
            {
                f"emas:{c.symbol}": c.emas.ravel().tolist(),
                f"last_kline_ts:{c.symbol}": c.last_kline_ts,
            }
        )

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Start and trade until :meth:`stop`; cancels our orders on stop if configured."""
        try:
            await self.start()
            self._ready.set()
            self.streams = self._make_streams()
            for c in self.coins.values():
                c.wake.set()  # reconcile at once: the grid from the state just loaded
            tasks = [
                asyncio.create_task(self.streams.run(self._stop), name="streams"),
                asyncio.create_task(self._sync_loop(), name="rest-sync"),
                asyncio.create_task(self._fallback_loop(), name="rest-fallback"),
            ]
            if self.adapter.uses_listen_key:
                tasks.append(asyncio.create_task(self._keepalive_loop(), name="listen-key"))
            tasks += [
                asyncio.create_task(self._coin_loop(c), name=f"coin-{s}")
                for s, c in self.coins.items()
            ]
            stop_task = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([*tasks, stop_task], return_when="FIRST_COMPLETED")
            self._stop.set()
            tasks += list(self._recoveries)
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for t in done:
                if t is not stop_task and t.exception() is not None:
                    raise t.exception()
            for r in results:
                if isinstance(r, AuthenticationError):
                    raise r
        finally:
            self._ready.set()
            await self._shutdown()

    def stop(self) -> None:
        """Ask the loop to end (safe from signal handlers)."""
        self._stop.set()

    def _make_streams(self) -> BinanceStreams | BybitStreams:
        """The per-exchange part: which sockets, and their messages -> :mod:`events`."""
        silence = self.live.stream_silence_timeout_seconds
        if self.adapter.kind == "bybit":
            ping = self.ws_ping_interval_s
            public = BybitPublicStream(
                self.ws_url,
                self.symbols,
                self._on_events,
                silence_timeout_s=silence,
                ping_interval_s=ping,
                on_state=lambda up: self._on_stream_state("market", up),
            )
            private = BybitPrivateStream(
                self.ws_url,
                self.adapter.ws_auth_args,  # type: ignore[attr-defined]
                self._on_events,
                silence_timeout_s=silence,
                ping_interval_s=ping,
                time_offset_ms=lambda: self._clock_offset_ms,
                on_state=lambda up: self._on_stream_state("user", up),
            )
            return BybitStreams(public, private)

        async def on_binance(ev: str, data: dict[str, Any]) -> None:
            await self._on_events(binance_events(ev, data))

        return BinanceStreams(
            ws_url=self.ws_url,
            symbols=self.symbols,
            on_event=on_binance,
            listen_key=self._get_listen_key,
            market_path=self.market_path,
            user_in_market=self.user_in_market,
            silence_timeout_s=silence,
            on_state=self._on_stream_state,
        )

    def streams_ready(self) -> bool:
        """Every stream connected (and, on Bybit, its subscriptions acknowledged)."""
        st = self.streams
        if isinstance(st, BybitStreams):
            return st.ready()
        return st is not None and all(c.connected.is_set() for c in st.clients)

    async def _shutdown(self) -> None:
        if self.live.cancel_orders_on_stop and self.coins:
            for c in self.coins.values():
                for batch in batches(list(c.open.values()), self.live.max_orders_per_batch):
                    await self.adapter.run_batch(self.adapter.cancel_order, batch)
                c.open.clear()
            log.info("stopped: cancelled our open orders")
        self.state.close()
        async with self._done:
            self._done.notify_all()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def wait_done(self, ts: int, timeout: float = 30.0) -> None:
        """Lockstep: wait until every coin reconciled its orders after the kline opened at
        ``ts`` (raises TimeoutError; ends early if the bot stopped)."""

        def done() -> bool:
            return self._stop.is_set() or all(c.done_ts >= ts for c in self.coins.values())

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._done:
            await asyncio.wait_for(self._done.wait_for(done), timeout)
        # Then let anything still bringing state in settle: a recovery after a (re)connect
        # (REST klines and fills, then a wake) and the cycles it woke. The venue must not move
        # to the next candle under them, or they would reconcile against a newer account.
        while not self._stop.is_set() and (
            self._recoveries or any(c.busy or c.wake.is_set() for c in self.coins.values())
        ):
            if loop.time() > deadline:
                raise TimeoutError(f"the bot did not settle after the kline at {ts}")
            await asyncio.sleep(0.002)
        if self._stop.is_set() and not all(c.done_ts >= ts for c in self.coins.values()):
            raise RuntimeError("the bot stopped: " + "; ".join(self.errors[-3:]))

    async def _coin_loop(self, c: Coin) -> None:
        last_cycle = 0.0
        failures = 0
        while not self._stop.is_set():
            await c.wake.wait()
            c.busy = True  # until this wake's cycle is over (lockstep waits for it)
            try:
                c.wake.clear()
                if not self.lockstep:
                    delay = last_cycle + self.live.execution_delay_seconds - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                wait = self._backoff_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                target = c.last_kline_ts
                last_cycle = time.monotonic()
                try:
                    ok = await self._cycle(c)
                except AuthenticationError as exc:
                    self.errors.append(str(exc))
                    log.error("authentication refused: %s; stopping", exc)
                    raise
                if ok:
                    failures = 0
                    self._backoff_s = 0.0
                    if target > c.done_ts:
                        c.done_ts = target
                        async with self._done:
                            self._done.notify_all()
                else:
                    failures += 1
                    if failures > self.max_rest_retries:
                        raise ExchangeError(f"{c.symbol}: {failures} failed cycles in a row")
                    await asyncio.sleep(min(0.05 * failures, 1.0))
                    c.wake.set()
            finally:
                c.busy = False

    # ------------------------------------------------------------------ the cycle

    def ideal(self, c: Coin) -> list[LiveOrder]:
        """The orders ``c`` should have open now, from the core."""
        sizes = np.array([[self._position(x, j)[0] for x in self.coins.values()] for j in (0, 1)])
        idx = list(self.coins).index(c.symbol)
        out: list[LiveOrder] = []
        # bid = ask = the latest trade price. The backtester uses bid = ask = the previous
        # candle's close; in lockstep the latest price *is* that close (set from the kline).
        price = c.last_price
        for j, side in enumerate(_SIDES):
            may_open = bool(opening_slots(sizes[j], self.n_positions[j])[idx])
            size, pprice = self._position(c, j)
            rows = ideal_orders(
                side,
                self.balance,
                self.balance_peak,
                size,
                pprice,
                price,
                price,
                c.emas[j],
                c.market,
                self.params[j],
                may_open,
            )
            out += orders_from_rows(c.symbol, side, rows)
        if not self.adapter.client_ids_reusable:
            # Bybit never reuses an orderLinkId: the deterministic id plus a generation that
            # moves on once an order with that id has ended (see _retire_id)
            out = [replace(o, client_id=self._fresh_id(c, o.client_id)) for o in out]
        return out

    @staticmethod
    def _fresh_id(c: Coin, cid: str) -> str:
        gen = c.id_gen.get(cid, 0)
        return f"{cid}-{gen:x}" if gen else cid

    def _retire_id(self, c: Coin, cid: str) -> None:
        """An order of ours ended: on Bybit its client id may never be used again."""
        if self.adapter.client_ids_reusable or not cid.startswith(PREFIX):
            return
        base, _, gen = cid.partition("-")
        c.id_gen[base] = max(c.id_gen.get(base, 0), (int(gen, 16) if gen else 0) + 1)

    def _position(self, c: Coin, j: int) -> tuple[float, float]:
        """Our booked position, unless the exchange reports another size (then adopt it)."""
        mine, ex = c.pos[j], c.exch[j]
        # a report from the same moment as our last fill may be an intermediate one
        # (several fills per candle, streams reordered): only a newer one overrides
        # A REST snapshot counts only while no fill has been booked since it was taken: one
        # booked after it (stream or catch-up) makes it older than our book, not a change.
        newer = (c.exch_time[j] < 0 and c.exch_booked == c.booked) or c.exch_time[j] > c.fill_time[
            j
        ]
        if ex is not None and newer and abs(mine[0] - ex[0]) > c.spec.qty_step / 2:
            log.warning(
                "%s %s: the exchange reports size %g, our fills give %g: the position changed "
                "without a fill of ours (deleverage / ADL / manual); recomputing the grid from it",
                c.symbol,
                "long" if j == 0 else "short",
                ex[0],
                mine[0],
            )
            self.notify("position_changed", symbol=c.symbol, j=j, ours=mine[0], exchange=ex[0])
            c.pos[j] = [ex[0], ex[1] if ex[0] > 0 else 0.0]
            self._save_position(c)
        return c.pos[j][0], c.pos[j][1]

    async def _cycle(self, c: Coin) -> bool:
        """Reconcile ``c``'s open orders to the ideal ones; False if something must be retried."""
        if math.isnan(self.balance) or math.isnan(c.last_price):
            return False
        async with c.lock:
            self.cycles += 1
            ideal = self.ideal(c)
            thr = (0.0, 0.0) if self.lockstep else (
                self.live.price_distance_threshold,
                self.live.qty_distance_threshold,
            )  # fmt: skip
            to_cancel, to_create = diff_orders(list(c.open.values()), ideal, c.last_price, *thr)
            if not to_cancel and not to_create:
                return True
            ok = True
            size = self.live.max_orders_per_batch
            for batch in batches(to_cancel, size):
                results = await self.adapter.run_batch(self.adapter.cancel_order, batch)
                for o, r in zip(batch, results, strict=True):
                    if isinstance(r, UnknownOrderError):
                        # gone already (filled or cancelled): the stream will tell; re-sync
                        self._forget(c, o)
                        self._sync_wanted.set()
                    elif isinstance(r, BaseException):
                        ok = self._on_error(c, "cancel", o, r) and ok
                    else:
                        self._forget(c, o)
                        self.notify("order_cancelled", order=o)
            if not ok:
                return False  # never create while stale orders may still rest
            dups: list[LiveOrder] = []
            for batch in batches(to_create, size):
                results = await self.adapter.run_batch(self.adapter.create_order, batch)
                for o, r in zip(batch, results, strict=True):
                    if isinstance(r, LiveOrder):
                        if r.order_id not in c.closed_ids:
                            c.open[r.client_id] = r
                        self.notify("order_created", order=r)
                    elif (
                        isinstance(r, DuplicateOrderError) and not self.adapter.client_ids_reusable
                    ):
                        dups.append(o)
                        ok = False
                    elif isinstance(r, BaseException):
                        ok = self._on_error(c, "create", o, r) and ok
            if dups:
                await self._resolve_duplicates(c, dups)
            log.debug(
                "%s: cancelled %d, created %d orders", c.symbol, len(to_cancel), len(to_create)
            )
            return ok

    def _forget(self, c: Coin, o: LiveOrder) -> None:
        c.open.pop(o.client_id, None)
        self._retire_id(c, o.client_id)
        if o.order_id:
            c.closed_ids.append(o.order_id)

    async def _resolve_duplicates(self, c: Coin, dups: list[LiveOrder]) -> None:
        """Bybit refused client ids as used: rests one of them (a create that landed after a
        timeout)? Track it. Otherwise the id belongs to an ended order: move to a new one."""
        opens = {o.client_id: o for o in await self._rest(self.adapter.fetch_open_orders, c.symbol)}
        for o in dups:
            have = opens.get(o.client_id)
            if have is not None:
                c.open[o.client_id] = replace(o, order_id=have.order_id)
            else:
                self._retire_id(c, o.client_id)

    def _on_error(self, c: Coin, what: str, o: LiveOrder, exc: BaseException) -> bool:
        """Classify an order error; returns False (retry the cycle) or raises (stop)."""
        text = f"{c.symbol} {what} {o.side} {o.position_side} {abs(o.qty):g} @ {o.price:g}: {exc}"
        if isinstance(exc, AuthenticationError):
            raise exc
        if isinstance(exc, RateLimitError):
            self._backoff_s = min(max(self._backoff_s * 2, 0.5), 60.0)
            self._backoff_until = time.monotonic() + self._backoff_s
            log.warning("rate limited, backing off %.1f s: %s", self._backoff_s, text)
        elif isinstance(exc, InsufficientMarginError):
            log.warning("insufficient margin, re-syncing: %s", text)
            self._sync_wanted.set()
        elif isinstance(exc, DuplicateOrderError):
            log.info("order already exists, re-syncing: %s", text)  # a create that landed
            self._sync_wanted.set()
        elif isinstance(exc, TransientExchangeError | OrderRejectedError | ExchangeError):
            log.warning("%s", text)
        else:
            raise exc
        self.errors.append(text)
        self.notify("order_error", symbol=c.symbol, text=text)
        return False

    # ------------------------------------------------------------------ REST

    async def _rest(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """A REST call retried through transient errors and rate limits (bounded)."""
        delay = 0.2
        for attempt in range(self.max_rest_retries):
            try:
                return await fn(*args, **kw)
            except (TransientExchangeError, UnknownOrderError) as exc:
                if attempt + 1 >= self.max_rest_retries:
                    raise
                if isinstance(exc, RateLimitError):
                    delay = max(delay, 1.0)
                log.warning("REST %s: %s; retrying in %.1f s", fn.__name__, exc, delay)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def _consistent_snapshot(self, tries: int = 3) -> tuple[Any | None, int]:
        """(balance-and-positions snapshot that agrees with our booked fills, fills booked).

        Catch up our fills, take the snapshot, catch up again: when the second catch-up finds
        nothing (and no stream event arrived meanwhile), no fill happened around the snapshot,
        so it is exactly as new as our book. Otherwise it may be older or newer than our fills
        (the account moved during the calls: live trading, or a replay candle applied between
        them) and adopting its positions would double or drop a fill: try again, or give up and
        return None (the next sync tries again).
        """
        booked = 0
        check_seq = not self._candle_sync  # there, stream fills are not booked at all
        for _ in range(tries):
            for c in self.coins.values():
                async with c.lock:
                    booked += await self._catch_up_trades(c)
            seq = self._user_seq
            snap = await self._rest(self.adapter.fetch_account, self.symbols)
            late = 0
            for c in self.coins.values():
                async with c.lock:
                    late += await self._catch_up_trades(c)
            booked += late
            if late == 0 and (not check_seq or seq == self._user_seq):
                return snap, booked
        return None, booked

    async def _sync(self) -> None:
        """REST: balance and positions, missed fills (userTrades), our open orders."""
        snap, _ = await self._consistent_snapshot()
        if snap is not None:
            self.balance = snap.balance
            for s, c in self.coins.items():
                ex = snap.positions.get(s, (0.0, 0.0, 0.0, 0.0))
                c.exch = [[ex[0], ex[1]], [ex[2], ex[3]]]
                c.exch_time = [-1, -1]
                c.exch_booked = c.booked
            self.notify("reconciled")
        for c in self.coins.values():
            async with c.lock:
                for _ in range(3):
                    seq = self._user_seq
                    orders = await self._rest(self.adapter.fetch_open_orders, c.symbol)
                    if seq == self._user_seq:
                        break
                old = c.open
                c.open = {}
                for o in orders:
                    if o.client_id.startswith(PREFIX):
                        prev = old.get(o.client_id)
                        kind = prev.kind if prev is not None else 0
                        c.open[o.client_id] = LiveOrder(
                            o.symbol, o.pside, o.qty, o.price, kind, 0, o.client_id, o.order_id
                        )

    async def _catch_up_trades(self, c: Coin) -> int:
        """Book the fills missed since the cursor (REST); returns how many were new."""
        if c.last_trade_id < 0:
            c.last_trade_id = await self._rest(self.adapter.latest_fill_cursor, c.symbol)
            self.state.set(f"last_trade_id:{c.symbol}", c.last_trade_id)
            return 0
        fills = await self._rest(self.adapter.fetch_fills, c.symbol, c.last_trade_id)
        return sum(self._on_fill(f) for f in fills)

    async def _candle_state(self, ts: int) -> None:
        """Lockstep with a separate private socket (Bybit): candle ``ts``'s fills, balance and
        positions by REST, once per candle, before any coin's cycle.

        Why REST and not the private events: the venue books candle k before it sends its
        kline, so REST already holds all of candle k; the private socket may still be
        delivering it, with nothing to say when it is complete. Waiting on it would need a
        count we do not have, so the stream's fill, balance and position events are left
        out in this mode (REST has them, in booking order); order statuses still apply.
        """
        if ts <= self._synced_ts:
            return
        snap, new = await self._consistent_snapshot(tries=10)
        if snap is None:
            raise TransientExchangeError("no REST snapshot consistent with the fills")
        self.balance = snap.balance
        if new and self.balance > self.balance_peak:  # the peak follows fills only
            self.balance_peak = self.balance
            self.state.set("balance_peak", self.balance_peak)
        for s, c in self.coins.items():
            ex = snap.positions.get(s, (0.0, 0.0, 0.0, 0.0))
            c.exch = [[ex[0], ex[1]], [ex[2], ex[3]]]
            c.exch_time = [-1, -1]
            c.exch_booked = c.booked
        self._synced_ts = ts

    async def _sync_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(
                    self._sync_wanted.wait(), self.live.rest_sync_interval_seconds
                )
            except TimeoutError:
                pass
            self._sync_wanted.clear()
            if self._stop.is_set():
                break
            try:
                await self._sync()
            except TransientExchangeError as exc:
                log.warning("REST sync failed: %s", exc)
                self._sync_wanted.set()
                await asyncio.sleep(1.0)
                continue
            for c in self.coins.values():
                c.wake.set()

    async def _fallback_loop(self) -> None:
        """While the market stream is down: REST prices and missed klines (bounded polling)."""
        period = min(5.0, max(0.5, self.live.stream_silence_timeout_seconds / 2))
        while not self._stop.is_set():
            await asyncio.sleep(period)
            if self._market_up:
                continue
            try:
                if not self.lockstep:
                    prices = await self.adapter.fetch_last_prices(self.symbols)
                    for s, p in prices.items():
                        if s in self.coins and p > 0:
                            self.coins[s].last_price = p
                await self._recover()
            except ExchangeError as exc:
                log.warning("REST fallback: %s", exc)

    async def _keepalive_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.listen_key_keepalive_s)
            try:
                await self.adapter.keepalive_listen_key()
            except ExchangeError as exc:
                log.warning("listen key keepalive: %s (a new key on the next connect)", exc)
                self._listen_key = None

    async def _get_listen_key(self) -> str:
        if self._listen_key is None:
            self._listen_key = await self._rest(self.adapter.listen_key)
        return self._listen_key

    def _on_stream_state(self, name: str, up: bool) -> None:
        self.notify("stream", name=name, up=up)
        if name == "market":
            self._market_up = up
            self.market_connected = up
        if up and not self._stop.is_set():
            # after any (re)connect: the fills and klines we may have missed, via REST
            t = asyncio.get_running_loop().create_task(self._recover())
            self._recoveries.add(t)  # tracked: cancelled on stop, never outlives the bot
            t.add_done_callback(self._recoveries.discard)
        elif not self._stop.is_set():
            log.warning("%s stream down; REST fallback until it is back", name)

    async def _recover(self) -> None:
        """Klines first (EMAs), then fills and balance (REST), then reconcile every coin.

        In this order the REST state is at least as new as the klines: a candle's fills are
        booked before its kline exists, so a cycle never sees a candle without its fills.
        """
        try:
            for c in self.coins.values():
                await self._catch_up_klines(c)
            await self._sync()
        except ExchangeError as exc:
            log.warning("recovery after reconnect failed: %s; retrying by REST sync", exc)
            self._sync_wanted.set()
        for c in self.coins.values():
            c.wake.set()

    async def _catch_up_klines(self, c: Coin, max_gap: int = 10_000) -> bool:
        """Advance the EMAs through closed klines missed since ``last_kline_ts``; False when the
        gap is too long to bridge (then the caller re-seeds)."""
        if c.catching_up or c.last_kline_ts < 0:
            return c.last_kline_ts >= 0
        c.catching_up = True
        try:
            start = c.last_kline_ts + MINUTE_MS
            rows = await self._rest(
                self.adapter.fetch_klines, c.symbol, start_ms=start, limit=max_gap + 2
            )
            if not self.lockstep:
                now_ms = int(time.time() * 1000) + await self._time_offset()
                rows = rows[rows[:, 0] + MINUTE_MS <= now_ms]
            if rows.shape[0] > max_gap:
                return False
            for r in rows:
                self._apply_kline(c, int(r[0]), float(r[4]))
            return True
        finally:
            c.catching_up = False

    # ------------------------------------------------------------------ stream events

    async def _on_events(self, events: list[Event]) -> None:
        """Stream events, already normalized (:mod:`bot.exchange.events`), in arrival order."""
        for ev in events:
            if isinstance(ev, PriceEvent):
                c = self.coins.get(ev.symbol)
                # lockstep: the cycle's price is the closed kline's close, never a trade
                # message that may arrive around it
                if c is not None and not self.lockstep:
                    c.last_price = ev.price
                    c.wake.set()
            elif isinstance(ev, KlineEvent):
                await self._on_kline(ev)
            elif isinstance(ev, StreamExpired):
                log.warning("listen key expired: reconnecting with a new one")
                self._listen_key = None
                if self.streams is not None:
                    for cl in self.streams.clients:
                        await cl.close()
            else:
                self._user_seq += 1
                if isinstance(ev, OrderEvent):
                    self._on_order(ev)
                elif self._candle_sync:
                    pass  # fills, balance, positions: by REST per candle (_candle_state)
                elif isinstance(ev, FillEvent):
                    self._on_fill(ev)
                elif isinstance(ev, BalanceEvent):
                    self._on_balance(ev)
                elif isinstance(ev, PositionEvent):
                    self._on_position(ev)

    async def _on_kline(self, k: KlineEvent) -> None:
        c = self.coins.get(k.symbol)
        if c is None or not k.closed:
            return
        if k.open_ms > c.last_kline_ts + MINUTE_MS:
            # missed messages (klines, maybe fills too): recover it all by REST
            asyncio.get_running_loop().create_task(self._recover())
        elif self._apply_kline(c, k.open_ms, k.close):
            if self._candle_sync:
                try:
                    await self._candle_state(k.open_ms)
                except ExchangeError as exc:  # the cycle must not run without the fills
                    log.warning("REST state for the candle failed: %s; recovering", exc)
                    self._sync_wanted.set()
                    return
            c.wake.set()

    def _apply_kline(self, c: Coin, ts: int, close: float) -> bool:
        if ts != c.last_kline_ts + MINUTE_MS:
            return False  # old (already in the EMAs) or not the next one
        ema_update(c.emas[0], self.alphas[0], close)
        ema_update(c.emas[1], self.alphas[1], close)
        c.last_kline_ts = ts
        c.last_price = close  # the kline's close is the minute's last trade
        self._save_emas(c)
        return True

    def _on_order(self, o: OrderEvent) -> None:
        c = self.coins.get(o.symbol)
        if c is None or not o.client_id.startswith(PREFIX):
            return  # not ours: never tracked
        if not o.open:
            c.open.pop(o.client_id, None)
            self._retire_id(c, o.client_id)
            c.closed_ids.append(o.order_id)
        elif o.order_id not in c.closed_ids:
            prev = c.open.get(o.client_id)
            c.open[o.client_id] = LiveOrder(
                c.symbol, o.pside, o.qty, o.price,
                prev.kind if prev else 0, prev.level if prev else 0, o.client_id, o.order_id,
            )  # fmt: skip

    def _on_fill(self, f: FillEvent) -> bool:
        """Book a fill once (by trade id); True if it was new."""
        c = self.coins.get(f.symbol)
        key = (f.symbol, f.trade_id)
        if c is None or key in self._seen_trades:
            return False
        self._seen_trades.add(key)
        c.booked += 1
        j = 0 if f.pside > 0 else 1
        size, pprice, _ = apply_fill(f.pside, c.pos[j][0], c.pos[j][1], f.qty, f.price)
        c.pos[j] = [size, pprice]
        c.fill_time[j] = max(c.fill_time[j], f.time_ms)
        cursor = f.cursor if f.cursor >= 0 else f.time_ms
        if cursor > c.last_trade_id:
            c.last_trade_id, c.cursor_ids = cursor, [str(f.trade_id)]
        elif cursor == c.last_trade_id:
            c.cursor_ids.append(str(f.trade_id))
        if f.remaining == 0.0 and f.client_id.startswith(PREFIX):
            c.open.pop(f.client_id, None)  # filled completely: gone from the book
            self._retire_id(c, f.client_id)
            if f.order_id:
                c.closed_ids.append(f.order_id)
        self._fill_since_balance = True
        self.fills.append(
            LiveFill(f.time_ms, f.symbol, f.pside, f.qty, f.price, f.trade_id, f.client_id)
        )
        self.notify("fill", fill=self.fills[-1])
        self._save_position(c)
        if not self.lockstep:
            c.wake.set()
        return True

    def _save_position(self, c: Coin) -> None:
        self.state.set_many(
            {
                f"pos:{c.symbol}": c.pos,
                f"last_trade_id:{c.symbol}": c.last_trade_id,
                f"cursor_ids:{c.symbol}": c.cursor_ids[-200:],
                "balance_peak": self.balance_peak,
            }
        )

    def _on_balance(self, b: BalanceEvent) -> None:
        if not math.isnan(b.balance):
            self.balance = b.balance
        # the peak follows fills only, as in the backtester (funding does not raise it);
        # Bybit's wallet topic gives no reason: a fill booked since the last one decides
        fill_driven = b.reason == ORDER or (b.reason == UNKNOWN_REASON and self._fill_since_balance)
        self._fill_since_balance = False
        if fill_driven and self.balance > self.balance_peak:
            self.balance_peak = self.balance
            self.state.set("balance_peak", self.balance_peak)

    def _on_position(self, p: PositionEvent) -> None:
        c = self.coins.get(p.symbol)
        if c is None:
            return
        j = 0 if p.pside > 0 else 1
        c.exch[j] = [p.size, p.price if p.size else 0.0]
        c.exch_time[j] = p.time_ms
        if p.reason not in (ORDER, FUNDING):
            # deleverage / ADL / manual adjustment: not a fill of ours
            self._position(c, j)
            c.wake.set()

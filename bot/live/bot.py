"""The live bot: one account, one task per coin, the exchange as the source of truth.

Its parts, each in its own module:
- :mod:`bot.live.book`: the book (positions, open orders, fill cursors, balance), a cache of
  the exchange's truth, and the pre-trade guard;
- :mod:`bot.live.reconcile`: REST reconciliation (start, reconnects, periodic, on doubt),
  watermarks that notice an exchange account that went backwards;
- :mod:`bot.live.feeds`: websocket streams, klines and EMAs, REST fallbacks;
- :mod:`bot.live.cycle`: ideal orders from the core -> guard -> diff -> cancel/create;
- :mod:`bot.live.pacing`: real time or lockstep (replay), injected;
- :mod:`bot.live.vault_sizing` / :mod:`bot.live.vault_exits`: a vault (``vault.enabled``): the
  cash buffer, leverage cap and margin buffer; the ledger's requests and exits;
- :mod:`bot.live.hard_stop`: the equity hard stop loss (one sample per minute, its tiers,
  red's market closes and halt).

Exchange-agnostic: the adapter (:class:`bot.exchange.base.ExchangeAdapter`: Binance USDT-M or
Bybit v5 linear, picked by :mod:`bot.exchange.registry`) speaks REST, and the streams deliver
:mod:`bot.exchange.events`. The loop decides nothing itself:
every price and quantity comes from the core with the inputs the backtester gives it, so the
same candles fed through the simulated venue give the backtester's fills (``gridbot replay``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bot.config import Config, LiveConfig, check_config_leverage, side_params_array
from bot.core import ema_alphas
from bot.core.forager import eligible_from_ms, forager_alphas
from bot.errors import (
    AuthenticationError,
    ConfigError,
    ExchangeError,
    PositionModeError,
    RateLimitError,
    TransientExchangeError,
    UnknownOrderError,
)
from bot.exchange.base import ExchangeAdapter
from bot.exchange.events import FillEvent
from bot.live.active_coins import ActiveCoins, check_stream_limit
from bot.live.book import Book, LiveFill
from bot.live.coin import Coin
from bot.live.cycle import OrderCycle
from bot.live.feeds import Feeds
from bot.live.hard_stop import LiveHardStop
from bot.live.minute_inputs import MinuteInputs
from bot.live.orders import LiveOrder, batches
from bot.live.pacing import Lockstep, Pacing, RealTime
from bot.live.reconcile import Reconciler
from bot.live.state import StateStore
from bot.live.transfers import TransferLog
from bot.live.universe import all_markets, configured_symbols
from bot.live.vault_exits import VaultExits
from bot.live.vault_sizing import VaultSizing
from bot.markets import MarketSpec
from bot.vault.ledger import live_ledger_path

__all__ = ["LiveBot", "LiveFill", "StartupRefused"]

log = logging.getLogger("gridbot.live.bot")


def _ignore(kind: str, **fields: Any) -> None:
    """The default event sink: nothing listens (``bot.live.monitor`` replaces it)."""


class StartupRefused(ConfigError):
    """The bot will not trade with this config on this account (the message says why)."""


class LiveBot:
    """Trade ``symbols`` on one account through ``adapter`` and websocket streams at ``ws_url``."""

    def __init__(
        self,
        config: Config,
        adapter: ExchangeAdapter,
        *,
        symbols: Sequence[str] | None = None,
        ws_url: str,
        pacing: Pacing | None = None,
        lockstep: bool = False,
        state_name: str = "live",
        market_path: str = "/market",
        listen_key_keepalive_seconds: float = 1800.0,
        max_rest_retries: int = 60,
        ws_ping_interval_seconds: float = 20.0,
        vault_ledger: str | None = None,
        reset_hard_stop: bool = False,
    ) -> None:
        self.config = config
        self.live: LiveConfig = config.live
        self.adapter = adapter
        self.symbols = configured_symbols(config.live, adapter, symbols)
        # approved_coins "all" and no symbols: the exchange's markets, listed at start
        self.all_markets = not self.symbols
        self.ws_url = ws_url
        self.pacing = pacing or (Lockstep() if lockstep else RealTime())
        self.market_path = market_path
        self.listen_key_keepalive_seconds = listen_key_keepalive_seconds
        self.max_rest_retries = max_rest_retries
        self.ws_ping_interval_seconds = ws_ping_interval_seconds
        # events for the status page, the log file and the alerts (bot.live.monitor sets it):
        # order_created / order_cancelled (order), order_error (symbol, text), fill (fill),
        # position_changed (symbol, j, ours, exchange), stream (name, up), reconciled,
        # account_reset (symbols)
        self.notify: Callable[..., None] = _ignore
        self.state = StateStore(self.live.state_dir, state_name, fsync=self.pacing.fsync_state)
        self.params = [side_params_array(config.bot.long), side_params_array(config.bot.short)]
        self.n_positions = [config.bot.long.n_positions, config.bot.short.n_positions]
        self.alphas = [
            ema_alphas(config.bot.long.ema_span_0, config.bot.long.ema_span_1),
            ema_alphas(config.bot.short.ema_span_0, config.bot.short.ema_span_1),
        ]
        sides = (config.bot.long, config.bot.short)
        self.f_alphas = [
            forager_alphas(s.filter_volume_rolling_window, s.filter_volatility_rolling_window)
            for s in sides
        ]
        # the forager ranks (then every cycle waits for all coins' klines of its minute)
        self.forager_ranks = any(
            s.filter_volume_rolling_window > 0 or s.filter_volatility_rolling_window > 0
            for s in sides
        )
        self.coins: dict[str, Coin] = {}
        self.book: Book = Book(self.state, (), {})  # replaced at start, with the markets
        self.errors: list[str] = []  # noteworthy errors, for tests and the summary
        self._stop = asyncio.Event()
        self._done = asyncio.Condition()
        self._ready = asyncio.Event()
        self._recoveries: set[asyncio.Task] = set()
        self._recover_again = False
        self._recovering = False
        self._mode_check: asyncio.Task | None = None
        self._mode_lock = asyncio.Lock()
        self._fatal: BaseException | None = None
        self.vault_sizing = VaultSizing(config.vault)
        # the vault's ledger beside the state (bot.live.vault_exits), with vault.enabled
        self.vault: VaultExits | None = None
        if config.vault.enabled:
            if getattr(adapter, "kind", "binance") != "binance":
                raise StartupRefused(
                    "vault.enabled: the live vault unwinds exits on Binance only (not yet on "
                    f"{adapter.kind})"
                )
            self.vault = VaultExits(self, vault_ledger or live_ledger_path(self.live.state_dir))
            self.vault.refresh()
        self.feeds = Feeds(self)
        # the equity hard stop loss (bot.common.equity_hard_stop_loss): loaded at start-up
        self.hard_stop = LiveHardStop(self, reset=reset_hard_stop)
        # the forager's slots and the active set, once a minute for every coin's cycle
        self.minute = MinuteInputs(self)
        self.transfers = TransferLog(self)  # Bybit: deposits / withdrawals from the account log
        self.active = ActiveCoins(self)  # the coins with price streams and order cycles
        self.cycle: OrderCycle | None = None
        self.reconciler: Reconciler | None = None

    # ------------------------------------------------------------------ views

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def stopped(self) -> asyncio.Event:
        """Set once the bot is stopping (for tasks that should end with it)."""
        return self._stop

    @property
    def balance(self) -> float:
        return self.book.balance

    @property
    def fills(self) -> list[LiveFill]:
        return self.book.fills

    @property
    def cycles(self) -> int:
        return self.cycle.cycles if self.cycle is not None else 0

    def ideal(self, c: Coin) -> list[LiveOrder]:
        assert self.cycle is not None
        return self.cycle.ideal(c)

    def position(self, c: Coin, j: int) -> tuple[float, float]:
        return self.book.position(c.symbol, j)

    # the strategy's book: the account less what belongs to depositors on their way out
    # (bot.live.vault_exits); the account itself without a vault
    def strategy_position(self, symbol: str, j: int) -> tuple[float, float]:
        if self.vault is not None:
            return self.vault.position(symbol, j)
        return self.book.position(symbol, j)

    def strategy_balance(self) -> float:
        return self.vault.balance() if self.vault is not None else self.book.balance

    def strategy_balance_peak(self) -> float:
        return self.vault.balance_peak() if self.vault is not None else self.book.balance_peak

    def open_orders(self, symbol: str) -> list[LiveOrder]:
        return list(self.book.coins[symbol].open.values())

    def streams_ready(self) -> bool:
        return self.feeds.ready()

    @property
    def listen_key(self) -> str | None:
        return self.feeds.listen_key

    @property
    def streams(self) -> Any:
        """The stream clients, once trading started (None before: still starting or refused)."""
        return self.feeds.streams

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        """Markets, leverage check (refuses with the reason), modes, the saved book, EMAs,
        then a reconciliation with the exchange before any order."""
        if self.all_markets:
            self.symbols, specs = await all_markets(self)
        else:
            check_stream_limit(self.adapter.kind, len(self.symbols))
            specs = await self.rest(self.adapter.load_markets, self.symbols)
        snap = await self.rest(self.adapter.fetch_account, self.symbols)
        self._check_leverage(specs, snap.balance)
        try:
            await self.adapter.setup_account(self.symbols, int(self.live.leverage))
        except PositionModeError as exc:
            raise StartupRefused(f"position mode: {exc}") from None
        self.attach_markets(specs, snap.balance)
        assert self.reconciler is not None
        for c in self.coins.values():
            self.feeds.load_emas(c)
            await self.feeds.seed_emas(c)
        self._coins_eligible()
        # the saved book (positions at their cursors) + the fills since = the exchange's,
        # unless something outside our orders changed it (then adopted, with a warning)
        if not await self.reconciler.sync(quiet=True):
            self.want_sync()  # the exchange moved during it: again, soon
        self.hard_stop.load()  # its equity needs the book and the prices
        await self.transfers.start()  # transfers since the saved cursor: the peaks move
        self.hard_stop.fresh = False  # (but not a hard stop that started at the equity now)
        self.active.refresh()  # before the streams: they subscribe the active coins' prices
        log.info(
            "started: %s, balance %.2f (peak %.2f), leverage %g",
            ", ".join(self.symbols),
            self.book.balance,
            self.book.balance_peak,
            self.live.leverage,
        )

    def _coins_eligible(self) -> None:
        """When each coin may open a position (the forager: approved, not ignored, at least
        minimum_coin_age_days since the exchange listed it; an unknown listing date counts as
        old)."""
        live = self.live
        first = np.array([self.coins[s].spec.listed_ms for s in self.symbols], dtype=np.int64)
        when = eligible_from_ms(
            self.symbols, live.approved_coins, live.ignored_coins, first, live.minimum_coin_age_days
        )
        for s, t in zip(self.symbols, when, strict=True):
            self.coins[s].eligible_from_ms = int(t)

    def attach_markets(self, specs: dict[str, MarketSpec], balance: float) -> None:
        """Coins, the saved book and the parts that work on them, for these markets."""
        for s in self.symbols:
            self.coins[s] = Coin(s, specs[s], specs[s].as_array())
        self.book = Book(
            self.state,
            self.symbols,
            {s: specs[s].qty_step for s in self.symbols},
            on_doubt_cleared=self.wake_all,
            on_adopt=lambda symbol, j, ours, theirs: self.notify(
                "position_changed", symbol=symbol, j=j, ours=ours, exchange=theirs
            ),
            on_transfer=self.hard_stop.on_transfer,
            explain_balance=bool(getattr(self.adapter, "transfers_from_log", False)),
        )
        self.book.on_unexplained = self.transfers.want
        self.book.load(balance)
        self.adapter.client_ids.load(self.state.get("client_id_generations"))
        self.cycle = OrderCycle(self)
        self.reconciler = Reconciler(self)

    def _check_leverage(self, specs: dict[str, MarketSpec], balance: float) -> None:
        lev = float(self.live.leverage)
        if lev != int(lev):
            raise StartupRefused(f"live.leverage = {lev:g}: exchanges take whole numbers")
        for s in self.symbols:
            res = check_config_leverage(self.config, lev, balance, specs[s].tiers)
            if not res.ok:
                raise StartupRefused(f"refusing to start on {s}: {res.reason}")

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Start and trade until :meth:`stop`; cancels our orders on stop if configured."""
        tasks: list[asyncio.Task] = []
        try:
            await self.start()
            assert self.cycle is not None and self.reconciler is not None
            self._ready.set()
            for name in self.feeds.stream_names():
                self.book.doubt(f"{name} stream down")  # until connected and recovered
            streams = self.feeds.make_streams()
            for c in self.coins.values():
                c.wake.set()  # closes and cancels at once; entries once the streams are up
            tasks = [
                asyncio.create_task(streams.run(self._stop), name="streams"),
                asyncio.create_task(self.reconciler.loop(), name="rest-sync"),
                asyncio.create_task(self.feeds.fallback_loop(), name="rest-fallback"),
            ]
            if self.adapter.uses_listen_key:
                tasks.append(asyncio.create_task(self.feeds.keepalive_loop(), name="listen-key"))
            tasks += [
                asyncio.create_task(self.cycle.loop(c), name=f"coin-{s}")
                for s, c in self.coins.items()
            ]
            if self.vault is not None:
                tasks.append(asyncio.create_task(self.vault.loop(), name="vault"))
            stop_task = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([*tasks, stop_task], return_when="FIRST_COMPLETED")
            self._stop.set()
            for t in done:
                if t is not stop_task and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if self._fatal is not None:
                raise self._fatal
        finally:
            # every task of ours ends with us, however we end (a stop, an error, a cancel
            # that stands for kill -9): nothing keeps trading on a dead bot's behalf
            self._stop.set()
            tasks += list(self._recoveries)
            if self._mode_check is not None:
                tasks.append(self._mode_check)
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self._ready.set()
            await self._shutdown()
            for r in results:
                if isinstance(r, AuthenticationError):
                    raise r

    def stop(self) -> None:
        """Ask the loop to end (safe from signal handlers)."""
        self._stop.set()

    def fatal(self, exc: BaseException) -> None:
        """Stop with ``exc`` as the reason (a condition retrying cannot fix)."""
        if self._fatal is None:
            self._fatal = exc
            self.errors.append(str(exc))
            log.error("stopping: %s", exc)
        self._stop.set()

    async def _shutdown(self) -> None:
        if self.live.cancel_orders_on_stop and self.book.coins:
            try:
                for cb in self.book.coins.values():
                    orders = list(cb.open.values())
                    for batch in batches(orders, self.live.max_orders_per_batch):
                        await self.adapter.run_batch(self.adapter.cancel_order, batch)
                    cb.open.clear()
                log.info("stopped: cancelled our open orders")
            except asyncio.CancelledError:
                pass
        self.save_client_ids()
        self.state.close()
        async with self._done:
            self._done.notify_all()

    def save_client_ids(self) -> None:
        ids = self.adapter.client_ids
        if ids.changed:
            self.state.set("client_id_generations", ids.generations)
            ids.changed = False

    # ------------------------------------------------------------------ signals between parts

    def wake_all(self) -> None:
        for c in self.coins.values():
            c.wake.set()

    def want_sync(self) -> None:
        if self.reconciler is not None:
            self.reconciler.sync_wanted.set()

    def book_fill(self, f: FillEvent) -> bool:
        """Book a fill (stream or REST catch-up alike); True if it was new."""
        if not self.book.fill(f):
            return False
        if f.remaining == 0.0:  # its order ended: on Bybit the id moves on
            self.adapter.client_ids.retire(f.client_id)
        self.save_client_ids()
        self.notify("fill", fill=self.book.fills[-1])
        return True

    def on_outside_change(self, symbol: str) -> None:
        """A position changed without a fill of ours (deleverage, ADL, manual)."""
        c = self.coins.get(symbol)
        if c is not None:
            c.wake.set()
        self.want_sync()

    def recover_after_connect(self) -> None:
        """After a (re)connect or a gap in klines: what we may have missed, by REST. One
        recovery at a time; asked again while one runs, it runs once more after it."""
        if self.stopping:
            return
        self.book.doubt("snapshot pending")
        if self._recovering:
            self._recover_again = True
            return
        self._recovering = True
        self.background(self._recover_until_caught_up())

    def background(self, coro: Any) -> None:
        """Run ``coro`` beside the loops, tracked: cancelled on stop, waited for in lockstep."""
        t = asyncio.get_running_loop().create_task(coro)
        self._recoveries.add(t)
        t.add_done_callback(self._recoveries.discard)

    async def _recover_until_caught_up(self) -> None:
        self._recover_again = True
        try:
            while self._recover_again and not self.stopping:
                self._recover_again = False
                await self.recover()
        finally:
            self._recovering = False

    async def recover(self) -> None:
        """Klines first (EMAs), then the reconciliation, then every coin's cycle.

        In this order the REST state is at least as new as the klines: a candle's fills are
        booked before its kline exists, so a cycle never sees a candle without its fills.
        """
        assert self.reconciler is not None
        try:
            for c in self.coins.values():
                await self.feeds.catch_up_klines(c)
            if not await self.reconciler.sync():
                self.want_sync()
        except ExchangeError as exc:
            log.warning("recovery after reconnect failed: %s; retrying by REST sync", exc)
            self.want_sync()
        self.wake_all()

    def position_mode_suspect(self) -> None:
        """An order was refused for the position mode: check it once, re-apply or stop."""
        self.book.doubt("position mode")
        if self._mode_check is None or self._mode_check.done():
            self._mode_check = asyncio.get_running_loop().create_task(self.verify_position_mode())

    async def verify_position_mode(self) -> None:
        async with self._mode_lock:  # one check at a time (a reset and a refusal may race)
            await self._verify_position_mode()

    async def _verify_position_mode(self) -> None:
        try:
            switched = await self.rest(self.adapter.ensure_hedge_mode)
        except PositionModeError as exc:
            self.fatal(StartupRefused(f"position mode: {exc}"))
            return
        except ExchangeError as exc:
            log.warning("position mode check failed: %s; trying again on the next refusal", exc)
            self.book.resolve("position mode")
            return
        if switched:
            log.warning("the account was not in hedge mode: switched it back to hedge mode")
            for s in self.symbols:  # leverage and margin type go with a fresh account
                try:
                    await self.adapter.setup_account([s], int(self.live.leverage))
                except ExchangeError as exc:
                    log.warning("%s: account set-up after the mode switch: %s", s, exc)
            self.want_sync()
        self.book.resolve("position mode")

    async def mark_done(self, c: Coin, target: int) -> None:
        if target > c.done_ts:
            c.done_ts = target
            async with self._done:
                self._done.notify_all()

    # ------------------------------------------------------------------ lockstep driver

    async def wait_ready(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def wait_done(self, ts: int, timeout: float = 30.0) -> None:
        """Lockstep: wait until every coin reconciled its orders after the kline opened at
        ``ts`` (raises TimeoutError; ends early if the bot stopped)."""

        def done() -> bool:
            return self.stopping or all(c.done_ts >= ts for c in self.coins.values())

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._done:
            await asyncio.wait_for(self._done.wait_for(done), timeout)
        # Then let anything still bringing state in settle: a recovery after a (re)connect
        # (REST klines and fills, then a wake) and the cycles it woke. The venue must not move
        # to the next candle under them, or they would reconcile against a newer account.
        while not self.stopping and (
            self._recoveries
            or (
                self.reconciler is not None
                and (self.reconciler.running or self.reconciler.sync_wanted.is_set())
            )
            or any(c.busy or c.wake.is_set() for c in self.coins.values())
        ):
            if loop.time() > deadline:
                raise TimeoutError(f"the bot did not settle after the kline at {ts}")
            await asyncio.sleep(0.002)
        if self.stopping and not all(c.done_ts >= ts for c in self.coins.values()):
            raise RuntimeError("the bot stopped: " + "; ".join(self.errors[-3:]))

    # ------------------------------------------------------------------ REST

    async def rest(self, fn: Any, *args: Any, **kw: Any) -> Any:
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

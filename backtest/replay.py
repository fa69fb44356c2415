"""Replay: the live bot against the simulated venue, in lockstep, compared with the backtester.

The venue (backtest.venue) serves the candles on 127.0.0.1; the live bot talks to it through
real ccxt HTTP and real websockets. Lockstep, so the outcome does not depend on machine speed:

1. the venue starts with the warm-up candles (``bot.config.warmup_candles``) as history,
   served as REST klines: the bot seeds its EMAs from exactly the candles the backtester warms
   up on, places its first orders, and signals done;
2. for each candle k: the venue applies it (fills by the shared candle rule), sends the user
   stream events, then the aggTrades and the closed kline (one connection carries both, so
   the fills come first); the bot updates its EMAs, reconciles its orders to the core's ideal
   orders and signals done (:meth:`LiveBot.wait_done`); only then does the venue advance.

``exchange="bybit"`` runs the same replay through the venue's Bybit v5 face (``/v5/...`` REST,
``/v5/public/linear`` and ``/v5/private`` websockets, same ports): there the private messages
come on their own socket, so at each closed kline the bot takes candle k's fills, balance and
positions by REST before its cycle (``LiveBot._candle_state``).

Outside events (``events``, :mod:`backtest.events`) are scheduled on the venue's account and
given to the backtester: both apply them at the top of the same candle through
``bot.core.book.apply_event``; the venue reports them on the user streams as an exchange does.

``scenario`` (:mod:`backtest.venue.scenario`) runs the venue's risk engine in its candle loop
(:mod:`backtest.venue.risk_loop`): the scenario's traders are liquidated step by step, the
insurance fund pays or fills, and deleverage events close the bot's profitable positions at the
bankrupt trader's price. Those deleverages are not the bot's fills: the backtester gets each as
an outside event (a ``reduce`` at its price, applied at the top of the next candle, where the
venue's booking leaves the bot too), and the comparison leaves them out.

Then the backtester runs on the same candles and the runs are compared:
- the live bot's fills against the backtester's, in order (candle, symbol, side, price, qty);
  reductions by outside events are not fills of the bot's and are left out;
- the exchange's trades (the venue's ledger: what it charged) against the backtester's fills, in
  order, with their fees, liquidation fills included;
- the final balance (the bot's, which it takes from the exchange) and equity (that balance plus
  the bot's positions marked at the last close) against the backtester's.
The first place where they differ is reported as ``first_divergence``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backtest.data import Candles
from backtest.engine import F_FEE, F_K, F_KIND, F_PRICE, F_QTY, F_SIDE, F_SYMBOL
from backtest.events import OutsideEvent, events_array
from backtest.runner import funding_plan, run_backtest
from backtest.venue.matching import ADL_CLIENT_ID
from backtest.venue.risk_loop import VenueRisk
from backtest.venue.scenario import Scenario
from backtest.venue.server import Venue, VenueConfig
from backtest.venue.wire import decimals
from bot.config import Config, warmup_candles
from bot.core.account import unrealized_pnl
from bot.core.params import KIND_LIQUIDATION, KIND_NAMES, KIND_OUTSIDE
from bot.exchange.registry import make_adapter
from bot.live.bot import LiveBot
from bot.live.pacing import Lockstep
from bot.markets import market_spec

__all__ = ["ReplayResult", "compare_fills", "first_divergence", "replay", "round_to_ticks"]

log = logging.getLogger("gridbot.live.replay")

ADL_IDS = (ADL_CLIENT_ID, "AdlTrade")  # how each dialect names an exchange's deleverage fill

StepHook = Callable[[int, Venue, LiveBot], Awaitable[None] | None]


@dataclass
class ReplayResult:
    fills_live: list[dict[str, Any]]
    fills_backtest: list[dict[str, Any]]
    matched: int
    mismatches: list[dict[str, Any]]
    candles: int
    trade_start: int
    seconds: float = 0.0
    bot_errors: list[str] = field(default_factory=list)
    open_orders_ok: bool = True
    trades_venue: list[dict[str, Any]] = field(default_factory=list)  # with fees
    final_balance_live: float = math.nan
    final_balance_backtest: float = math.nan
    final_equity_live: float = math.nan
    final_equity_backtest: float = math.nan
    liquidated_live: bool = False
    liquidated_backtest: bool = False
    first_divergence: dict[str, Any] | None = None
    risk: dict[str, Any] | None = None  # the venue's risk engine (--scenario): its events

    @property
    def ok(self) -> bool:
        """Every fill matched, in order, with the fees, the final balance and equity."""
        return not self.mismatches and self.first_divergence is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "final_balance_live": self.final_balance_live,
            "final_balance_backtest": self.final_balance_backtest,
            "final_equity_live": self.final_equity_live,
            "final_equity_backtest": self.final_equity_backtest,
            "liquidated_live": self.liquidated_live,
            "liquidated_backtest": self.liquidated_backtest,
            "first_divergence": self.first_divergence,
            "fills_live": self.fills_live,
            "fills_backtest": self.fills_backtest,
            "n_fills_live": len(self.fills_live),
            "n_fills_backtest": len(self.fills_backtest),
            "matched": self.matched,
            "mismatches": self.mismatches,
            "candles": self.candles,
            "trade_start": self.trade_start,
            "seconds": round(self.seconds, 3),
            "bot_errors": self.bot_errors,
            "open_orders_ok": self.open_orders_ok,
            "trades_venue": self.trades_venue,
            **({"risk": self.risk} if self.risk is not None else {}),
        }


def round_to_ticks(candles: Candles) -> Candles:
    """Prices on each market's tick, exactly as the venue prints them (spot data can carry
    finer decimals than the perpetual's price step; both sides must see the same numbers)."""
    ohlcv = np.array(candles.ohlcv, dtype=np.float64, copy=True)
    for i, s in enumerate(candles.symbols):
        pd = decimals(market_spec(s).price_step)
        ohlcv[i, :, :4] = [[float(f"{x:.{pd}f}") for x in row] for row in ohlcv[i, :, :4]]
    return Candles(
        candles.symbols,
        candles.timestamps,
        ohlcv,
        candles.timeframe_ms,
        candles.filled_candles,
        candles.sources,
    )


def _key(d: dict[str, Any]) -> tuple:
    return (d["k"], d["symbol"], d["side"], round(d["price"], 10), round(d["qty"], 10))


def compare_fills(
    live: list[dict[str, Any]], bt: list[dict[str, Any]]
) -> tuple[int, list[dict[str, Any]]]:
    """(matched, mismatches) between two fill lists, as multisets of
    (candle, symbol, side, price, qty): the order within a candle is not compared."""
    a, b = Counter(_key(f) for f in live), Counter(_key(f) for f in bt)
    matched = sum((a & b).values())
    mism = [
        {"where": "live_only", "k": k[0], "symbol": k[1], "side": k[2], "price": k[3], "qty": k[4]}
        for k in sorted((a - b).elements())
    ] + [
        {"where": "backtest_only", "k": k[0], "symbol": k[1], "side": k[2], "price": k[3], "qty": k[4]}
        for k in sorted((b - a).elements())
    ]  # fmt: skip
    return matched, sorted(mism, key=lambda m: (m["k"], m["symbol"]))


def _same(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def first_divergence(
    live: list[dict[str, Any]],
    bt: list[dict[str, Any]],
    venue: list[dict[str, Any]] | None = None,
    finals: dict[str, tuple[float, float]] | None = None,
    *,
    tol: float = 1e-9,
) -> dict[str, Any] | None:
    """The first place where two runs differ, or None.

    In this order: the fill lists in order (``live`` against ``bt``: candle, symbol, side,
    price, qty), then ``venue`` (the exchange's trades, with fees) against ``bt``, then each of
    ``finals`` (name -> (live, backtest)). Numbers agree within ``tol`` relative (the wire
    prints 8 decimals; sums in another order differ in the last bits).
    """
    fields = ("k", "symbol", "side", "price", "qty")
    for name, other, keys in (("fill", live, fields), ("fee", venue, (*fields, "fee"))):
        if other is None:
            continue
        for i in range(max(len(other), len(bt))):
            a = other[i] if i < len(other) else None
            b = bt[i] if i < len(bt) else None
            if (
                a is None
                or b is None
                or any(
                    (not _same(a[f], b[f], tol)) if isinstance(a[f], float) else a[f] != b[f]
                    for f in keys
                )
            ):
                return {"what": name, "index": i, "live": a, "backtest": b}
    for name, (live_value, bt_value) in (finals or {}).items():
        if not _same(live_value, bt_value, 1e-8):
            return {"what": name, "live": live_value, "backtest": bt_value}
    return None


def replay_config(
    config: Config, state_dir: str, overrides: dict[str, Any] | None = None
) -> Config:
    """The config the bot runs under in replay: no delay, zero tolerances (exact orders)."""
    live = config.live.model_copy(
        update={
            **(overrides or {}),
            "execution_delay_seconds": 0.0,
            "price_distance_threshold": 0.0,
            "qty_distance_threshold": 0.0,
            "state_dir": state_dir,
            "cancel_orders_on_stop": False,
        }
    )
    return config.model_copy(update={"live": live})


async def _wait_subscribed(venue: Venue, bot: LiveBot, timeout: float = 20.0) -> None:
    """Until the venue has our market streams and user stream registered (bounded)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    names = [f"{s.lower()}@kline_1m" for s in bot.symbols]
    while loop.time() < end:
        if bot.adapter.kind == "bybit":
            if bot.streams_ready():  # both subscriptions acknowledged by the venue
                return
        else:
            lk = bot.listen_key
            if lk and all(venue.streams.has_subscribers(n) for n in [*names, lk]):
                return
        await asyncio.sleep(0.01)
    raise TimeoutError("the bot did not subscribe to the venue's streams")


async def replay(  # noqa: C901 -- the lockstep driver: start, kills, compare (debt)
    config: Config,
    candles: Candles,
    *,
    state_dir: str | None = None,
    step_timeout_seconds: float = 30.0,
    on_step: StepHook | None = None,
    after_step: StepHook | None = None,
    final_check: Callable[[Venue, LiveBot], Awaitable[None] | None] | None = None,
    restart_at: frozenset[int] | set[int] = frozenset(),
    before_restart: Callable[[Venue, LiveBot], None] | None = None,
    kill_at: frozenset[int] | set[int] = frozenset(),
    compare: bool = True,
    live_overrides: dict[str, Any] | None = None,
    exchange: str = "binance",
    events: list[OutsideEvent] | tuple[OutsideEvent, ...] = (),
    scenario: Scenario | None = None,
    pacing: Callable[[], Lockstep] = Lockstep,
) -> ReplayResult:
    """Run the live bot in lockstep over ``candles`` and compare with the backtester.

    ``exchange``: which of the venue's faces the bot trades, ``binance`` or ``bybit``.
    ``restart_at``: after these candles, stop the bot cleanly and start a new one on its state.
    ``kill_at``: before these candles, kill the bot (its task cancelled wherever it is, no
    clean stop, as kill -9), let the venue apply the candle (fills the bot never hears of),
    then start a new one on the same state.
    ``events``: outside events, applied by the venue to the bot's account and by the
    backtester alike.
    ``pacing``: makes each bot's lockstep pacing (benchmarks compare variants of it)."""
    if exchange not in ("binance", "bybit"):
        raise ValueError(f"exchange must be 'binance' or 'bybit', not {exchange!r}")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    candles = round_to_ticks(candles)
    n = len(candles.timestamps)
    trade_start = min(warmup_candles(config, candles.timeframe_ms), n - 1)
    start_index = max(trade_start, 1)  # the backtester trades from k >= 1
    tmp = None
    if state_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gridbot-replay-")
        state_dir = tmp.name
    cfg = replay_config(config, str(Path(state_dir)), live_overrides)
    venue = Venue(
        candles,
        VenueConfig(
            maker_fee=config.backtest.maker_fee,
            funding_rate=config.backtest.funding_rate_8h,
            weight_limit_per_minute=10**9,  # lockstep runs minutes of candles per second
            start_index=start_index,
        ),
    )
    api_key, api_secret = secrets.token_hex(16), secrets.token_hex(32)
    venue.add_account(api_key, api_secret, config.backtest.starting_balance)
    if events:
        venue.engine.schedule_events(api_key, events_array(events, candles.symbols))
    plan = funding_plan(config, candles)
    if "history" in plan.source.values():  # charged as the backtest charges it
        venue.engine.funding_table = plan.rates
    if scenario is not None:
        venue.risk = VenueRisk(venue, scenario)
    await venue.start()
    adapter = make_adapter(exchange, api_key, api_secret, base_url=venue.rest_url, throttle=False)

    def new_bot() -> LiveBot:
        return LiveBot(cfg, adapter, symbols=candles.symbols, ws_url=venue.ws_url, pacing=pacing())

    async def start(b: LiveBot, ts_done: int) -> asyncio.Task:
        t = asyncio.create_task(b.run(), name="live-bot")
        await _first(b.wait_ready(), t)
        await _first(_wait_subscribed(venue, b), t)
        await _first(b.wait_done(ts_done, step_timeout_seconds), t)
        return t

    bot = new_bot()
    bots = [bot]
    ts = candles.timestamps
    task: asyncio.Task | None = None
    try:
        task = await start(bot, int(ts[start_index - 1]))
        for k in range(start_index, n):
            # lockstep runs many candles per wall second: the venue's per-wall-minute weight
            # window is not under test here (and summing a huge window costs O(n) per call)
            venue.ip_budget.reset()
            if k in kill_at:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await venue.advance(1)  # fills while the bot is dead
                bot = new_bot()
                bots.append(bot)
                task = await start(bot, int(ts[k - 1]))
            else:
                await venue.advance(1)
            if on_step is not None:
                r = on_step(k, venue, bot)
                if asyncio.iscoroutine(r):
                    await r
            await _first(bot.wait_done(int(ts[k]), step_timeout_seconds), task)
            if k in restart_at:  # stop the bot and resume a new one on the same state dir
                if before_restart is not None:
                    before_restart(venue, bot)
                bot.stop()
                await asyncio.wait_for(task, 10.0)
                bot = new_bot()
                bots.append(bot)
                task = await start(bot, int(ts[k]))
            if after_step is not None:
                r = after_step(k, venue, bot)
                if asyncio.iscoroutine(r):
                    await r
        open_ok = all(
            sorted((o.pside, o.qty, o.price) for o in bot.open_orders(s))
            == sorted((o.pside, o.qty, o.price) for o in bot.ideal(c))
            for s, c in bot.coins.items()
        )
        if final_check is not None:
            r = final_check(venue, bot)
            if asyncio.iscoroutine(r):
                await r
        final_balance_live = bot.balance
        closes = {s: float(candles.ohlcv[i, -1, 3]) for i, s in enumerate(candles.symbols)}
        final_equity_live = final_balance_live + sum(
            unrealized_pnl(side, *bot.position(c, j), closes[s])
            for s, c in bot.coins.items()
            for j, side in enumerate((1, -1))
        )
        acct = venue.engine.accounts[api_key]
        liquidated_live = acct.liquidated
        trades_venue = [
            {
                "k": int(np.searchsorted(candles.timestamps, f.time_ms - candles.timeframe_ms + 1)),
                "symbol": f.symbol,
                "side": 1 if f.position_side == "LONG" else -1,
                "price": f.price,
                "qty": f.qty if f.side == "BUY" else -f.qty,
                "fee": f.commission,
                "liquidation": f.client_order_id.startswith("autoclose"),
            }
            for f in acct.trades
            if f.client_order_id != ADL_CLIENT_ID  # the exchange's deleverage: not ours
        ]
    finally:
        bot.stop()
        if task is not None:
            try:
                await asyncio.wait_for(task, 10.0)
            except Exception as exc:  # the bot's own failure is reported below
                log.warning("bot ended with %r", exc)
        await adapter.close()
        await venue.stop()
        if tmp is not None:
            tmp.cleanup()
    tf = candles.timeframe_ms
    fills_live = [
        {
            "k": int(np.searchsorted(ts, f.time_ms - tf + 1)),
            "symbol": f.symbol,
            "side": f.pside,
            "price": f.price,
            "qty": f.qty,
        }
        for b in bots
        for f in b.fills
        if f.client_id not in ADL_IDS  # the exchange's deleverage: an outside event
    ]
    fills_bt: list[dict[str, Any]] = []
    bal_bt = eq_bt = math.nan
    liq_bt = False
    if venue.risk is not None:  # the venue's deleverages of the bot, for the backtester
        events = [*events, *(
            OutsideEvent(d["time_ms"], "reduce", amount=d["qty"], symbol=venue.risk.symbol,
                         side=1 if d["side"] == "long" else -1, price=d["price"])
            for d in venue.risk.booked
        )]  # fmt: skip
    result_risk = venue.risk.result() if venue.risk is not None else None
    if compare:
        out = run_backtest(config, candles, events).output
        fills_bt = [
            {
                "k": int(r[F_K]),
                "symbol": candles.symbols[int(r[F_SYMBOL])],
                "side": int(r[F_SIDE]),
                "price": float(r[F_PRICE]),
                "qty": float(r[F_QTY]),
                "fee": float(r[F_FEE]),
                "kind": KIND_NAMES.get(int(r[F_KIND]), str(int(r[F_KIND]))),
                "liquidation": int(r[F_KIND]) == KIND_LIQUIDATION,
            }
            for r in out.fills
            if int(r[F_KIND]) != KIND_OUTSIDE  # not a fill of the bot's: the exchange's doing
        ]
        bal_bt, eq_bt = float(out.balance[-1]), float(out.equity[-1])
        liq_bt = out.liquidated_k >= 0
    matched, mism = compare_fills(fills_live, fills_bt) if compare else (0, [])
    divergence = (
        first_divergence(
            fills_live,
            fills_bt,
            trades_venue,
            {
                "final_balance": (final_balance_live, bal_bt),
                "final_equity": (final_equity_live, eq_bt),
            },
        )
        if compare
        else None
    )
    return ReplayResult(
        fills_live,
        fills_bt,
        matched,
        mism,
        n,
        start_index,
        loop.time() - t0,
        [e for b in bots for e in b.errors],
        open_ok,
        trades_venue,
        final_balance_live,
        bal_bt,
        final_equity_live,
        eq_bt,
        liquidated_live,
        liq_bt,
        divergence,
        result_risk,
    )


async def _first(aw: Awaitable[Any], task: asyncio.Task) -> Any:
    """Await ``aw`` unless the bot task ends first (then raise its error)."""
    fut = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({fut, task}, return_when="FIRST_COMPLETED")
    if fut in done:
        return fut.result()
    fut.cancel()
    exc = task.exception() if not task.cancelled() else None
    raise RuntimeError(f"the live bot stopped: {exc!r}") from exc

"""Bybit deposits and withdrawals told apart from losses: the wallet topic gives no reason, the
account log (``/v5/account/transaction-log``, served by the venue's Bybit dialect) does. The
live bot on the venue through real ccxt and websockets: a withdrawal of 40% with positions
open and the hard stop at red 0.25 moves both peaks as on Binance (no red), a deposit too;
a withdrawal while the private stream is down plus a restart is booked once; a log that
fails at the first ask is retried while the minute is not taken as a loss."""

from __future__ import annotations

import asyncio

import pytest

from backtest.events import OutsideEvent
from backtest.replay import replay, round_to_ticks
from bot.config import parse_config, warmup_candles
from bot.core import hard_stop as H
from tests.test_live_replay import TIGHT_GRID_SIDE, sample


def _config(**over: object):
    stop = {"enabled": True, "red_threshold": 0.25, "ema_span_minutes": 5,
            "cooldown_minutes_after_red": 0}  # fmt: skip
    side = {**TIGHT_GRID_SIDE, **over}
    return parse_config(
        {
            "bot": {"long": side, "short": {**side, "enabled": True},
                    "common": {"equity_hard_stop_loss": stop}},
            "live": {"leverage": 10},
            "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"], "starting_balance": 1000},
        }
    )  # fmt: skip


def _run(exchange: str, config, candles, events, k_event: int):
    """Replay in lockstep; per step the book's balance peak, the hard stop's peak and tier,
    and whether the account held a position when the event came."""
    steps: list[tuple[int, float, float, int]] = []
    held: list[bool] = []
    bots: list = []

    def watch(k, venue, bot):
        if not bots or bots[-1] is not bot:
            bots.append(bot)
        acct = next(iter(venue.engine.accounts.values()))
        if k == k_event - 1:
            held.append(any(p.amount != 0.0 for p in acct.positions.values()))
        steps.append((k, bot.book.balance_peak, float(bot.hard_stop.h[H.H_PEAK]),
                      bot.hard_stop.tier))  # fmt: skip

    rp = asyncio.run(replay(config, candles, exchange=exchange, events=events, after_step=watch))
    return rp, steps, held, bots


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "amount"), [("withdraw", 0.4), ("deposit", 500.0)])
def test_a_transfer_moves_both_peaks_on_bybit_as_on_binance(kind, amount):
    config = _config()
    candles = round_to_ticks(sample(3))
    k = warmup_candles(config, 60_000) + 90
    t = int(candles.timestamps[k])
    ev = (
        OutsideEvent(t - 59_999, "withdraw", fraction=amount)
        if kind == "withdraw"
        else OutsideEvent(t - 59_999, "deposit", amount=amount)
    )
    runs = {ex: _run(ex, config, candles, [ev], k) for ex in ("binance", "bybit")}
    for ex, (rp, steps, held, bots) in runs.items():
        assert rp.bot_errors == [], ex
        assert held == [True], f"{ex}: positions open when the transfer came"
        # the live bot's fills equal the backtester's (which scales its peak by the transfer):
        # the unstuck allowance moved the same way
        assert rp.first_divergence is None, (ex, rp.first_divergence)
        assert all(tier != H.TIER_RED for *_, tier in steps), f"{ex}: red on a transfer"
        assert sum(b.hard_stop.h[H.H_TRIGGERS] for b in bots) == 0
    (_, bn, _, _), (_, by, _, by_bots) = runs["binance"], runs["bybit"]

    def factors(steps):
        before = next(s for s in steps if s[0] == k - 1)
        after = next(s for s in steps if s[0] == k)
        return after[1] / before[1], after[2] / before[2]  # the book's, the hard stop's

    book_bn, stop_bn = factors(bn)
    book_by, stop_by = factors(by)
    lo, hi = (0.55, 0.65) if kind == "withdraw" else (1.3, 1.7)
    assert lo < book_by < hi and lo < stop_by < hi  # 40% out / 500 in: the balance's factor
    assert book_by == pytest.approx(book_bn, rel=1e-3)
    assert stop_by == pytest.approx(stop_bn, rel=1e-3)
    # and they stay together to the end (the hard stop's peak: the same factor, the equity
    # taken a candle apart at most)
    assert by[-1][1] == pytest.approx(bn[-1][1], rel=1e-3)
    assert by[-1][2] == pytest.approx(bn[-1][2], rel=1e-3)
    # Bybit learned it from the account log, once
    booked = [r for b in by_bots for r in b.transfers.booked]
    assert len(booked) == 1
    assert booked[0].kind == ("TRANSFER_OUT" if kind == "withdraw" else "TRANSFER_IN")
    assert all(not b.book.unexplained for b in by_bots)


# ---------------------------------------------------------------------- real time (not lockstep)


class _Session:
    """The venue's Bybit dialect and live bots (one at a time) on one state dir, in real time:
    the venue moves on its own clock while the bot reacts to its streams."""

    def __init__(self, tmp, config, candles) -> None:
        from backtest.replay import replay_config
        from backtest.venue.server import Venue, VenueConfig

        self.config, self.candles = config, round_to_ticks(candles)
        start = max(1, warmup_candles(config, 60_000))
        self.venue = Venue(
            self.candles,
            VenueConfig(maker_fee=config.backtest.maker_fee, weight_limit_per_minute=10**9,
                        start_index=start, funding_rate=0.0),
        )  # fmt: skip
        self.key, self.secret = "k" * 32, "s" * 64
        self.venue.add_account(self.key, self.secret, config.backtest.starting_balance)
        self.cfg = replay_config(config, str(tmp), {"stream_silence_timeout_seconds": 1.0})
        self.bots: list = []
        self.task: asyncio.Task | None = None
        self.adapter = None

    @property
    def bot(self):
        return self.bots[-1]

    @property
    def acct(self):
        return self.venue.engine.accounts[self.key]

    async def start_bot(self, *, reset_hard_stop: bool = False) -> None:
        from bot.exchange.registry import make_adapter
        from bot.live.bot import LiveBot

        self.adapter = make_adapter("bybit", self.key, self.secret,
                                    base_url=self.venue.rest_url, throttle=False)  # fmt: skip
        bot = LiveBot(self.cfg, self.adapter, symbols=self.candles.symbols,
                      ws_url=self.venue.ws_url, reset_hard_stop=reset_hard_stop)  # fmt: skip
        self.bots.append(bot)
        self.task = asyncio.create_task(bot.run())
        await bot.wait_ready(timeout=60)
        await asyncio.sleep(0.5)

    async def stop_bot(self) -> None:
        assert self.task is not None and self.adapter is not None
        self.bot.stop()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.adapter.close()
        assert self.bot.errors == [] or all("stream" in e for e in self.bot.errors)

    async def run(self, candles: int, seconds_each: float = 0.1) -> None:
        for _ in range(candles):
            await self.venue.advance(1)
            await asyncio.sleep(seconds_each)

    def withdraw(self, fraction: float) -> float:
        """Apply a withdrawal of ``fraction`` of the balance now; returns the amount."""
        from backtest.events import events_array

        before = self.acct.balance
        ev = OutsideEvent(self.venue.engine.now_ms, "withdraw", fraction=fraction)
        self.venue.engine.apply_event(self.key, events_array([ev], self.candles.symbols)[0])
        self.venue.flush_events()
        return before - self.acct.balance

    async def until(self, cond, timeout: float = 20.0) -> None:
        end = asyncio.get_running_loop().time() + timeout
        while not cond():
            assert asyncio.get_running_loop().time() < end, "timed out"
            await asyncio.sleep(0.05)


async def _open_positions(s: _Session) -> None:
    for _ in range(200):
        await s.run(1, 0.05)
        if any(p.amount != 0.0 for p in s.acct.positions.values()):
            return
    raise AssertionError("no position opened")


@pytest.mark.slow
@pytest.mark.parametrize("learned_before_restart", [True, False])
def test_withdrawal_while_the_private_stream_is_down_and_a_restart_is_booked_once(
    tmp_path, learned_before_restart
):
    async def go() -> None:
        s = _Session(tmp_path, _config(), sample(4))
        await s.venue.start()
        try:
            await s.start_bot()
            await _open_positions(s)
            peak0 = float(s.bot.hard_stop.h[H.H_PEAK])
            book_peak0 = s.bot.book.balance_peak
            s.venue.set_ws_silent(True, hang=True)  # the private stream is down: no wallet
            amount = s.withdraw(0.4)
            assert amount > 0
            if learned_before_restart:
                # the stream's silence is noticed, it reconnects, REST brings the balance
                s.venue.set_ws_silent(False)
                await s.until(lambda: len(s.bot.transfers.booked) == 1)
            await s.stop_bot()
            s.venue.set_ws_silent(False)
            await s.start_bot()  # learns it at start-up if the first one did not
            await s.run(5)
            await s.until(lambda: not s.bot.book.unexplained)
            booked = [r for b in s.bots for r in b.transfers.booked]
            assert len(booked) == 1, booked
            assert booked[0].change == pytest.approx(-amount, rel=1e-6)
            first, second = s.bots
            assert len(first.transfers.booked) == (1 if learned_before_restart else 0)
            assert len(second.transfers.booked) == (0 if learned_before_restart else 1)
            # both peaks scaled once (twice would be ~0.36)
            h = s.bot.hard_stop.h
            assert 0.55 < h[H.H_PEAK] / peak0 < 0.65
            assert 0.55 < s.bot.book.balance_peak / book_peak0 < 0.65
            assert h[H.H_TRIGGERS] == 0 and s.bot.hard_stop.tier != H.TIER_RED
            await s.stop_bot()
        finally:
            await s.venue.stop()

    asyncio.run(go())


@pytest.mark.slow
def test_a_withdrawal_before_a_hard_stop_reset_moves_the_book_peak_only(tmp_path):
    """Made while the bot was down, read from the log at the next start: the balance peak
    scales, but a hard stop started afresh (--reset-hard-stop) already has its peak at the
    equity after it and is not scaled again."""

    async def go() -> None:
        s = _Session(tmp_path, _config(), sample(4))
        await s.venue.start()
        try:
            await s.start_bot()
            await _open_positions(s)
            book_peak0 = s.bot.book.balance_peak
            await s.stop_bot()
            s.withdraw(0.4)
            await s.start_bot(reset_hard_stop=True)
            bot = s.bot
            assert len(bot.transfers.booked) == 1
            assert 0.55 < bot.book.balance_peak / book_peak0 < 0.65
            assert bot.hard_stop.h[H.H_PEAK] == pytest.approx(bot.hard_stop.equity(), rel=1e-3)
            assert not bot.hard_stop.fresh  # transfers from now on move it
            await s.stop_bot()
        finally:
            await s.venue.stop()

    asyncio.run(go())


@pytest.mark.slow
def test_a_failing_account_log_is_retried_and_the_drop_is_not_a_drawdown(tmp_path, caplog):
    async def go() -> None:
        s = _Session(tmp_path, _config(), sample(4))
        await s.venue.start()
        try:
            await s.start_bot()
            await _open_positions(s)
            peak0 = float(s.bot.hard_stop.h[H.H_PEAK])
            asks0 = s.bot.transfers.asks
            # the first asks of the log fail (gateway 503), for a few seconds of candles
            s.venue.fail_rest(503, 4, path="/v5/account/transaction-log")
            s.withdraw(0.4)
            await s.until(lambda: s.bot.book.unexplained, timeout=5)
            await s.run(15, 0.25)  # minutes close while the log cannot be read
            await s.until(lambda: len(s.bot.transfers.booked) == 1, timeout=60)
            await s.run(10)
            hs = s.bot.hard_stop
            assert hs.skipped, "no minute closed while the change was unexplained"
            assert hs.h[H.H_TRIGGERS] == 0
            assert all(t != H.TIER_RED for _, t in hs.tiers)
            assert 0.55 < hs.h[H.H_PEAK] / peak0 < 0.65
            assert s.bot.transfers.asks > asks0
            assert not s.bot.book.unexplained
            assert not s.venue.faults.rest_faults  # every injected failure was met
            await s.stop_bot()
        finally:
            await s.venue.stop()

    with caplog.at_level("WARNING"):
        asyncio.run(go())
    text = caplog.text
    assert "not explained by our fills" in text
    assert "not sampled" in text


# ---------------------------------------------------------------------- the venue's log


def test_venue_serves_the_transaction_log_paged_in_bybits_format_and_refuses_bad_asks():
    """Trades, funding settlements and transfers, newest first, paged by ``nextPageCursor``;
    the adapter reads them all (oldest first) and each row's balance chains to the next."""
    from backtest.events import events_array
    from backtest.venue.server import Venue, VenueConfig
    from bot.errors import ExchangeError
    from bot.exchange.registry import make_adapter

    async def go() -> None:
        venue = Venue(round_to_ticks(sample(0.5)), VenueConfig(start_index=60))
        key, secret = "k" * 32, "s" * 64
        acct = venue.add_account(key, secret, 1000.0)
        await venue.start()
        ad = make_adapter("bybit", key, secret, base_url=venue.rest_url, throttle=False)
        try:
            eng = venue.engine
            eng.set_position_mode(key, True)
            t0 = eng.now_ms
            first = await ad.fetch_ledger(-1)  # a fresh account: nothing
            assert first == []
            for _ in range(30):  # 60 trades: more than a page of 50
                eng.place_order(key, "DOGEUSDT", "BUY", "MARKET", 100.0, position_side="LONG")
                eng.place_order(key, "DOGEUSDT", "SELL", "MARKET", 100.0, position_side="LONG")
            eng.place_order(key, "BTCUSDT", "BUY", "MARKET", 0.01, position_side="LONG")
            eng._funding({"BTCUSDT": eng.prices["BTCUSDT"]}, t0, {"BTCUSDT": 0.001})
            for ev in (OutsideEvent(t0, "withdraw", fraction=0.25),
                       OutsideEvent(t0, "deposit", amount=100.0)):  # fmt: skip
                eng.apply_event(key, events_array([ev], venue.candles.symbols)[0])
            rows = await ad.fetch_ledger(t0)
            kinds = [r.kind for r in rows]
            assert kinds.count("TRADE") == 61 and kinds.count("SETTLEMENT") == 1
            assert kinds[-2:] == ["TRANSFER_OUT", "TRANSFER_IN"]  # oldest first
            assert len({r.row_id for r in rows}) == len(rows)
            assert rows[-1].balance_after == pytest.approx(acct.balance, abs=1e-6)
            for a, b in zip(rows, rows[1:], strict=False):
                assert b.balance_after - b.change == pytest.approx(a.balance_after, abs=1e-6)
            out, dep = rows[-2], rows[-1]
            assert out.is_transfer and dep.is_transfer and dep.change == pytest.approx(100.0)
            assert out.change == pytest.approx(-0.25 * (out.balance_after - out.change))
            # from a cursor: the rows at and after it only
            assert [r.row_id for r in await ad.fetch_ledger(t0 + 1)] == []
            # Bybit's refusals: more than 7 days, not the unified account
            q = {"accountType": "UNIFIED", "startTime": t0, "endTime": t0 + 8 * 86_400_000}
            with pytest.raises(ExchangeError, match="7 days"):
                await ad._call(ad.ex.privateGetV5AccountTransactionLog, q)
            with pytest.raises(ExchangeError, match="UNIFIED"):
                await ad._call(ad.ex.privateGetV5AccountTransactionLog, {"accountType": "SPOT"})
            # a linear filter hides the transfers (they belong to no category), as on Bybit
            raw = await ad._call(ad.ex.privateGetV5AccountTransactionLog,
                                 {"category": "linear", "startTime": t0, "limit": 50})  # fmt: skip
            assert raw["result"]["nextPageCursor"] == "50"
            assert {r["type"] for r in raw["result"]["list"]} <= {"TRADE", "SETTLEMENT"}
            row = raw["result"]["list"][0]
            for field in ("id", "transactionTime", "type", "change", "cashBalance", "currency",
                          "cashFlow", "fee", "funding", "tradePrice", "orderLinkId"):  # fmt: skip
                assert isinstance(row[field], str), field
        finally:
            await ad.close()
            await venue.stop()

    asyncio.run(go())

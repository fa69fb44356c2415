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

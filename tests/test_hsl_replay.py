"""The equity hard stop through the live bot and the simulated venue, in lockstep: fill for
fill the backtester's (its market closes included), the same tier at every minute; and with
the fills learned by REST only (Bybit's lockstep) plus a position opened by hand during the
cooldown: closed at the next sample, nothing placed while halted, the cooldown counted again
from that close."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from backtest.replay import replay, round_to_ticks
from backtest.runner import run_backtest
from bot.config import parse_config
from bot.core import hard_stop as H
from bot.live.bot import LiveBot
from bot.live.status_snapshot import build_status
from tests.test_live_replay import TIGHT_GRID_SIDE, sample


def _config(**hsl: object):
    side = {**TIGHT_GRID_SIDE, "unstuck_close_pct": 0.0, "total_wallet_exposure_limit": 3.0}
    stop = {"enabled": True, "red_threshold": 0.01, "ema_span_minutes": 5,
            "cooldown_minutes_after_red": 30, **hsl}  # fmt: skip
    return parse_config(
        {
            "bot": {"long": side, "short": {**side, "enabled": True},
                    "common": {"equity_hard_stop_loss": stop}},
            "live": {"leverage": 10},
            "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"], "starting_balance": 1000},
        }
    )  # fmt: skip


def _candles():
    return round_to_ticks(sample(6, day="2021-05-19T09:00", warmup_min=60))


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_hard_stop_replay_matches_the_backtest_fill_for_fill_and_tier_for_tier(exchange):
    config, candles = _config(), _candles()
    bots: list[LiveBot] = []

    def keep(k, venue, bot):
        if not bots or bots[-1] is not bot:
            bots.append(bot)

    rp = asyncio.run(replay(config, candles, exchange=exchange, after_step=keep))
    out = run_backtest(config, candles).output
    tiers_bt = out.hard_stop_tier
    # the run reaches orange and red, and restarts after the cooldown
    assert {H.TIER_ORANGE, H.TIER_RED} <= set(tiers_bt.tolist())
    assert out.hard_stop_state[H.H_RESTARTS] >= 1
    assert rp.bot_errors == []
    assert rp.mismatches == []
    assert rp.first_divergence is None, rp.first_divergence
    hard = [f for f in rp.fills_backtest if f["kind"] == "hard_stop"]
    assert len(hard) >= 4
    closes_live = sorted((c["symbol"], c["side"], c["price"], c["qty"])
                         for b in bots for c in b.hard_stop.closes)  # fmt: skip
    assert closes_live == sorted((f["symbol"], f["side"], f["price"], abs(f["qty"])) for f in hard)
    # the tier at every minute the live bot sampled is the engine's at that candle
    ts = candles.timestamps
    live = [(int(np.searchsorted(ts, t)), tier) for b in bots for t, tier in b.hard_stop.tiers]
    assert len(live) >= len(ts) - rp.trade_start - 1
    assert [(k, int(tiers_bt[k])) for k, _ in live] == live


def test_red_with_fills_by_rest_and_a_hand_position_during_the_cooldown():
    """Bybit's lockstep learns every fill by REST (the private socket carries none of them to
    the book); during the first cooldown a long is opened by hand on the venue."""
    config, candles = _config(), _candles()
    cooldown_ms = 30 * 60_000
    created: list[tuple[float, str]] = []  # (halted, client id) of every order placed
    seen: dict = {"hand_ms": None, "planned_restart_ms": None, "restart_ms": None, "bots": []}
    flat_at_restart: list[bool] = []

    def watch(k, venue, bot):
        if not seen["bots"] or seen["bots"][-1] is not bot:
            seen["bots"].append(bot)

            def notify(kind, **f):
                if kind == "order_created":
                    created.append((bot.hard_stop.h[H.H_HALTED], f["order"].client_id))

            bot.notify = notify
        h = bot.hard_stop.h
        key = next(iter(venue.engine.accounts))
        acct = venue.engine.accounts[key]
        if seen["hand_ms"] is None and h[H.H_HALTED] and h[H.H_FLAT_SINCE_MS] >= 0:
            flat_since = h[H.H_FLAT_SINCE_MS]
            if venue.engine.now_ms - flat_since >= 5 * 60_000:
                seen["status"] = build_status(bot)["hard_stop"]
                seen["planned_restart_ms"] = flat_since + cooldown_ms
                seen["hand_ms"] = venue.engine.now_ms
                venue.change_position(key, "BTCUSDT", "LONG", 0.01)
        if seen["hand_ms"] is not None and seen["restart_ms"] is None and not h[H.H_HALTED]:
            seen["restart_ms"] = h[H.H_LAST_MS] + 60_000
            flat_at_restart.append(all(p.amount == 0.0 for p in acct.positions.values()))

    rp = asyncio.run(replay(config, candles, exchange="bybit", after_step=watch, compare=False))
    assert rp.bot_errors == []
    assert seen["hand_ms"] is not None and seen["restart_ms"] is not None
    hs = seen["bots"][-1].hard_stop
    # the hand position was closed by the hard stop at the next sample (nothing else opened it)
    hand = [c for b in seen["bots"] for c in b.hard_stop.closes
            if c["symbol"] == "BTCUSDT" and c["side"] == 1 and c["qty"] == 0.01]  # fmt: skip
    assert len(hand) == 1
    # the cooldown counted again from that close: later than planned, a full cooldown after
    assert seen["restart_ms"] > seen["planned_restart_ms"]
    assert seen["restart_ms"] - seen["hand_ms"] >= cooldown_ms
    assert flat_at_restart == [True]
    # nothing placed while halted (its closes are market orders, not grid orders)
    assert [cid for halted, cid in created if halted] == []
    assert any(not halted for halted, _ in created)  # it traded before and after
    assert hs.h[H.H_TRIGGERS] >= 1
    # the status page said so during the cooldown
    st = seen["status"]
    assert st["tier"] == "red" and st["halted"] and not st["terminal"]
    assert 0.0 < st["cooldown_left_minutes"] <= 25.0

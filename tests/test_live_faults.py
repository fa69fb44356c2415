"""The live bot through the venue's fault injection, in lockstep: it recovers, never places a
duplicate order, and its open orders end up equal to the ideal orders; a restart on the same
state dir resumes without touching (or duplicating) the orders already resting."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from backtest.replay import replay
from bot.live.orders import PREFIX
from tests.test_live_replay import sample, trading_config

pytestmark = pytest.mark.slow


def _key(venue) -> str:
    return next(iter(venue.engine.accounts))


def _ours(venue, symbol: str | None = None):
    acct = venue.engine.accounts[_key(venue)]
    return [
        o
        for o in acct.open_orders.values()
        if o.client_order_id.startswith(PREFIX) and (symbol is None or o.symbol == symbol)
    ]


def _no_duplicates(k, venue, bot):
    cids = Counter(o.client_order_id for o in _ours(venue))
    assert all(n == 1 for n in cids.values()), f"candle {k}: duplicate client ids {cids}"
    shapes = Counter((o.symbol, o.position_side, o.side, o.price, o.orig_qty) for o in _ours(venue))
    assert all(n == 1 for n in shapes.values()), f"candle {k}: duplicate orders {shapes}"


def _matches_ideal(venue, bot) -> bool:
    for s, c in bot.coins.items():
        have = sorted(
            (1 if o.position_side == "LONG" else -1, o.remaining * o.sign, o.price)
            for o in _ours(venue, s)
        )
        want = sorted((o.pside, o.qty, o.price) for o in bot.ideal(c))
        if have != want:
            return False
    return True


async def _settle(venue, bot, timeout: float = 15.0) -> None:
    """Let the bot re-sync and reconcile; its orders must converge to the ideal ones."""
    end = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < end:
        if _matches_ideal(venue, bot):
            return
        bot.want_sync()
        for c in bot.coins.values():
            c.wake.set()
        await asyncio.sleep(0.2)
    raise AssertionError("open orders did not converge to the ideal orders")


def test_faults_recover_without_duplicates():
    seen: dict[str, int] = Counter()

    async def inject(k, venue, bot):
        i = k - first[0]
        key = _key(venue)
        if i == 5:
            seen["drop"] += venue.drop_ws()  # 1006: no close frame
        elif i == 15:
            seen["close"] += await venue.close_ws(1008)
        elif i == 25:
            venue.set_ws_silent(True)  # the next candle's messages never come
        elif i == 27:
            venue.set_ws_silent(False)
        elif i == 35:
            venue.delay_rest(150)
        elif i == 40:
            venue.delay_rest(0)
            venue.fail_rest(503, 2, path="/fapi/v1/order")
        elif i == 50:
            venue.rate_limit_next(n429=1, n418=1, path="/fapi/v1/order")
        elif i == 60:
            venue.reject_next_order_margin(key, 1)
        elif i == 70:
            orders = [
                o for o in _ours(venue) if o.orig_qty >= 2 * venue.engine.specs[o.symbol].qty_step
            ]
            if orders:
                o = orders[0]
                step = venue.engine.specs[o.symbol].qty_step
                venue.partial_fill(key, o.order_id, round(o.orig_qty / 2 / step) * step)
                seen["partial"] += 1
        elif i == 80:
            acct = venue.engine.accounts[key]
            pos = [p for p in acct.positions.values() if p.amount != 0]
            if pos:
                p = pos[0]
                step = venue.engine.specs[p.symbol].qty_step
                venue.change_position(
                    key, p.symbol, p.position_side, round(abs(p.amount) / 2 / step) * step
                )
                seen["adl"] += 1
            else:
                venue.change_position(key, "DOGEUSDT", "LONG", 50.0)
                seen["adl"] += 1

    first = [0]

    async def check(k, venue, bot):
        if not first[0]:
            first[0] = k
        _no_duplicates(k, venue, bot)

    async def on_step(k, venue, bot):
        if not first[0]:
            first[0] = k
        await inject(k, venue, bot)

    result = asyncio.run(
        replay(
            trading_config(),
            sample(2.0),
            on_step=on_step,
            after_step=check,
            final_check=_settle,
            compare=False,
            live_overrides={"stream_silence_timeout_seconds": 1.0},
        )
    )
    assert seen["drop"] >= 1 and seen["close"] >= 1 and seen["adl"] == 1
    assert len(result.fills_live) > 0
    assert any("-2019" in e or "Margin" in e for e in result.bot_errors)
    assert any("RateLimit" in e or "DDoS" in e for e in result.bot_errors)


def test_restart_mid_run_resumes_without_duplicates():
    snapshots: dict[int, set[int]] = {}

    def after(k, venue, bot):
        _no_duplicates(k, venue, bot)
        if k == restart:
            snapshots[1] = {o.order_id for o in _ours(venue)}

    restart = 60 + 30  # warm-up 60 candles, then half an hour of trading
    result = asyncio.run(
        replay(
            trading_config(),
            sample(1.0),
            after_step=after,
            final_check=_settle,
            restart_at={restart},
            before_restart=lambda venue, bot: snapshots.__setitem__(
                0, {o.order_id for o in _ours(venue)}
            ),
            compare=True,
        )
    )
    # the new instance found its orders resting: nothing cancelled, nothing created twice
    assert snapshots[0] and snapshots[1] == snapshots[0]
    assert result.mismatches == [], "a restart must not change what the bot does"
    assert len(result.fills_live) > 0

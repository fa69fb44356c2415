"""The live bot runs the vault: the ledger's requests over loopback to the simulated venue.

A deposit mints shares, a withdrawal burns them and becomes reduce-only closes of the same
fraction of every position (in tranches), the ledger's record of them agrees with the venue's
trades and positions, and the payout is recorded once.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import numpy as np
import pytest

from backtest.replay import replay_config, round_to_ticks
from backtest.venue.server import Venue, VenueConfig
from backtest.venue.vault_impact import VaultImpact
from bot.config import parse_config, warmup_candles
from bot.core.book import market_fill_price
from bot.core.rounding import round_dn
from bot.exchange.registry import make_adapter
from bot.live.bot import LiveBot
from bot.markets import market_spec
from bot.vault.ledger import Ledger
from tests.test_live_replay import TIGHT_GRID_SIDE, sample


def vault_config(**vault: object):
    side = {**TIGHT_GRID_SIDE, "unstuck_close_pct": 0.0}
    return parse_config(
        {
            "bot": {"long": side, "short": {**side, "enabled": True}},
            "live": {"leverage": 10},
            "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"], "starting_balance": 1000},
            "vault": {"enabled": True, "payout_delay_hours": 0.0, **vault},
        }
    )


def venue_positions(venue: Venue, key: str) -> dict[tuple[str, int], float]:
    acct = venue.engine.accounts[key]
    return {
        (sym, 0 if ps == "LONG" else 1): abs(p.amount)
        for (sym, ps), p in acct.positions.items()
        if ps in ("LONG", "SHORT") and p.amount != 0.0
    }


async def _until(cond, venue: Venue, max_candles: int) -> int:
    for i in range(max_candles):
        if cond():
            return i
        await venue.advance(1)
        await asyncio.sleep(0.3)
    return -1


@pytest.mark.slow
def test_a_withdrawal_becomes_pro_rata_closes_in_tranches_and_is_paid_once(tmp_path):
    # the grid holds small positions here (0.01 BTC short, 98 DOGE a side before the withdrawal):
    # at 0.001% of a candle's volume the first candle allows under half of the slice (0.43), so
    # the unwind takes several tranches (4); at 0.003% one candle would take it all
    config = vault_config(max_participation_pct=0.00001, controlled_unwind_threshold_pct=0.25)
    candles = round_to_ticks(sample(10))
    ledger_path = tmp_path / "vault.sqlite"

    async def go() -> dict:
        start = max(1, warmup_candles(config, candles.timeframe_ms))
        venue = Venue(
            candles,
            VenueConfig(maker_fee=config.backtest.maker_fee, weight_limit_per_minute=10**9,
                        start_index=start, vault_impact_coef=config.vault.impact_coef),
        )  # fmt: skip
        key, secret = secrets.token_hex(16), secrets.token_hex(32)
        venue.add_account(key, secret, config.backtest.starting_balance)
        await venue.start()
        adapter = make_adapter("binance", key, secret, base_url=venue.rest_url, throttle=False)
        cfg = replay_config(config, str(tmp_path / "state"), {})
        bot = LiveBot(cfg, adapter, symbols=candles.symbols, ws_url=venue.ws_url,
                      vault_ledger=str(ledger_path))  # fmt: skip
        task = asyncio.create_task(bot.run())
        led = Ledger(ledger_path)
        out: dict = {}
        try:
            await bot.wait_ready()
            led.submit("deposit", "alice", int(time.time() * 1000), amount=1000.0)
            # trade until both sides of both coins hold a position
            n = await _until(lambda: len(venue_positions(venue, key)) >= 3, venue, 400)
            assert n >= 0, venue_positions(venue, key)
            assert led.total_shares() == pytest.approx(1000.0)
            await asyncio.sleep(1.5)
            before = venue_positions(venue, key)
            out["before"] = before
            led.submit("withdraw", "alice", int(time.time() * 1000), shares=600.0)
            for _ in range(100):  # the bot's next pass and first tranche, the market still
                if led.exits() and led.unwind_orders() and not led.unwind_orders(status="sent"):
                    break
                await asyncio.sleep(0.1)
            ex = led.exits()[0]
            out["exit"] = ex
            out["slices"] = led.slices(ex.id)
            n = await _until(lambda: led.exit(ex.id).status == "paid", venue, 300)
            assert n >= 0, led.exit(ex.id)
            await asyncio.sleep(1.0)
            out["after_exit"] = led.exit(ex.id)
            out["orders"] = led.unwind_orders(ex.id)
            out["history"] = led.history()
            out["trades"] = list(venue.engine.accounts[key].trades)
            out["venue_pos"] = venue_positions(venue, key)
            out["strategy"] = {
                (s, j): bot.strategy_position(s, j)[0] for s in bot.coins for j in (0, 1)
            }
            out["book"] = {(s, j): bot.book.position(s, j)[0] for s in bot.coins for j in (0, 1)}
            out["steps"] = {s: c.spec.qty_step for s, c in bot.coins.items()}
            if task.done():
                task.result()
        finally:
            bot.stop()
            await asyncio.gather(task, return_exceptions=True)
            await adapter.close()
            await venue.stop()
            led.close()
        return out

    out = asyncio.run(go())
    ex = out["exit"]
    assert ex.mode == "controlled_unwind" and ex.fraction == pytest.approx(0.6)
    # every position's slice is 60% of it, within one qty step: winners, losers, both sides
    slices = {(r["symbol"], r["side"]): r["qty"] for r in out["slices"]}
    assert set(slices) == set(out["before"])
    for k, size in out["before"].items():
        step = out["steps"][k[0]]
        assert slices[k] == pytest.approx(round_dn(size * 0.6, step), abs=step / 2)
        assert abs(slices[k] - size * 0.6) < step
    # in several tranches, every order a market close, filled, once on the venue
    orders = [o for o in out["orders"] if o["status"] != "funding"]
    assert len({o["cum"] for o in orders}) >= 2
    # (none settled without an order: the strategy's closes were resized before the tranches)
    assert all(o["status"] == "filled" and o["client_id"].startswith("gbv") for o in orders), (
        orders,
        out["slices"],
        out["before"],
    )
    by_cid = {}
    for t in out["trades"]:
        if t.client_order_id.startswith("gbv"):
            by_cid[t.client_order_id] = by_cid.get(t.client_order_id, 0.0) + t.qty
            assert not t.maker
    assert set(by_cid) == {o["client_id"] for o in orders}
    for k, q in slices.items():
        mine = [o for o in orders if (o["symbol"], o["side"]) == k]
        assert sum(o["filled"] for o in mine) == pytest.approx(q)
        assert sum(by_cid[o["client_id"]] for o in mine) == pytest.approx(q)
    # the venue prices each close by the square-root impact model, against the closer, from
    # the last price (the previous candle's close)
    impact = VaultImpact(candles, config.vault.impact_coef, config.vault.volatility_window_minutes)
    ts = np.asarray(candles.timestamps, dtype=np.int64)
    moved_by_ticks = 0
    for t in out["trades"]:
        if not t.client_order_id.startswith("gbv"):
            continue
        k = int(np.searchsorted(ts, t.time_ms, side="left"))
        last = float(candles.ohlcv[list(candles.symbols).index(t.symbol), k - 1, 3])
        pside = 1 if t.position_side == "LONG" else -1
        # ... put on the tick, as an exchange prints a fill (bot.core.book.market_fill_price)
        step = market_spec(t.symbol).price_step
        moved = impact.price(t.symbol, pside, t.qty, last, t.time_ms)
        assert t.price == pytest.approx(market_fill_price(moved, step))
        # against the closer, never for: an impact under half a tick rounds back onto the last
        assert (moved - last) * pside < 0 and (t.price - last) * pside <= 0
        moved_by_ticks += (t.price - last) * pside < 0
    assert moved_by_ticks > 0  # the larger slices do move the fill a tick or more
    # the ledger and the positions agree: the slice is gone, the strategy holds the account
    for k in out["book"]:
        assert out["strategy"][k] == pytest.approx(out["book"][k])
        assert out["book"][k] == pytest.approx(out["venue_pos"].get(k, 0.0))
    # paid once, at the realized value (below the mark: fees and the spread paid)
    after = out["after_exit"]
    payouts = [h for h in out["history"] if h["kind"] == "payout"]
    assert len(payouts) == 1 and payouts[0]["amount"] == pytest.approx(after.realized_value)
    assert after.paid_value == pytest.approx(after.realized_value)
    assert np.isfinite(after.realized_value) and after.realized_value > 0


def test_a_vault_on_bybit_is_refused_at_start(tmp_path):
    from bot.live.bot import StartupRefused

    async def go() -> None:
        adapter = make_adapter("bybit", "k", "s", base_url="http://127.0.0.1:9", throttle=False)
        try:
            cfg = replay_config(vault_config(), str(tmp_path))
            with pytest.raises(StartupRefused, match="Binance only"):
                LiveBot(cfg, adapter, symbols=["BTCUSDT"], ws_url="ws://127.0.0.1:9")
        finally:
            await adapter.close()

    asyncio.run(go())

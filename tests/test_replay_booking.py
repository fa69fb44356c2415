"""One booking path, end to end: the live bot on the simulated venue (real ccxt HTTP, real
websockets, lockstep) and the backtester agree fill for fill, in order, with the fees, the
liquidation and the final balance, also when outside events (a withdrawal, a position reduced
by the exchange) change the account mid-run."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backtest.data import load_candles, parse_date_ms
from backtest.engine import F_K, F_KIND, F_SIDE, F_SYMBOL
from backtest.events import OutsideEvent, events_array, parse_event
from backtest.replay import first_divergence, replay, round_to_ticks
from backtest.runner import run_backtest, warmup_candles
from bot.config import parse_config
from bot.core.params import KIND_LIQUIDATION, KIND_OUTSIDE
from bot.errors import ConfigError
from bot.markets import market_spec
from tests.test_live_replay import DATA, TIGHT_GRID_SIDE, sample

ROOT = Path(__file__).resolve().parents[1]

OVER_LEVERED = {
    "backtest": {"symbols": ["BTCUSDT"], "starting_balance": 10_000.0},
    # the exchange's maximum for the notional WE 8 allows (80k USDT: 100x), so the venue's
    # margin check never refuses an entry the backtest makes
    "live": {"leverage": 100},
    "bot": {
        "long": {
            "total_wallet_exposure_limit": 8.0,
            "n_positions": 1,
            "entry_grid_spacing_pct": 0.005,
            "entry_initial_qty_pct": 0.05,
            # no unstucking: its loss allowance (x TWEL 8, as Passivbot's) would sell the
            # position down before the crash, and this scenario is about the liquidation
            "unstuck_close_pct": 0.0,
        }
    },
}


def crash_candles(config):
    start = parse_date_ms("2021-05-18")
    warm = warmup_candles(config, 60_000) * 60_000
    return load_candles(
        DATA, ["BTCUSDT"], start_ms=start - warm, end_ms=parse_date_ms("2021-05-19T06:00")
    )


def test_parse_event_specs():
    t = parse_date_ms("2021-05-15")
    assert parse_event("deposit:1000@2021-05-15") == OutsideEvent(t, "deposit", amount=1000.0)
    assert parse_event("withdraw:50%@2021-05-15").fraction == 0.5
    assert parse_event("withdraw:500@2021-05-15").amount == 500.0
    ev = parse_event("reduce:btcusdt:short:0.01:41000@2021-05-15")
    assert (ev.symbol, ev.side, ev.amount, ev.price) == ("BTCUSDT", -1, 0.01, 41000.0)
    assert math.isnan(parse_event("reduce:BTCUSDT:long:0.01@2021-05-15").price)
    assert parse_event("reduce_all:25%@2021-05-15").fraction == 0.25
    for bad, says in (
        ("withdraw:50%", "time"),
        ("burn:1@2021-05-15", "unknown kind"),
        ("withdraw:-5@2021-05-15", "positive"),
        ("withdraw:150%@2021-05-15", "100%"),
        ("reduce:BTCUSDT:up:1@2021-05-15", "long or short"),
        ("reduce:BTCUSDT:1@2021-05-15", "expected"),
        ("reduce_all:2@2021-05-15", "at most 1"),
    ):
        with pytest.raises(ConfigError, match=says):
            parse_event(bad)
    with pytest.raises(ConfigError, match="not traded"):
        events_array([parse_event("reduce:ETHUSDT:long:1@2021-05-15")], ["BTCUSDT"])


def test_first_divergence_sees_order_fees_and_balances():
    a = {"k": 1, "symbol": "X", "side": 1, "price": 1.0, "qty": 2.0, "fee": 0.1}
    b = {**a, "price": 2.0}
    assert first_divergence([a, b], [a, b]) is None
    d = first_divergence([b, a], [a, b])
    assert d["what"] == "fill" and d["index"] == 0  # same fills, another order
    d = first_divergence([a], [a], [{**a, "fee": 0.2}])
    assert d["what"] == "fee"
    d = first_divergence([a], [a], [a], {"final_balance": (1.0, 1.5)})
    assert d == {"what": "final_balance", "live": 1.0, "backtest": 1.5}


def test_engine_applies_events_at_the_top_of_a_candle():
    cfg = parse_config(
        {
            "bot": {"long": TIGHT_GRID_SIDE, "short": {"enabled": False}},
            "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"], "starting_balance": 1000},
        }
    )
    candles = sample(6)
    base = run_backtest(cfg, candles).output
    held = np.nonzero(base.positions[:, 0, 0] > 0)[0]  # candles closing with a BTC long
    k = int(held[len(held) // 2]) + 1
    t = int(candles.timestamps[k])
    events = [
        OutsideEvent(t - 59_999, "withdraw", fraction=0.5),  # due at the top of candle k
        OutsideEvent(t, "reduce", amount=0.001, symbol="BTCUSDT", side=1),
        OutsideEvent(t, "deposit", amount=100.0),
    ]
    out = run_backtest(cfg, candles, events).output
    assert (out.balance[: k - 1] == base.balance[: k - 1]).all()
    outside = out.fills[out.fills[:, F_KIND] == KIND_OUTSIDE]
    assert (
        len(outside) == 1 and int(outside[0, F_K]) == k and outside[0, 3] == pytest.approx(-0.001)
    )
    assert out.transfers == pytest.approx(100.0 - base.balance[k - 1] / 2)
    # balance = start + realized - fees - funding + transfers
    assert out.balance[-1] == pytest.approx(
        1000 + out.realized_pnl - out.fees_paid - out.funding_paid + out.transfers
    )


def test_venue_applies_the_same_events_and_reports_them():
    from backtest.venue.matching import AccountUpdate, MatchingEngine

    me = MatchingEngine(["BTCUSDT"], funding_rate=0.0)
    acct = me.add_account("k", "s", 1000.0, hedge_mode=True)
    me.set_prices({"BTCUSDT": 50_000.0}, 0)
    me.place_order("k", "BTCUSDT", "BUY", "MARKET", 0.01, position_side="LONG")
    bal = acct.balance
    me.drain_events()
    evs = [
        OutsideEvent(60_000, "withdraw", fraction=0.5),
        OutsideEvent(60_000, "reduce", amount=0.004, symbol="BTCUSDT", side=1, price=49_000.0),
        OutsideEvent(120_000, "reduce_all", fraction=0.5),
    ]
    me.schedule_events("k", events_array(evs, ["BTCUSDT"]))
    me.apply_candle(60_000, {"BTCUSDT": (50_000.0, 50_000.0, 50_000.0, 51_000.0)})
    ups = [e for e in me.drain_events() if isinstance(e, AccountUpdate)]
    assert [u.reason for u in ups] == ["WITHDRAW", "ADJUSTMENT"]
    assert acct.balance == pytest.approx(bal / 2 + 0.004 * (49_000 - 50_000))
    assert acct.position("BTCUSDT", "LONG").amount == pytest.approx(0.006)
    assert ups[1].positions[0].amount == pytest.approx(0.006)
    assert acct.trades[-1].qty == 0.01  # no trade: the exchange's own booking
    me.apply_candle(120_000, {"BTCUSDT": (51_000.0, 51_000.0, 51_000.0, 51_000.0)})
    assert acct.position("BTCUSDT", "LONG").amount == pytest.approx(0.003)  # at the close 51000


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_over_levered_config_is_liquidated_alike_by_replay_and_backtest(exchange: str):
    config = parse_config(OVER_LEVERED)
    candles = crash_candles(config)
    result = asyncio.run(replay(config, candles, exchange=exchange))
    assert result.liquidated_backtest and result.liquidated_live
    liq_bt = [f for f in result.fills_backtest if f["liquidation"]]
    liq_venue = [f for f in result.trades_venue if f["liquidation"]]
    assert len(liq_bt) == len(liq_venue) == 1
    assert liq_venue[0]["k"] == liq_bt[0]["k"]
    assert liq_venue[0]["price"] == liq_bt[0]["price"]
    assert liq_venue[0]["fee"] == pytest.approx(liq_bt[0]["fee"], rel=1e-12)
    # the price is on the tick, the fee the maintenance margin or what was left of the balance
    step = market_spec("BTCUSDT").price_step
    assert liq_bt[0]["price"] / step == pytest.approx(round(liq_bt[0]["price"] / step), abs=1e-6)
    assert result.mismatches == []
    assert result.first_divergence is None, result.first_divergence
    assert result.final_balance_live == pytest.approx(result.final_balance_backtest, abs=1e-6)
    assert result.bot_errors == []


def events_for(config, candles):
    """A withdrawal of half the account after 4 hours, then the exchange closes half of a
    position the bot holds 3 hours later (found from a backtest without events)."""
    trade0 = warmup_candles(config, 60_000)
    k_w = trade0 + 240
    ts = candles.timestamps
    withdraw = OutsideEvent(int(ts[k_w]), "withdraw", fraction=0.5)
    with_w = run_backtest(config, candles, [withdraw]).output
    for k in range(trade0 + 420, len(ts)):
        pos = with_w.positions[k - 1]
        for s, sym in enumerate(candles.symbols):
            for col, side in ((0, 1), (2, -1)):
                step = market_spec(sym).qty_step
                qty = round(pos[s, col] / 2 / step) * step
                if qty > 0:
                    reduce = OutsideEvent(int(ts[k]), "reduce", amount=qty, symbol=sym, side=side)
                    return [withdraw, reduce]
    raise AssertionError("no open position to reduce")


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_replay_with_outside_events_matches_the_backtest_in_order(exchange: str):
    # unstuck off: the peak's scaling through a transfer is the test below's
    side = {**TIGHT_GRID_SIDE, "unstuck_close_pct": 0.0}
    config = parse_config(
        {
            "bot": {"long": side, "short": {**side, "enabled": True}},
            "live": {"leverage": 10},
            "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"], "starting_balance": 1000},
        }
    )
    candles = round_to_ticks(sample(12))
    events = events_for(config, candles)
    result = asyncio.run(replay(config, candles, exchange=exchange, events=events))
    bt = run_backtest(config, candles, events).output
    kinds = bt.fills[:, F_KIND]
    assert (kinds == KIND_OUTSIDE).sum() == 1
    k_reduce = int(bt.fills[kinds == KIND_OUTSIDE][0, F_K])
    assert any(f["k"] > k_reduce for f in result.fills_backtest), "fills after the events"
    assert bt.transfers < 0
    assert result.mismatches == []
    assert result.first_divergence is None, result.first_divergence
    assert result.fills_live == [
        {k: f[k] for k in ("k", "symbol", "side", "price", "qty")} for f in result.fills_backtest
    ]
    assert result.final_balance_live == pytest.approx(result.final_balance_backtest, rel=1e-9)
    assert result.bot_errors == []
    # the reduced position was the bot's: the symbol and side traded
    r = bt.fills[kinds == KIND_OUTSIDE][0]
    assert (
        candles.symbols[int(r[F_SYMBOL])] == events[1].symbol and int(r[F_SIDE]) == events[1].side
    )
    assert not (bt.fills[:, F_KIND] == KIND_LIQUIDATION).any()


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_replay_with_a_withdrawal_and_unstucking_matches_the_backtest(exchange: str):
    # Binance says DEPOSIT / WITHDRAW on the user stream; Bybit's wallet topic does not, and
    # the bot reads the transfer from the account log: the peak scales alike on both
    config = parse_config(
        {
            "bot": {
                "long": {**TIGHT_GRID_SIDE, "unstuck_threshold": 0.5, "unstuck_close_pct": 0.2},
                "short": {"enabled": False},
            },
            "live": {"leverage": 10},
            "backtest": {"symbols": ["BTCUSDT", "DOGEUSDT"], "starting_balance": 1000},
        }
    )
    candles = round_to_ticks(sample(12))
    events = events_for(config, candles)
    result = asyncio.run(replay(config, candles, exchange=exchange, events=events[:1]))
    assert result.first_divergence is None, result.first_divergence
    assert result.bot_errors == []


@pytest.mark.slow
def test_gridbot_replay_json_reports_final_balances_and_divergence(tmp_path):
    cfg = tmp_path / "c.hjson"
    side = {**TIGHT_GRID_SIDE, "unstuck_close_pct": 0.0}
    conf = {
        "bot": {"long": side, "short": {**side, "enabled": True}},
        "live": {"leverage": 10},
        "backtest": {"symbols": ["BTCUSDT"], "starting_balance": 1000},
    }
    cfg.write_text(json.dumps(conf))
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "replay", str(cfg), "--data", DATA,
         "--start", "2021-05-18", "--end", "2021-05-18T03:00", "--json",
         "--event", "withdraw:40%@2021-05-18T01:00", "--event", "reduce_all:0.5@2021-05-18T02:00"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["ok"] is True and out["first_divergence"] is None
    assert out["final_balance_live"] == pytest.approx(out["final_balance_backtest"], rel=1e-9)
    assert out["final_balance_backtest"] < 700  # 40% of about 1000 went out
    assert out["n_fills_live"] == out["n_fills_backtest"] > 0
    assert "final balance: live" in proc.stderr

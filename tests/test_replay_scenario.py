"""The venue's own candle loop deleverages the bot (``gridbot venue|replay --scenario``).

A scenario puts a short trader with 500x leverage beside the bot on BTCUSDT at 09:55 on
2021-05-18, opened at that candle's open (44953.9); the candle's high (45045.0) passes the
short's bankruptcy price (about 45043.8). The market takes nothing of its liquidation, there is
no liquidity provider and the insurance fund is empty, so the venue's risk engine closes the
short at its bankruptcy price against the longs ranked by leverage x size x ROE: the bot's grid
long (0.003 @ 44936.1 since 09:50, in profit; its close rests at 45074.4, above that high) ranks
first, ahead of a losing long, and loses 0.002 of it. The bot must book it at once (its book
equals the exchange's), never rest a close beyond what is left, and keep trading; the
backtester, given the same cut as an outside event, matches the live run fill for fill.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from backtest.data import parse_date_ms
from backtest.replay import replay
from backtest.venue.scenario import parse_scenario
from bot.config import parse_config
from tests.test_live_replay import TIGHT_GRID_SIDE, sample

EVENT_AT = "2021-05-18T09:55"
SCENARIO = {
    "symbol": "BTCUSDT",
    "insurance_fund": 0,
    "market": {"capacity": 0},
    "liquidity_provider": {"capacity": 0},
    "liquidation": {"step": "chunk", "chunk_pct": 0.25},
    "traders": [
        {"name": "short_500x", "side": "short", "size": 0.002, "entry_price": 44953.9,
         "leverage": 500, "opened_at": EVENT_AT},
        {"name": "late_long", "side": "long", "size": 0.01, "entry_price": 46000,
         "leverage": 2, "opened_at": EVENT_AT},
    ],
}  # fmt: skip


def config():
    return parse_config(
        {
            "bot": {"long": TIGHT_GRID_SIDE, "short": {**TIGHT_GRID_SIDE, "enabled": True}},
            "live": {"leverage": 10},
            "backtest": {"symbols": ["BTCUSDT"], "starting_balance": 1000},
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_venue_loop_deleverages_the_bots_profitable_long(exchange: str, caplog):
    caplog.set_level(logging.WARNING)
    candles = sample(1.4, day="2021-05-18T09:40", warmup_min=70)
    event_ms = parse_date_ms(EVENT_AT)
    seen: dict = {"checked": 0}

    async def after_step(k, venue, bot):
        acct = venue.engine.accounts[next(iter(venue.engine.accounts))]
        venue_long = sum(
            p.amount for (s, _), p in acct.positions.items() if s == "BTCUSDT" and p.amount > 0
        )
        booked = bot.book.position("BTCUSDT", 0)[0]
        if int(candles.timestamps[k]) == event_ms:
            seen["event_k"] = k
            seen["after"] = (booked, venue_long)
        if "event_k" in seen:
            # the book is the exchange's after every candle from the event on, and no close of
            # ours rests beyond what is left of the long
            assert booked == pytest.approx(venue_long, abs=1e-12), (k, booked, venue_long)
            resting = sum(
                o.remaining for o in acct.open_orders.values()
                if o.symbol == "BTCUSDT" and o.side == "SELL" and o.position_side in ("LONG", "BOTH")
            )  # fmt: skip
            assert resting <= venue_long + 1e-12, (k, resting, venue_long)
            seen["checked"] += 1

    result = asyncio.run(
        replay(
            config(), candles, exchange=exchange, after_step=after_step,
            scenario=parse_scenario(SCENARIO),
        )
    )  # fmt: skip
    risk = result.risk
    (ev,) = risk["deleverage_events"]
    assert ev["bankrupt_account"] == "short_500x" and all(ev["checks"].values())
    first, *rest = ev["counterparties"]
    assert first["account"] == "bot" and first["score"] > 0 and first["realized_pnl"] > 0
    assert first["qty"] == pytest.approx(0.002) and first["price"] == ev["bankruptcy_price"]
    assert rest == [] and ev["unfilled_qty"] == 0.0  # the bot's long was enough
    (booked,) = risk["venue_deleverages"]
    assert booked["qty"] == pytest.approx(0.002) and booked["time_ms"] == event_ms
    # 0.001 left after the event candle (its high is below the grid's close)
    after = seen["after"]
    assert after[0] == pytest.approx(after[1]) and after[0] == pytest.approx(0.001)
    assert "a fill of an order that is not ours" in caplog.text  # recorded by the bot
    assert seen["checked"] > 30
    k = seen["event_k"]
    assert any(f["k"] > k for f in result.fills_live), "the grid carries on"
    # the backtester, given the same cut at the same candle, matches fill for fill
    assert result.first_divergence is None, result.first_divergence
    assert result.ok and result.bot_errors == []


@pytest.mark.slow
def test_cli_replay_with_a_scenario_reports_the_venues_deleverage(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    scen = tmp_path / "scenario.hjson"
    scen.write_text(json.dumps(SCENARIO))
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({
        "bot": {"long": TIGHT_GRID_SIDE, "short": {**TIGHT_GRID_SIDE, "enabled": True}},
        "live": {"leverage": 10},
        "backtest": {"symbols": ["BTCUSDT"], "starting_balance": 1000},
    }))  # fmt: skip
    argv = [sys.executable, "-m", "bot.cli", "replay", str(cfg), "--data",
            "data/sample/binance_spot_1m", "--start", "2021-05-18T09:40",
            "--end", "2021-05-18T11:05", "--scenario", str(scen), "--json"]  # fmt: skip
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["ok"] and len(out["risk"]["venue_deleverages"]) == 1
    assert "1 deleverage event(s), 1 on the bot" in proc.stderr
    # a scenario on a symbol the replay does not trade: exit 2 naming it
    bad = tmp_path / "eth.hjson"
    bad.write_text(json.dumps({**SCENARIO, "symbol": "ETHUSDT"}))
    argv[argv.index(str(scen))] = str(bad)
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "ETHUSDT is not among the replayed symbols" in proc.stderr


def test_cli_venue_refuses_a_scenario_on_a_symbol_it_does_not_serve(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "eth.hjson"
    bad.write_text(json.dumps({**SCENARIO, "symbol": "ETHUSDT"}))
    argv = [sys.executable, "-m", "bot.cli", "venue", "--data", "data/sample/binance_spot_1m",
            "--symbols", "BTCUSDT", "--port", "0", "--ws-port", "0", "--results",
            str(tmp_path / "results"), "--scenario", str(bad)]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "ETHUSDT is not among the venue's symbols (BTCUSDT)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "results").exists()

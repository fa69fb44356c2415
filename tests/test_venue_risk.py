"""The venue's risk engine: incremental liquidation, insurance fund, deleverage events.

One bankrupt long (20x) among profitable and losing shorts, on hand-made candles: a deleverage
happens only when all four of the seed's conditions hold; take any one away and the fund pays,
the liquidity provider takes it, the market closes it at the bankruptcy price, or nothing is
bankrupt. Counterparties in rank order, each at the bankruptcy price; value conserved; the fund
never below zero.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from backtest.venue.risk import FUND, RiskEngine, run_candles
from backtest.venue.scenario import parse_scenario
from bot.core.deleverage import RANK_BITMEX, RANK_SEED, deleverage_score
from bot.core.exposure import bankruptcy_price
from bot.core.margin import liquidation_price
from bot.errors import ConfigError
from bot.markets import market_spec

SPEC = market_spec("BTCUSDT")
T0 = 1_621_382_400_000  # 2021-05-19


def scenario(**over):
    d = {
        "symbol": "BTCUSDT",
        "insurance_fund": 0,
        "market": {"capacity": 0.1},
        "liquidity_provider": {"capacity": 0},
        "liquidation": {"step": "chunk", "chunk_pct": 0.25, "steps_per_candle": 1},
        "traders": [
            {"name": "whale", "side": "long", "size": 3, "entry_price": 40000, "leverage": 20},
            {"name": "s_loss", "side": "short", "size": 3, "entry_price": 37000, "leverage": 2},
            {"name": "s_lo", "side": "short", "size": 1, "entry_price": 40500, "leverage": 2},
            {"name": "s_hi", "side": "short", "size": 1, "entry_price": 41000, "leverage": 5},
        ],
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return parse_scenario(d)


def candles(low: float) -> tuple[np.ndarray, np.ndarray]:
    ts = np.array([T0, T0 + 60_000, T0 + 120_000], dtype=np.int64)
    ohlcv = np.array(
        [
            [40000, 40000, 40000, 40000, 1],
            [40000, 40000, low, low + 100, 1],
            [low + 100, low + 100, low + 100, low + 100, 1],
        ],
        dtype=np.float64,
    )
    return ts, ohlcv


WHALE_B = bankruptcy_price(6000.0, 3.0, 40000.0, 0.0, 0.0)  # 38000
WHALE_L = liquidation_price(6000.0, 3.0, 40000.0, 0.0, 0.0, SPEC.tiers)


def run(sc, low=37000.0):
    eng = RiskEngine(sc, SPEC)
    ts, ohlcv = candles(low)
    before = [eng.total_value(m) for m in (30000.0, 40000.0)]
    res = run_candles(eng, ts, ohlcv)
    after = [eng.total_value(m) for m in (30000.0, 40000.0)]
    return eng, res, before, after


def test_all_four_conditions_deleverage():
    eng, res, before, after = run(scenario())
    assert WHALE_L > WHALE_B == pytest.approx(38000.0)
    (ev,) = res.deleverage_events
    assert ev["bankrupt_account"] == "whale"
    assert all(ev["checks"].values()) and len(ev["checks"]) == 4
    assert ev["bankruptcy_price"] == pytest.approx(WHALE_B, rel=1e-3)  # moved a hair by the step
    # one incremental step first (0.1, the market's capacity), then the takeover
    steps = res.liquidations[0]["steps"]
    assert [s["kind"] for s in steps] == ["step", "takeover"]
    assert steps[0]["qty"] == pytest.approx(0.1) and steps[0]["price"] > WHALE_B
    # the fund took the step's fee, paid what it could, and is at (about) zero
    fund = [f["balance"] for f in res.insurance_fund]
    assert fund[1] > 0 and min(fund) >= 0.0
    b = ev["bankruptcy_price"]
    assert eng.parties[FUND].balance < 0.1 * (b - 37000)  # cannot pay one more qty step
    # counterparties in rank order, each closed at the bankruptcy price, no haircut
    cps = ev["counterparties"]
    assert [c["account"] for c in cps] == ["s_hi", "s_lo", "s_loss"]
    scores = [c["score"] for c in cps]
    assert scores == sorted(scores, reverse=True)
    assert all(c["price"] == b for c in cps)
    assert cps[0]["realized_pnl"] == pytest.approx(1 * (41000 - b))
    total_closed = sum(c["qty"] for c in cps)
    bk = res.bankruptcies[0]
    assert total_closed == pytest.approx(bk["deleverage_qty"])
    assert bk["qty"] == pytest.approx(
        bk["market_qty"] + bk["liquidity_provider_qty"] + bk["insurance_fund_qty"] + total_closed
    )
    # value conserved across accounts, market, liquidity provider and fund (at any mark)
    assert after == pytest.approx(before, abs=1e-6)
    assert res.final["whale"]["balance"] == 0.0 and res.final["whale"]["long"] == 0.0


def test_not_bankrupt_no_deleverage():
    low = (WHALE_L + WHALE_B) / 2  # liquidated in part, never bankrupt
    _, res, before, after = run(scenario(), low=low)
    assert res.liquidations and not res.bankruptcies and not res.deleverage_events
    assert after == pytest.approx(before, abs=1e-6)


def test_capacity_at_bankruptcy_price_no_deleverage():
    # the market takes the rest at the bankruptcy price: the fund neither gains nor pays
    _, res, before, after = run(scenario(market={"capacity": 100}))
    assert not res.deleverage_events
    (bk,) = res.bankruptcies
    assert bk["checks"]["no_capacity_at_bankruptcy_price"] is False
    assert bk["market_qty"] == pytest.approx(bk["qty"])
    assert after == pytest.approx(before, abs=1e-6)


def test_liquidity_provider_no_deleverage():
    eng, res, before, after = run(scenario(liquidity_provider={"capacity": 5}))
    assert not res.deleverage_events
    (bk,) = res.bankruptcies
    assert bk["checks"]["no_capacity_at_bankruptcy_price"] is True
    assert bk["checks"]["no_liquidity_provider"] is False
    assert res.final["liquidity_provider"]["long"] == pytest.approx(bk["qty"])
    assert after == pytest.approx(before, abs=1e-6)


def test_insurance_fund_pays_no_deleverage():
    _, res, before, after = run(scenario(insurance_fund=1e6))
    assert not res.deleverage_events
    (bk,) = res.bankruptcies
    assert bk["checks"]["no_liquidity_provider"] is True
    assert bk["checks"]["insurance_fund_empty"] is False
    b = bk["bankruptcy_price"]
    fund = res.insurance_fund
    assert fund[-1]["balance"] == pytest.approx(
        1e6 + res.liquidations[0]["steps"][0]["fee"] - bk["qty"] * (b - 37000)
    )
    assert after == pytest.approx(before, abs=1e-6)


def test_fund_pays_in_part_never_below_zero():
    _, res, before, after = run(scenario(insurance_fund=50))
    (ev,) = res.deleverage_events
    bk = res.bankruptcies[0]
    assert 0 < bk["insurance_fund_qty"] < bk["qty"]
    assert min(f["balance"] for f in res.insurance_fund) >= 0.0
    assert after == pytest.approx(before, abs=1e-6)


def test_bitmex_ranking_and_tiers_step():
    _, res, *_ = run(scenario(ranking="bitmex", liquidation={"step": "tiers"}))
    (ev,) = res.deleverage_events
    scores = [c["score"] for c in ev["counterparties"]]
    assert scores == sorted(scores, reverse=True)
    assert ev["counterparties"][0]["account"] == "s_hi"


def test_deleverage_score():
    # short 1 @ 41000 at 38000 in an account of 8200: equity 11200, leverage 38000/11200
    s = deleverage_score(RANK_SEED, -1, 1.0, 41000.0, 38000.0, 8200.0)
    assert s == pytest.approx(38000 / 11200 * 1.0 * 3000 / 8200)
    b = deleverage_score(RANK_BITMEX, -1, 1.0, 41000.0, 38000.0, 8200.0)
    assert b == pytest.approx(3000 / 41000 * 38000 / 11200)
    assert deleverage_score(RANK_SEED, 1, 1.0, 41000.0, 38000.0, 8200.0) < 0  # a loss
    assert deleverage_score(RANK_SEED, 1, 0.0, 41000.0, 38000.0, 8200.0) == 0.0
    assert deleverage_score(RANK_SEED, 1, 1.0, 41000.0, 30000.0, 5000.0) == 0.0  # no equity


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"ranking": "random"}, "ranking"),
        ({"insurance_fund": -1}, "insurance_fund"),
        ({"market": {"capacity": "lots"}}, "market.capacity"),
        ({"liquidation": {"step": "half"}}, "liquidation.step"),
        ({"liquidation": {"steps_per_candle": 0}}, "liquidation.steps_per_candle"),
        ({"typo": 1}, "typo"),
        (
            {"traders": [{"side": "up", "size": 1, "entry_price": 1, "leverage": 2}]},
            "traders[0].side",
        ),
        ({"traders": [{"side": "long", "size": 1, "entry_price": 1}]}, "traders[0]"),
        (
            {
                "traders": [
                    {"side": "long", "size": 1, "entry_price": 100, "leverage": 2, "margin": 10}
                ]
            },
            "traders[0].leverage",
        ),
        ({"traders": []}, "traders"),
    ],
)
def test_scenario_errors_name_the_key(over, key):
    with pytest.raises(ConfigError) as ei:
        scenario(**over)
    assert str(ei.value).startswith(key)


def test_trader_two_of_three():
    sc = scenario(traders=[{"side": "long", "entry_price": 100, "leverage": 4, "margin": 50}])
    t = sc.traders[0]
    assert t.size == pytest.approx(2.0) and t.margin == 50 and t.leverage == 4
    assert math.isinf(scenario().market_capacity) is False


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "exchange-sim", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_bad_scenario_exit_2(tmp_path):
    p = tmp_path / "s.hjson"
    p.write_text(
        '{ symbol: "BTCUSDT", traders: [ { side: "long", size: 1, entry_price: -5, leverage: 3 } ] }'
    )
    r = _cli(str(p))
    assert r.returncode == 2
    assert "traders[0].entry_price" in r.stderr and "Traceback" not in r.stderr


def test_shipped_scenario_deleverages_the_bot():
    r = _cli("configs/scenarios/deleverage.hjson", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["deleverage_events"] and out["checks"]
    assert all(all(c.values()) for c in out["checks"])
    names = [c["account"] for e in out["deleverage_events"] for c in e["counterparties"]]
    assert "bot" in names
    assert out["bot_events"] and out["bot_events"][0].startswith("reduce:BTCUSDT:long:")
    assert out["bot"]["deleveraged"][0]["bot_fills_after"] > 0  # the grid carries on
    assert min(f["balance"] for f in out["insurance_fund"]) >= 0.0
    for key in ("liquidations", "insurance_fund"):
        assert out[key]
    step = out["liquidations"][0]["steps"][0]
    assert {"qty", "price", "fee"} <= set(step)


def test_risk_reports_the_deleverage_score_and_rank():
    from bot.commands.risk import assess

    # the bot's long of the shipped scenario at the short's bankruptcy price
    r = assess(
        10_000.0,
        long=(0.042, 31096.0),
        price=32021.66,
        scenario_path="configs/scenarios/deleverage.hjson",
    )
    assert r["deleverage_ranking"] == "seed"
    assert r["deleverage_score_long"] == pytest.approx(
        deleverage_score(RANK_SEED, 1, 0.042, 31096.0, 32021.66, 10_000.0)
    )
    assert r["deleverage_rank_long"] == {"rank": 2, "of": 3, "ahead": ["dip_buyer"]}
    assert r["deleverage_score_short"] is None and r["deleverage_rank_short"] is None
    b = assess(10_000.0, long=(0.042, 31096.0), price=32021.66, ranking="bitmex")
    assert b["deleverage_ranking"] == "bitmex" and b["deleverage_rank_long"] is None
    with pytest.raises(ConfigError, match="--scenario"):
        assess(1.0, long=(1.0, 1.0), scenario_path="no/such/file.hjson")


def test_deleverage_event_cuts_only_profitable_positions():
    from backtest.data import load_candles, parse_date_ms
    from backtest.engine import F_K, F_KIND, F_PRICE, F_QTY
    from backtest.events import parse_event
    from backtest.runner import run_backtest
    from bot.config import config_to_dict, load_config, parse_config
    from bot.core.params import KIND_OUTSIDE

    d = config_to_dict(load_config("configs/default.hjson"))
    d["backtest"]["symbols"] = ["BTCUSDT"]
    config = parse_config(d)
    candles = load_candles(
        "data/sample/binance_spot_1m",
        ["BTCUSDT"],
        start_ms=parse_date_ms("2021-05-18"),
        end_ms=parse_date_ms("2021-05-19T16:00"),
    )
    ts = candles.timestamps

    def outside(spec):
        ev = parse_event(spec)
        assert ev.kind == "deleverage"
        out = run_backtest(config, candles, [ev]).output
        return out, out.fills[out.fills[:, F_KIND] == KIND_OUTSIDE]

    # at 13:14 the grid's long (0.008 @ 31799.8) is in profit at the previous close (32093.54):
    # cut in full
    out, rows = outside("deleverage:100%@2021-05-19T13:14")
    (row,) = rows
    k = int(row[F_K])
    assert ts[k] == parse_date_ms("2021-05-19T13:14")
    assert row[F_QTY] == pytest.approx(-0.008) and row[F_PRICE] == candles.ohlcv[0, k - 1, 3]
    assert (out.fills[:, F_K] > k).sum() > 0  # the grid carries on
    # at 13:10 the long (0.084 @ 30777.68) is under water at 30101: untouched
    _, rows = outside("deleverage:1@2021-05-19T13:10")
    assert len(rows) == 0

"""Report folders: file contents, never overwriting, downsampling, valid and timely plots."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from backtest.metrics import compute_metrics
from backtest.report import _equity_rows, worst_day, write_report
from bot.config import config_to_dict, parse_config
from bot.core.params import KIND_CLOSE_GRID, KIND_ENTRY_INITIAL, KIND_LIQUIDATION, KIND_UNSTUCK
from tests.test_metrics import fill_row, make_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def crash_run(n: int = 96, n_symbols: int = 2, liquidated_k: int = -1, extra_fills=()):
    """Four days of 1h candles; coin 0 bottoms on day 2 (hour 60), fills of every kind."""
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_symbols, n)), axis=1))
    close[0, 60] *= 0.8
    ohlcv = np.empty((n_symbols, n, 5))
    ohlcv[:, :, 0] = close
    ohlcv[:, :, 3] = close
    ohlcv[:, :, 1] = close * 1.005
    ohlcv[:, :, 2] = close * 0.995
    ohlcv[:, :, 4] = 1.0
    pos = np.zeros((n, n_symbols, 4))
    pos[10:70, 0, 0:2] = (1.0, 100.0)
    if n_symbols > 1:
        pos[20:30, 1, 2:4] = (0.5, 100.0)
    eq = 1000 + np.cumsum(rng.normal(0, 1, n))
    fills = [
        fill_row(10, 0.0, KIND_ENTRY_INITIAL, qty=1.0, we=0.1, pos_size=1.0, pos_price=100.0),
        fill_row(40, -1.5, KIND_UNSTUCK, qty=-0.1, pos_size=0.9, pos_price=100.0),
        fill_row(70, 2.5, KIND_CLOSE_GRID, qty=-0.9),
        fill_row(20, 0.0, KIND_ENTRY_INITIAL, symbol=1, side=-1, qty=-0.5),
    ]
    fills += list(extra_fills)
    if liquidated_k >= 0:
        fills.append(fill_row(liquidated_k, -40.0, KIND_LIQUIDATION, qty=-1.0))
    return make_run(
        n=n,
        n_symbols=n_symbols,
        ohlcv=ohlcv,
        positions=pos,
        equity=eq,
        balance=np.full(n, 1000.0),
        starting_balance=1000.0,
        fills=fills,
        liquidated_k=liquidated_k,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, dict]:
    tmp = tmp_path_factory.mktemp("rep")
    src = tmp / "my.hjson"
    src.write_text("{ backtest: { starting_balance: 1000 } }\n")
    run = crash_run()
    metrics = compute_metrics(run)
    folder = write_report(run, metrics, tmp / "out", config_source=str(src))
    return folder, run, metrics


def test_folder_name_and_files(report):
    folder, _, _ = report
    assert re.fullmatch(r"backtest_\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ_[0-9a-f]{6}", folder.name)
    names = {p.name for p in folder.iterdir()}
    assert names == {
        "analysis.json", "fills.csv", "equity.csv", "config.json", "config.hjson",
        "balance_equity.png", "wallet_exposure.png", "price_BTCUSDT.png", "price_ETHUSDT.png",
    }  # fmt: skip


def test_never_overwrites(tmp_path: Path):
    run = crash_run()
    m = compute_metrics(run)
    folders = [write_report(run, m, tmp_path, plots=False) for _ in range(3)]  # same second
    assert len({f.name for f in folders}) == 3
    assert all((f / "analysis.json").exists() for f in folders)


def test_analysis_json(report):
    folder, run, metrics = report
    a = json.loads((folder / "analysis.json").read_text())
    assert a["metrics"] == json.loads(json.dumps(metrics))
    assert a["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert a["start_time"] == "2021-05-18T00:00:00Z"
    assert a["end_time"] == "2021-05-22T00:00:00Z"  # 96 hours later, exclusive
    assert a["filled_candles"] == {"BTCUSDT": 0, "ETHUSDT": 0}
    assert a["n_candles"] == 96


def test_config_files(report):
    folder, run, _ = report
    data = json.loads((folder / "config.json").read_text())
    assert parse_config(data) == run.config  # complete: accepted back unchanged
    assert data == config_to_dict(run.config)
    assert (folder / "config.hjson").read_text() == "{ backtest: { starting_balance: 1000 } }\n"


def test_fills_csv(report):
    folder, run, _ = report
    rows = list(csv.DictReader((folder / "fills.csv").open()))
    assert len(rows) == len(run.output.fills) == 4
    assert list(rows[0]) == [
        "time", "symbol", "side", "kind", "qty", "price", "fee", "realized_pnl", "balance",
        "wallet_exposure", "pos_size", "pos_price",
    ]  # fmt: skip
    first = rows[0]
    assert first["time"] == "2021-05-18T10:00:00Z"
    assert (first["symbol"], first["side"], first["kind"]) == ("BTCUSDT", "long", "entry_initial")
    assert float(first["qty"]) == 1.0 and float(first["pos_price"]) == 100.0
    assert [r["kind"] for r in rows] == ["entry_initial", "unstuck", "close", "entry_initial"]
    assert (rows[3]["symbol"], rows[3]["side"]) == ("ETHUSDT", "short")
    assert float(rows[1]["realized_pnl"]) == -1.5


def test_equity_csv_every_candle(report):
    folder, run, _ = report
    lines = (folder / "equity.csv").read_text().splitlines()
    assert lines[0] == "time,balance,equity"
    assert len(lines) == 1 + 96
    t, b, e = lines[1 + 5].split(",")
    assert t == "2021-05-18T05:00:00Z"
    assert float(b) == 1000.0 and float(e) == run.output.equity[5]


def test_equity_downsampling_keeps_bucket_minima(tmp_path: Path):
    run = crash_run(n=1000)
    eq = run.output.equity
    keep = _equity_rows(eq, 50)
    assert len(keep) <= 51 and keep[-1] == 999
    assert int(np.argmin(eq)) in keep  # the worst drawdown's bottom survives
    assert np.all(np.diff(keep) > 0)
    folder = write_report(run, compute_metrics(run), tmp_path, plots=False, equity_max_rows=50)
    lines = (folder / "equity.csv").read_text().splitlines()
    assert len(lines) == 1 + len(keep)
    assert min(float(x.split(",")[2]) for x in lines[1:]) == eq.min()


def test_pngs_are_valid_images(report):
    folder, _, _ = report
    for name in ("balance_equity.png", "wallet_exposure.png", "price_BTCUSDT.png"):
        p = folder / name
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = mpimg.imread(p)
        assert img.shape[0] > 400 and img.shape[1] > 800
        assert img.std() > 0.01  # not blank


def test_worst_day_is_the_lowest_low_or_the_liquidation():
    run = crash_run()
    k, why = worst_day(run, 0)
    assert k == 48 and "lowest low" in why  # hour 60 is on day 2, which starts at candle 48
    run = crash_run(liquidated_k=80)
    k, why = worst_day(run, 0)
    assert k == 72 and "liquidation" in why


def test_worst_day_of_a_short_only_coin_is_its_highest_high():
    run = crash_run()
    k, why = worst_day(run, 1)  # coin 1 was only ever short
    hi = int(np.argmax(run.candles.ohlcv[1, :, 1]))
    assert k == hi // 24 * 24 and "highest high" in why


def test_plots_with_liquidation(tmp_path: Path):
    run = crash_run(liquidated_k=80)
    folder = write_report(run, compute_metrics(run), tmp_path, config_source=None)
    assert not (folder / "config.hjson").exists()
    assert (folder / "price_BTCUSDT.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_plots_cover_every_coin_on_16k_candles_x_3(tmp_path: Path):
    n = 16_000
    rng = np.random.default_rng(1)
    # a realistic number of fills spread over the range and the coins
    fills = [
        fill_row(int(k), 0.0, KIND_ENTRY_INITIAL, symbol=int(s))
        for k, s in zip(rng.integers(0, n, 800), rng.integers(0, 3, 800), strict=True)
    ]
    run = crash_run(n=n, n_symbols=3, extra_fills=fills)
    assert len(run.output.fills) == 804
    m = compute_metrics(run)
    out = write_report(run, m, tmp_path, plots=True)
    # every coin gets its price chart, with the fills of a realistic run on it
    assert sorted(p.name for p in out.glob("price_*.png")) == [
        f"price_{s}.png" for s in sorted(run.candles.symbols)
    ]

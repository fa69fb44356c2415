"""`gridbot backtest` end to end: JSON on stdout, a report folder, clear errors with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.commands.backtest import resolve_data_path
from bot.config import KNOWN_METRICS
from bot.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "binance_spot_1m"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXTRA = {"liquidation_time", "starting_balance", "n_days", "realized_pnl"}


def write_config(folder: Path, data: str, results: Path) -> Path:
    cfg = folder / "bt.hjson"
    cfg.write_text(
        "{\n"
        "  // a test config\n"
        "  backtest: {\n"
        '    symbols: ["BTCUSDT", "ETHUSDT", "DOGEUSDT"]\n'
        f"    data: {json.dumps(data)}\n"
        f"    results_dir: {json.dumps(str(results))}\n"
        "  }\n"
        "}\n"
    )
    return cfg


def gridbot(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "backtest", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_backtest_json_and_report(tmp_path: Path):
    results = tmp_path / "results"
    cfg = write_config(tmp_path, str(SAMPLE), results)
    r = gridbot(
        str(cfg), "--json", "--symbols", "BTCUSDT,ethusdt",
        "--start", "2021-05-18", "--end", "2021-05-20",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # exactly one JSON object, nothing else on stdout
    assert r.stdout.strip().count("\n") == 0
    assert set(out) == set(KNOWN_METRICS) | EXTRA | {"report_dir", "symbols", "funding"}
    assert out["symbols"] == ["BTCUSDT", "ETHUSDT"]
    # spot sample data carries no funding history: the constant rate, and it says so
    assert out["funding"]["source"] == {"BTCUSDT": "constant", "ETHUSDT": "constant"}
    assert out["n_days"] > 0 and out["starting_balance"] == 10_000.0
    folder = Path(out["report_dir"])
    assert folder.parent == results  # --out defaults to backtest.results_dir
    for name in ("analysis.json", "fills.csv", "equity.csv", "config.json", "config.hjson"):
        assert (folder / name).is_file(), name
    for name in (
        "balance_equity.png",
        "wallet_exposure.png",
        "price_BTCUSDT.png",
        "price_ETHUSDT.png",
    ):
        assert (folder / name).read_bytes()[:8] == PNG_MAGIC, name
    analysis = json.loads((folder / "analysis.json").read_text())
    assert analysis["start_time"] == "2021-05-18T00:00:00Z"
    assert analysis["end_time"] == "2021-05-20T00:00:00Z"
    assert analysis["metrics"]["n_fills"] == out["n_fills"]
    n_fill_rows = len((folder / "fills.csv").read_text().splitlines()) - 1
    assert n_fill_rows == out["n_fills"]
    config = json.loads((folder / "config.json").read_text())
    assert config["backtest"]["symbols"] == ["BTCUSDT", "ETHUSDT"]  # the flags' config
    assert (results / "cache").is_dir()  # candles cached under results_dir
    assert "report:" in r.stderr and "final_equity" in r.stderr  # human output on stderr


@pytest.mark.slow
def test_relative_data_resolves_against_the_config_folder(tmp_path: Path):
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "candles").symlink_to(SAMPLE)
    cfg = write_config(cfg_dir, "candles", tmp_path / "results")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out_dir = tmp_path / "out"
    r = gridbot(
        str(cfg), "--symbols", "DOGEUSDT", "--start", "2021-05-19", "--end", "2021-05-19T12:00",
        "--out", str(out_dir), "--no-plots", "--json", cwd=elsewhere,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    folder = Path(json.loads(r.stdout)["report_dir"])
    assert folder.parent == out_dir
    assert (folder / "analysis.json").is_file()
    assert not list(folder.glob("*.png"))


def test_resolve_data_path_prefers_the_current_directory(tmp_path: Path, monkeypatch):
    cfg_dir = tmp_path / "cfg"
    (cfg_dir / "d").mkdir(parents=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert resolve_data_path("d", cfg_dir / "x.hjson") == cfg_dir / "d"
    (cwd / "d").mkdir()
    assert resolve_data_path("d", cfg_dir / "x.hjson") == cwd / "d"
    with pytest.raises(DataError, match="looked in"):
        resolve_data_path("nope", cfg_dir / "x.hjson")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2021-05-32"], "--start: date '2021-05-32' is not understood"),
        (["--start", "2021-05-19", "--end", "2021-05-18"], "is not before end date"),
        (["--symbols", "BTCUSDT,FOOUSDT"], "no candle file for FOOUSDT"),
        (["--start", "2030-01-01"], "no candles in the requested range"),
        (["--data", "/nonexistent/candles"], "no such candle file or folder"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path: Path, args: list[str], message: str):
    cfg = write_config(tmp_path, str(SAMPLE), tmp_path / "results")
    r = gridbot(str(cfg), "--json", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert r.stdout == ""


def test_missing_config_exits_2(tmp_path: Path):
    r = gridbot(str(tmp_path / "missing.hjson"))
    assert r.returncode == 2
    assert "cannot read config" in r.stderr

"""`gridbot optimize`: search space checks, constraints, Pareto configs that reproduce, resume,
parallel workers on one SQLite study, and two processes sharing a PostgreSQL study."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import hjson
import numpy as np
import optuna
import pytest

from backtest.data import load_candles, parse_date_ms
from backtest.metrics import compute_metrics
from backtest.optimize import (
    build_search_space,
    config_fingerprint,
    constraint_values,
    is_feasible,
    mask_url,
    objective_values,
    pareto_front,
    run_optimize,
)
from backtest.runner import run_backtest
from bot.cli import main as cli_main
from bot.config import load_config, parse_config
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "sample" / "binance_spot_1m"
BOUNDS = {
    "bot.long.total_wallet_exposure_limit": [0.3, 6.0],
    "bot.long.n_positions": [1, 3, 1],
    "bot.long.entry_grid_spacing_pct": [0.005, 0.05],
}


def config_dict(results_dir: Path, **optimize: object) -> dict:
    return {
        "backtest": {
            "data": str(DATA),
            "symbols": ["BTCUSDT"],
            "start_date": "2021-05-18",
            "end_date": "2021-05-20",
            "results_dir": str(results_dir),
        },
        "optimize": {
            "seed": 7,
            "bounds": BOUNDS,
            "objectives": [
                {"metric": "adg", "direction": "maximize"},
                {"metric": "drawdown_worst", "direction": "minimize"},
            ],
            "constraints": {"drawdown_worst": {"max": 0.25}, "hours_stuck_max": {"max": 12.0}},
            **optimize,
        },
    }


def write_config(path: Path, data: dict) -> Path:
    path.write_text(hjson.dumps(data))
    return path


def satisfies(metrics: dict, constraints: dict) -> bool:
    if metrics["liquidated"]:
        return False
    for name, lim in constraints.items():
        v = metrics[name]
        if v is None:
            return False
        if "min" in lim and lim["min"] is not None and v < lim["min"]:
            return False
        if "max" in lim and lim["max"] is not None and v > lim["max"]:
            return False
    return True


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


# --------------------------------------------------------------------------- fast: checks


@pytest.mark.parametrize(
    "bounds, words",
    [
        (
            {"bot.long.total_wallet_exposure_limit": [3.0, 1.0]},
            ["total_wallet_exposure_limit", "low"],
        ),
        ({"bot.long.no_such_param": [0.1, 0.2]}, ["bot.long.no_such_param", "unknown parameter"]),
        ({"bot.middle.n_positions": [1, 2]}, ["bot.middle.n_positions"]),
    ],
)
def test_bad_bounds_are_config_errors_naming_the_key(tmp_path, capsys, bounds, words):
    data = config_dict(tmp_path)
    data["optimize"]["bounds"] = bounds
    path = write_config(tmp_path / "bad.hjson", data)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    for w in words:
        assert w in str(exc.value)
    code, out, err = run_cli(["optimize", str(path), "--trials", "2"], capsys)
    assert code == 2
    assert out == ""
    for w in words:
        assert w in err


@pytest.mark.parametrize(
    "bounds, words",
    [
        # inside the bounds' own shape check, outside what the parameter allows
        ({"bot.long.close_grid_qty_pct": [0.0, 0.5]}, ["bot.long.close_grid_qty_pct", "low 0"]),
        ({"bot.long.entry_grid_spacing_pct": [0.01, 2.0]}, ["entry_grid_spacing_pct", "high 2"]),
        ({"bot.long.n_positions": [1, 2.5]}, ["bot.long.n_positions", "integer"]),
        ({"bot.short.entry_grid_spacing_pct": [0.01, 0.02]}, ["bot.short", "enabled"]),
    ],
)
def test_bounds_outside_parameter_range_fail_before_any_trial(tmp_path, capsys, bounds, words):
    data = config_dict(tmp_path)
    data["optimize"]["bounds"] = bounds
    with pytest.raises(ConfigError) as exc:
        build_search_space(parse_config(data))
    for w in words:
        assert w in str(exc.value)
    code, out, err = run_cli(
        ["optimize", str(write_config(tmp_path / "c.hjson", data)), "--trials", "2"], capsys
    )
    assert code == 2 and out == ""
    assert words[0] in err
    assert not (tmp_path / "optimize").exists()  # nothing started


def test_cli_value_errors_exit_2(tmp_path, capsys):
    path = write_config(tmp_path / "c.hjson", config_dict(tmp_path))
    for argv, word in (
        (["--trials", "0"], "--trials"),
        (["--start", "yesterday"], "--start"),
        (["--symbols", " , "], "--symbols"),
    ):
        code, out, err = run_cli(["optimize", str(path), *argv], capsys)
        assert code == 2 and word in err


def test_search_space_types():
    cfg = parse_config(config_dict(Path("/tmp/x")))
    space = {p.key: p for p in build_search_space(cfg)}
    assert space["bot.long.n_positions"].is_int and space["bot.long.n_positions"].step == 1
    assert not space["bot.long.total_wallet_exposure_limit"].is_int


def test_constraints_and_objectives_from_metrics():
    cfg = parse_config(
        config_dict(
            Path("/tmp/x"),
            constraints={
                "drawdown_worst": {"max": 0.3},
                "adg": {"min": 0.001},
                "loss_profit_ratio": {"max": 0.5},
            },
            objectives=[
                {"metric": "adg", "direction": "maximize"},
                {"metric": "loss_profit_ratio", "direction": "minimize"},
            ],
        )
    )
    ok = {"liquidated": False, "drawdown_worst": 0.1, "adg": 0.01, "loss_profit_ratio": 0.2}
    c = constraint_values(cfg, ok)
    assert c["liquidated"] == 0.0 and is_feasible(c)
    assert c["drawdown_worst.max"] == pytest.approx(-0.2)
    assert c["adg.min"] == pytest.approx(-0.009)
    assert not is_feasible(constraint_values(cfg, {**ok, "liquidated": True}))
    assert not is_feasible(constraint_values(cfg, {**ok, "drawdown_worst": 0.31}))
    assert not is_feasible(constraint_values(cfg, {**ok, "adg": 0.0}))
    # loss_profit_ratio None = losses and no profit: infinitely bad, violates, worst objective
    bad = {**ok, "loss_profit_ratio": None}
    assert not is_feasible(constraint_values(cfg, bad))
    assert all(math.isfinite(v) for v in constraint_values(cfg, bad).values())
    assert objective_values(cfg, bad) == [0.01, math.inf]
    # an undefined metric in a maximized objective is the worst, -inf
    assert objective_values(cfg, {**ok, "adg": None})[0] == -math.inf


def test_pareto_front():
    v = np.array([[1.0, 1.0], [2.0, 2.0], [2.0, 1.0], [0.5, 0.2], [2.0, 1.0]])
    # maximize the first, minimize the second: (2,1) twice and (0.5,0.2) are non-dominated
    assert pareto_front(v, ["maximize", "minimize"]).tolist() == [2, 3, 4]
    assert pareto_front(v, ["minimize", "minimize"]).tolist() == [3]
    assert pareto_front(np.zeros((0, 2)), ["minimize", "minimize"]).tolist() == []


def test_mask_url():
    assert "s3cret" not in mask_url("postgresql://bob:s3cret@db.example:5432/optuna")
    assert mask_url("postgresql://bob:s3cret@db:5432/x").startswith("postgresql://bob:***@db")
    assert mask_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_fingerprint_ignores_runtime_knobs(tmp_path):
    a = parse_config(config_dict(tmp_path))
    b = parse_config(config_dict(tmp_path / "other", n_trials=5, workers=2, seed=1))
    assert config_fingerprint(a) == config_fingerprint(b)
    c = config_dict(tmp_path)
    c["backtest"]["end_date"] = "2021-05-19"
    assert config_fingerprint(parse_config(c)) != config_fingerprint(a)


# --------------------------------------------------------------------------- slow: studies


@pytest.mark.slow
def test_pareto_configs_are_feasible_and_reproduce_their_metrics(tmp_path):
    data = config_dict(tmp_path / "results")
    path = write_config(tmp_path / "study.hjson", data)
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "optimize", str(path), "--trials", "30"]
        + ["--workers", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["n_trials"] == 30 and res["study"].startswith("study-")
    out = Path(res["results_dir"])
    assert out == tmp_path / "results" / "optimize" / res["study"]
    assert (out / "pareto.png").stat().st_size > 0
    assert "Pareto front" in proc.stderr

    # trials.csv: every trial, and the constraints did bite on some (else this tests nothing)
    import csv

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(30))
    assert {r["feasible"] for r in rows} == {"True", "False"}

    assert res["pareto"]
    constraints = data["optimize"]["constraints"]
    for entry in res["pareto"]:
        assert satisfies(entry["metrics"], constraints)
        assert all(v <= 0 for v in entry["constraints"].values())
        cfg = load_config(entry["config_path"])  # the file as written, as `gridbot backtest` would
        for key, value in entry["params"].items():
            _, side, name = key.split(".")
            assert getattr(cfg.side(side), name) == value
        bt = cfg.backtest
        assert (bt.data, bt.symbols, bt.start_date, bt.end_date) == (
            str(DATA),
            ("BTCUSDT",),
            "2021-05-18",
            "2021-05-20",
        )
        candles = load_candles(
            bt.data,
            bt.symbols,
            start_ms=parse_date_ms(bt.start_date),
            end_ms=parse_date_ms(bt.end_date),
            max_gap_minutes=bt.max_gap_minutes,
        )
        assert compute_metrics(run_backtest(cfg, candles)) == entry["metrics"]
    written = sorted(int(p.stem) for p in (out / "pareto").glob("*.hjson"))
    assert written == sorted(e["number"] for e in res["pareto"])

    # The front is also what Optuna itself calls the feasible Pareto front.
    study = optuna.load_study(
        study_name=res["study"], storage=f"sqlite:///{tmp_path}/results/optimize/{res['study']}.db"
    )
    assert sorted(t.number for t in study.best_trials) == written


@pytest.mark.slow
def test_resume_adds_trials(tmp_path):
    cfg = parse_config(config_dict(tmp_path))
    first = run_optimize(cfg, n_trials=5, workers=1, study_name="resume", progress=False)
    assert (first.n_trials, first.n_run) == (5, 5)
    second = run_optimize(cfg, n_trials=4, workers=1, study_name="resume", progress=False)
    assert (second.n_trials, second.n_run) == (9, 4)
    study = optuna.load_study(
        study_name="resume", storage=f"sqlite:///{tmp_path}/optimize/resume.db"
    )
    assert sorted(t.number for t in study.trials) == list(range(9))
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params)  # the resumed run did not replay the same points

    # A different search joined under the same name would mix incomparable trials.
    other = parse_config(
        config_dict(tmp_path, bounds={"bot.long.total_wallet_exposure_limit": [0.5, 1.0]})
    )
    with pytest.raises(ConfigError, match="different config"):
        run_optimize(other, n_trials=1, workers=1, study_name="resume", progress=False)


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    cfg = parse_config(config_dict(tmp_path))
    res = run_optimize(cfg, n_trials=16, workers=2, study_name="par", progress=False)
    assert res.n_run == 16 and res.n_trials == 16 and res.n_failed == 0
    assert len(res.workers) == 2 and sum(w.trials for w in res.workers) == 16
    assert all(w.peak_rss_bytes > 0 for w in res.workers)
    study = optuna.load_study(study_name="par", storage=f"sqlite:///{tmp_path}/optimize/par.db")
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(16))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert {t.user_attrs["worker"] for t in study.trials} <= {0, 1}


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_share_a_postgresql_study(tmp_path):
    pytest.importorskip("psycopg2")
    import psycopg2

    from tests.pg_server import postgres_server

    with postgres_server() as pg:
        con = psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["user"], dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE gridbot_opt")
        con.close()
        # trust auth ignores the password; it is there to check that no output shows it
        url = f"postgresql://postgres:Pw-s3cret@{pg['host']}:{pg['port']}/gridbot_opt"
        # one process gets the URL from --storage, the other from optimize.storage
        path = write_config(tmp_path / "pg.hjson", config_dict(tmp_path / "results"))
        path_b = write_config(
            tmp_path / "pg_b.hjson", config_dict(tmp_path / "results", storage=url)
        )
        counts = (7, 5)
        argvs = [[str(path), "--storage", url], [str(path_b)]]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "bot.cli", "optimize", *argv]
                + ["--study", "shared", "--trials", str(n), "--workers", "1", "--json"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for argv, n in zip(argvs, counts, strict=True)
        ]
        outs = [p.communicate(timeout=240) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
            assert "Pw-s3cret" not in out + err
            assert json.loads(out)["storage"].startswith("postgresql://postgres:***@")
        # the CLI took the plain URL (it picks the installed driver); here psycopg2 explicitly
        study = optuna.load_study(
            study_name="shared", storage=url.replace("postgresql://", "postgresql+psycopg2://")
        )
        numbers = [t.number for t in study.trials]
        assert len(numbers) == sum(counts)
        assert sorted(numbers) == list(range(sum(counts)))
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        written = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
        assert any(p.suffix == ".hjson" for p in written)
        for p in written:
            assert b"Pw-s3cret" not in p.read_bytes(), p


# --------------------------------------------------------------------------- speed-ups keep behaviour


def test_trial_config_is_the_fully_validated_config(tmp_path):
    from backtest.optimize import trial_config
    from bot.config import config_to_dict, with_overrides

    cfg = parse_config(config_dict(tmp_path))
    params = {
        "bot.long.total_wallet_exposure_limit": 2.5,
        "bot.long.n_positions": 2,
        "bot.long.entry_grid_spacing_pct": 0.013,
    }
    fast = trial_config(cfg, params)
    assert config_to_dict(fast) == config_to_dict(with_overrides(cfg, params))
    assert fast.bot.long.n_positions == 2 and fast.bot.short == cfg.bot.short
    with pytest.raises(ConfigError, match="bot.long.entry_grid_spacing_pct"):
        trial_config(cfg, {"bot.long.entry_grid_spacing_pct": 2.0})


def _frozen(number: int, values: list[float], violation: float) -> optuna.trial.FrozenTrial:
    t = optuna.trial.create_trial(
        values=values,
        params={"x": float(number)},
        distributions={"x": optuna.distributions.FloatDistribution(0.0, 1e6)},
        system_attrs={"constraints:liquidated": violation},
    )
    t.number = number
    return t


def test_sampler_history_is_bounded_and_keeps_the_best():
    from backtest.optimize.sampler import ELITE_TRIALS, RECENT_TRIALS, history_window

    rng = np.random.default_rng(3)
    trials = [
        _frozen(i, [float(rng.uniform(0, 1)), float(rng.uniform(0, 1))], 0.0) for i in range(3000)
    ]
    trials[5] = _frozen(5, [2.0, 0.5], 0.0)  # the best adg, old
    trials[6] = _frozen(6, [5.0, 0.0], 1.0)  # better still, but infeasible
    dirs = ["maximize", "minimize"]
    window = history_window(trials, dirs)
    assert len(window) <= RECENT_TRIALS + ELITE_TRIALS
    numbers = [t.number for t in window]
    assert numbers == sorted(numbers)  # history order kept
    assert set(range(3000 - RECENT_TRIALS, 3000)) <= set(numbers)
    assert 5 in numbers and 6 not in numbers
    front = {int(i) for i in pareto_front(np.array([t.values for t in trials]), dirs)} - {6}
    assert front <= set(numbers)  # the whole feasible Pareto front
    assert history_window(trials[:100], dirs) == trials[:100]  # a short history: all of it


def test_progress_line_shows_trials_per_second(tmp_path):
    from backtest.optimize.progress import Progress

    bar = Progress(False, 10, parse_config(config_dict(tmp_path)), None)
    bar.add([_frozen(0, [0.01, 0.1], 0.0), _frozen(1, [0.02, 0.1], 1.0)])
    text = bar.status(0)
    assert "trials/s" in text and "2 done, 1 feasible" in text and "best adg 0.01 (#0)" in text


@pytest.mark.slow
def test_one_worker_study_is_reproducible_and_nsga2_is_an_option(tmp_path, capsys):
    params = []
    for run in ("a", "b"):
        cfg = parse_config(config_dict(tmp_path / run))
        run_optimize(cfg, n_trials=14, workers=1, study_name="rep", progress=False)
        study = optuna.load_study(
            study_name="rep", storage=f"sqlite:///{tmp_path / run}/optimize/rep.db"
        )
        params.append([t.params for t in study.trials])
    assert len(params[0]) == 14 and params[0] == params[1]
    assert len({tuple(sorted(p.items())) for p in params[0]}) == 14

    path = write_config(tmp_path / "n.hjson", config_dict(tmp_path / "n"))
    code, out, err = run_cli(["optimize", str(path), "--trials", "6", "--workers", "2"]
                             + ["--sampler", "nsga2", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    res = json.loads(out)
    assert res["sampler"] == "nsga2" and res["n_trials"] == 6 and "nsga2" in err
    code, out, err = run_cli(["optimize", str(path), "--sampler", "cmaes"], capsys)
    assert code == 2 and "--sampler" in err and out == ""


def test_batched_writes_read_back_as_optunas_own(tmp_path):
    """The main process writes finished trials in one transaction with Optuna's table models:
    the study reads back the same trials (numbers, params, values incl. -inf, attrs, times)."""
    from backtest.optimize.storage import open_storage, write_trials

    mem = optuna.create_study(directions=["maximize", "minimize"])
    for i in range(7):
        t = mem.ask()
        t.suggest_float("x", 0.0, 1.0)
        t.suggest_int("n", 1, 3)
        t.set_user_attr("metrics", {"adg": None if i == 3 else 0.001 * i, "liquidated": False})
        t.set_constraint("liquidated", float(i % 2))
        mem.tell(t, [-math.inf if i == 3 else 0.1 * i, 0.5])
    rdb = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    optuna.create_study(study_name="s", storage=rdb, directions=["maximize", "minimize"])
    sid = rdb.get_study_id_from_name("s")
    done = mem.get_trials()
    write_trials(rdb, sid, done[:3])
    write_trials(rdb, sid, done[3:])
    back = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").trials

    def row(t: optuna.trial.FrozenTrial) -> tuple:
        return (t.number, t.state, t.params, t.distributions, t.values, t.user_attrs,
                t.system_attrs, t.constraints, t.datetime_start, t.datetime_complete)  # fmt: skip

    assert [row(t) for t in back] == [row(t) for t in done]
    assert back[3].values[0] == -math.inf


def test_worker_sampler_study_stays_bounded_and_keeps_the_front_as_trials_arrive():
    from backtest.optimize.sampler import ELITE_TRIALS, REBUILD_FACTOR, RECENT_TRIALS
    from backtest.optimize.worker import SamplerStudy

    rng = np.random.default_rng(5)
    dirs = ["maximize", "minimize"]
    trials = [
        _frozen(i, [float(rng.uniform(0, 1)), float(rng.uniform(0, 1))], float(i % 7 == 0))
        for i in range(2500)
    ]
    book = SamplerStudy(dirs, trials[:400])  # a resumed study's history, then new trials
    for k in range(400, 2500, 37):
        book.absorb(trials[k : k + 37])
        held = book.study.get_trials(deepcopy=False)
        assert len(held) <= REBUILD_FACTOR * (RECENT_TRIALS + ELITE_TRIALS) + 37
    feasible = [t for t in trials if t.system_attrs["constraints:liquidated"] == 0.0]
    front = {feasible[i].params["x"] for i in pareto_front([t.values for t in feasible], dirs)}
    seen = {t.params["x"] for t in book.study.get_trials(deepcopy=False)}
    assert front <= seen  # every trial of the feasible Pareto front is still in view
    assert {t.params["x"] for t in trials[-RECENT_TRIALS:]} <= seen

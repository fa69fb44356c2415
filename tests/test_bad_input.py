"""Bad input never crashes or hangs, and nothing is left half-done (issue 14).

Each case found by trying gridbot as a careless user would: every one ends in exit code 2 with
one message naming what is wrong (the key, the file and row, the flag and value), or is handled
as the README says. In-process through ``bot.cli.main`` where possible (fast); a few
subprocesses prove that no traceback reaches the terminal and that a kill -9 leaves nothing
half-done.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import load_config, parse_config
from bot.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "binance_spot_1m"
DEFAULT = ROOT / "configs" / "default.hjson"
T0 = 1_621_382_400_000  # 2021-05-19T00:00:00Z


def gridbot(*argv: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_exit_2(result: tuple[int, str, str], *words: str) -> str:
    code, out, err = result
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err and "internal error" not in err, err
    assert "error:" in err
    for w in words:
        assert w in err, (w, err)
    return err


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# --------------------------------------------------------------------------- config files

BAD_CONFIGS = [
    # (file name, content, words the message must hold)
    ("bin.hjson", bytes(range(256)) * 4, ["binary"]),
    ("u16.hjson", "{bot: {long: {n_positions: 2}}}".encode("utf-16"), ["UTF-16"]),
    ("u16le.hjson", "{bot: {}}".encode("utf-16-le"), ["binary", "UTF-16"]),
    ("latin1.hjson", "{backtest: {data: 'caf\xe9'}}".encode("latin-1"), ["not UTF-8", "line 1"]),
    (
        "bigint.hjson",
        "{bot: {long: {n_positions: 99999999999999999999999}}}",
        ["bot.long.n_positions", "too large"],
    ),
    ("inf.hjson", "{\n bot: {long: {total_wallet_exposure_limit: 1e999}}}", ["1e999", "line 2"]),
    ("deep.hjson", "{a:" * 3000 + "1" + "}" * 3000, ["nested"]),
    ("deep2.hjson", "{bot: " + "[" * 200 + "]" * 200 + "}", ["nested"]),
    (
        "dup.hjson",
        "{bot: {long: {total_wallet_exposure_limit: 1, total_wallet_exposure_limit: 2}}}",
        ["bot.long.total_wallet_exposure_limit", "twice"],
    ),
    ("dupsection.hjson", "{live: {}, live: {leverage: 5}}", ["key live", "twice"]),
    ("nul.hjson", '{backtest: {data: "a\\u0000b"}}', ["backtest.data", "NUL"]),
    ("surrogate.hjson", '{backtest: {data: "\\ud800"}}', ["backtest.data", "surrogate"]),
    ("huge.hjson", "// " + "x" * (2 << 20) + "\n{}", ["bytes", "allowed"]),
]


@pytest.mark.parametrize(("name", "content", "words"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_file_exits_2_naming_the_problem(tmp_path, name, content, words):
    path = write(tmp_path / name, content)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))
    # the same file through two commands: backtest CONFIG and risk --config
    assert_exit_2(gridbot("backtest", path, "--no-plots"), name, *words)
    assert_exit_2(gridbot("risk", "--balance", "100", "--config", path), "--config", *words)


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "fifo", "folder"])
def test_config_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path, special):
    if special == "fifo":
        path = tmp_path / "config.hjson"
        os.mkfifo(path)  # opening a FIFO for reading would block until a writer comes
        kind = "pipe"
    elif special == "folder":
        path, kind = tmp_path, "folder"
    else:
        path, kind = Path(special), "device"
    t0 = time.monotonic()
    assert_exit_2(gridbot("risk", "--balance", "1", "--config", path), str(path), kind)
    assert_exit_2(gridbot("backtest", path), "not a regular file")
    assert time.monotonic() - t0 < 10


def test_duplicate_keys_in_a_list_of_objects_are_found_too(tmp_path):
    path = write(
        tmp_path / "c.hjson",
        '{optimize: {objectives: [{metric: "adg", direction: "maximize", metric: "gain"}]}}',
    )
    with pytest.raises(ConfigError, match=r"optimize\.objectives\.0\.metric is given twice"):
        load_config(path)


def test_config_dicts_from_code_get_the_same_checks():
    with pytest.raises(ConfigError, match="bot.long.n_positions.*too large"):
        parse_config({"bot": {"long": {"n_positions": 2**70}}})
    with pytest.raises(ConfigError, match="finite"):
        parse_config({"backtest": {"starting_balance": float("nan")}})


def test_results_dir_inside_the_source_tree_is_refused(tmp_path):
    for inside in (ROOT / "bot" / "out", ROOT / "configs", ROOT, ROOT / "data" / "sample"):
        cfg = write(tmp_path / "c.json", json.dumps({"backtest": {"results_dir": str(inside)}}))
        with pytest.raises(ConfigError, match="backtest.results_dir.*source tree"):
            load_config(cfg)
    cfg = write(tmp_path / "c.json", json.dumps({"live": {"state_dir": str(ROOT / "tests")}}))
    with pytest.raises(ConfigError, match="live.state_dir.*source tree"):
        load_config(cfg)
    # results/ under the project (the default, git-ignored) stays fine
    write(tmp_path / "ok.json", json.dumps({"backtest": {"results_dir": str(ROOT / "results")}}))
    load_config(tmp_path / "ok.json")


def test_exchange_urls_in_the_config_are_checked():
    with pytest.raises(ConfigError, match="live.base_url.*not a http/https URL"):
        parse_config({"live": {"base_url": "notaurl"}})
    with pytest.raises(ConfigError, match="live.ws_url.*not a ws/wss URL"):
        parse_config({"live": {"ws_url": "http://127.0.0.1:8081"}})
    cfg = parse_config({"live": {"base_url": "http://127.0.0.1:8080", "ws_url": "ws://[::1]:81"}})
    assert cfg.live.base_url == "http://127.0.0.1:8080"


def test_a_symbol_that_cannot_name_a_file_is_a_config_error(tmp_path):
    cfg = write(tmp_path / "c.hjson", '{backtest: {symbols: ["../../etc/passwd"]}}')
    with pytest.raises(ConfigError, match="backtest.symbols.*not a symbol"):
        load_config(cfg)


# --------------------------------------------------------------------------- candle files


def candle_csv(timestamps: list[int]) -> str:
    rows = [f"{t},100,101,99,100.5,1" for t in timestamps]
    return "timestamp_ms,open,high,low,close,volume\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("scale", "words"),
    [(1 / 1000, ["row 1", "1621382400", "seconds"]), (1000, ["row 1", "microseconds"])],
)
def test_candle_timestamps_not_in_milliseconds_are_refused(tmp_path, scale, words):
    from backtest.data import load_candles

    ts = [int((T0 + i * 60_000) * scale) for i in range(50)]
    path = write(tmp_path / "BTCUSDT.csv", candle_csv(ts))
    with pytest.raises(DataError) as exc:
        load_candles(path)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))
    cfg = write(tmp_path / "c.hjson", '{backtest: {symbols: ["BTCUSDT"]}}')
    assert_exit_2(
        gridbot("backtest", cfg, "--data", path, "--out", tmp_path / "out"), "BTCUSDT.csv", *words
    )
    assert not (tmp_path / "out").exists()


def test_candle_path_that_is_a_device_is_refused(tmp_path):
    from backtest.data import load_candles

    with pytest.raises(DataError, match="device"):
        load_candles("/dev/zero")


def test_gzip_bomb_is_read_only_up_to_the_limit(tmp_path, monkeypatch):
    import backtest.data as data

    monkeypatch.setattr(data, "MAX_CANDLE_FILE_BYTES", 10_000)
    path = write(tmp_path / "BTCUSDT.csv.gz", gzip.compress(b"0" * 5_000_000))
    with pytest.raises(DataError, match="more than the 10,000 bytes"):
        data.load_candles(path)


# --------------------------------------------------------------------------- flags

BAD_FLAGS = [
    # (argv, words the message must hold)
    (["backtest", DEFAULT, "--start", "9" * 26], ["--start", "9999"]),
    (["backtest", DEFAULT, "--end", "-99999999999999999"], ["--end"]),
    (["backtest", DEFAULT, "--start", "2021-05-19T99:00"], ["--start", "not understood"]),
    (["backtest", DEFAULT, "--symbols", "BTC USDT"], ["--symbols", "BTC USDT"]),
    (["backtest", DEFAULT, "--symbols", "../BTCUSDT"], ["--symbols", "../BTCUSDT"]),
    (["backtest", DEFAULT, "--symbols", "BTCUSDT,btcusdt"], ["--symbols", "more than once"]),
    (["backtest", DEFAULT, "--out", "/proc/gridbot"], ["--out", "/proc", "system folder"]),
    (["backtest", DEFAULT, "--out", ROOT / "bot"], ["--out", "source tree"]),
    (
        ["download", "--symbols", "BTCUSDT", "--start", "2024-01-01", "--base-url", "notaurl"],
        ["--base-url", "notaurl"],
    ),  # fmt: skip
    (
        ["download", "--symbols", "BTCUSDT", "--start", "2024-01-01", "--retries", "-1"],
        ["--retries", "-1"],
    ),  # fmt: skip
    (
        ["download", "--symbols", "BTCUSDT", "--start", "2024-01-01", "--out", "/proc/self/x"],
        ["--out", "/proc"],
    ),  # fmt: skip
    (["download", "--symbols", "BTCUSDT", "--start", "9" * 30], ["--start"]),
    (["venue", "--data", SAMPLE, "--speed", "nan"], ["--speed", "nan"]),
    (["venue", "--data", SAMPLE, "--speed", "0"], ["--speed", "'0'"]),
    (["venue", "--data", SAMPLE, "--balance", "nan"], ["--balance", "nan"]),
    (["venue", "--data", SAMPLE, "--balance", "inf"], ["--balance", "inf"]),
    (["venue", "--data", SAMPLE, "--maker-fee", "nan"], ["--maker-fee", "nan"]),
    (["venue", "--data", SAMPLE, "--taker-fee", "-1"], ["--taker-fee", "-1"]),
    (["venue", "--data", SAMPLE, "--funding-rate", "1e999"], ["--funding-rate"]),
    (["venue", "--data", SAMPLE, "--port", "9" * 30], ["--port"]),
    (["venue", "--data", SAMPLE, "--results", "/proc/x"], ["--results", "/proc"]),
    (["live", DEFAULT, "--dry-run", "--speed", "0"], ["--speed", "'0'"]),
    (["live", DEFAULT, "--dry-run", "--speed", "nan"], ["--speed", "nan"]),
    (["live", DEFAULT, "--dry-run", "--max-minutes", "-1"], ["--max-minutes", "-1"]),
    (["live", DEFAULT, "--dry-run", "--max-minutes", "0"], ["--max-minutes"]),
    (["optimize", DEFAULT, "--trials", "9" * 30], ["--trials"]),
    (["optimize", DEFAULT, "--workers", "0"], ["--workers"]),
    (["optimize", DEFAULT, "--storage", "not a url"], ["--storage", "storage URL"]),
    (["optimize", DEFAULT, "--study", "../x"], ["--study"]),
    (["optimize", DEFAULT, "--storage", "sqlite:////proc/x.db"], ["--storage", "/proc"]),
    (["replay", DEFAULT, "--data", SAMPLE, "--start", "9" * 30], ["--start"]),
    (["risk", "--balance", "nan"], ["--balance"]),
]


@pytest.mark.parametrize(
    ("argv", "words"), BAD_FLAGS, ids=[" ".join(map(str, a[:1] + a[-2:])) for a, _ in BAD_FLAGS]
)
def test_bad_flag_exits_2_naming_the_flag_and_value(argv, words):
    err = assert_exit_2(gridbot(*argv), *words)
    assert err.count("\n") == 1, err  # one line: no usage block, no traceback


def test_out_naming_an_existing_file(tmp_path):
    f = write(tmp_path / "taken", "x")
    assert_exit_2(gridbot("backtest", DEFAULT, "--out", f), "--out", "is a file")
    assert_exit_2(gridbot("backtest", DEFAULT, "--out", f / "sub"), "--out", "is a file")
    assert_exit_2(
        gridbot("download", "--symbols", "BTCUSDT", "--start", "2024-01-01", "--out", f),
        "--out",
        "is a file",
    )


def _as_non_root(monkeypatch):
    """As root every folder is writable to os.access: judge by the mode bits instead."""
    if os.geteuid() != 0:
        return
    import bot.inputs

    def access(path, mode):
        st = os.stat(path)
        return not (mode & os.W_OK) or bool(st.st_mode & stat.S_IWUSR)

    monkeypatch.setattr(bot.inputs.os, "access", access)


def test_out_naming_a_read_only_place(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    _as_non_root(monkeypatch)
    try:
        assert_exit_2(gridbot("backtest", DEFAULT, "--out", ro / "x"), "--out", "cannot write")
        assert_exit_2(
            gridbot("download", "--symbols", "BTCUSDT", "--start", "2024-01-01", "--out", ro),
            "--out",
            "cannot write",
        )
    finally:
        ro.chmod(0o755)


def test_report_writing_failure_is_a_message_not_a_traceback(tmp_path, monkeypatch):
    """Past the up-front check (a disk that fills up, a read-only remount): still exit 2."""
    from backtest import report

    def fail(*a, **k):
        raise OSError(30, "Read-only file system", str(tmp_path / "x"))

    monkeypatch.setattr(report, "_write_equity", fail)
    cfg = write(
        tmp_path / "c.json",
        json.dumps({"backtest": {"data": str(SAMPLE), "symbols": ["BTCUSDT"],
                                 "start_date": "2021-05-19", "end_date": "2021-05-20",
                                 "results_dir": str(tmp_path / "r")}}),
    )  # fmt: skip
    assert_exit_2(gridbot("backtest", cfg, "--no-plots"), "Read-only file system")
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["cache"]  # no half report


# --------------------------------------------------------------------------- key file


def key_file_config(tmp_path: Path, content: str) -> Path:
    key = write(tmp_path / "key.json", content)
    key.chmod(0o600)
    return write(tmp_path / "c.json", json.dumps({"live": {"key_file": str(key)}}))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('["apiKey", "secret"]', ["holds a JSON list", "expected an object"]),
        ('"apiKey"', ["holds a JSON string"]),
        ("{apiKey: x}", ["not JSON"]),
        ('{"apiKey": 1234567, "secret": ["s"]}', ["must be text"]),
        ("[" * 100_000 + "]" * 100_000, ["bytes"]),
    ],
)
def test_bad_key_file_is_a_config_error(tmp_path, content, words):
    from bot.live.credentials import load_credentials

    cfg = load_config(key_file_config(tmp_path, content))
    with pytest.raises(ConfigError) as exc:
        load_credentials(cfg.live)
    for w in words:
        assert w in str(exc.value)
    assert "live.key_file" in str(exc.value)


def test_key_file_that_is_a_device_is_refused(tmp_path):
    from bot.live.credentials import load_credentials

    cfg = parse_config({"live": {"key_file": "/dev/zero"}})
    with pytest.raises(ConfigError, match="mode|regular file"):
        load_credentials(cfg.live)


def test_live_with_a_key_file_holding_a_list_exits_2(tmp_path):
    cfg = key_file_config(tmp_path, '["k", "s"]')
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert_exit_2(gridbot("live", cfg, "--symbols", "BTCUSDT"), "JSON list")
    finally:  # the command configures logging for a real run
        root.handlers[:], root.level = handlers, level


# --------------------------------------------------------------------------- listenKey


def test_listen_key_in_the_websocket_debug_log_is_redacted():
    from bot.live.credentials import install_redaction

    listen_key = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("websockets.client")
    handler, old_level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    uninstall = install_redaction(["some-api-key", "some-api-secret"])
    try:  # what websockets logs at DEBUG (`gridbot live -v`) when it opens the user stream
        logger.debug("> GET %s HTTP/1.1", f"/private/ws?listenKey={listen_key}")
        logger.debug("< TEXT %s", f'{{"listenKey":"{listen_key}","e":"listenKeyExpired"}}')
    finally:
        uninstall()
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert len(seen) == 2
    assert all(listen_key not in s for s in seen), seen
    assert "listenKey=***" in seen[0] and "listenKeyExpired" in seen[1]


# --------------------------------------------------------------------------- subprocesses


def run_cli(*argv: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_no_traceback_reaches_the_terminal(tmp_path):
    u16 = write(tmp_path / "u16.hjson", "{}".encode("utf-16"))
    deep = write(tmp_path / "deep.hjson", "{a:" * 5000 + "}" * 5000)
    cases = [
        ["risk", "--balance", "1", "--config", u16],
        ["backtest", deep],
        ["backtest", "/dev/zero"],
        ["download", "--symbols", "BTCUSDT", "--start", "2024-01-01", "--base-url", "notaurl"],
        ["venue", "--data", SAMPLE, "--speed", "nan"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", *map(str, c)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in cases
    ]
    for proc, case in zip(procs, cases, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (case, err)
        assert "Traceback" not in err and out == "", (case, err)
        assert len(err.strip().splitlines()) == 1, (case, err)


def test_an_internal_error_is_one_line_with_the_traceback_on_request(tmp_path):
    """A bug (not bad input) still prints one line, exit 1; GRIDBOT_DEBUG=1 shows the trace."""
    code = (
        "import sys, bot.commands.risk as r\n"
        "def boom(args): raise ZeroDivisionError('x')\n"
        "r.run = boom\n"
        "from bot.cli import main\n"
        "main(['risk', '--balance', '1'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GRIDBOT_DEBUG", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "internal error: ZeroDivisionError" in r.stderr
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**env, "GRIDBOT_DEBUG": "1"},
    )  # fmt: skip
    assert r.returncode == 1 and "Traceback" in r.stderr


def small_config(tmp_path: Path, **backtest: object) -> Path:
    data = {
        "backtest": {
            "data": str(SAMPLE),
            "symbols": ["BTCUSDT", "ETHUSDT", "DOGEUSDT"],
            "results_dir": str(tmp_path / "results"),
            **backtest,
        }
    }
    return write(tmp_path / "c.json", json.dumps(data))


@pytest.mark.slow
def test_kill_9_during_backtest_leaves_no_half_report(tmp_path):
    cfg = small_config(tmp_path)
    out = tmp_path / "reports"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "backtest", str(cfg), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        partial = []
        while time.monotonic() < deadline and proc.poll() is None:
            partial = list(out.glob(".partial-*/*")) if out.exists() else []
            if partial:  # the report is being written: kill it in the middle
                break
            time.sleep(0.01)
        assert partial, "the backtest never started writing its report"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(out.glob("backtest_*")), "a half report appeared under a report's name"

    # The next run publishes a complete report and removes the dead run's leftovers.
    r = run_cli("backtest", cfg, "--out", out, "--json", timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    folder = Path(json.loads(r.stdout)["report_dir"])
    names = {p.name for p in folder.iterdir()}
    assert {"analysis.json", "fills.csv", "equity.csv", "config.json", "config.hjson"} <= names
    assert {"balance_equity.png", "wallet_exposure.png", "price_BTCUSDT.png"} <= names
    assert all(p.stat().st_size > 0 for p in folder.iterdir())
    assert not list(out.glob(".partial-*"))


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_kill_9_of_optimize_ends_its_workers_and_resume_fails_their_trials(tmp_path):
    import optuna

    cfg = tmp_path / "o.json"
    cfg.write_text(
        json.dumps(
            {
                "backtest": {
                    "data": str(SAMPLE),
                    "symbols": ["BTCUSDT"],
                    "start_date": "2021-05-18",
                    "end_date": "2021-05-20",
                    "results_dir": str(tmp_path),
                },
                "optimize": {"seed": 3},
            }
        )
    )
    db = tmp_path / "optimize" / "k9.db"
    stderr = (tmp_path / "stderr.txt").open("w")  # the workers inherit it
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "optimize", str(cfg), "--trials", "100000",
         "--workers", "2", "--study", "k9"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip
    stderr.close()
    try:
        deadline = time.monotonic() + 240
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as con:
                        done = con.execute(
                            "select count(*) from trials where state = 'COMPLETE'"
                        ).fetchone()[0]
                except sqlite3.Error:
                    done = 0
            if done >= 2:
                break
            time.sleep(0.2)
        assert done >= 2, "the optimizer never completed a trial"
        workers = [p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)]
        assert len(workers) == 2, [_cmdline(p) for p in _children(proc.pid)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    left = [p for p in workers if _alive(p)]
    for p in left:  # do not leave them running whatever the outcome
        os.kill(p, signal.SIGKILL)
    assert not left, "optimizer workers outlived their parent"
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()

    storage = f"sqlite:///{db}"
    n_before = len(optuna.load_study(study_name="k9", storage=storage).trials)
    time.sleep(2)
    study = optuna.load_study(study_name="k9", storage=storage)
    assert len(study.trials) == n_before, "trials were added after the parent died"

    r = run_cli("optimize", cfg, "--trials", "1", "--workers", "1", "--study", "k9", timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    study = optuna.load_study(study_name="k9", storage=storage)
    running = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert running == [], f"trials left RUNNING by the killed run: {running}"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_resumed_study_fails_trials_of_a_dead_run_only(tmp_path):
    import optuna

    from backtest.optimize import _OWNER_ATTR, fail_orphaned_trials

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    host = socket.gethostname()
    orphan = study.ask()
    orphan.set_user_attr(_OWNER_ATTR, {"host": host, "pid": dead.pid})
    mine = study.ask()
    mine.set_user_attr(_OWNER_ATTR, {"host": host, "pid": os.getpid()})
    elsewhere = study.ask()
    elsewhere.set_user_attr(_OWNER_ATTR, {"host": host + "-other", "pid": dead.pid})
    assert fail_orphaned_trials(study) == [orphan.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {orphan.number: "FAIL", mine.number: "RUNNING", elsewhere.number: "RUNNING"}


@pytest.mark.slow
def test_dry_run_leaves_no_state_file(tmp_path):
    from bot.config import config_to_dict

    data = config_to_dict(load_config(DEFAULT))
    state = tmp_path / "live-state"
    data["live"]["state_dir"] = str(state)
    data["backtest"]["data"] = str(SAMPLE)
    cfg = write(tmp_path / "dry.json", json.dumps(data))
    r = run_cli("live", cfg, "--dry-run", "--speed", "3000", "--max-minutes", "0.1", timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stopped cleanly" in r.stderr
    left = list(state.glob("dry-*")) if state.exists() else []
    assert left == [], left

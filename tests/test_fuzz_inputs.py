"""Property-based fuzzing of every input gridbot takes (hypothesis): config files, candle files
and the flags of every command. Whatever comes in, each call ends in a result (exit 0) or in
exit 2 with a message that names what is wrong: never a traceback, never a hang.

Bounded in time: a fixed number of examples per property, every call in-process
(``bot.cli.main``), no network (download is pointed at a closed local port), and no command
that would serve or trade forever is given a way to start.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gzip
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import build_parser, main
from bot.config import SIDE_PARAMS, Config, load_config, parse_config
from bot.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "binance_spot_1m"
DEFAULT = ROOT / "configs" / "default.hjson"
T0 = 1_621_382_400_000
MIN = 60_000

# One scratch folder for the whole module: hypothesis runs many examples per test, and
# function-scoped fixtures would be shared between them anyway.
SCRATCH = Path(tempfile.mkdtemp(prefix="gridbot-fuzz-"))
atexit.register(shutil.rmtree, SCRATCH, True)

# GRIDBOT_FUZZ_EXAMPLES=2000 for a deeper search than make test's bounded one.
EXAMPLES = int(os.environ.get("GRIDBOT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def run(argv: list[str]) -> tuple[int, str, str]:
    """``gridbot ARGV`` in this process, from the scratch folder: (exit code, stdout, stderr)."""
    # binary-backed, as a terminal is: --json writes bytes to sys.stdout.buffer
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    with (
        contextlib.chdir(SCRATCH),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    out.flush()
    err.flush()
    return code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()


def assert_clean_end(argv: list[str], result: tuple[int, str, str]) -> None:
    code, _, err = result
    assert "Traceback" not in err, (argv, err)
    assert "internal error" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert err.strip(), argv
        assert "error:" in err.splitlines()[0], (argv, err)


# --------------------------------------------------------------------------- values

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=24,
)
NASTY = [
    "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "0", "-0", "-1", "1", "0.5", "1e-300",
    "9" * 30, "-" + "9" * 30, "", " ", "-", "--", "x", "é", "\u202e", "💥", "1_000",
    "2021-05-19", "2021-05-19T13:10", "2021-02-30", "2021-05-19T25:00", "1621382400",
    "1621382400000", "99999-01-01", "0001-01-01", "9999-12-31T23:59:59", "BTCUSDT",
    "btcusdt,ETHUSDT", ",", "BTC/USDT", "BTCUSDT,BTCUSDT", "../../etc/passwd", "/dev/zero",
    "/proc/self/status", "/proc/x", "/", ".", "..", "http://", "http://127.0.0.1:9",
    "http://[::1", "notaurl", "sqlite://", "sqlite:///x.db", "postgresql://u:p@h/db", "100@35",
    "1@", "@1", "0@0", "1e308@1e308", "-1@5", str(DEFAULT), str(SAMPLE), "binance", "bybit",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(NASTY),
    TEXT,
    st.floats().map(repr),
    st.integers().map(str),
)


def _flags(command: str) -> list[tuple[str, bool]]:
    """(option, takes a value) for every option of a command, read from its parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for action in sub.choices[command]._actions:
        if not action.option_strings or action.option_strings[0] in ("-h", "--help"):
            continue
        out.append((action.option_strings[-1], action.nargs != 0))
    return out


def fuzzed_flags(command: str) -> st.SearchStrategy[list[str]]:
    flags = _flags(command)
    pair = st.tuples(st.sampled_from(flags), VALUES).map(
        lambda fv: [fv[0][0], fv[1]] if fv[0][1] else [fv[0][0]]
    )
    return st.lists(pair, max_size=6).map(lambda ps: [x for p in ps for x in p])


def backtest_config() -> Path:
    path = SCRATCH / "fuzz-backtest.json"
    if not path.exists():
        cfg = {
            "backtest": {
                "data": str(SAMPLE),
                "symbols": ["BTCUSDT"],
                "results_dir": str(SCRATCH / "results"),
            }
        }
        path.write_text(json.dumps(cfg))
    return path


def passivbot_config() -> Path:
    path = SCRATCH / "fuzz-passivbot.json"
    if not path.exists():
        side = {"n_positions": 2, "total_wallet_exposure_limit": 1.0, "filter_rolling_window": 60}
        path.write_text(json.dumps({"bot": {"long": side}, "live": {"approved_coins": ["BTC"]}}))
    return path


MISSING = str(SCRATCH / "no-such-config.hjson")
NOWHERE = str(SCRATCH / "no-such-candles")
# What keeps each command bounded: before the fuzzed flags (which may override it) and after
# (which they cannot). No command gets to trade, serve, or reach the internet.
COMMANDS = {
    "risk": (["--balance", "1000"], []),
    "backtest": (
        [str(backtest_config()), "--start", "2021-05-19T20:00", "--end", "2021-05-20"],
        # a fuzzed --download reaches only a closed loopback port, and gives up at once
        ["--no-plots", "--download-url", "http://127.0.0.1:9", "--download-retries", "0"],
    ),
    "download": (
        ["--symbols", "BTCUSDT", "--start", "2024-01-01"],
        ["--base-url", "http://127.0.0.1:9", "--retries", "0"],
    ),
    "optimize": ([MISSING], []),
    "live": ([MISSING], []),
    "venue": ([], ["--data", NOWHERE]),
    "replay": ([MISSING], ["--data", NOWHERE]),
    "status": ([], ["--url", "http://127.0.0.1:9", "--timeout", "0.5"]),
    "stress": ([MISSING], ["--data", NOWHERE]),
    "vault": (["status"], [str(SCRATCH / "no-such-ledger.db")]),
    "exchange-sim": ([MISSING], ["--data", NOWHERE]),
    "soak": ([MISSING], ["--data", NOWHERE]),
    "import": ([str(passivbot_config())], []),
}


def test_every_command_is_fuzzed():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_fuzzed_flags_end_in_exit_0_or_2_with_a_message(command):
    before, after = COMMANDS[command]

    @FUZZ
    @given(flags=fuzzed_flags(command), extra=st.lists(VALUES, max_size=2))
    def check(flags: list[str], extra: list[str]) -> None:
        argv = [command, *before, *flags, *extra, *after]
        assert_clean_end(argv, run(argv))

    check()


# --------------------------------------------------------------------------- config files

SECTIONS = {
    "bot": ["long", "short"],
    "live": list(Config.model_fields["live"].annotation.model_fields),
    "backtest": list(Config.model_fields["backtest"].annotation.model_fields),
    "optimize": list(Config.model_fields["optimize"].annotation.model_fields),
}
KEYS = st.sampled_from(
    sorted({k for v in SECTIONS.values() for k in v} | set(SECTIONS) | set(SIDE_PARAMS))
    + ["config_version", "x", "", "a.b", "bot.long.n_positions"]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(["auto", "BTCUSDT", "maximize", "adg", "results", str(SAMPLE)]),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=20,
)
CONFIG_DICTS = st.fixed_dictionaries(
    {},
    optional={
        "bot": st.fixed_dictionaries(
            {},
            optional={
                "long": st.dictionaries(KEYS, JSON_VALUES, max_size=5),
                "short": st.dictionaries(KEYS, JSON_VALUES, max_size=5),
            },
        ),  # fmt: skip
        "live": st.dictionaries(KEYS, JSON_VALUES, max_size=5),
        "backtest": st.dictionaries(KEYS, JSON_VALUES, max_size=5),
        "optimize": st.dictionaries(KEYS, JSON_VALUES, max_size=5),
        "config_version": SCALARS,
    },
)


def _render(data: object) -> str:
    """JSON as a careless hand would write it (NaN, Infinity and all), valid hjson mostly."""
    return json.dumps(data, allow_nan=True)


def _mutate(text: str, edits: list[tuple[int, str]]) -> str:
    for pos, piece in edits:
        i = pos % (len(text) + 1)
        text = text[:i] + piece + text[i + 1 :]
    return text


CONFIG_BYTES = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    CONFIG_DICTS.map(lambda d: _render(d).encode()),
    st.builds(
        _mutate,
        CONFIG_DICTS.map(_render),
        st.lists(
            st.tuples(
                st.integers(0, 10_000),
                st.sampled_from(
                    [
                        "",
                        "{",
                        "}",
                        "[",
                        "]",
                        ":",
                        ",",
                        '"',
                        "\n",
                        "#",
                        "//",
                        "/*",
                        "'''",
                        "\\",
                        "1e999",
                        "-",
                        "\x00",
                        "é",
                        " ",
                    ]
                ),
            ),  # fmt: skip
            max_size=4,
        ),
    ).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from(["utf-16", "utf-32", "latin-1", "utf-8-sig"]).flatmap(
        lambda enc: CONFIG_DICTS.map(lambda d: _render(d).encode(enc, "replace"))
    ),
)


@FUZZ
@given(raw=CONFIG_BYTES)
def test_fuzzed_config_files_load_or_fail_with_a_config_error(raw: bytes):
    path = SCRATCH / "fuzz.hjson"
    path.write_bytes(raw)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(cfg, Config)
    # what loads must survive its own round trip (the report's config.json)
    assert parse_config(cfg.model_dump(mode="json")) == cfg


@settings(max_examples=max(1, EXAMPLES // 2), deadline=None)
@given(raw=CONFIG_BYTES)
def test_fuzzed_config_files_through_the_cli(raw: bytes):
    path = SCRATCH / "fuzz-cli.hjson"
    path.write_bytes(raw)
    argv = ["risk", "--balance", "1000", "--config", str(path), "--json"]
    assert_clean_end(argv, run(argv))


@FUZZ
@given(data=CONFIG_DICTS)
def test_fuzzed_config_dicts_validate_or_name_the_key(data: dict):
    try:
        parse_config(data)
    except ConfigError as exc:
        assert str(exc).startswith("config:"), str(exc)


# --------------------------------------------------------------------------- candle files

PRICES = st.one_of(
    st.floats(min_value=1e-6, max_value=1e6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 100.0]),
)
TIMESTAMPS = st.one_of(
    st.integers(0, 500).map(lambda i: T0 + i * MIN),  # on the 1m grid
    st.integers(0, 500).map(lambda i: (T0 + i * MIN) // 1000),  # seconds
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 10**20),
)


@st.composite
def candle_files(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 40))
    if draw(st.booleans()):  # mostly sane rows, a few broken
        start = draw(st.integers(0, 1000)) * MIN + T0
        rows = []
        for i in range(n):
            o = draw(st.floats(50, 150))
            c = draw(st.floats(50, 150))
            rows.append([start + i * MIN, o, max(o, c) + 1, min(o, c) - 1, c, 1.0])
        for _ in range(draw(st.integers(0, 3))):
            if rows:
                r = draw(st.integers(0, len(rows) - 1))
                col = draw(st.integers(0, 5))
                rows[r][col] = draw(TIMESTAMPS if col == 0 else PRICES)
    else:
        rows = [
            [draw(TIMESTAMPS), *(draw(PRICES) for _ in range(4)), draw(PRICES)] for _ in range(n)
        ]

    def cell(x: object) -> str:
        if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
            return str(int(x)) if draw(st.booleans()) else repr(x)
        return repr(x) if isinstance(x, float) else str(x)

    lines = [",".join(cell(x) for x in row) for row in rows]
    header = draw(
        st.sampled_from(
            ["timestamp_ms,open,high,low,close,volume", "TIMESTAMP_MS,OPEN,HIGH,LOW,CLOSE,VOLUME",
             "timestamp,open,high,low,close", "", None]
        )
    )  # fmt: skip
    if header is not None:
        lines.insert(0, header)
    for _ in range(draw(st.integers(0, 2))):  # stray lines: garbage, blank, extra columns
        junk = draw(st.one_of(TEXT, st.sampled_from(["", "1,2,3", "1,2,3,4,5,6,7", ",,,,,"])))
        lines.insert(draw(st.integers(0, len(lines))), junk)
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        raw = gzip.compress(raw)
        if draw(st.booleans()):
            raw = raw[: draw(st.integers(0, len(raw)))]  # truncated gzip
    return raw


@FUZZ
@given(raw=candle_files(), gz_name=st.booleans())
def test_fuzzed_candle_files_load_or_name_file_and_problem(raw: bytes, gz_name: bool):
    from backtest.data import load_candles

    path = SCRATCH / ("BTCUSDT.csv.gz" if gz_name else "BTCUSDT.csv")
    other = SCRATCH / ("BTCUSDT.csv" if gz_name else "BTCUSDT.csv.gz")
    with contextlib.suppress(FileNotFoundError):
        other.unlink()
    path.write_bytes(raw)
    try:
        candles = load_candles(path)
    except (DataError, ConfigError) as exc:
        assert str(path) in str(exc), str(exc)
        return
    ts = candles.timestamps
    assert len(ts) >= 2 and (ts[1:] > ts[:-1]).all()
    assert ts[0] >= 100_000_000_000  # milliseconds, not seconds
    x = candles.ohlcv[0]
    assert all(math.isfinite(v) for v in x.ravel())
    assert (x[:, :4] > 0).all()


@settings(max_examples=max(1, EXAMPLES // 3), deadline=None)
@given(raw=candle_files())
def test_fuzzed_candle_files_through_the_cli(raw: bytes):
    folder = SCRATCH / "cli-candles"
    folder.mkdir(exist_ok=True)
    (folder / "BTCUSDT.csv").write_bytes(raw)
    argv = [
        "backtest", str(backtest_config()), "--data", str(folder), "--symbols", "BTCUSDT",
        "--no-plots", "--out", str(SCRATCH / "cli-reports"),
    ]  # fmt: skip
    assert_clean_end(argv, run(argv))


def test_scratch_folder_is_outside_the_source_tree():
    assert not str(SCRATCH.resolve()).startswith(str(ROOT))
    assert os.access(SCRATCH, os.W_OK)

"""`make bench`: run every benchmark and write the figures to benchmarks/README.md.

Each section reports ratios against a baseline measured in the same run, on this machine.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
BENCHES = ("bench_engine", "bench_optimize", "bench_live", "bench_replay", "bench_many_coins")
ROOT = HERE.parent


def _machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _cli_backtest_times(warm_runs: int = 3) -> dict:
    """Whole `gridbot backtest configs/default.hjson --no-plots` runs, wall clock: cold (a fresh
    numba cache and candle cache, as the first run after install) and warm (best of
    ``warm_runs`` after it)."""
    import resource
    import shutil
    import tempfile

    def child_cpu() -> float:
        u = resource.getrusage(resource.RUSAGE_CHILDREN)
        return u.ru_utime + u.ru_stime

    out: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="gridbot-bench-"))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba"))
    cmd = [
        str(Path(sys.executable).with_name("gridbot")), "backtest",
        str(ROOT / "configs" / "default.hjson"), "--json", "--no-plots", "--out", str(tmp / "out"),
    ]  # fmt: skip
    # Run from the temp folder: the candle cache (results/cache) starts empty there too.
    shutil.copytree(ROOT / "data", tmp / "data")
    warm = []
    warm_cpu = []
    for i in range(1 + warm_runs):
        t, cpu = time.perf_counter(), child_cpu()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        seconds, cpu = time.perf_counter() - t, child_cpu() - cpu
        if i == 0:
            out["cold_seconds"], out["cold_exit_code"] = seconds, proc.returncode
            out["cold_cpu_seconds"] = cpu
        else:
            warm.append(seconds)
            warm_cpu.append(cpu)
            out["warm_exit_code"] = proc.returncode
    shutil.rmtree(tmp, ignore_errors=True)
    out["warm_seconds"] = min(warm)
    out["warm_cpu_seconds"] = min(warm_cpu)
    out["warm_runs_seconds"] = warm
    out["warm_vs_cold"] = out["cold_seconds"] / out["warm_seconds"]
    return out


def main(argv: list[str] | None = None) -> None:
    """``--only NAME`` (e.g. bench_optimize): run that benchmark alone and merge its figures
    into the last results.json; ``--quick``: shorter runs where a benchmark has a knob (also
    GRIDBOT_BENCH_QUICK=1)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.run")
    ap.add_argument("--only", choices=BENCHES)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        os.environ["GRIDBOT_BENCH_QUICK"] = "1"
    stamp = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "load_average_1m": os.getloadavg()[0],  # the machine is shared: what else ran
    }
    results: dict = dict(stamp)
    if args.only and (HERE / "results.json").exists():
        results = orjson.loads((HERE / "results.json").read_bytes())
    for name in (args.only,) if args.only else BENCHES:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError:
            continue
        print(f"running {name} ...", file=sys.stderr)
        results[name] = module.run()
        results.setdefault("measured", {})[name] = stamp
    if not args.only:
        print("running whole-CLI backtest cold/warm ...", file=sys.stderr)
        results["cli_backtest"] = _cli_backtest_times() | {"measured": stamp}
    (HERE / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    _write_readme(results)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


# Written by hand: what the numbers mean and where the goals stand (issue 12).
_ENGINE_NOTES = [
    "Goal (issue 12): at least 10 M coin-steps/s for busy at 1, 3, 6 and 20 coins, and 20 "
    "coins at least 0.8x 1 coin. Not met for busy (about 2.4-3.4 M; patient 4.2-7.8 M). The "
    "core does more per order than when the engine work was first measured (5.0 M busy on the "
    "old grid): Passivbot's grid rules (a re-entry previews the level after it, the close grid "
    "prices each remainder by its own WE / WEL, the partial initial entry), trailing, the "
    "forager and the exposure-limit check all landed, and the same busy config now trades about "
    "twice as often (25,450 fills at 20 coins instead of 13,804): more candles reach an order "
    "and each ask builds a longer grid. Flatness is at the goal's edge (20 coins 0.75-0.80x "
    "1 coin over the runs made today).",
    "Merged engine (speed + merge2, fills bit-identical to asking the core for every side on "
    "every candle: tests/test_engine_triggers.py, six configs including trailing, the forager, "
    "enforce_exposure_limit and partial initial re-posts; every row above also matches it): no "
    "array views per coin and candle; cached nearest orders over a 2% window of balances, the "
    "nearest entry bounded by the window's ends, the partial-entry bound taken at its highest "
    "balance, the nearest close exact only at the balance it was computed at (Passivbot's close "
    "grid is not monotone in the balance: elsewhere in the window the minimum markup's price "
    "bounds it, so the window gains less than before: 0.85-1.5x); the core not asked when the "
    "candle stays a tick inside the bid / ask; a trailing side asks every candle; the fills "
    "buffer grows in the kernel.",
    "Before (the merge2 engine at c240a9b, the same coins, configs and timing, measured minutes "
    "before the table on this machine, load average 1.2-1.6): busy 2.04 / 1.91 / 0.83 / 0.63 M "
    "coin-steps/s at 1 / 3 / 6 / 20 coins (20 coins 0.31x 1 coin); patient 3.38 / 4.37 / 4.43 "
    "/ 3.81 M. The merged engine is 1.4-4.0x that on busy and 1.4-1.9x on patient.",
]
_CLI_NOTES = [
    "Goal (issue 12): warm at most 0.5 s, cold at most 10 s. Not met. matplotlib is no longer "
    "imported without plots; what is left of a warm run is mostly fixed numba cost: "
    "importing numba and, on the first call of a cached function, loading numba's whole "
    "target registry (a large part of the warm run under cProfile), then numpy, pydantic and the candle load. "
    "Cold is numba compiling the core and the engine (the kernel inlines the whole core). "
    "The compiled code is cached per version of the compiled sources (`bot/_numba_cache.py`): "
    "numba's own cache is keyed on each function's file only, so before this a change in "
    "`bot/core` alone could leave the engine running the old core from its cache.",
    "The machine is shared with other engineers' jobs (the load average above, on 2 cores): "
    "wall seconds can be inflated several times; CPU seconds are the fairer figure here, and "
    "the lead re-runs `make bench` on a quiet machine.",
]


def _write_readme(r: dict) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/run.py`); raw numbers in `benchmarks/results.json`.",
        "Every ratio compares against a baseline measured in the same run on the same machine.",
        "",
        f"- Date: {r['date']}",
        f"- Machine: {r['machine']}",
        "",
    ]
    if "bench_engine" in r:
        when = r.get("measured", {}).get("bench_engine", r)
        load = when.get("load_average_1m")
        lines += [
            "## Backtest engine (coin-steps per second, one core, after compilation)",
            "",
            f"Measured {when['date']} on {when['machine']}"
            + (f"; 1-minute load average {load:.1f} when it started." if load else "."),
            "",
            "Coins built from the bundled 1m sample (2021-05-10 to 2021-05-20, through the "
            "crash) by `benchmarks/coins.py`: coin i is bundled coin i % 3 (BTC, ETH, DOGE) "
            "rotated in time by (i // 3) sevenths of the sample (the moved part rescaled so the "
            "path stays continuous) and scaled by 1 + 0.07 x (i // 3), with the base coin's "
            "market; so the crash lands at a different time on each copy. n_positions = coins "
            "and 10,000 USDT per coin, so every position has the same budget at every size. "
            "'busy': both sides, 2% grids (long TWEL 1.5, short 0.6); 'patient': long only, 5% "
            "grid, 2-5% markups. Time: the best of 5 runs in CPU seconds of the engine's thread "
            "(time.thread_time), which leaves out waiting for a core on a shared machine. "
            "Baselines from the same run: the 1-coin row of the config, and the engine with a "
            "balance window of 0 (every balance change recomputes every coin's cached nearest "
            "orders, as before `backtest/triggers.py`; one run).",
            "",
            "| config | coins | candles | fills | engine ms | coin-steps/s | vs 1 coin | window 0 ms | window speed-up |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for v in r["bench_engine"].values():
            lines.append(
                f"| {v['config']} | {v['coins']} | {v['candles']:,} | {v['fills']:,} | "
                f"{v['engine_seconds'] * 1e3:.1f} | {v['coin_steps_per_sec'] / 1e6:.2f} M | "
                f"{v['ratio_to_1_coin']:.2f}x | {v['no_window_seconds'] * 1e3:.1f} | "
                f"{v['window_speedup']:.2f}x |"
            )
        for note in _ENGINE_NOTES:
            lines += ["", note]
        lines.append("")
    c = r.get("cli_backtest")
    if c:
        lines += [
            "## Whole `gridbot backtest configs/default.hjson --no-plots` run (3 coins, wall clock)",
            "",
            *(
                [
                    f"Measured {c['measured']['date']}; 1-minute load average "
                    f"{c['measured']['load_average_1m']:.1f} when it started.",
                    "",
                ]
                if "measured" in c
                else []
            ),
            "| run | wall seconds | CPU seconds (user + sys) | exit |",
            "|---|---|---|---|",
            f"| cold (fresh NUMBA_CACHE_DIR and candle cache: compile included) | {c['cold_seconds']:.2f} | {c['cold_cpu_seconds']:.2f} | {c['cold_exit_code']} |",
            f"| warm (best of {len(c['warm_runs_seconds'])}) | {c['warm_seconds']:.2f} | {c['warm_cpu_seconds']:.2f} | {c['warm_exit_code']} |",
            "",
            f"Warm is {c['warm_vs_cold']:.1f}x faster than cold.",
            "",
            *(x for note in _CLI_NOTES for x in (note, "")),
        ]
    if "bench_optimize" in r:
        lines += _optimize_section(r)
    if "bench_live" in r:
        lv = r["bench_live"]
        d, e, b = (
            lv["decision_only"],
            lv["at_1000_per_second"],
            lv["baseline_parse_only_at_1000_per_second"],
        )
        lines += [
            "## Live: price message -> decision (ideal orders diffed)",
            "",
            "Binance `aggTrade` messages from a websockets server in another process over "
            "loopback into the bot's stream client; latency from the server's send (a clock "
            "both processes share) to the end of the diff, so transport and parsing are "
            "included. Baseline: the same messages with no decision (parse and store the "
            "price only).",
            "",
            "| measure | p50 ms | p99 ms |",
            "|---|---|---|",
            f"| decision alone, in-process (core ideal orders of both sides + diff) | {d['p50_ms']:.3f} | {d['p99_ms']:.3f} |",
            f"| message -> decision at 1,000 msg/s | {e['p50_ms']:.3f} | {e['p99_ms']:.3f} |",
            f"| baseline: message -> price stored at 1,000 msg/s | {b['p50_ms']:.3f} | {b['p99_ms']:.3f} |",
            "",
            "| rate (msg/s) | messages | p50 ms | p99 ms | last tenth p50 ms | sustained |",
            "|---|---|---|---|---|---|",
        ]
        for rate, v in lv["rates"].items():
            lines.append(
                f"| {int(float(rate)):,} | {v['messages']:,} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | "
                f"{v['last_tenth_p50_ms']:.3f} | {'yes' if v['sustained'] else 'no'} |"
            )
        lines += [
            "",
            f"Highest rate sustained with no backlog (every message, p99 under 50 ms, the last "
            f"tenth not queueing): **{int(lv['max_sustained_rate_per_second']):,} messages per second** "
            "with a full decision on every message (the live bot itself throttles decisions by "
            "`live.execution_delay_seconds`).",
            "",
        ]
    if "bench_replay" in r:
        from benchmarks.bench_replay import readme_lines

        lines += readme_lines(r["bench_replay"])
    if "bench_many_coins" in r:
        from benchmarks.bench_many_coins import readme_lines as many_coins_lines

        lines += many_coins_lines(r["bench_many_coins"])
    readme = HERE / "README.md"
    old = readme.read_text() if readme.exists() else ""
    if "\n## Soak" in old:  # filled by hand from `gridbot soak` runs: keep it
        lines += ["", old[old.index("\n## Soak") + 1 :].rstrip("\n"), ""]
    readme.write_text("\n".join(lines))


def _optimize_section(r: dict) -> list[str]:
    o = r["bench_optimize"]
    when = r.get("measured", {}).get("bench_optimize", r)
    n = o["long_trials"]
    lines = [
        "## Optimizer",
        "",
        f"Measured {when['date']} on {when['machine']}. `benchmarks/bench_optimize.py`; "
        "`python -m benchmarks.run --only bench_optimize [--quick]` runs it alone (--quick: "
        "1,000 trials instead of 5,000). Goals (issue 12): outside-the-engine share of a trial "
        "at most 20% at 5,000 trials; 2 workers at least 1.8x one.",
        "",
        f"Long study: {n:,} trials, 2 workers, one day of BTCUSDT 1m (the shortest slice, "
        "where the engine is cheapest and everything else weighs most). Rate: trials finished "
        "per second around that trial (+-50). Outside the engine: the share of each trial's "
        "time in its worker (taking in other workers' trials, sampler, config, metrics) not "
        "spent in the engine's loop, over the first and the last 500 trials.",
        "",
        f"| sampler | rate at trial 100 | rate at trial {n:,} | last / 100 | outside engine, "
        f"first 500 | outside engine, last 500 | engine ms per trial | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, v in o["long"].items():
        lines.append(
            f"| {s} | {v['rate_at_100']:.1f}/s | {v[f'rate_at_{n}']:.1f}/s | "
            f"{v['rate_last_vs_100']:.2f}x | {v['overhead_first_500']:.0%} | "
            f"{v['overhead_last_500']:.0%} | {v['engine_ms_per_trial']:.2f} | "
            f"{v['wall_seconds']:.0f} |"
        )
    sc = o["scaling"]
    lines += [
        "",
        "Worker scaling: the whole sample (BTC+ETH+DOGE 1m, 10 days, 15.6k candles x 3), TPE, "
        "trials per second from the first trial's start to the last one's end (worker start-up "
        "excluded). Baseline: 1 worker.",
        "",
        "| workers | trials | trials/s | vs 1 worker | outside engine | worker CPU ms/trial | "
        "main CPU ms/trial | peak RSS per worker (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in ("1", "2"):
        v = sc[w]
        ratio = v["trials_per_second"] / sc["1"]["trials_per_second"]
        lines.append(
            f"| {w} | {v['trials']} | {v['trials_per_second']:.2f} | {ratio:.2f}x | "
            f"{v['overhead']:.0%} | {v['worker_cpu_ms_per_trial']:.1f} | "
            f"{v['main_cpu_ms_per_trial']:.1f} | "
            f"{', '.join(str(x) for x in v['peak_rss_mb_per_worker'])} |"
        )
    note = (
        (HERE / "optimize_notes.md").read_text().strip()
        if (HERE / "optimize_notes.md").exists()
        else ""
    )
    return lines + ([""] + note.splitlines() if note else []) + [""]


if __name__ == "__main__":
    main()

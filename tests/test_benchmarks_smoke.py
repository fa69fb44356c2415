"""The benchmark scripts still run against the current code (no timing is asserted here: speed
is measured by `make bench`)."""

from __future__ import annotations

import importlib


def test_bench_modules_import():
    for name in ("run", "bench_engine", "bench_optimize", "bench_live"):
        assert hasattr(
            importlib.import_module(f"benchmarks.{name}"), "main" if name == "run" else "run"
        )


def test_live_decision_benchmark_runs_the_real_decision():
    import tempfile

    from benchmarks.bench_live import _bot, _decide

    with tempfile.TemporaryDirectory() as tmp:
        bot, coin = _bot(tmp)
        try:
            first = _decide(bot, coin, 50_000.0)
            # the first decision creates the whole grid; the same price again changes nothing
            assert first > 0
            assert _decide(bot, coin, 50_000.0) == 0
        finally:
            import asyncio

            asyncio.run(bot.adapter.close())
            bot.state.close()

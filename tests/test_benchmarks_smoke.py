"""The benchmark scripts still run against the current code (no timing is asserted here: speed
is measured by `make bench`)."""

from __future__ import annotations

import importlib


def test_bench_modules_import():
    for name in ("run", "bench_engine", "bench_optimize", "bench_live", "bench_many_coins"):
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


def test_many_coins_benchmark_decides_the_same_with_the_minute_cached():
    """The benchmark's minutes at 12 coins: the orders every coin holds and the active set are
    the same whether the minute's inputs are computed once or by every call (the baseline)."""
    import asyncio

    import numpy as np

    from benchmarks.bench_many_coins import _T0_MS, _close_klines, _minute, make_bot

    seen = []
    for cached in (True, False):
        bot = make_bot(12)
        bot.minute.cached = cached
        rng = np.random.default_rng(3)
        minutes = []
        try:
            for m in range(4):
                _close_klines(bot, _T0_MS + (m + 1) * 60_000, rng)
                active = asyncio.run(_minute(bot))
                orders = {
                    s: sorted((o.pside, o.qty, o.price, o.kind) for o in cb.open.values())
                    for s, cb in bot.book.coins.items()
                }
                minutes.append((active, sorted(bot.active.symbols), orders))
        finally:
            asyncio.run(bot.adapter.close())
            bot.state.close()
        seen.append(minutes)
    assert seen[0][0][0] > 0 and any(seen[0][0][2].values())  # active coins with grids
    assert seen[0] == seen[1]

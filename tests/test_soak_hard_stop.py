"""The soak's equity hard stop checks (backtest.soak_hard_stop) on hand-built venue records and
bot log lines: each check passes on a clean halt and fails on the record that breaks it."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from backtest.soak import OrderAttempt, TradeRow
from backtest.soak_hard_stop import (
    MINUTE_MS,
    HaltWindow,
    entries_while_red,
    flat_after_red,
    flat_bound_ms,
    halt_survived_restarts,
    halt_windows,
    hard_stop_closes,
    hard_stop_report,
    read_hard_stop_events,
    red_close_lag,
)

T0 = 1_620_000_000_000  # a kline open
RED = T0 + 10 * MINUTE_MS  # the red sample's kline; the halt holds from RED + 1 minute
RESTART = T0 + 40 * MINUTE_MS  # the sample that restarted; trading again from RESTART + 1 min
STEPS = {"DOGEUSDT": 1.0, "BTCUSDT": 0.001}
CANDLE_SECONDS = 0.15  # 400x
RECOVERY_SECONDS = 8.0


def tier(kline_ms: int, name: str, before: str, **kw) -> dict:
    return {"event": "hard_stop_tier", "kline_ms": kline_ms, "tier": name, "before": before,
            "halted": name == "red", "triggers": 1, "restarts": 0, "score": 0.011, **kw}  # fmt: skip


def loaded(kline_ms: int, halted: bool) -> dict:
    return {"event": "hard_stop_loaded", "kline_ms": kline_ms, "tier": "red" if halted else
            "green", "halted": halted, "triggers": 1, "restarts": 0}  # fmt: skip


EVENTS = [
    loaded(T0, False),
    tier(RED - 5 * MINUTE_MS, "orange", "green"),
    tier(RED, "red", "orange"),
    tier(RESTART, "green", "red"),
]
WINDOW = HaltWindow(RED, RESTART + MINUTE_MS)


def attempt(time_ms: int, cid: str, side: str = "BUY", ps: str = "LONG", qty: float = 10.0,
            position: float = 0.0, accepted: bool = True, reduce_only: bool = False,
            symbol: str = "DOGEUSDT", unix: float = math.nan) -> OrderAttempt:  # fmt: skip
    return OrderAttempt(
        wall_seconds=0.0, time_ms=time_ms, symbol=symbol, side=side, position_side=ps, qty=qty,
        price=0.5, client_order_id=cid, reduce_only=reduce_only, accepted=accepted,
        position=position, unix_seconds=unix,
    )  # fmt: skip


def row(time_ms: int, pos: float, kind: str = "close", symbol: str = "DOGEUSDT",
        ps: str = "LONG") -> TradeRow:  # fmt: skip
    return TradeRow(time_ms, symbol, "SELL", ps, 1.0, 0.5, 0.0, 0.0, 1000.0, kind,
                    position_after=pos, entry_price_after=0.5)  # fmt: skip


# ---------------------------------------------------------------- the halts the bot logged


def test_halt_windows_from_the_tier_records():
    assert halt_windows(EVENTS) == [HaltWindow(RED, RESTART + MINUTE_MS, 0.011)]
    # still red at the end: open-ended; a second red after the restart is a second halt
    more = [*EVENTS, tier(RESTART + 9 * MINUTE_MS, "red", "yellow")]
    ws = halt_windows(more)
    assert len(ws) == 2 and ws[1].end_ms is None and ws[1].start_ms == RESTART + 10 * MINUTE_MS
    assert ws[1].holds(RESTART + 99 * MINUTE_MS) and not ws[1].holds(RESTART + 9 * MINUTE_MS)
    assert not ws[1].holds(RESTART + 99 * MINUTE_MS, end_of_soak_ms=RESTART + 50 * MINUTE_MS)


def test_the_log_records_are_read_and_a_line_cut_by_a_kill_is_skipped(tmp_path):
    path = tmp_path / "gridbot.jsonl"
    lines = [json.dumps({"time": "t", "event": e["event"], "data": e}) for e in EVENTS]
    lines.insert(1, json.dumps({"time": "t", "event": "fill", "data": {"x": 1}}))
    path.write_text("\n".join(lines) + '\n{"time": "t", "event": "hard_stop_ti')
    got = read_hard_stop_events([path])
    assert [e["event"] for e in got] == [e["event"] for e in EVENTS]
    assert got[2]["tier"] == "red" and got[2]["kline_ms"] == RED


# ---------------------------------------------------------------- no entry while red


def test_closes_while_red_pass_and_entries_outside_the_halt_pass():
    attempts = [
        attempt(RED, "gb-e1"),  # accepted in the red minute itself: before its close
        attempt(RED + MINUTE_MS, "gbhL0123", side="SELL", position=10.0),  # the panic close
        attempt(RED + 2 * MINUTE_MS, "gb-e2", accepted=False),  # refused: never on the book
        attempt(RED + 3 * MINUTE_MS, "chaos-grow"),  # the soak's manual change: not ours
        attempt(RESTART + MINUTE_MS, "gb-e3"),  # trading again
    ]
    rep = entries_while_red(attempts, [WINDOW])
    assert rep["entries_while_red"] == 0 and rep["other_orders_while_red"] == 0


@pytest.mark.parametrize(
    "bad",
    [
        attempt(RED + MINUTE_MS, "gb-e1"),  # right at the red minute's close
        attempt(RESTART, "gb-e2", side="SELL", ps="SHORT"),  # a short entry before the restart
        attempt(RED + 5 * MINUTE_MS, "gb-e3", ps="LONG", position=5.0),  # adds to a long
    ],
)
def test_an_entry_accepted_while_red_fails(bad):
    rep = entries_while_red([attempt(RED + MINUTE_MS, "gbhS1", side="BUY", ps="SHORT"), bad],
                            [WINDOW])  # fmt: skip
    assert rep["entries_while_red"] == 1
    assert rep["entries_while_red_detail"][0]["client_order_id"] == bad.client_order_id


def test_an_entry_after_a_kill_in_a_halt_still_open_at_the_end_fails():
    ws = halt_windows(EVENTS[:3])  # no restart logged: halted until the soak's end
    rep = entries_while_red([attempt(RESTART + 30 * MINUTE_MS, "gb-e9")], ws)
    assert rep["entries_while_red"] == 1
    # after the soak's end (the settle period's stray minutes) it does not count
    rep = entries_while_red([attempt(RESTART + 30 * MINUTE_MS, "gb-e9")], ws, RESTART)
    assert rep["entries_while_red"] == 0


def test_a_grid_close_while_red_is_counted_but_not_an_entry():
    rep = entries_while_red(
        [attempt(RED + 2 * MINUTE_MS, "gb-c1", side="SELL", position=10.0)], [WINDOW]
    )
    assert rep["entries_while_red"] == 0 and rep["other_orders_while_red"] == 1


def test_an_entry_placed_before_the_bot_logged_red_is_counted_apart_one_after_fails():
    """The bot learns of the red minute late when its streams lag (a soak minute is 0.15 s):
    an entry accepted after the red minute closed but placed before the bot's red record
    could not know; one placed after it (a cycle racing the sample) is a violation."""
    events = [{**e, "time": "2026-12-02T11:31:42.954Z"} for e in EVENTS]
    (w,) = halt_windows(events)
    known = w.known_unix
    assert known == pytest.approx(1_796_211_102.954)  # 2026-12-02 11:31:42.954 UTC
    early = attempt(RED + 4 * MINUTE_MS, "gb-e1", unix=known - 0.4)
    late = attempt(RED + 6 * MINUTE_MS, "gb-e2", unix=known + 0.05)
    rep = entries_while_red([early], [w])
    assert rep["entries_while_red"] == 0 and rep["orders_before_red_known"] == 1
    rep = entries_while_red([early, late], [w])
    assert rep["entries_while_red"] == 1 and rep["entries_while_red_detail"][0]["qty"] == 10.0
    assert rep["entries_while_red_detail"][0]["client_order_id"] == "gb-e2"


def test_the_lag_to_the_first_close_after_red():
    closes = [attempt(RED + 3 * MINUTE_MS, "gbhL1", side="SELL", position=10.0),
              attempt(RED + 9 * MINUTE_MS, "gbhL2", side="SELL", position=10.0)]  # fmt: skip
    assert red_close_lag(closes, [WINDOW])["first_close_after_red_candles_max"] == 2.0
    assert red_close_lag([], [WINDOW])["first_close_after_red_candles_max"] is None


# ---------------------------------------------------------------- flat after red


def flat(rows, windows=(WINDOW,), kills=(), end=RESTART + 60 * MINUTE_MS):
    return flat_after_red(rows, list(windows), end, CANDLE_SECONDS, RECOVERY_SECONDS, kills)


def test_the_bound_is_three_candles_plus_the_recovery_window_and_a_kill():
    assert flat_bound_ms(0.15, 8.0, False) == pytest.approx((3 + 8.0 / 0.15) * MINUTE_MS)
    assert flat_bound_ms(0.15, 8.0, True) == pytest.approx((3 + 27.0 / 0.15) * MINUTE_MS)


def test_closed_the_minute_after_red_passes():
    rows = [row(T0, 10.0, "entry"), row(RED + MINUTE_MS, 0.0)]
    rep = flat(rows)
    assert rep["positions_not_closed_after_red"] == 0
    assert rep["open_stretches_while_red"] == 1 and rep["longest_open_while_red_candles"] == 0
    assert rep["reds_with_positions_open"] == 1


def test_a_position_still_open_past_the_bound_fails():
    bound_candles = 3 + RECOVERY_SECONDS / CANDLE_SECONDS  # 56.3
    rows = [row(T0, 10.0, "entry"), row(RED + MINUTE_MS + 60 * MINUTE_MS, 0.0)]
    rep = flat(rows, windows=[HaltWindow(RED, RED + 200 * MINUTE_MS)])
    assert rep["positions_not_closed_after_red"] == 1
    d = rep["not_closed_detail"][0]
    assert d["candles"] == 60 and d["bound_candles"] == round(bound_candles, 1)
    assert d["open"] == ["DOGEUSDT LONG 10"] and not d["killed"]


def test_a_kill_during_the_stretch_extends_the_bound():
    rows = [row(T0, 10.0, "entry"), row(RED + MINUTE_MS + 60 * MINUTE_MS, 0.0)]
    rep = flat(rows, windows=[HaltWindow(RED, RED + 200 * MINUTE_MS)],
               kills=[RED + 2 * MINUTE_MS])  # fmt: skip
    assert rep["positions_not_closed_after_red"] == 0


def test_a_position_opened_by_hand_during_the_halt_must_be_closed_too():
    grow = row(RED + 5 * MINUTE_MS, 20.0, "adjustment", symbol="BTCUSDT", ps="SHORT")
    ok = flat([grow, row(RED + 6 * MINUTE_MS, 0.0, symbol="BTCUSDT", ps="SHORT")])
    assert ok["positions_not_closed_after_red"] == 0 and ok["open_stretches_while_red"] == 1
    assert ok["reds_with_positions_open"] == 0  # flat at the red close: opened later
    # never closed before the halt ended (the restart needs flat: the bot's bookkeeping lied)
    bad = flat([grow])
    assert bad["positions_not_closed_after_red"] == 1
    assert bad["not_closed_detail"][0]["flat_at_ms"] is None


def test_an_account_reset_counts_as_flat():
    rows = [row(T0, 10.0, "entry"), row(RED + 2 * MINUTE_MS, 0.0, "reset", symbol="")]
    assert flat(rows)["positions_not_closed_after_red"] == 0


# ---------------------------------------------------------------- halts survive restarts


def test_a_restart_inside_the_halt_that_comes_back_red_passes():
    events = [*EVENTS[:3], loaded(RED + 4 * MINUTE_MS, True), EVENTS[3]]
    rep = halt_survived_restarts(events, [0.0] * 10 + [1.0, 1.0])
    assert rep["halts_lost_on_restart"] == 0 and rep["starts_while_halted"] == 1
    assert rep["log_matches_state"] is True


def test_a_restart_inside_the_halt_that_comes_back_green_fails():
    events = [*EVENTS[:3], loaded(RED + 4 * MINUTE_MS, False)]
    rep = halt_survived_restarts(events, [0.0] * 10 + [1.0, 0.0])
    assert rep["halts_lost_on_restart"] == 1
    assert rep["halts_lost_detail"][0]["red_kline_ms"] == RED


def test_a_start_killed_before_the_red_sample_is_not_a_halted_start():
    """Found by the hard stop soak (binance seed 2): the bot was killed in the minute that
    went red, before it sampled it; the restarted bot loaded green (its latest kline that
    very minute) and took the red sample itself. The log's order says so."""
    events = [*EVENTS[:2], loaded(RED, False), *EVENTS[2:]]
    rep = halt_survived_restarts(events, [0.0] * 10 + [1.0, 1.0])
    assert rep["halts_lost_on_restart"] == 0 and rep["starts_while_halted"] == 0


def test_a_state_that_counts_other_reds_than_the_log_fails():
    rep = halt_survived_restarts(EVENTS, [0.0] * 10 + [2.0, 1.0])
    assert rep["log_matches_state"] is False
    rep = halt_survived_restarts(EVENTS, None)  # no state at all
    assert rep["log_matches_state"] is False


# ---------------------------------------------------------------- the closes themselves


def test_reduce_only_and_closing_side_closes_within_the_position_pass():
    good = [
        attempt(RED, "gbhL1", side="SELL", ps="LONG", qty=10.0, position=10.0),
        attempt(
            RED, "gbhS1", side="BUY", ps="SHORT", qty=0.002, position=-0.002, symbol="BTCUSDT"
        ),  # fmt: skip
        attempt(RED, "gbhL2", side="SELL", ps="BOTH", qty=3.0, position=3.0, reduce_only=True),
        attempt(RED, "gb-entry", qty=999.0),  # not the hard stop's
    ]
    rep = hard_stop_closes(good, STEPS)
    assert rep["hard_stop_orders"] == 3 and rep["hard_stop_orders_not_closing"] == 0


@pytest.mark.parametrize(
    "bad",
    [
        attempt(RED, "gbhL1", side="BUY", ps="LONG", qty=10.0, position=10.0),  # adds
        attempt(RED, "gbhL1", side="SELL", ps="LONG", qty=12.0, position=10.0),  # past it
        attempt(
            RED, "gbhL1", side="SELL", ps="LONG", qty=10.0, position=0.0, accepted=False
        ),  # a second close of a position closed already  # fmt: skip
        attempt(RED, "gbhL1", side="SELL", ps="BOTH", qty=3.0, position=-3.0),  # opens short
    ],
)
def test_a_hard_stop_order_that_is_no_close_or_past_the_position_fails(bad):
    rep = hard_stop_closes([bad], STEPS)
    assert rep["hard_stop_orders_not_closing"] == 1


# ---------------------------------------------------------------- the report, from files


def test_the_report_reads_the_bot_log_and_state_and_fails_each_check(tmp_path: Path):
    log_file = tmp_path / "gridbot.jsonl"
    events = [*EVENTS[:3], loaded(RED + 4 * MINUTE_MS, False), EVENTS[3]]
    (tmp_path / "gridbot.jsonl.1").write_text(
        "\n".join(json.dumps({"event": e["event"], "data": e}) for e in events[:2]) + "\n"
    )
    log_file.write_text(
        "\n".join(json.dumps({"event": e["event"], "data": e}) for e in events[2:]) + "\n"
    )
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "live.sqlite")
    db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO kv VALUES ('hard_stop', ?)",
               (json.dumps({"h": [0.0] * 10 + [1.0, 1.0], "hp": []}),))  # fmt: skip
    db.commit()
    db.close()
    attempts = [
        attempt(RED + MINUTE_MS, "gbhL1", side="SELL", qty=11.0, position=10.0),
        attempt(RED + 3 * MINUTE_MS, "gb-e1"),
    ]
    rows = [row(T0, 10.0, "entry"), row(RED + MINUTE_MS, 0.0),
            row(RED + 3 * MINUTE_MS, 10.0, "entry")]  # fmt: skip
    checks, fig = hard_stop_report(
        attempts=attempts, rows=rows, log_file=log_file, state_dir=state, qty_steps=STEPS,
        end_of_soak_ms=RESTART + 60 * MINUTE_MS, candle_seconds=CANDLE_SECONDS,
        recovery_seconds=RECOVERY_SECONDS, kill_ms=[],
    )  # fmt: skip
    assert fig["reds"] == 1 and fig["oranges"] == 1 and fig["reds_logged"] == 1
    assert checks == {
        "no_entries_while_red": False,
        "flat_after_red": False,  # the entry's position was never closed before the restart
        "halt_survived_restarts": False,  # the start inside the halt loaded green
        "hard_stop_orders_closing_only": False,  # 11 of a 10 position
    }


def test_the_soak_table_shows_the_hard_stop_columns():
    from benchmarks.soak_table import HEADER, row

    s = {
        "exchange": "bybit", "seed": 4, "minutes": 2.0, "start": "2021-05-12T17:27",
        "candles": 800, "fills": 153, "faults_total": 14, "restarts": 2,
        "entries_past_limit": 0, "max_wallet_exposure_ratio": 0.999892,
        "orders_on_phantom_positions": 0, "duplicate_orders": 0,
        "final_book_matches_exchange": True, "failed_checks": [],
        "hard_stop": {"reds": 4, "entries_while_red": 0, "longest_open_while_red_candles": 13.0,
                      "starts_while_halted": 2, "halts_lost_on_restart": 0,
                      "hard_stop_orders": 8, "hard_stop_orders_not_closing": 0},
    }  # fmt: skip
    line = row(s)
    assert line.count("|") == HEADER.splitlines()[0].count("|")
    assert "| 4 | 0 | 13 | 2 of 2 | 8 (0) | none |" in line
    assert "| - | - | - | - | - | none |" in row({**s, "hard_stop": None})

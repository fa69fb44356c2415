"""The live bot's book and its pre-trade guard, without an exchange: what may be sent when the
book and the exchange disagree, or when fills are on their way."""

from __future__ import annotations

import pytest

from bot.exchange.events import ADJUSTMENT, ORDER, FillEvent, OrderEvent, PositionEvent
from bot.exchange.order import LiveOrder
from bot.live.book import Book
from bot.live.state import StateStore

SYM = "DOGEUSDT"
WEL = 0.5  # per position
BALANCE = 1000.0  # so the long may hold 500 USDT: 1000 DOGE at 0.5


@pytest.fixture
def book(tmp_path) -> Book:
    b = Book(StateStore(tmp_path, "t"), [SYM], {SYM: 1.0})
    b.load(BALANCE)
    return b


def entry(qty: float, price: float, oid: str = "", cid: str = "gbLg00x") -> LiveOrder:
    return LiveOrder(SYM, 1, qty, price, 2, 0, cid, oid or None)


def test_the_guard_counts_what_rests(book):
    # 600 DOGE resting at 0.5 = 300 USDT; a new 500 at 0.5 would make 550 > 500
    resting = [entry(600, 0.5, "1", "gbLg00a")]
    new = [entry(300, 0.5), entry(500, 0.49)]
    assert book.entry_room(SYM, 1, new, WEL, resting) == 1  # 900 fits, 1400 does not


def test_the_guard_counts_a_create_whose_answer_never_came(book):
    book.create_unknown(SYM, entry(800, 0.5, cid="gbLg00u"))
    assert book.entry_room(SYM, 1, [entry(300, 0.5)], WEL) == 0
    book.set_open_orders(SYM, [])  # the exchange lists it as not resting: it is gone
    assert book.entry_room(SYM, 1, [entry(300, 0.5)], WEL) == 1


def test_an_order_filled_whose_fill_has_not_arrived_is_counted(book):
    """Bybit's order topic says Filled before the execution topic brings the fill."""
    o = entry(800, 0.5, "7", "gbLg007")
    book.created(SYM, o)
    book.order_update(OrderEvent(SYM, o.client_id, "7", False, 1, 0.0, 0.5, filled=800.0))
    assert book.position(SYM, 0) == (0.0, 0.0)  # not booked yet
    assert book.entry_room(SYM, 1, [entry(300, 0.49)], WEL) == 0  # but counted
    book.fill(FillEvent(SYM, 1, 800.0, 0.5, "t1", 1, o.client_id, "7", 0.0, 1))
    assert book.position(SYM, 0) == (800.0, 0.5)
    assert book.on_the_way(SYM, 1) == []
    assert book.entry_room(SYM, 1, [entry(200, 0.5)], WEL) == 1  # 1000 at 0.5: the limit


def test_a_cancel_answered_unknown_counts_the_order_as_filled_until_settled(book):
    o = entry(800, 0.5, "9", "gbLg009")
    book.created(SYM, o)
    book.vanished(SYM, o)  # "unknown order": it filled a moment ago, most likely
    assert book.entry_room(SYM, 1, [entry(300, 0.49)], WEL) == 0
    # a consistent snapshot says the position is still flat: it was cancelled after all
    book.apply_snapshot(BALANCE, {SYM: (0.0, 0.0, 0.0, 0.0)}, quiet=False)
    assert book.entry_room(SYM, 1, [entry(300, 0.49)], WEL) == 1


def test_the_exchange_report_bounds_the_guard_when_it_is_larger(book):
    book.fill(FillEvent(SYM, 1, 200.0, 0.5, "t1", 1, "gbLi00", "1", 0.0, 1))
    # a report from one of our orders that does not match: not adopted, but counted
    book.position_report(PositionEvent(SYM, 1, 900.0, 0.5, 2, ORDER))
    assert book.position(SYM, 0) == (200.0, 0.5)
    assert book.resync_wanted
    assert book.entry_room(SYM, 1, [entry(300, 0.49)], WEL) == 0


def test_an_outside_change_is_adopted_at_once(book):
    book.fill(FillEvent(SYM, 1, 600.0, 0.5, "t1", 1, "gbLi00", "1", 0.0, 1))
    assert book.position_report(PositionEvent(SYM, 1, 200.0, 0.5, 2, ADJUSTMENT))
    assert book.position(SYM, 0) == (200.0, 0.5)


def test_a_consistent_snapshot_is_the_truth_and_says_what_changed(book):
    book.fill(FillEvent(SYM, 1, 600.0, 0.5, "t1", 1, "gbLi00", "1", 0.0, 1))
    assert book.apply_snapshot(BALANCE, {SYM: (600.0, 0.5, 0.0, 0.0)}, quiet=False) == 0
    assert book.apply_snapshot(BALANCE, {SYM: (250.0, 0.5, 0.0, 0.0)}, quiet=False) == 1
    assert book.position(SYM, 0) == (250.0, 0.5)


def test_a_fill_is_booked_once(book):
    f = FillEvent(SYM, 1, 100.0, 0.5, 42, 1, "gbLi00", "1", 0.0, 42)
    assert book.fill(f) and not book.fill(f)
    assert book.position(SYM, 0) == (100.0, 0.5)


def test_the_book_and_its_cursor_survive_a_restart_together(tmp_path):
    b = Book(StateStore(tmp_path, "t"), [SYM], {SYM: 1.0})
    b.load(BALANCE)
    b.fill(FillEvent(SYM, 1, 100.0, 0.5, 42, 1, "gbLi00", "1", 0.0, 42))
    b.fill(FillEvent(SYM, 1, 100.0, 0.4, 43, 2, "gbLg00", "2", 0.0, 43))
    b.state.close()
    again = Book(StateStore(tmp_path, "t"), [SYM], {SYM: 1.0})
    again.load(BALANCE)
    c = again.coins[SYM]
    assert c.cursor == 43 and again.position(SYM, 0) == (200.0, pytest.approx(0.45))
    # the fill at the cursor caught up again (Bybit's cursor is inclusive) is not booked twice
    assert not again.fill(FillEvent(SYM, 1, 100.0, 0.4, 43, 2, "gbLg00", "2", 0.0, 43))
    assert again.position(SYM, 0) == (200.0, pytest.approx(0.45))


def test_a_reset_account_s_positions_replace_the_saved_ones_at_once(tmp_path):
    """A restart on a saved book, then the account turns out reset: the new account's
    positions (here: a short the old one did not have, no long) are the book's, saved with the
    new cursor; no close may be sized from the old long."""
    b = Book(StateStore(tmp_path, "t"), [SYM], {SYM: 1.0})
    b.load(BALANCE)
    b.fill(FillEvent(SYM, 1, 300.0, 0.5, 42, 1, "gbLi00", "1", 0.0, 42))
    b.state.close()
    again = Book(StateStore(tmp_path, "t"), [SYM], {SYM: 1.0})
    again.load(BALANCE)
    assert again.position(SYM, 0) == (300.0, 0.5)
    again.reset(SYM, 3, (0.0, 0.0, 50.0, 0.6))
    assert again.position(SYM, 0) == (0.0, 0.0) and again.position(SYM, 1) == (50.0, 0.6)
    sides = again.coins[SYM].sides
    assert sides[0].report == (0.0, 0.0) and sides[1].report == (50.0, 0.6)
    again.state.close()
    third = Book(StateStore(tmp_path, "t"), [SYM], {SYM: 1.0})
    third.load(BALANCE)
    assert third.coins[SYM].cursor == 3 and third.position(SYM, 0) == (0.0, 0.0)
    assert third.position(SYM, 1) == (50.0, 0.6)


@pytest.mark.parametrize("fsync", [True, False])
def test_the_book_survives_the_process_dropping_its_state_unclosed(tmp_path, fsync):
    # lockstep replays write without fsync (fsync=False): a kill of the process (no close, no
    # checkpoint) must still leave every committed write to the next start; live keeps fsync
    store = StateStore(tmp_path, "t", fsync=fsync)
    synchronous = store._db.execute("PRAGMA synchronous").fetchone()[0]
    assert synchronous == (2 if fsync else 1)  # FULL: waits for the disk; NORMAL: does not
    b = Book(store, [SYM], {SYM: 1.0})
    b.load(BALANCE)
    b.fill(FillEvent(SYM, 1, 100.0, 0.5, 42, 1, "gbLi00", "1", 0.0, 42))
    store.set_many({"ema:DOGEUSDT": [0.5, 0.51]})
    again = Book(StateStore(tmp_path, "t"), [SYM], {SYM: 1.0})  # the first one never closed
    again.load(BALANCE)
    assert again.coins[SYM].cursor == 42 and again.position(SYM, 0) == (100.0, 0.5)
    assert again.state.get("ema:DOGEUSDT") == [0.5, 0.51]

"""The vault's ledger: depositors, shares, NAV per share and exits, in SQLite (WAL).

NAV per share = equity / shares (1.0 before the first deposit). The caller passes the equity
it marks (the backtest's or the live book's); the ledger does the share arithmetic and keeps
the history, each change in one transaction:

- a deposit mints ``amount / NAV`` shares;
- a withdrawal request burns the leaver's shares at once, at the request's NAV: from then on
  the leaver is out of the vault's PnL and holds a claim (an exit) on their slice, valued at
  mark (``marked_value = shares x NAV``), so the NAV per share of those who stay does not
  move at the request;
- an exit's progress (cumulative fraction unwound, value realized so far) is persisted as it
  goes, so an interrupted unwind resumes where it stopped;
- the payout records the realized value once: paying an exit twice is refused.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ConfigError

__all__ = ["Exit", "Ledger", "LedgerError", "live_ledger_path"]


def live_ledger_path(state_dir: str | Path) -> Path:
    """The live bot's ledger: beside its state, in ``live.state_dir``."""
    return Path(state_dir) / "vault.sqlite"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS depositors (
    name TEXT PRIMARY KEY,
    shares REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,          -- deposit / withdraw_request / payout
    depositor TEXT NOT NULL,
    amount REAL NOT NULL,        -- USDT in (deposit), claim at mark (request), paid (payout)
    shares REAL NOT NULL,        -- minted (+) or burned (-)
    nav_per_share REAL NOT NULL,
    exit_id INTEGER
);
CREATE TABLE IF NOT EXISTS exits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    depositor TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    shares REAL NOT NULL,
    fraction REAL NOT NULL,      -- of the vault's shares at the request
    nav_per_share REAL NOT NULL,
    marked_value REAL NOT NULL,
    mode TEXT NOT NULL,          -- buffer / pro_rata / controlled_unwind
    status TEXT NOT NULL,        -- pending / unwinding / unwound / paid
    progress REAL NOT NULL DEFAULT 0,   -- cumulative fraction of the slice unwound
    realized_value REAL,                -- realized so far, final once unwound
    due_at INTEGER NOT NULL,            -- earliest payout time
    paid_at INTEGER,
    paid_value REAL
);
-- the live bot's side (bot.live.vault_exits): requests the CLI writes, each exit's slice and
-- cash, and every unwind order (written before it is sent, so a restart finds it)
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,          -- deposit / withdraw
    depositor TEXT NOT NULL,
    amount REAL,                 -- USDT (deposit)
    shares REAL,                 -- shares (withdraw)
    status TEXT NOT NULL DEFAULT 'pending',   -- pending / done / refused
    note TEXT,
    exit_id INTEGER
);
CREATE TABLE IF NOT EXISTS slices (
    exit_id INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    side INTEGER NOT NULL,       -- 0 long, 1 short
    qty REAL NOT NULL,           -- the leaver's slice of the position at the request
    price REAL NOT NULL,         -- the position's average entry price then
    done REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (exit_id, symbol, side)
);
CREATE TABLE IF NOT EXISTS exit_cash (
    exit_id INTEGER PRIMARY KEY,
    cash REAL NOT NULL           -- marked value less the slice's unrealized pnl at the request
);
CREATE TABLE IF NOT EXISTS unwind_orders (
    client_id TEXT PRIMARY KEY,
    exit_id INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    side INTEGER NOT NULL,
    qty REAL NOT NULL,           -- asked (magnitude)
    cum REAL NOT NULL,           -- the exit's cumulative fraction once it fills
    status TEXT NOT NULL,        -- sent / filled / missing (funding: the slice's funding)
    filled REAL NOT NULL DEFAULT 0,
    price REAL,
    fee REAL NOT NULL DEFAULT 0,
    pnl REAL NOT NULL DEFAULT 0, -- against the slice's entry price (funding rows: - paid)
    time_ms INTEGER NOT NULL
);
"""


class LedgerError(ConfigError):
    """A ledger operation that cannot be done (unknown depositor, too many shares, paid twice)."""


@dataclass(frozen=True)
class Exit:
    id: int
    depositor: str
    requested_at: int
    shares: float
    fraction: float
    nav_per_share: float
    marked_value: float
    mode: str
    status: str
    progress: float
    realized_value: float | None
    due_at: int
    paid_at: int | None
    paid_value: float | None


class Ledger:
    """One vault's ledger in the SQLite file ``path`` (":memory:" for a throwaway one)."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------
    def total_shares(self) -> float:
        return float(
            self._db.execute("SELECT COALESCE(SUM(shares), 0) FROM depositors").fetchone()[0]
        )

    def shares_of(self, depositor: str) -> float:
        row = self._db.execute(
            "SELECT shares FROM depositors WHERE name = ?", (depositor,)
        ).fetchone()
        return float(row[0]) if row else 0.0

    def nav_per_share(self, equity: float) -> float:
        shares = self.total_shares()
        return equity / shares if shares > 0.0 else 1.0

    def depositors(self) -> dict[str, float]:
        rows = self._db.execute("SELECT name, shares FROM depositors ORDER BY name").fetchall()
        return {name: float(shares) for name, shares in rows}

    def exits(self, status: str | None = None) -> list[Exit]:
        q = "SELECT * FROM exits" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        return [Exit(*row) for row in self._db.execute(q, (status,) if status else ())]

    def exit(self, exit_id: int) -> Exit:
        row = self._db.execute("SELECT * FROM exits WHERE id = ?", (exit_id,)).fetchone()
        if row is None:
            raise LedgerError(f"vault exit {exit_id}: no such exit")
        return Exit(*row)

    def history(self) -> list[dict]:
        cur = self._db.execute("SELECT * FROM history ORDER BY id")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # -- writing (each in one transaction) -------------------------------------------------
    def deposit(self, depositor: str, amount: float, equity_before: float, time_ms: int) -> float:
        """Mint shares for ``amount`` USDT at the NAV of ``equity_before``; returns the shares."""
        if not amount > 0.0:
            raise LedgerError(f"deposit of {amount!r}: the amount must be positive")
        with self._tx():
            nav = self.nav_per_share(equity_before)
            if not nav > 0.0:
                raise LedgerError(
                    f"deposit: the vault's NAV per share is {nav:.6g}; nothing to buy into"
                )
            shares = amount / nav
            self._db.execute(
                "INSERT INTO depositors (name, shares) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET shares = shares + excluded.shares",
                (depositor, shares),
            )
            self._db.execute(
                "INSERT INTO history (time_ms, kind, depositor, amount, shares, nav_per_share) "
                "VALUES (?, 'deposit', ?, ?, ?, ?)",
                (time_ms, depositor, amount, shares, nav),
            )
        return shares

    def request_withdrawal(
        self,
        depositor: str,
        shares: float,
        equity: float,
        time_ms: int,
        mode: str,
        payout_delay_ms: int,
    ) -> Exit:
        """Burn ``shares`` of ``depositor`` now, at the NAV of ``equity``; the exit's claim is
        their value at mark. Returns the new exit (status pending)."""
        with self._tx():
            have = self.shares_of(depositor)
            if not 0.0 < shares <= have * (1.0 + 1e-12):
                raise LedgerError(
                    f"withdrawal of {shares:.6g} shares by {depositor!r}: holds {have:.6g}"
                )
            shares = min(shares, have)
            total = self.total_shares()
            nav = self.nav_per_share(equity)
            marked = shares * nav
            self._db.execute(
                "UPDATE depositors SET shares = shares - ? WHERE name = ?", (shares, depositor)
            )
            cur = self._db.execute(
                "INSERT INTO exits (depositor, requested_at, shares, fraction, nav_per_share, "
                "marked_value, mode, status, due_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                (depositor, time_ms, shares, shares / total, nav, marked, mode,
                 time_ms + payout_delay_ms),
            )  # fmt: skip
            exit_id = int(cur.lastrowid or 0)  # always set after an INSERT
            self._db.execute(
                "INSERT INTO history (time_ms, kind, depositor, amount, shares, nav_per_share, "
                "exit_id) VALUES (?, 'withdraw_request', ?, ?, ?, ?, ?)",
                (time_ms, depositor, marked, -shares, nav, exit_id),
            )
        return self.exit(exit_id)

    def record_progress(self, exit_id: int, progress: float, realized_value: float) -> None:
        """Persist how far an exit's unwind got (cumulative fraction) and its value so far."""
        with self._tx():
            ex = self.exit(exit_id)
            if ex.status == "paid":
                raise LedgerError(f"vault exit {exit_id}: already paid")
            status = "unwound" if progress >= 1.0 else "unwinding"
            self._db.execute(
                "UPDATE exits SET progress = ?, realized_value = ?, status = ? WHERE id = ?",
                (min(progress, 1.0), realized_value, status, exit_id),
            )

    def pay(self, exit_id: int, value: float, time_ms: int) -> Exit:
        """Record the payout of an unwound exit, once; a second payout is refused."""
        with self._tx():
            ex = self.exit(exit_id)
            if ex.status == "paid":
                raise LedgerError(f"vault exit {exit_id}: already paid at {ex.paid_at}")
            if ex.status != "unwound":
                raise LedgerError(f"vault exit {exit_id}: not unwound yet ({ex.status})")
            if time_ms < ex.due_at:
                raise LedgerError(f"vault exit {exit_id}: payout not due before {ex.due_at}")
            self._db.execute(
                "UPDATE exits SET status = 'paid', paid_at = ?, paid_value = ? WHERE id = ?",
                (time_ms, value, exit_id),
            )
            self._db.execute(
                "INSERT INTO history (time_ms, kind, depositor, amount, shares, nav_per_share, "
                "exit_id) VALUES (?, 'payout', ?, ?, 0, ?, ?)",
                (time_ms, ex.depositor, value, ex.nav_per_share, exit_id),
            )
        return self.exit(exit_id)

    # -- the live bot's requests and unwinds ---------------------------------------------
    def submit(
        self, kind: str, depositor: str, time_ms: int, *, amount: float = 0.0, shares: float = 0.0
    ) -> int:
        """Queue a deposit (``amount`` USDT, already transferred to the account) or a withdrawal
        (``shares``) for the live bot; returns the request's id. Checked now and again when the
        bot applies it."""
        if kind not in ("deposit", "withdraw"):
            raise LedgerError(f"vault request {kind!r}: deposit or withdraw")
        with self._tx():
            if kind == "deposit" and not amount > 0.0:
                raise LedgerError(f"deposit of {amount!r}: the amount must be positive")
            if kind == "withdraw":
                have = self.shares_of(depositor) - self._queued_shares(depositor)
                if not 0.0 < shares <= have * (1.0 + 1e-12):
                    raise LedgerError(
                        f"withdrawal of {shares:.6g} shares by {depositor!r}: holds {have:.6g} "
                        "not already asked for"
                    )
            cur = self._db.execute(
                "INSERT INTO requests (time_ms, kind, depositor, amount, shares) "
                "VALUES (?, ?, ?, ?, ?)",
                (time_ms, kind, depositor, amount if kind == "deposit" else None,
                 shares if kind == "withdraw" else None),
            )  # fmt: skip
            return int(cur.lastrowid or 0)

    def _queued_shares(self, depositor: str) -> float:
        row = self._db.execute(
            "SELECT COALESCE(SUM(shares), 0) FROM requests WHERE depositor = ? AND "
            "kind = 'withdraw' AND status = 'pending'",
            (depositor,),
        ).fetchone()
        return float(row[0])

    def pending_requests(self) -> list[dict]:
        cur = self._db.execute("SELECT * FROM requests WHERE status = 'pending' ORDER BY id")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def requests(self) -> list[dict]:
        cur = self._db.execute("SELECT * FROM requests ORDER BY id")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def settle_request(
        self, req_id: int, status: str, note: str = "", exit_id: int | None = None
    ) -> None:
        self._db.execute(
            "UPDATE requests SET status = ?, note = ?, exit_id = ? WHERE id = ?",
            (status, note, exit_id, req_id),
        )

    def set_slice(
        self, exit_id: int, cash: float, rows: list[tuple[str, int, float, float]]
    ) -> None:
        """The exit's slice, (symbol, side, qty, entry price) rows, and its cash part."""
        self._db.execute("INSERT INTO exit_cash (exit_id, cash) VALUES (?, ?)", (exit_id, cash))
        self._db.executemany(
            "INSERT INTO slices (exit_id, symbol, side, qty, price) VALUES (?, ?, ?, ?, ?)",
            [(exit_id, sym, side, qty, price) for sym, side, qty, price in rows],
        )

    def slices(self, exit_id: int) -> list[dict]:
        cur = self._db.execute(
            "SELECT symbol, side, qty, price, done FROM slices WHERE exit_id = ? "
            "ORDER BY symbol, side",
            (exit_id,),
        )
        return [dict(zip(("symbol", "side", "qty", "price", "done"), r, strict=True)) for r in cur]

    def exit_cash(self, exit_id: int) -> float:
        row = self._db.execute(
            "SELECT cash FROM exit_cash WHERE exit_id = ?", (exit_id,)
        ).fetchone()
        return float(row[0]) if row else 0.0

    def unwind_orders(self, exit_id: int | None = None, status: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM unwind_orders WHERE 1 = 1", list[object]()
        if exit_id is not None:
            q, args = q + " AND exit_id = ?", [*args, exit_id]
        if status is not None:
            q, args = q + " AND status = ?", [*args, status]
        cur = self._db.execute(q + " ORDER BY time_ms, client_id", args)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def order_sent(self, rows: list[tuple[str, int, str, int, float, float]], time_ms: int) -> None:
        """Write-ahead: (client id, exit, symbol, side, qty, cum) of orders about to be sent."""
        with self._tx():
            self._db.executemany(
                "INSERT INTO unwind_orders (client_id, exit_id, symbol, side, qty, cum, status, "
                "time_ms) VALUES (?, ?, ?, ?, ?, ?, 'sent', ?)",
                [(*r, time_ms) for r in rows],
            )

    def order_result(self, client_id: str, filled: float, price: float, fee: float) -> None:
        """Book what an unwind order did, once (a second result for it is ignored): the
        slice's done quantity, and the exit's progress and value so far."""
        with self._tx():
            row = self._db.execute(
                "SELECT exit_id, symbol, side, status FROM unwind_orders WHERE client_id = ?",
                (client_id,),
            ).fetchone()
            if row is None or row[3] != "sent":
                return
            exit_id, symbol, side, _ = row
            sl = self._db.execute(
                "SELECT price FROM slices WHERE exit_id = ? AND symbol = ? AND side = ?",
                (exit_id, symbol, side),
            ).fetchone()
            sign = 1.0 if side == 0 else -1.0
            pnl = filled * (price - sl[0]) * sign if filled > 0.0 else 0.0
            self._db.execute(
                "UPDATE unwind_orders SET status = ?, filled = ?, price = ?, fee = ?, pnl = ? "
                "WHERE client_id = ?",
                ("filled" if filled > 0.0 else "missing", filled, price, fee, pnl, client_id),
            )
            self._db.execute(
                "UPDATE slices SET done = done + ? WHERE exit_id = ? AND symbol = ? AND side = ?",
                (filled, exit_id, symbol, side),
            )
            self._update_progress(exit_id)

    def record_funding(self, exit_id: int, funding_ms: int, paid: float) -> bool:
        """The funding the exit's slice paid at ``funding_ms`` (negative: received), once per
        funding time; False when it was recorded already."""
        with self._tx():
            cur = self._db.execute(
                "INSERT OR IGNORE INTO unwind_orders (client_id, exit_id, symbol, side, qty, cum, "
                "status, pnl, time_ms) VALUES (?, ?, '', -1, 0, 0, 'funding', ?, ?)",
                (f"funding-{exit_id}-{funding_ms}", exit_id, -paid, funding_ms),
            )
            if cur.rowcount:
                self._update_progress(exit_id)
            return bool(cur.rowcount)

    def _update_progress(self, exit_id: int) -> None:
        """Progress = the cumulative fraction of the latest tranche that filled (1 once every
        position's slice is done); value = cash + pnl - fees."""
        rows = self.slices(exit_id)
        progress = float(
            self._db.execute(
                "SELECT COALESCE(MAX(cum), 0) FROM unwind_orders WHERE exit_id = ? AND "
                "status = 'filled'",
                (exit_id,),
            ).fetchone()[0]
        )
        if all(r["done"] >= r["qty"] - 1e-12 for r in rows):
            progress = 1.0
        else:
            progress = min(progress, 1.0 - 1e-9)
        got = self._db.execute(
            "SELECT COALESCE(SUM(pnl - fee), 0) FROM unwind_orders WHERE exit_id = ?", (exit_id,)
        ).fetchone()[0]
        self.record_progress(exit_id, progress, self.exit_cash(exit_id) + float(got))

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._depth = 0

    def __enter__(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self._depth:
            return
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")

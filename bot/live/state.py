"""What the live bot needs to resume after a restart, in SQLite under ``live.state_dir``.

A small key/value table of JSON values: the balance peak (the unstuck loss allowance is
relative to it), per coin the last closed kline applied to the EMAs and the exact position the
bot booked from its own fills (the exchange reports entry prices rounded; the bot's own
average matches the backtester's to the last bit), and the last processed trade ids.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["StateStore"]


class StateStore:
    """One SQLite file per account and exchange; every write commits at once.

    ``fsync``: each commit waits until it is on disk (survives a power cut). Without it a
    commit still survives the process being killed (WAL, synchronous=NORMAL), only not the
    machine going down; lockstep replays take that, since an fsync per candle was a quarter of
    their time and their crashes are the process's, never the machine's.
    """

    def __init__(self, state_dir: str | Path, name: str = "live", *, fsync: bool = True) -> None:
        d = Path(state_dir)
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / f"{name}.sqlite"
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )

    def get(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def set_many(self, items: dict[str, Any]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            for k, v in items.items():
                self.set(k, v)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Every :meth:`set` inside is committed together, or none (a kill in between)."""
        with self._db:
            self._db.execute("BEGIN")
            yield

    def close(self) -> None:
        self._db.close()

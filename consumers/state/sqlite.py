"""SQLite backend: one file per stage and partition under the stage's state folder."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from consumers.exceptions import StateError
from consumers.state.base import PartitionStore, StateWrite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS checkpoint (id INTEGER PRIMARY KEY CHECK (id = 0), changelog_offset INTEGER NOT NULL);
"""


class SqlitePartitionStore(PartitionStore):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # kafka-python runs rebalance callbacks (which open and restore stores) on its event-loop thread
            # while the main thread waits inside poll(), so access is never concurrent.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"cannot open state store {path}: {exc}") from exc
        self.path = path

    def get(self, store_key: str) -> Any | None:
        row = self._db.execute("SELECT value FROM entries WHERE key=?", (store_key,)).fetchone()
        return json.loads(row[0]) if row else None

    def scan(self, prefix: str) -> Iterator[tuple[str, Any]]:
        upper = prefix + "\U0010ffff"
        for key, value in self._db.execute("SELECT key, value FROM entries WHERE key >= ? AND key < ? ORDER BY key",
                                           (prefix, upper)).fetchall():
            yield key, json.loads(value)

    def apply(self, writes: list[StateWrite], changelog_offset: int | None) -> None:
        self._db.execute("BEGIN")
        try:
            for w in writes:
                if w.value is None:
                    self._db.execute("DELETE FROM entries WHERE key=?", (w.store_key,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)",
                                     (w.store_key, json.dumps(w.value, default=str), w.expires_at))
            if changelog_offset is not None:
                self._db.execute("INSERT OR REPLACE INTO checkpoint VALUES (0, ?)", (changelog_offset,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def expired(self, before: float) -> list[str]:
        return [k for (k,) in self._db.execute("SELECT key FROM entries WHERE expires_at < ?", (before,)).fetchall()]

    @property
    def changelog_offset(self) -> int:
        row = self._db.execute("SELECT changelog_offset FROM checkpoint WHERE id=0").fetchone()
        return row[0] if row else 0

    def size(self) -> int:
        return self._db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        self._db.close()

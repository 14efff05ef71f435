"""SQLite backend: one file per stage and partition under the stage's state folder.

The folder is 0700 and the files 0600 (SQLite gives its -wal and -shm files the database file's mode). Which
reports each entry's value carries is kept beside it (``entry_reports``), so a purge deletes exactly the entries
holding the purged report; deleted content is overwritten (``secure_delete``) and the write-ahead log truncated.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from consumers.exceptions import StateError
from consumers.state.base import NEVER, PartitionStore, StateWrite
from hub.credentials import private_sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS checkpoint (id INTEGER PRIMARY KEY CHECK (id = 0), changelog_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entry_reports (report TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (report, key))
    WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entry_reports_key ON entry_reports (key);
"""


class SqlitePartitionStore(PartitionStore):
    def __init__(self, path: Path) -> None:
        try:
            private_sqlite(path)
            # kafka-python runs rebalance callbacks (which open and restore stores) on its event-loop thread
            # while the main thread waits inside poll(), so access is never concurrent.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA secure_delete=ON")  # a deleted (purged, expired) entry is overwritten
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StateError(f"cannot open state store {path}: {exc}") from exc
        self.path = path

    def get(self, store_key: str, alive_at: float = NEVER) -> Any | None:
        row = self._db.execute("SELECT value FROM entries WHERE key=? AND (expires_at IS NULL OR expires_at >= ?)",
                               (store_key, alive_at)).fetchone()
        return json.loads(row[0]) if row else None

    def scan(self, prefix: str, alive_at: float = NEVER) -> Iterator[tuple[str, Any]]:
        upper = prefix + "\U0010ffff"
        for key, value in self._db.execute("SELECT key, value FROM entries WHERE key >= ? AND key < ? AND "
                                           "(expires_at IS NULL OR expires_at >= ?) ORDER BY key",
                                           (prefix, upper, alive_at)).fetchall():
            yield key, json.loads(value)

    def apply(self, writes: list[StateWrite], changelog_offset: int | None) -> None:
        self._db.execute("BEGIN")
        try:
            for w in writes:
                self._db.execute("DELETE FROM entry_reports WHERE key=?", (w.store_key,))
                if w.value is None:
                    self._db.execute("DELETE FROM entries WHERE key=?", (w.store_key,))
                    continue
                self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)",
                                 (w.store_key, json.dumps(w.value, default=str), w.expires_at))
                self._db.executemany("INSERT OR IGNORE INTO entry_reports VALUES (?, ?)",
                                     [(report, w.store_key) for report in w.reports])
            if changelog_offset is not None:
                self._db.execute("INSERT OR REPLACE INTO checkpoint VALUES (0, ?)", (changelog_offset,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def expired(self, before: float) -> list[str]:
        return [k for (k,) in self._db.execute("SELECT key FROM entries WHERE expires_at < ?", (before,)).fetchall()]

    def reports(self) -> set[str]:
        return {r for (r,) in self._db.execute("SELECT DISTINCT report FROM entry_reports").fetchall()}

    def purge(self, report_ids: Iterable[str]) -> int:
        ids = sorted(set(report_ids))
        if not ids:
            return 0
        self._db.execute("BEGIN")
        try:
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS purging (key TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM purging")
            for report in ids:
                self._db.execute("INSERT OR IGNORE INTO purging SELECT key FROM entry_reports WHERE report=?",
                                 (report,))
            purged = self._db.execute("SELECT count(*) FROM purging").fetchone()[0]
            self._db.execute("DELETE FROM entries WHERE key IN (SELECT key FROM purging)")
            self._db.execute("DELETE FROM entry_reports WHERE key IN (SELECT key FROM purging)")
            self._db.execute("DELETE FROM purging")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if purged:
            # The write-ahead log still holds the pages as they were: copy the overwritten pages back and empty it.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return purged

    @property
    def changelog_offset(self) -> int:
        row = self._db.execute("SELECT changelog_offset FROM checkpoint WHERE id=0").fetchone()
        return row[0] if row else 0

    def size(self) -> int:
        return self._db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        self._db.close()

"""A durable local spool: every accepted record is here until the broker has confirmed it.

One SQLite file per agency under ``<runtime_dir>/spool/``. A record is *pending* until it is sent, then
*in flight* until its delivery is confirmed, when it is deleted. If the process or the broker dies, the
in-flight records' fate is unknown; ``floors`` keeps, per partition, an offset below which none of them
can lie, so a drain scans only that window for their event ids and resends just the missing ones.

The spool holds reports in the clear until the broker has them, so the folder is 0700 and its files 0600.
"""

from __future__ import annotations

import fcntl
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hub.credentials import private_file, private_sqlite
from producers.exceptions import SpoolBusyError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    event_id TEXT NOT NULL,
    in_flight INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS floors (topic TEXT, partition INTEGER, floor INTEGER, PRIMARY KEY (topic, partition));
"""


@dataclass(frozen=True)
class SpooledRecord:
    seq: int
    topic: str
    key: bytes
    value: bytes
    event_id: str


class Spool:
    """The spool of one agency; holds an exclusive lock so two publishers never share it."""

    def __init__(self, directory: Path, agency_ori: str) -> None:
        self.path = private_sqlite(directory / f"{agency_ori}.sqlite")
        self._lock_file = open(private_file(directory / f"{agency_ori}.lock"), "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolBusyError(f"the spool {self.path} is in use by another process") from None
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # accepted means on disk
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    @property
    def instance_id(self) -> str:
        """A stable id for this spool (names the producer so the broker can tell its sessions apart)."""
        row = self._db.execute("SELECT value FROM meta WHERE key='instance'").fetchone()
        if row:
            return row[0]
        value = uuid.uuid4().hex[:12]
        self._db.execute("INSERT INTO meta VALUES ('instance', ?)", (value,))
        return value

    def add(self, records: Iterable[tuple[str, bytes, bytes, str]]) -> list[int]:
        """Durably accept (topic, key, value, event_id) records; returns their sequence numbers."""
        with self._transaction():
            return [self._db.execute("INSERT INTO records (topic, key, value, event_id) VALUES (?, ?, ?, ?)", r).lastrowid
                    for r in records]

    def pending(self, limit: int) -> list[SpooledRecord]:
        rows = self._db.execute(
            "SELECT seq, topic, key, value, event_id FROM records WHERE in_flight=0 ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [SpooledRecord(*row) for row in rows]

    def in_flight(self) -> list[SpooledRecord]:
        rows = self._db.execute(
            "SELECT seq, topic, key, value, event_id FROM records WHERE in_flight=1 ORDER BY seq").fetchall()
        return [SpooledRecord(*row) for row in rows]

    def mark_in_flight(self, seqs: list[int]) -> None:
        with self._transaction():
            self._db.executemany("UPDATE records SET in_flight=1 WHERE seq=?", ((s,) for s in seqs))

    def confirm(self, seqs: list[int], floors: dict[tuple[str, int], int]) -> None:
        """Delete delivered records and raise the floors past them, in one transaction."""
        with self._transaction():
            self._db.executemany("DELETE FROM records WHERE seq=?", ((s,) for s in seqs))
            self._raise_floors(floors)

    def requeue(self, seqs: list[int]) -> None:
        with self._transaction():
            self._db.executemany("UPDATE records SET in_flight=0 WHERE seq=?", ((s,) for s in seqs))

    def floors(self, topic: str) -> dict[int, int]:
        return dict(self._db.execute("SELECT partition, floor FROM floors WHERE topic=?", (topic,)).fetchall())

    def set_floors(self, floors: dict[tuple[str, int], int]) -> None:
        """Record lower bounds before sending; only while nothing is in flight (they must stay lower bounds)."""
        with self._transaction():
            if not self._db.execute("SELECT 1 FROM records WHERE in_flight=1 LIMIT 1").fetchone():
                self._db.executemany("INSERT OR REPLACE INTO floors VALUES (?, ?, ?)",
                                     ((t, p, f) for (t, p), f in floors.items()))

    def _raise_floors(self, floors: dict[tuple[str, int], int]) -> None:
        """Floors may rise only when nothing older than them is still in flight."""
        if self._db.execute("SELECT 1 FROM records WHERE in_flight=1 LIMIT 1").fetchone():
            return
        self._db.executemany(
            "INSERT INTO floors VALUES (?, ?, ?) ON CONFLICT(topic, partition) DO UPDATE SET floor=max(floor, excluded.floor)",
            ((t, p, f) for (t, p), f in floors.items()))

    def count(self) -> int:
        return self._db.execute("SELECT count(*) FROM records").fetchone()[0]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


"""The key vault: one random record key per report, destroyed when 28 CFR 23.20(h) says to purge the report.

Records on Kafka's append-only log cannot be deleted, so the codec seals each record carrying a report's
data under that report's key (``schemas.protection``). Destroying the key purges every copy at once, on
every topic, replica and backup. The vault remembers which ids it destroyed, when and why (never the key),
so a purged report is not sealed again under a fresh key.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from datetime import UTC, date, datetime
from pathlib import Path

from hub.exceptions import HubError
from hub.settings import HubSettings, get_settings
from schemas.codec import Codec
from schemas.exceptions import RecordPurgedError

KEY_SIZE = 32


class VaultError(HubError):
    """The key vault cannot be opened or refuses a change."""

    hint = "The vault is <runtime_dir>/vault/keys.sqlite; check that it exists, is readable and is not corrupt."


class UnknownKeyError(VaultError):
    """No record key was ever created under the id given."""

    hint = "Record keys are created when a report is first written with protection on; check the event id."


@dataclass(frozen=True)
class Tombstone:
    """What the vault keeps of a destroyed key: that it existed, when and why it was destroyed."""

    key_id: str
    destroyed_at: datetime
    reason: str


class KeyVault(ABC):
    """Record keys by event id, each with the date its report must be reviewed or purged by."""

    @abstractmethod
    def ensure(self, key_id: str, review_by: date) -> bytes:
        """The key of ``key_id``, created if absent; a later review date than the stored one replaces it.

        Refuses (:class:`RecordPurgedError`) a destroyed id: sealing it again would undo its purge.
        """

    @abstractmethod
    def get(self, key_id: str) -> bytes | None:
        """The key, or None when it was never created or was destroyed."""

    def get_many(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        """The keys that exist among ``key_ids``."""
        return {k: key for k in key_ids if (key := self.get(k)) is not None}

    @abstractmethod
    def review_dates(self, key_ids: Iterable[str]) -> dict[str, date]:
        """The review date of each existing key among ``key_ids``."""

    @abstractmethod
    def destroy(self, key_id: str, *, reason: str) -> bool:
        """Destroy the key (True if it existed) and remember the id, so it is never recreated."""

    @abstractmethod
    def due(self, on: date) -> list[tuple[str, date]]:
        """Keys to review or purge by ``on`` (review date on or before it), by date then id."""

    @abstractmethod
    def extend(self, key_id: str, review_by: date) -> None:
        """Record a re-validation: the report is kept until the new, not earlier, ``review_by``."""

    @abstractmethod
    def tombstone(self, key_id: str) -> Tombstone | None:
        """When and why the key was destroyed; None if it was not."""

    def destroyed(self, key_id: str) -> bool:
        return self.tombstone(key_id) is not None


def _new_key() -> bytes:
    return os.urandom(KEY_SIZE)


def _purged(key_id: str, tombstone: Tombstone, action: str) -> RecordPurgedError:
    return RecordPurgedError(f"cannot {action} record key {key_id}: it was destroyed on "
                             f"{tombstone.destroyed_at:%Y-%m-%d %H:%M} UTC ({tombstone.reason})", [key_id])


def _check_extension(key_id: str, current: date, review_by: date) -> None:
    if review_by < current:
        raise VaultError(f"cannot move the review of {key_id} from {current} back to {review_by}",
                         hint="A re-validation extends the review date; to purge the report now, destroy its key.")


class MemoryKeyVault(KeyVault):
    """A vault in a dict, for tests and one-off tools."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[bytes, date]] = {}
        self._tombstones: dict[str, Tombstone] = {}

    def ensure(self, key_id: str, review_by: date) -> bytes:
        if key_id in self._tombstones:
            raise _purged(key_id, self._tombstones[key_id], "recreate")
        entry = self._keys.get(key_id)
        if entry is None:
            entry = (_new_key(), review_by)
        self._keys[key_id] = (entry[0], max(entry[1], review_by))
        return entry[0]

    def get(self, key_id: str) -> bytes | None:
        entry = self._keys.get(key_id)
        return None if entry is None else entry[0]

    def review_dates(self, key_ids: Iterable[str]) -> dict[str, date]:
        return {k: self._keys[k][1] for k in key_ids if k in self._keys}

    def destroy(self, key_id: str, *, reason: str) -> bool:
        existed = self._keys.pop(key_id, None) is not None
        self._tombstones.setdefault(key_id, Tombstone(key_id, datetime.now(UTC), reason))
        return existed

    def due(self, on: date) -> list[tuple[str, date]]:
        return sorted(((k, d) for k, (_, d) in self._keys.items() if d <= on), key=lambda kd: (kd[1], kd[0]))

    def extend(self, key_id: str, review_by: date) -> None:
        if key_id in self._tombstones:
            raise _purged(key_id, self._tombstones[key_id], "extend the review of")
        if key_id not in self._keys:
            raise UnknownKeyError(f"no record key {key_id} in the vault")
        key, current = self._keys[key_id]
        _check_extension(key_id, current, review_by)
        self._keys[key_id] = (key, review_by)

    def tombstone(self, key_id: str) -> Tombstone | None:
        return self._tombstones.get(key_id)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, key BLOB NOT NULL, review_by TEXT NOT NULL,
                                 created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS keys_due ON keys (review_by, key_id);
CREATE TABLE IF NOT EXISTS tombstones (key_id TEXT PRIMARY KEY, destroyed_at TEXT NOT NULL, reason TEXT NOT NULL);
"""
_BUSY_TIMEOUT_S = 30.0


class SqliteKeyVault(KeyVault):
    """One SQLite file shared by every hub process on the host: WAL, short transactions, a busy timeout.

    ``secure_delete`` overwrites a destroyed key's bytes in the pages, and :meth:`destroy` truncates the
    write-ahead log so no older copy of the page survives in it either.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # keys readable by the hub's user only
            self._db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a committed key survives a crash of any process; only an OS crash or power loss could lose
            # the last keys (FULL would cost a disk flush per new report, before its record can be sent).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise VaultError(f"cannot open the key vault {path}: {exc}") from exc
        self.path = path
        self._lock = threading.Lock()  # one connection shared by a consumer's threads

    def close(self) -> None:
        self._db.close()

    def ensure(self, key_id: str, review_by: date) -> bytes:
        with self._lock:
            row = self._db.execute("SELECT key, review_by FROM keys WHERE key_id=?", (key_id,)).fetchone()
            if row is not None and date.fromisoformat(row[1]) >= review_by:
                return row[0]  # the common case needs no write lock
        with self._transaction() as db:
            tombstone = self._tombstone(db, key_id)
            if tombstone is not None:
                raise _purged(key_id, tombstone, "recreate")
            db.execute("INSERT INTO keys VALUES (?, ?, ?, ?) ON CONFLICT(key_id) DO UPDATE "
                       "SET review_by=max(review_by, excluded.review_by)",
                       (key_id, _new_key(), review_by.isoformat(), datetime.now(UTC).isoformat()))
            return db.execute("SELECT key FROM keys WHERE key_id=?", (key_id,)).fetchone()[0]

    def get(self, key_id: str) -> bytes | None:
        return self.get_many([key_id]).get(key_id)

    def get_many(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        return dict(self._select("key", key_ids))

    def review_dates(self, key_ids: Iterable[str]) -> dict[str, date]:
        return {k: date.fromisoformat(d) for k, d in self._select("review_by", key_ids)}

    def destroy(self, key_id: str, *, reason: str) -> bool:
        with self._transaction() as db:
            existed = db.execute("DELETE FROM keys WHERE key_id=?", (key_id,)).rowcount > 0
            db.execute("INSERT OR IGNORE INTO tombstones VALUES (?, ?, ?)",
                       (key_id, datetime.now(UTC).isoformat(), reason))
        self.scrub()
        return existed

    def scrub(self) -> bool:
        """Copy the log into the file and truncate it (old page images hold destroyed keys); False if busy."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    def due(self, on: date) -> list[tuple[str, date]]:
        with self._lock:
            rows = self._db.execute("SELECT key_id, review_by FROM keys WHERE review_by <= ? "
                                    "ORDER BY review_by, key_id", (on.isoformat(),)).fetchall()
        return [(k, date.fromisoformat(d)) for k, d in rows]

    def extend(self, key_id: str, review_by: date) -> None:
        with self._transaction() as db:
            tombstone = self._tombstone(db, key_id)
            if tombstone is not None:
                raise _purged(key_id, tombstone, "extend the review of")
            row = db.execute("SELECT review_by FROM keys WHERE key_id=?", (key_id,)).fetchone()
            if row is None:
                raise UnknownKeyError(f"no record key {key_id} in the vault {self.path}")
            _check_extension(key_id, date.fromisoformat(row[0]), review_by)
            db.execute("UPDATE keys SET review_by=? WHERE key_id=?", (review_by.isoformat(), key_id))

    def tombstone(self, key_id: str) -> Tombstone | None:
        with self._lock:
            return self._tombstone(self._db, key_id)

    @staticmethod
    def _tombstone(db: sqlite3.Connection, key_id: str) -> Tombstone | None:
        row = db.execute("SELECT destroyed_at, reason FROM tombstones WHERE key_id=?", (key_id,)).fetchone()
        return None if row is None else Tombstone(key_id, datetime.fromisoformat(row[0]), row[1])

    def _select(self, column: str, key_ids: Iterable[str]) -> list[tuple[str, str | bytes]]:
        ids = list(dict.fromkeys(key_ids))
        rows: list[tuple[str, str | bytes]] = []
        with self._lock:
            for start in range(0, len(ids), 500):  # below SQLite's bound-parameter limit
                chunk = ids[start:start + 500]
                rows += self._db.execute(f"SELECT key_id, {column} FROM keys WHERE key_id IN "
                                         f"({','.join('?' * len(chunk))})", chunk).fetchall()
        return rows

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so two processes never both create a key."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise VaultError(f"the key vault {self.path} stayed locked for {_BUSY_TIMEOUT_S:.0f} s: {exc}",
                                 hint="Another hub process holds a long write transaction on it; retry.") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise VaultError(f"the key vault {self.path} failed: {exc}") from exc
                raise


def default_vault(settings: HubSettings | None = None) -> SqliteKeyVault:
    """The vault every hub process on this host shares: ``<runtime_dir>/vault/keys.sqlite`` (opened once per
    process)."""
    return _open_vault((settings or get_settings()).runtime_dir / "vault" / "keys.sqlite")


@lru_cache(maxsize=None)
def _open_vault(path: Path) -> SqliteKeyVault:
    return SqliteKeyVault(path)


#: Seconds hub processes reuse a record key: a purge reaches every running stage within this.
KEY_CACHE_S = 1.0


def hub_codec(settings: HubSettings | None = None) -> Codec:
    """The codec every hub component reads and writes topics with: report data sealed under the vault's keys."""
    return Codec(vault=default_vault(settings), key_cache_s=KEY_CACHE_S)

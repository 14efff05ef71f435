"""The key vault: one random record key per report, destroyed when 28 CFR 23.20(h) says to purge the report.

Records on Kafka's append-only log cannot be deleted, so the codec seals each record carrying a report's
data under that report's key (``schemas.protection``). Destroying the key purges every sealed copy at once, on
every topic, replica and backup. The vault remembers which ids it destroyed, when and why (never the key),
so a purged report is not sealed again under a fresh key, and a key it never had is "unknown", not "purged".

The hub's stages run on several hosts that share nothing but Kafka, so the keys live on Kafka too: the
compacted, hub-only topic ``hub.keys`` (:data:`schemas.topics.KEYS`), one entry per report, each record key
wrapped (AES-256-GCM) under the key-encryption key (KEK) that only hub hosts hold. A destroy replaces the
entry with a marker holding no key; compaction then removes the wrapped key from the broker's disks. Every hub
process keeps the whole table in memory, read from the topic, like a Kafka Streams global table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from kafka import TopicPartition

from hub.credentials import write_private
from hub.exceptions import HubError, KafkaUnavailableError, TopicMissingError
from hub.kafka import make_consumer, make_producer
from hub.logging import get_logger
from hub.settings import HubSettings, get_settings
from schemas.codec import Codec
from schemas.exceptions import RecordPurgedError
from schemas.protection import event_id_of

KEY_SIZE = 32
#: A key about to be created is checked against a table read to its end at most this long ago: a key for the same
#: report can only come from another intake instance that received the same event id on another partition.
CREATE_FRESHNESS_S = 1.0
#: A process reading keys reads the table to its end at least this often, so a purge reaches it within this.
READ_FRESHNESS_S = 1.0
#: How long a reader waits for the transactions open on the key table to end before it gives up for now (a stage
#: then processes the batch again later; it never dead-letters a report whose key may still be on its way).
PENDING_KEYS_WAIT_S = 60.0
KEK_CHECK_ID = "__kek__"  # the entry proving which KEK the table's keys are wrapped under
#: HKDF info of the key stages hash identifiers in their state keys with (``consumers.state.State.hashed``).
STATE_KEY_HASH_INFO = b"gov.taskforce.hub.state-key-hash"
_NONCE_SIZE = 12


class VaultError(HubError):
    """The key vault cannot be opened or refuses a change."""

    hint = "Record keys live on the hub-only topic hub.keys; check that it exists (`hub topics init`)."


class UnknownKeyError(VaultError):
    """No record key was ever created under the id given."""

    hint = "Record keys are created when the intake stage first seals a report; check the event id."


class KekMismatchError(VaultError):
    """This host's key-encryption key is not the one the hub's record keys are wrapped under."""

    hint = ("Every hub host must hold the same KEK file (HUB_KEK_FILE); copy it from a running hub host. A new KEK "
            "cannot read the keys already on hub.keys.")


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

    def confirm(self) -> None:
        """The transaction the new entries were written in committed: they are final."""

    def rollback(self) -> None:
        """The transaction the new entries were written in failed: forget them (they never reached the table)."""


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
    """The table of record keys in dicts: the in-process part of :class:`KafkaKeyVault`, and a vault for tests."""

    def __init__(self) -> None:
        self._keys: MutableMapping[str, tuple[bytes, date]] = {}
        self._tombstones: dict[str, Tombstone] = {}
        self._destroyed_listeners: list[Callable[[str], None]] = []

    def on_destroyed(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(key_id)`` once whenever this vault learns that a key was destroyed, here or (read from
        the table) by another process: a stage drops the report's entries from its local state store."""
        self._destroyed_listeners.append(listener)

    def ensure(self, key_id: str, review_by: date) -> bytes:
        if key_id in self._tombstones:
            raise _purged(key_id, self._tombstones[key_id], "recreate")
        entry = self._keys.get(key_id)
        if entry is not None and entry[1] >= review_by:
            return entry[0]
        key = entry[0] if entry is not None else _new_key()
        self._store(key_id, key, max(review_by, entry[1]) if entry is not None else review_by)
        return key

    def get(self, key_id: str) -> bytes | None:
        entry = self._keys.get(key_id)
        return None if entry is None else entry[0]

    def review_dates(self, key_ids: Iterable[str]) -> dict[str, date]:
        return {k: self._keys[k][1] for k in key_ids if k in self._keys}

    def destroy(self, key_id: str, *, reason: str) -> bool:
        existed = key_id in self._keys
        if key_id not in self._tombstones:
            self._forget(Tombstone(key_id, datetime.now(UTC), reason))
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
        self._store(key_id, key, review_by)

    def tombstone(self, key_id: str) -> Tombstone | None:
        return self._tombstones.get(key_id)

    def _store(self, key_id: str, key: bytes, review_by: date) -> None:
        """Keep a key (subclasses also write it where other processes read it)."""
        self._keys[key_id] = (key, review_by)

    def _forget(self, tombstone: Tombstone) -> None:
        """Drop a key and remember that it was destroyed (subclasses also write the marker)."""
        learned = tombstone.key_id not in self._tombstones
        self._keys.pop(tombstone.key_id, None)
        self._tombstones[tombstone.key_id] = tombstone
        if learned:
            for listener in self._destroyed_listeners:
                listener(tombstone.key_id)


# -- the KEK and the entries of hub.keys ------------------------------------------------------------
def load_kek(settings: HubSettings) -> bytes:
    """The hub's key-encryption key from HUB_KEK_FILE; created there (0600) on first use when none is set."""
    path = settings.kek_path
    if not path.exists():
        if settings.kek_file is not None:
            raise VaultError(f"the key-encryption key file {path} (HUB_KEK_FILE) does not exist",
                             hint="Copy the KEK file from a hub host; only hub hosts hold it.")
        _create_kek(path)
    try:
        kek = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise VaultError(f"cannot read the key-encryption key {path}: {exc}") from exc
    if len(kek) != KEY_SIZE:
        raise VaultError(f"the key-encryption key in {path} is {len(kek)} bytes, not {KEY_SIZE}",
                         hint="The file holds 32 random bytes in base64: `head -c32 /dev/urandom | base64`.")
    return kek


def _create_kek(path: Path) -> None:
    """A new KEK at ``path``, unless another process got there first: ``hub run all`` starts six stages at once,
    and each wrote a KEK of its own, so keys wrapped by one stage could not be read by the next. The file appears
    whole, by a hard link that fails if it exists, and every process then reads the one that won."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.draft")
    write_private(draft, base64.b64encode(_new_key()) + b"\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()


def kek_fingerprint(kek: bytes) -> str:
    """Names a KEK without revealing it (shown in errors, stored in the table's check entry)."""
    return hmac.new(kek, b"gov.taskforce.hub.kek-fingerprint", hashlib.sha256).hexdigest()[:16]


def state_key_hash_key(kek: bytes) -> bytes:
    """The 32-byte key stages hash identifiers in state keys with: every hub host derives the same one from the KEK,
    agencies and task forces cannot (and it opens nothing: it is not the KEK)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=STATE_KEY_HASH_INFO).derive(kek)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wrap_entry(kek: bytes, key_id: str, key: bytes, review_by: date) -> bytes:
    """The value of an active key's entry: the key sealed under the KEK, bound to its id."""
    nonce = os.urandom(_NONCE_SIZE)
    wrapped = AESGCM(kek).encrypt(nonce, key, f"hub.keys|{key_id}".encode())
    return json.dumps({"wrapped": _b64(wrapped), "nonce": _b64(nonce), "review_by": review_by.isoformat(),
                       "kek": kek_fingerprint(kek)}).encode()


def destroyed_entry(tombstone: Tombstone) -> bytes:
    """The value that replaces a destroyed key's entry: when and why, and no key."""
    return json.dumps({"destroyed_at": tombstone.destroyed_at.isoformat(), "reason": tombstone.reason}).encode()


class SpilledKeys(MutableMapping[str, tuple[bytes, date]]):
    """A process's copy of the key table, in a private temporary SQLite file instead of a dict.

    The table holds a key for every report the hub ever sealed and not yet purged, and every stage process reads
    all of it: in a dict that was about 300 bytes a report in each process, so a stage's memory grew with the
    history (a year of a border region's reports: hundreds of MB per stage). SQLite keeps a few MB of pages in
    memory and the rest on disk. The file is SQLite's own temporary one (unlinked as it is opened, gone with the
    process); each key is sealed in it under a key only this process holds, and a destroyed key's page is
    overwritten (``secure_delete``), so the file never holds a usable record key after the process ends or a purge.
    The most recently used keys also stay in a bounded dict in front of it: a record's keys are looked up several
    times while it is processed, and those lookups need no SQLite call and no decryption.
    """

    def __init__(self, cache_kib: int = 4096, recent: int = 4096) -> None:
        self._recent: OrderedDict[str, tuple[bytes, date]] = OrderedDict()
        self._recent_size = recent
        self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        self._db.execute("PRAGMA journal_mode=OFF")  # a copy, read again from the topic by the next process
        self._db.execute("CREATE TABLE keys (key_id TEXT PRIMARY KEY, sealed BLOB NOT NULL, review_by TEXT NOT NULL)")
        self._sealer = AESGCM(AESGCM.generate_key(bit_length=256))

    def __getitem__(self, key_id: str) -> tuple[bytes, date]:
        entry = self._recent.get(key_id)
        if entry is not None:
            self._recent.move_to_end(key_id)
            return entry
        row = self._db.execute("SELECT sealed, review_by FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            raise KeyError(key_id)
        sealed, review_by = row
        entry = (self._sealer.decrypt(sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:], key_id.encode()),
                 date.fromisoformat(review_by))
        self._remember(key_id, entry)
        return entry

    def __setitem__(self, key_id: str, entry: tuple[bytes, date]) -> None:
        key, review_by = entry
        nonce = os.urandom(_NONCE_SIZE)
        self._db.execute("INSERT OR REPLACE INTO keys VALUES (?, ?, ?)",
                         (key_id, nonce + self._sealer.encrypt(nonce, key, key_id.encode()), review_by.isoformat()))
        self._remember(key_id, entry)

    def __delitem__(self, key_id: str) -> None:
        self._recent.pop(key_id, None)
        if self._db.execute("DELETE FROM keys WHERE key_id = ?", (key_id,)).rowcount == 0:
            raise KeyError(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._recent or \
            self._db.execute("SELECT 1 FROM keys WHERE key_id = ?", (key_id,)).fetchone() is not None

    def _remember(self, key_id: str, entry: tuple[bytes, date]) -> None:
        self._recent[key_id] = entry
        self._recent.move_to_end(key_id)
        if len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)

    def __iter__(self) -> Iterator[str]:
        return iter([key_id for (key_id,) in self._db.execute("SELECT key_id FROM keys ORDER BY key_id")])

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM keys").fetchone()[0]


KeySink = Callable[[bytes, bytes], None]  # (record key, value) -> written to hub.keys


class KafkaKeyVault(MemoryKeyVault):
    """The hub's vault: an in-memory table read from ``hub.keys``, written back through a sink.

    Stages write new keys through the runner's transactional producer (:meth:`bind`), in the same transaction
    as the record sealed under them: the key and the record become visible together, or neither does. Tools
    (purge, review extensions) write through a producer of their own and wait for the broker's acknowledgement.
    A key missing from the table makes the vault read the topic to its end before it says "unknown".
    """

    def __init__(self, settings: HubSettings | None = None, kek: bytes | None = None) -> None:
        super().__init__()
        self._keys = SpilledKeys()
        self.settings = settings or get_settings()
        self.topic = self.settings.key_table
        self._kek = kek if kek is not None else load_kek(self.settings)
        self._fingerprint = kek_fingerprint(self._kek)
        self._kek_checked = False
        self._caught_up_at = 0.0
        self._sink: KeySink | None = None
        #: Entries written through the sink since the last confirm(), with what each replaced (None: new).
        self._unconfirmed: dict[str, tuple[bytes, date] | None] = {}
        self._own_producer: Any = None
        self._reader: Any = None
        self._uncommitted_ends: Any = None  # a read_uncommitted client: the table's ends, open transactions included
        self._partitions: list[TopicPartition] = []
        self._lock = threading.RLock()
        self.log = get_logger(component="vault")

    def state_key_hash_key(self) -> bytes:
        """The key for hashing identifiers in stage state keys (derived from this host's KEK)."""
        return state_key_hash_key(self._kek)

    # -- reading the table -------------------------------------------------------------------------
    def _open(self) -> None:
        if self._reader is not None:
            return
        reader = make_consumer(settings=self.settings, group_id=None, client_id=f"{self.settings.client_id}.keys")
        partitions = sorted(reader.partitions_for_topic(self.topic) or [])
        if not partitions:
            reader.close()
            raise TopicMissingError(f"the key table {self.topic} does not exist")
        self._partitions = [TopicPartition(self.topic, p) for p in partitions]
        reader.assign(self._partitions)
        reader.seek_to_beginning()
        self._reader = reader
        self.catch_up()
        if not self._kek_checked:  # a new table: say which KEK its keys are wrapped under
            self._write(KEK_CHECK_ID.encode(), json.dumps({"kek": self._fingerprint}).encode())
            self._kek_checked = True

    def catch_up(self) -> None:
        """Read the table up to the topic's current (committed) end: every key written before now is known."""
        with self._lock:
            if self._reader is None:
                self._open()
                return
            stall_limit = self.settings.connect_timeout_s * 3
            self._read_to(self._reader.end_offsets(self._partitions), stall_limit,
                          f"reading the key table {self.topic} made no progress for {stall_limit:.0f} s")
            self._caught_up_at = time.monotonic()

    def _settle_pending(self) -> None:
        """Read on until every transaction open on the table now has ended.

        A key is committed in the same transaction as the record sealed under it, but the brokers write a
        transaction's commit markers partition by partition, so the record can be readable a moment before its key
        (longer while a leader moves). Only once the table has nothing uncommitted below its current high watermark
        does a missing key mean an unknown one.
        """
        # The ends of now, uncommitted records included. (The reader's high watermarks come from its last fetch
        # answer, which under load can predate the key being looked for: the wait then ended at once.)
        if self._uncommitted_ends is None:
            self._uncommitted_ends = make_consumer(settings=self.settings, group_id=None,
                                                   isolation_level="read_uncommitted",
                                                   client_id=f"{self.settings.client_id}.keys.ends")
        pending = self._uncommitted_ends.end_offsets(self._partitions)
        self._read_to(pending, PENDING_KEYS_WAIT_S,
                      f"a transaction on the key table {self.topic} has not ended within {PENDING_KEYS_WAIT_S:.0f} s "
                      f"(a broker away, or a writer that died)")

    def _read_to(self, targets: dict[TopicPartition, int], patience_s: float, stalled: str) -> None:
        """Read the table until every partition's position reaches its target. A read that makes no progress for
        ``patience_s`` raises :class:`KafkaUnavailableError` saying ``stalled``: a broker away, not a fault of the
        table, so a stage waits for it as for any broker."""
        progressed = time.monotonic()
        while any(self._reader.position(tp) < target for tp, target in targets.items()):
            if time.monotonic() - progressed > patience_s:
                raise KafkaUnavailableError(stalled)
            polled = self._reader.poll(timeout_ms=200)
            if polled:
                progressed = time.monotonic()
            self._apply(polled)

    def refresh(self) -> None:
        """Take in whatever the table has received since (no waiting): running stages see purges promptly."""
        with self._lock:
            if self._reader is not None:
                self._apply(self._reader.poll(timeout_ms=0))

    def _apply(self, polled: dict[Any, list[Any]]) -> None:
        for records in polled.values():
            for record in records:
                self._take(record.key.decode(), record.value)

    def _take(self, key_id: str, value: bytes | None) -> None:
        if value is None:
            return  # never written by the hub: a destroyed id keeps its marker forever
        entry = json.loads(value)
        if key_id == KEK_CHECK_ID:
            if entry["kek"] != self._fingerprint:
                raise KekMismatchError(f"the record keys on {self.topic} are wrapped under KEK {entry['kek']}, "
                                       f"but this host's KEK ({self.settings.kek_path}) is {self._fingerprint}")
            self._kek_checked = True
            return
        if "destroyed_at" in entry:
            MemoryKeyVault._forget(self, Tombstone(key_id, datetime.fromisoformat(entry["destroyed_at"]),
                                                   entry["reason"]))
            return
        try:
            key = AESGCM(self._kek).decrypt(base64.b64decode(entry["nonce"]), base64.b64decode(entry["wrapped"]),
                                            f"hub.keys|{key_id}".encode())
        except InvalidTag:
            self.log.error("record key cannot be unwrapped", key_id=key_id, kek=entry.get("kek"))
            return
        known = self._keys.get(key_id)
        if known is not None and known[0] != key:
            # Two intake instances sealed the same event id at once (one id published on two partitions): the
            # later key replaces the earlier, whose records become unreadable. Say so; never hide it.
            self.log.error("a second record key was written for one report", key_id=key_id)
        MemoryKeyVault._store(self, key_id, key, date.fromisoformat(entry["review_by"]))

    def _known(self, key_ids: Iterable[str], max_age_s: float = 0.0, settle: bool = True) -> list[str]:
        """Catch up when the table is older than :data:`READ_FRESHNESS_S` (purges), or when any id is in neither
        table, unless the table was read to its end within ``max_age_s`` (keys committed since are then known).
        An id still unknown then waits for the table's open transactions (:meth:`_settle_pending`), unless
        ``settle`` is false or this process has written keys in its own open transaction (intake): that transaction
        is one of them, and it cannot end while its writer waits."""
        ids = list(key_ids)
        with self._lock:
            self._open()
            age = time.monotonic() - self._caught_up_at
            if age >= READ_FRESHNESS_S or (age >= max_age_s and self._unknown(ids)):
                self.catch_up()
                if settle and not self._unconfirmed and self._unknown(ids):
                    self._settle_pending()
        return ids

    def _unknown(self, key_ids: list[str]) -> bool:
        return any(k not in self._keys and k not in self._tombstones for k in key_ids)

    # -- the KeyVault interface --------------------------------------------------------------------
    def ensure(self, key_id: str, review_by: date) -> bytes:
        with self._lock:
            return super().ensure(self._known([key_id], CREATE_FRESHNESS_S, settle=False)[0], review_by)

    def get(self, key_id: str) -> bytes | None:
        return super().get(self._known([key_id])[0])

    def get_many(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        return {k: self._keys[k][0] for k in self._known(key_ids) if k in self._keys}

    def review_dates(self, key_ids: Iterable[str]) -> dict[str, date]:
        return super().review_dates(self._known(key_ids))

    def tombstone(self, key_id: str) -> Tombstone | None:
        return super().tombstone(self._known([key_id])[0])

    def due(self, on: date) -> list[tuple[str, date]]:
        self.catch_up()
        return super().due(on)

    def key_ids_of(self, report: str) -> list[str]:
        """The key ids a purge or review order names: ``ORI/event-id`` as given; a bare event id, every agency's
        report with that id (ids are the agencies' own, so two agencies may use one); [] if none is known."""
        if "/" in report:
            return [report]
        self.catch_up()
        return sorted(k for k in {*self._keys, *self._tombstones} if event_id_of(k) == report)

    def destroy(self, key_id: str, *, reason: str) -> bool:
        with self._lock:
            return super().destroy(self._known([key_id])[0], reason=reason)

    def extend(self, key_id: str, review_by: date) -> None:
        with self._lock:
            super().extend(self._known([key_id])[0], review_by)

    def _store(self, key_id: str, key: bytes, review_by: date) -> None:
        self._write(key_id.encode(), wrap_entry(self._kek, key_id, key, review_by))
        if self._sink is not None and key_id not in self._unconfirmed:
            self._unconfirmed[key_id] = self._keys.get(key_id)
        super()._store(key_id, key, review_by)

    def confirm(self) -> None:
        self._unconfirmed = {}

    def rollback(self) -> None:
        with self._lock:
            for key_id, previous in self._unconfirmed.items():
                if previous is None:
                    self._keys.pop(key_id, None)
                else:
                    self._keys[key_id] = previous
            self._unconfirmed = {}
            self._caught_up_at = 0.0  # read the table again before trusting what is known

    def _forget(self, tombstone: Tombstone) -> None:
        self._write(tombstone.key_id.encode(), destroyed_entry(tombstone))
        super()._forget(tombstone)

    # -- writing -----------------------------------------------------------------------------------
    def bind(self, sink: KeySink | None) -> None:
        """Write new entries through ``sink`` (the runner's transactional producer); None: this vault's own."""
        self._sink = sink

    def _write(self, key: bytes, value: bytes) -> None:
        if self._sink is not None:
            self._sink(key, value)
            return
        if self._own_producer is None:
            self._own_producer = make_producer(self.settings, client_id=f"{self.settings.client_id}.keys")
        self._own_producer.send(self.topic, key=key, value=value).get(timeout=30)

    def close(self) -> None:
        with self._lock:
            for client in (self._reader, self._own_producer, self._uncommitted_ends):
                if client is not None:
                    client.close()
            self._reader = self._own_producer = self._uncommitted_ends = None


def hub_codec(settings: HubSettings | None = None) -> Codec:
    """The codec hub components read and write sealed topics with: report data sealed under the hub's keys.

    Each call opens its own view of the key table (a stage binds it to its own transactions)."""
    return Codec(vault=KafkaKeyVault(settings))

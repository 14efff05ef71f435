"""What a stage sees of its state: get, put (with an event-time expiry) and delete, namespaced.

Writes go to an overlay that the runner commits to the local store only after the Kafka transaction
carrying the same writes to the changelog has committed, so the store never runs ahead of Kafka.

Purges reach state too. A write names the reports (event ids) its value carries (``put(..., reports=...)``);
the runner writes such a value to the changelog sealed under those reports' record keys
(``schemas.protection``, as the codec seals records), so destroying a key makes every changelog copy
unreadable, and a restore applies it as a delete. Values carrying no report (flags such as "event seen")
stay plain JSON. Keys built from identifiers (phone numbers, VINs, record numbers) go through
:meth:`State.hashed`, a keyed hash under a secret only hub hosts hold, so keys name no one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from consumers.exceptions import StateError
from schemas.exceptions import DecodeError, RecordPurgedError
from schemas.models import ProtectedRecord
from schemas.protection import seal, unseal

SEPARATOR = "\x1f"
#: The ``inner_type`` a sealed state value is authenticated under, bound to its entry: a sealed value copied
#: onto another entry's key fails authentication.
SEALED_STATE_TYPE = "hub.state"

KeyedHash = Callable[[str], str]


class StateKeys(Protocol):
    """What sealing state values needs of the key vault (``hub.vault.KeyVault`` is one)."""

    def get_many(self, key_ids: Iterable[str]) -> dict[str, bytes]: ...

    def review_dates(self, key_ids: Iterable[str]) -> dict[str, date]: ...

    def destroyed(self, key_id: str) -> bool: ...


def keyed_hash(secret: bytes) -> KeyedHash:
    """HMAC-SHA256 of a state key under ``secret`` (hex): stable across hosts and restarts holding the same
    secret, and no identifier can be read back from it or checked against a guess without the secret."""
    if len(secret) < 16:
        raise ValueError("a keyed hash needs a secret of at least 16 bytes")

    def hashed(identifier: str) -> str:
        return hmac.new(secret, identifier.encode(), hashlib.sha256).hexdigest()

    return hashed


#: For pure tests and tools without the hub's KEK: a public key, so it hides nothing from someone able to guess
#: identifiers. The runner always gives its states the key derived from the KEK (``hub.vault``).
UNKEYED_HASH = keyed_hash(b"gov.taskforce.hub.state.unkeyed")


def _sealed_type(store_key: str) -> str:
    return f"{SEALED_STATE_TYPE}|{store_key}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


#: Before any clock: every entry is alive.
NEVER = float("-inf")
#: Where :class:`State` keeps its partition's event-time clock (no stage's namespace).
CLOCK_ENTRY = ("runner-clock", "inputs")


def _store_key(namespace: str, key: str) -> str:
    return f"{namespace}{SEPARATOR}{key}"


def alive(expires_at: float | None, alive_at: float) -> bool:
    """Whether an entry expiring at ``expires_at`` (None: never) is still there for reads at ``alive_at``."""
    return expires_at is None or expires_at >= alive_at


@dataclass(frozen=True)
class StateWrite:
    """One change: ``value`` None is a delete. ``expires_at`` is in event time (epoch seconds). ``reports``: the
    event ids whose data the value carries (sorted); the changelog holds such a value only sealed under them."""

    namespace: str
    key: str
    value: Any
    expires_at: float | None
    reports: tuple[str, ...] = ()

    @property
    def store_key(self) -> str:
        return _store_key(self.namespace, self.key)

    @property
    def entry(self) -> str:
        """Names the entry in messages (the key may be a hash; it is never an identifier)."""
        return f"state entry {self.namespace}/{self.key}"

    def deleted(self) -> StateWrite:
        """The same entry, deleted."""
        return StateWrite(self.namespace, self.key, None, None)

    def encode(self, keys: StateKeys | None = None) -> bytes | None:
        """Changelog value: None (a tombstone) for deletes; JSON of value and expiry, sealed under the record keys of
        ``reports`` when it names any (raises :class:`RecordPurgedError` when one was destroyed since: the caller
        writes a delete instead, and :class:`StateError` for a key the vault never had)."""
        if self.value is None:
            return None
        # UTF-8 as is, not \u-escaped: a canonical event in a non-Latin script would otherwise triple in size
        body = json.dumps({"v": self.value, "x": self.expires_at}, separators=(",", ":"), default=str,
                          ensure_ascii=False).encode()
        if not self.reports:
            return body
        if keys is None:
            raise StateError(f"{self.entry} carries reports {', '.join(self.reports)}: writing it needs the key vault")
        found = keys.get_many(self.reports)
        dates = keys.review_dates(self.reports)
        _check_keys(self.entry, self.reports, found, keys)
        if len(dates) < len(self.reports):  # destroyed between the two lookups
            _check_keys(self.entry, self.reports, dates, keys)
        sealed = seal(body, _sealed_type(self.store_key), found, min(dates.values()))
        return json.dumps({"sealed": {"key_ids": sealed.key_ids, "review_by": sealed.review_by.isoformat(),
                                      "algorithm": sealed.algorithm, "nonce": _b64(sealed.nonce),
                                      "ciphertext": _b64(sealed.ciphertext)}}, separators=(",", ":")).encode()

    @staticmethod
    def decode(store_key: str, data: bytes | None, keys: StateKeys | None = None) -> StateWrite:
        """The change a changelog record makes. A sealed value whose record key was destroyed is a delete (the
        report was purged, so is its entry); one whose key the vault never had raises :class:`StateError`."""
        namespace, _, key = store_key.partition(SEPARATOR)
        deleted = StateWrite(namespace, key, None, None)
        if data is None:
            return deleted
        try:
            body = json.loads(data)
            sealed = body.get("sealed")
            if sealed is None:
                return StateWrite(namespace, key, body["v"], body["x"])
            if keys is None:
                raise StateError(f"{deleted.entry} is sealed under record key(s) {', '.join(sealed['key_ids'])}: "
                                 f"reading it needs the key vault")
            envelope = ProtectedRecord(key_ids=sealed["key_ids"], review_by=date.fromisoformat(sealed["review_by"]),
                                       inner_type=_sealed_type(store_key), algorithm=sealed["algorithm"],
                                       nonce=base64.b64decode(sealed["nonce"], validate=True),
                                       ciphertext=base64.b64decode(sealed["ciphertext"], validate=True))
        except StateError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"{deleted.entry} has a malformed changelog value: {exc}") from None
        found = keys.get_many(envelope.key_ids)
        try:
            _check_keys(deleted.entry, envelope.key_ids, found, keys)
            inner = json.loads(unseal(envelope, found))
        except RecordPurgedError:
            return deleted  # purged: as if never written
        except (DecodeError, ValueError) as exc:
            raise StateError(f"{deleted.entry} cannot be opened: {exc}") from None
        return StateWrite(namespace, key, inner["v"], inner["x"], tuple(envelope.key_ids))


def _check_keys(entry: str, key_ids: Iterable[str], found: dict[str, Any], keys: StateKeys) -> None:
    """Raise for the key ids missing from ``found``: :class:`RecordPurgedError` when all were destroyed,
    :class:`StateError` when one was never in the vault (forged, or sealed by another hub)."""
    missing = [k for k in key_ids if k not in found]
    if not missing:
        return
    unknown = [k for k in missing if not keys.destroyed(k)]
    if unknown:
        raise StateError(f"{entry} is sealed under record key(s) {', '.join(unknown)} that the hub never had")
    raise RecordPurgedError(f"{entry} carries purged report(s) {', '.join(missing)}", missing)


class PartitionStore(ABC):
    """The durable store of one input partition of one stage."""

    @abstractmethod
    def get(self, store_key: str, alive_at: float = NEVER) -> Any | None:
        """The entry's value, or None; an entry whose expiry is before ``alive_at`` counts as gone."""

    @abstractmethod
    def scan(self, prefix: str, alive_at: float = NEVER) -> Iterator[tuple[str, Any]]:
        """Entries whose key starts with ``prefix``, in key order, those expired before ``alive_at`` left out."""

    @abstractmethod
    def apply(self, writes: list[StateWrite], changelog_offset: int | None) -> None:
        """Apply committed writes and remember how far the changelog has been applied."""

    @abstractmethod
    def expired(self, before: float) -> list[str]:
        """Store keys whose event-time expiry is before ``before``."""

    @abstractmethod
    def reports(self) -> set[str]:
        """Every report (event id) some entry's value carries."""

    @abstractmethod
    def purge(self, report_ids: Iterable[str]) -> int:
        """Delete every entry carrying any of ``report_ids`` (their keys were destroyed); returns how many. The
        changelog is left alone: its sealed copies are already unreadable."""

    @property
    @abstractmethod
    def changelog_offset(self) -> int:
        """The next changelog offset to apply when restoring."""

    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...


class State:
    """A stage's view of one partition's state during one batch: reads see the batch's own writes.

    Writes of the message being processed stay apart until the runner keeps them (``keep_last``) or drops
    them (``discard_last``, when the message goes to the dead-letter topic), so a poison message leaves no trace.

    Expiry is decided by the partition's own event-time clock (:meth:`clock`, kept in the state so a restart or a
    replay resumes it): from the message on which an entry's expiry falls behind ``clock - grace``, reads no
    longer see it, whenever the runner gets to delete it. What a stage decides then depends on the messages it
    processed, never on where commits fell; a replay decides the same.
    """

    def __init__(self, store: PartitionStore, *, hasher: KeyedHash | None = None) -> None:
        self._store = store
        self._hash = hasher or UNKEYED_HASH
        self._overlay: dict[str, StateWrite] = {}
        self._message: dict[str, StateWrite] = {}
        self._alive_at = NEVER  # entries expiring before this are gone for reads (:meth:`hide_expired`)

    def hashed(self, identifier: str) -> str:
        """A state key for an identifier (phone number, VIN, record number...): a keyed hash, stable across the
        hub's hosts and restarts, that names no one on the changelog or on disk."""
        return self._hash(identifier)

    def _pending(self, store_key: str) -> StateWrite | None:
        return self._message.get(store_key) or self._overlay.get(store_key)

    def get(self, namespace: str, key: str) -> Any | None:
        store_key = f"{namespace}{SEPARATOR}{key}"
        write = self._pending(store_key)
        if write is not None:
            return write.value if alive(write.expires_at, self._alive_at) else None
        return self._store.get(store_key, self._alive_at)

    def clock(self, window_s: float) -> float:
        """The partition's event-time clock: the least, over the input topics heard from within ``window_s`` (hub
        time: the records' timestamps) of the newest record, of the newest event time processed from each; NEVER
        before the first record. An agency publishing a year of history ahead of the others thus holds nothing
        back, and one that went quiet stops holding the clock once the window has passed."""
        inputs: dict[str, list[float]] = self.get(*CLOCK_ENTRY) or {}
        if not inputs:
            return NEVER
        newest_stamp = max(stamp for _, stamp in inputs.values())
        return min(event_time for event_time, stamp in inputs.values() if stamp >= newest_stamp - window_s * 1000)

    def advance_clock(self, topic: str, event_time: float, stamp_ms: int) -> None:
        """Count a record processed from ``topic`` (written with the batch, so it commits with the offsets)."""
        inputs = dict(self.get(*CLOCK_ENTRY) or {})
        newest, _ = inputs.get(topic, (NEVER, 0))
        inputs[topic] = [max(newest, event_time), stamp_ms]
        self._overlay[_store_key(*CLOCK_ENTRY)] = StateWrite(*CLOCK_ENTRY, inputs, None)

    def hide_expired(self, grace_s: float) -> None:
        """From now on, reads leave out entries whose expiry is more than ``grace_s`` behind the clock (a topic
        silent for ``grace_s`` of hub time no longer holds it back)."""
        self._alive_at = self.clock(grace_s) - grace_s

    def put(self, namespace: str, key: str, value: Any, expires_at: datetime | float | None = None, *,
            reports: Iterable[str] = ()) -> None:
        """Set an entry; ``reports`` names the event ids whose data ``value`` carries (it is then sealed under their
        record keys on the changelog and dropped when one is purged)."""
        expiry = expires_at.timestamp() if isinstance(expires_at, datetime) else expires_at
        write = StateWrite(namespace, key, value, expiry, tuple(sorted(set(reports))))
        self._message[write.store_key] = write

    def delete(self, namespace: str, key: str) -> None:
        write = StateWrite(namespace, key, None, None)
        self._message[write.store_key] = write

    def scan(self, namespace: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Entries whose key starts with ``prefix`` (pending writes included), in key order."""
        full = f"{namespace}{SEPARATOR}{prefix}"
        merged = dict(self._store.scan(full, self._alive_at))
        for writes in (self._overlay, self._message):
            merged.update({k: w.value if alive(w.expires_at, self._alive_at) else None
                           for k, w in writes.items() if k.startswith(full)})
        for store_key in sorted(merged):
            if merged[store_key] is not None:
                yield store_key.partition(SEPARATOR)[2], merged[store_key]

    def keep_last(self) -> None:
        self._overlay.update(self._message)
        self._message = {}

    def discard_last(self) -> None:
        self._message = {}

    def discard_all(self) -> None:
        """Drop every write not yet taken (the transaction they belonged to failed)."""
        self._overlay, self._message = {}, {}

    def forget_reports(self, report_ids: Iterable[str]) -> int:
        """Turn pending writes carrying any of ``report_ids`` (just purged) into deletes; returns how many."""
        purged = set(report_ids)
        changed = 0
        for writes in (self._overlay, self._message):
            for store_key, write in list(writes.items()):
                if purged.intersection(write.reports):
                    writes[store_key] = write.deleted()
                    changed += 1
        return changed

    def expire(self, before: float) -> int:
        """Delete every entry whose event-time expiry has passed; returns how many."""
        self.keep_last()
        keys = [k for k in self._store.expired(before) if k not in self._overlay]
        keys += [k for k, w in self._overlay.items() if w.value is not None and w.expires_at is not None
                 and w.expires_at < before]
        for store_key in keys:
            self._overlay[store_key] = StateWrite(*store_key.split(SEPARATOR, 1), None, None)
        return len(keys)

    def take_writes(self) -> list[StateWrite]:
        self.keep_last()
        writes, self._overlay = list(self._overlay.values()), {}
        return writes


def without_purged(writes: list[StateWrite], purged: set[str]) -> list[StateWrite]:
    """``writes`` with those carrying a report in ``purged`` turned into deletes."""
    if not purged:
        return writes
    return [w.deleted() if purged.intersection(w.reports) else w for w in writes]


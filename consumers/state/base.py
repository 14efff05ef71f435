"""What a stage sees of its state: get, put (with an event-time expiry) and delete, namespaced.

Writes go to an overlay that the runner commits to the local store only after the Kafka transaction
carrying the same writes to the changelog has committed, so the store never runs ahead of Kafka.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SEPARATOR = "\x1f"


@dataclass(frozen=True)
class StateWrite:
    """One change: ``value`` None is a delete. ``expires_at`` is in event time (epoch seconds)."""

    namespace: str
    key: str
    value: Any
    expires_at: float | None

    @property
    def store_key(self) -> str:
        return f"{self.namespace}{SEPARATOR}{self.key}"

    def encode(self) -> bytes | None:
        """Changelog value: JSON of value and expiry; None (a tombstone) for deletes."""
        if self.value is None:
            return None
        return json.dumps({"v": self.value, "x": self.expires_at}, separators=(",", ":"), default=str).encode()

    @staticmethod
    def decode(store_key: str, data: bytes | None) -> StateWrite:
        namespace, _, key = store_key.partition(SEPARATOR)
        if data is None:
            return StateWrite(namespace, key, None, None)
        body = json.loads(data)
        return StateWrite(namespace, key, body["v"], body["x"])


class PartitionStore(ABC):
    """The durable store of one input partition of one stage."""

    @abstractmethod
    def get(self, store_key: str) -> Any | None: ...

    @abstractmethod
    def scan(self, prefix: str) -> Iterator[tuple[str, Any]]: ...

    @abstractmethod
    def apply(self, writes: list[StateWrite], changelog_offset: int | None) -> None:
        """Apply committed writes and remember how far the changelog has been applied."""

    @abstractmethod
    def expired(self, before: float) -> list[str]:
        """Store keys whose event-time expiry is before ``before``."""

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
    """

    def __init__(self, store: PartitionStore) -> None:
        self._store = store
        self._overlay: dict[str, StateWrite] = {}
        self._message: dict[str, StateWrite] = {}

    def _pending(self, store_key: str) -> StateWrite | None:
        return self._message.get(store_key) or self._overlay.get(store_key)

    def get(self, namespace: str, key: str) -> Any | None:
        store_key = f"{namespace}{SEPARATOR}{key}"
        write = self._pending(store_key)
        return write.value if write is not None else self._store.get(store_key)

    def put(self, namespace: str, key: str, value: Any, expires_at: datetime | float | None = None) -> None:
        expiry = expires_at.timestamp() if isinstance(expires_at, datetime) else expires_at
        write = StateWrite(namespace, key, value, expiry)
        self._message[write.store_key] = write

    def delete(self, namespace: str, key: str) -> None:
        write = StateWrite(namespace, key, None, None)
        self._message[write.store_key] = write

    def scan(self, namespace: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Entries whose key starts with ``prefix`` (pending writes included), in key order."""
        full = f"{namespace}{SEPARATOR}{prefix}"
        merged = dict(self._store.scan(full))
        for writes in (self._overlay, self._message):
            merged.update({k: w.value for k, w in writes.items() if k.startswith(full)})
        for store_key in sorted(merged):
            if merged[store_key] is not None:
                yield store_key.partition(SEPARATOR)[2], merged[store_key]

    def keep_last(self) -> None:
        self._overlay.update(self._message)
        self._message = {}

    def discard_last(self) -> None:
        self._message = {}

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

"""In-memory backend: for pure tests of stages and for replays that need no durability."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

from consumers.state.base import NEVER, PartitionStore, StateWrite, alive


class MemoryPartitionStore(PartitionStore):
    def __init__(self) -> None:
        self._entries: dict[str, tuple[Any, float | None, tuple[str, ...]]] = {}
        self._sorted: list[str] = []  # the keys in order, so a prefix scan reads a range, as SQLite's index does
        self._changelog_offset = 0

    def get(self, store_key: str, alive_at: float = NEVER) -> Any | None:
        entry = self._entries.get(store_key)
        return None if entry is None or not alive(entry[1], alive_at) else entry[0]

    def scan(self, prefix: str, alive_at: float = NEVER) -> Iterator[tuple[str, Any]]:
        start = bisect.bisect_left(self._sorted, prefix)
        keys = self._sorted[start:bisect.bisect_left(self._sorted, prefix + "\U0010ffff", start)]
        for key in keys:
            value, expires_at, _ = self._entries[key]
            if alive(expires_at, alive_at):
                yield key, value

    def _delete(self, key: str) -> None:
        if self._entries.pop(key, None) is not None:
            del self._sorted[bisect.bisect_left(self._sorted, key)]

    def apply(self, writes: list[StateWrite], changelog_offset: int | None) -> None:
        for w in writes:
            if w.value is None:
                self._delete(w.store_key)
            else:
                if w.store_key not in self._entries:
                    bisect.insort(self._sorted, w.store_key)
                self._entries[w.store_key] = (w.value, w.expires_at, w.reports)
        if changelog_offset is not None:
            self._changelog_offset = changelog_offset

    def expired(self, before: float) -> list[str]:
        return [k for k, (_, expiry, _) in self._entries.items() if expiry is not None and expiry < before]

    def reports(self) -> set[str]:
        return {r for _, _, reports in self._entries.values() for r in reports}

    def purge(self, report_ids: Iterable[str]) -> int:
        purged = set(report_ids)
        keys = [k for k, (_, _, reports) in self._entries.items() if purged.intersection(reports)]
        for key in keys:
            self._delete(key)
        return len(keys)

    @property
    def changelog_offset(self) -> int:
        return self._changelog_offset

    def size(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._entries.clear()
        self._sorted.clear()

"""The subscriber SDK: a task force reads its own feed as typed items.

A :class:`Subscriber` assigns every partition of ``feed.<unit>`` and commits its position under the unit's
consumer group (``feed.<unit>``, which the unit's principal may use), so a restarted subscriber carries on where
it stopped; a reader that must not move that position (the console) reads with ``commit=False``, outside any group.
The broker's ACLs, not this class, keep a unit out of other feeds.

Feed items arrive in the clear (over TLS): a unit needs its own credentials and the CA, no hub key. When a
report is purged, the hub writes a tombstone over every feed item that carried it; the subscriber turns it into a
:class:`PurgeNotice` (the unit must delete its own copies), and compaction removes the item from the feed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from consumers.exceptions import FeedMissingError
from hub.kafka import make_consumer
from hub.settings import HubSettings, get_settings
from schemas.codec import Codec
from schemas.models import FeedItem
from schemas.topics import FEED, PURGE_NOTICE_HEADER, PURGED_EVENTS_HEADER

StartAt = Literal["committed", "beginning"] | datetime


@dataclass(frozen=True)
class PurgeNotice:
    """A record the unit received was purged: delete every copy of it (28 CFR 23.20(g))."""

    record_id: str
    event_ids: list[str]
    notice: str


class Subscriber:
    """Iterates a unit's feed from where its group left off, the beginning, or a point in time."""

    def __init__(self, unit_id: str, settings: HubSettings | None = None, *, start: StartAt = "committed",
                 commit: bool = True) -> None:
        self.unit_id = unit_id
        self.settings = settings or get_settings()
        self.topic = FEED.name(self.settings.topic_prefix, unit=unit_id)
        if start == "committed" and not commit:
            raise ValueError("a subscriber that commits nothing has no committed position to start from")
        self.group_id = self.topic if commit else None
        self.codec = Codec()
        self.notices: list[PurgeNotice] = []  # purges of records this unit received, read since it started
        self._consumer = make_consumer(settings=self.settings, group_id=self.group_id)
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            self._consumer.close()
            raise FeedMissingError(f"no feed topic {self.topic} for task force {unit_id}")
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        self._seek(start)

    def _seek(self, start: StartAt) -> None:
        if start == "beginning":
            self._consumer.seek_to_beginning()
        elif isinstance(start, datetime):
            found = self._consumer.offsets_for_times({tp: int(start.timestamp() * 1000) for tp in self._partitions})
            ends = self._consumer.end_offsets(self._partitions)
            for tp in self._partitions:
                self._consumer.seek(tp, found[tp].offset if found.get(tp) else ends[tp])
        else:
            for tp in self._partitions:
                committed = self._consumer.committed(tp)
                if committed is None:
                    self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, committed)

    def items(self, follow: bool = False, idle_s: float = 3.0) -> Iterator[FeedItem]:
        """Feed items in partition order; without ``follow``, stop once the feed has been read to its end and
        nothing new arrived for ``idle_s``. Positions are committed after each batch (at least once). Purge
        notices are collected in :attr:`notices`."""
        quiet_since = time.monotonic()
        if not follow and idle_s <= 0 and self._at_end():
            return  # caught up: no poll to wait out
        while True:
            polled = self._consumer.poll(timeout_ms=500)
            for records in polled.values():
                for record in records:
                    if record.value is None:
                        self.notices.append(_notice(record))
                        continue
                    yield self.codec.decode(record.value)
            if polled:
                self.commit()
                quiet_since = time.monotonic()
            elif not follow and time.monotonic() - quiet_since >= idle_s and self._at_end():
                return

    def _at_end(self) -> bool:
        ends = self._consumer.end_offsets(self._partitions)
        return all(self._consumer.position(tp) >= end for tp, end in ends.items())

    def commit(self) -> None:
        if self.group_id is None:
            return
        self._consumer.commit({tp: OffsetAndMetadata(self._consumer.position(tp), "", -1) for tp in self._partitions})

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _notice(tombstone: object) -> PurgeNotice:
    headers = {name: value.decode() for name, value in getattr(tombstone, "headers", None) or []}
    event_ids = [e for e in headers.get(PURGED_EVENTS_HEADER, "").split(",") if e]
    return PurgeNotice((getattr(tombstone, "key", None) or b"").decode(), event_ids,
                       headers.get(PURGE_NOTICE_HEADER, "record withdrawn by the hub"))

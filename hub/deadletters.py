"""What the stages set aside: every dead-lettered record with its stage, its reason, and where and when it came in.

A record that a stage cannot take (malformed, forged, an update arriving too late...) goes to
``deadletter.<stage>`` with its reason in the headers, and the stage goes on; this reads those topics back for the
operator, so nobody has to decode headers with kcat to learn what was set aside and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from hub.kafka import read_topic
from hub.settings import HubSettings
from schemas.topics import deadletter_topic


@dataclass(frozen=True)
class DeadLetter:
    """One record a stage set aside."""

    stage: str
    source_topic: str
    source_partition: int
    source_offset: int
    input_time: datetime  # the input's own timestamp (for ingest records, when the hub took the report in)
    reason: str  # the whole reason, with what to do next
    kept_bytes: int | None  # the record's size when kept; None when too big to keep (its size and hash are noted)

    @property
    def source(self) -> str:
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    @property
    def summary(self) -> str:
        """The reason's first line."""
        return self.reason.splitlines()[0] if self.reason else ""


def dead_letters(settings: HubSettings, stages: Iterable[str]) -> list[DeadLetter]:
    """Every record the ``stages`` dead-lettered, oldest input first."""
    found = []
    for stage in stages:
        for record in read_topic(settings.topic(deadletter_topic(stage)), settings):
            headers = {key: value.decode(errors="replace") for key, value in record.headers}
            found.append(DeadLetter(
                stage=headers.get("dlq.stage", stage), source_topic=headers.get("dlq.source_topic", "?"),
                source_partition=int(headers.get("dlq.source_partition", -1)),
                source_offset=int(headers.get("dlq.source_offset", -1)),
                input_time=datetime.fromtimestamp(record.timestamp / 1000, tz=timezone.utc),
                reason=headers.get("dlq.reason", ""),
                kept_bytes=len(record.value) if record.value is not None else None))
    return sorted(found, key=lambda letter: (letter.input_time, letter.stage, letter.source))

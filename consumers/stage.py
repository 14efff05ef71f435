"""What a processing stage is: a small class over typed messages, with one uniform signature.

A stage never talks to Kafka or touches Avro bytes: the runner decodes each input into a
:class:`Message`, calls :meth:`Stage.process` with the partition's :class:`State`, and produces the
returned :class:`Output` records, state changes and input offsets in one Kafka transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from consumers.state import State
from schemas.models import AvroModel


@dataclass(frozen=True)
class Message:
    """One decoded input record and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    timestamp_ms: int


@dataclass(frozen=True)
class Output:
    """A record to produce: ``topic`` is the logical name (the runner adds the prefix)."""

    topic: str
    key: bytes
    value: AvroModel | bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Stage(ABC):
    """Subclasses set ``name``, ``input_pattern`` (a regex over logical topic names) and ``outputs``."""

    name: str
    input_pattern: str
    outputs: tuple[str, ...]
    #: How long (in event time) state entries live; bounds memory and makes replays deterministic.
    retention: timedelta = timedelta(days=30)
    #: How far behind the stream time an input may still arrive (derived topics interleave upstream
    #: partitions, so their event time is only roughly ordered); expiry waits this long.
    grace: timedelta = timedelta(days=7)

    @abstractmethod
    def process(self, message: Message, state: State) -> list[Output]:
        """Turn one input into outputs, reading and writing the partition's state."""

    @abstractmethod
    def event_time(self, message: Message) -> float:
        """Epoch seconds of the message's event time: it drives expiry and timers, never the wall clock."""

"""What a processing stage is: a small class over typed messages, with one uniform signature.

A stage never talks to Kafka or touches Avro bytes: the runner decodes each input into a
:class:`Message`, calls :meth:`Stage.process` with the partition's :class:`State`, and produces the
returned :class:`Output` records, state changes and input offsets in one Kafka transaction.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Self

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.error_policy import ErrorPolicy
from consumers.state import State
from hub.exceptions import ConfigError
from schemas.codec import problems_of
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
    #: The bytes as read: only the audit sealer needs them (it chains exactly what was written).
    raw: bytes = b""


@dataclass(frozen=True)
class Output:
    """A record to produce: ``topic`` is the logical name (the runner adds the prefix)."""

    topic: str
    key: bytes
    value: AvroModel | bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    #: An explicit partition (else the key decides): a stage that must be the only writer of a partition,
    #: such as the audit chain's sealer, writes to the partition number of its input.
    partition: int | None = None
    #: What an operator counts this output as (``escalated-urgent``): the runner counts committed outputs by it in
    #: ``hub_outputs_total``, so a stage reports what it did without touching metrics (a retried batch counts once).
    counted_as: str = ""
    #: Written without sealing, though it carries report data: a delivery to a party entitled to read it (an alert to
    #: an agency that is a party to it), in the clear over TLS as feed items are; a purge tombstones it.
    in_clear: bool = False


class StageConfig(BaseSettings):
    """A stage's thresholds: defaults fit the sample traffic; a deployment overrides them with
    ``HUB_<STAGE>_<FIELD>`` environment variables (each subclass sets its ``env_prefix``)."""

    model_config = SettingsConfigDict(frozen=True)

    @classmethod
    def from_env(cls) -> Self:
        try:
            return cls()
        except ValidationError as exc:
            prefix = str(cls.model_config.get("env_prefix", ""))
            problems = "; ".join(f"{prefix}{field.upper()}: {reason}" for field, reason in problems_of(exc))
            raise ConfigError(f"invalid {cls.__name__}: {problems}") from None


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
    #: Logical topics every instance reads in full (all partitions, outside the consumer group), such as the
    #: task-force registry: the runner hands them to :meth:`on_global` before processing and between polls.
    global_inputs: tuple[str, ...] = ()
    #: The record types the stage's inputs carry: anything else (another hub type, a null value) is dead-lettered
    #: by the runner before :meth:`process` sees it.
    input_types: tuple[type[AvroModel], ...] = ()
    #: Which failures dead-letter the input and which stop the stage.
    error_policy: ErrorPolicy = ErrorPolicy()
    #: The timestamp of each output: ``carried`` from its input (Kafka Streams' way: a replay of the outputs' inputs
    #: stamps them the same), or ``received``, the hub's clock when the stage took the input in, later than every
    #: output of the stage's earlier transactions. Intake, whose outputs a replay starts from, uses ``received``: its
    #: inputs' timestamps (the brokers' append times) can be older than records already visible (a lagging follower
    #: holds an acks=all append back for up to 30 s), so only its own clock stamps its outputs in the order the hub
    #: took them in, which every later stage, live or replayed, then follows.
    output_timestamps: Literal["carried", "received"] = "carried"
    #: Keeps no state: it can run inside another stage's transactions (:class:`Fused`) rather than as a hop of its own.
    stateless: bool = False

    def on_global(self, message: Message) -> None:
        """Take in one record of a global input (configuration every instance must share)."""

    def waiting_for(self) -> str | None:
        """What the stage still lacks before it can process anything (None: ready); the runner waits."""
        return None

    @abstractmethod
    def process(self, message: Message, state: State) -> list[Output]:
        """Turn one input into outputs, reading and writing the partition's state."""

    @abstractmethod
    def event_time(self, message: Message) -> float:
        """Epoch seconds of the message's event time: it drives expiry and timers, never the wall clock."""


class Fused(Stage):
    """``first``, each of whose outputs that the stateless ``then`` reads goes straight to ``then``, in the same
    transaction (as Kafka Streams runs stateless operators in their upstream's task). A hop of its own bought
    ``then`` nothing but a read, a decode, a transaction and a process per record, and a commit's latency.

    The outputs ``then`` reads are still written: other stages read them too."""

    def __init__(self, first: Stage, then: Stage) -> None:
        if not then.stateless:
            raise ConfigError(f"the {then.name} stage keeps state, so it cannot run inside the {first.name} stage",
                              hint="Fuse only stages whose `stateless` is true; run the others with `hub run`.")
        self.first, self.then = first, then
        self.name = first.name
        self.input_pattern = first.input_pattern
        self.outputs = tuple(dict.fromkeys((*first.outputs, *then.outputs)))
        self.global_inputs = tuple(dict.fromkeys((*first.global_inputs, *then.global_inputs)))
        self.input_types = first.input_types
        self.retention, self.grace = first.retention, first.grace
        self.error_policy, self.output_timestamps = first.error_policy, first.output_timestamps
        self._then_reads = re.compile(then.input_pattern)

    def on_global(self, message: Message) -> None:
        for stage in (self.first, self.then):
            if any(message.topic == name or message.topic.endswith(f".{name}") for name in stage.global_inputs):
                stage.on_global(message)

    def waiting_for(self) -> str | None:
        return self.first.waiting_for() or self.then.waiting_for()

    def process(self, message: Message, state: State) -> list[Output]:
        outputs = self.first.process(message, state)
        return outputs + [then_output for output in outputs if self._then_reads.fullmatch(output.topic)
                          for then_output in self.then.process(Message(
                              output.topic, message.partition, message.offset, output.key, output.value,
                              message.timestamp_ms), state)]

    def event_time(self, message: Message) -> float:
        return self.first.event_time(message)

"""The ``Publisher`` SDK: how an agency's system puts events on the hub without ever losing one.

Every event is validated, encoded by the contract's codec, and written to the agency's durable spool
*before* it is sent ("accepted"). It leaves the spool only when the broker has acknowledged it
(idempotent producer, ``acks=all``). When the broker is unreachable the publisher goes offline and keeps
spooling; ``drain()`` later finds which in-flight records did reach the broker (by their ``event_id``
header, scanning only above the spool's per-partition floors) and sends exactly the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from hub.exceptions import KafkaUnavailableError
from hub.kafka import make_consumer, make_producer, read_range
from hub.logging import get_logger
from hub.settings import HubSettings, get_settings
from producers.exceptions import AgencyMismatchError, TopicMissingError
from producers.spool import Spool, SpooledRecord
from schemas.codec import Codec
from schemas.limits import check_times
from schemas.models import CaseEvent
from schemas.topics import INGEST, ingest_key

EVENT_ID_HEADER = "event_id"
log = get_logger(component="publisher")


@dataclass
class PublishReport:
    published: int = 0  # confirmed by the broker in this session
    recovered: int = 0  # found already on the broker while draining (not sent twice)
    spooled: int = 0  # accepted, still waiting in the spool
    offline_reason: str | None = None
    seconds: float = 0.0
    partitions: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0


class Publisher:
    """Publish one agency's events to its ingest topic.

    ``with Publisher("CACBP0100") as pub: pub.publish(event)``; ``pub.flush()`` returns a report once every
    accepted event is confirmed or spooled.
    """

    def __init__(self, agency_ori: str, settings: HubSettings | None = None, *, batch_size: int = 2000,
                 delivery_timeout_s: float = 30.0, codec: Codec | None = None) -> None:
        self.agency_ori = agency_ori
        self.settings = settings or get_settings()
        self.topic = INGEST.name(self.settings.topic_prefix, ori=agency_ori)
        self.batch_size = batch_size
        self.delivery_timeout_s = delivery_timeout_s
        self.codec = codec or Codec()  # in the clear: agencies hold no hub key; intake seals what it accepts
        self.spool = Spool(self.settings.runtime_dir / "spool", agency_ori)
        self.report = PublishReport()
        self._buffer: list[tuple[str, bytes, bytes, str]] = []
        self._producer: KafkaProducer | None = None
        self._started = time.monotonic()
        self._connect()

    # -- connection ------------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self._producer is not None

    def _connect(self) -> None:
        timeout_ms = int(self.delivery_timeout_s * 1000)
        try:
            partitions = self._end_offsets()
            self._producer = make_producer(
                self.settings, acks="all", enable_idempotence=True, linger_ms=20, batch_size=256 * 1024,
                request_timeout_ms=min(timeout_ms, 10_000), delivery_timeout_ms=timeout_ms + 1000,
                max_block_ms=timeout_ms, client_id=f"publisher-{self.agency_ori}-{self.spool.instance_id}",
            )
        except KafkaUnavailableError as exc:
            self._go_offline(exc.message)
            return
        self.spool.set_floors({(self.topic, p): offset for p, offset in partitions.items()})

    def _consumer(self) -> KafkaConsumer:
        return make_consumer(settings=self.settings, group_id=None, enable_auto_commit=False,
                             client_id=f"publisher-{self.agency_ori}-probe")

    def _end_offsets(self) -> dict[int, int]:
        """End offset of every partition of the topic (raises TopicMissingError if there is no topic)."""
        consumer = self._consumer()
        try:
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise TopicMissingError(f"topic {self.topic} does not exist for agency {self.agency_ori}")
            ends = consumer.end_offsets([TopicPartition(self.topic, p) for p in partitions])
            return {tp.partition: offset for tp, offset in ends.items()}
        except KafkaTimeoutError as exc:  # a partition without a leader, or brokers that stopped answering
            raise KafkaUnavailableError(f"the brokers did not say where {self.topic} ends: {exc}") from exc
        finally:
            consumer.close()

    def _go_offline(self, reason: str) -> None:
        self._close_producer(timeout_s=0)
        self.report.offline_reason = reason
        log.warning("broker unreachable; spooling", agency=self.agency_ori, reason=reason)

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, event: CaseEvent) -> None:
        """Accept one event; refused (nothing spooled) as :meth:`prepare` says."""
        self._buffer.append((self.topic, ingest_key(event), self.prepare(event), event.event_id))
        if len(self._buffer) >= self.batch_size:
            self._accept_buffer()

    def prepare(self, event: CaseEvent) -> bytes:
        """The event's message, after the checks publishing makes: AgencyMismatchError for another agency's record,
        RecordOutOfBoundsError for one dated too far from now or too large. A caller may check a batch with it
        before publishing any."""
        if event.agency_ori != self.agency_ori:
            raise AgencyMismatchError(
                f"event {event.event_id} is from {event.agency_ori}, but this publisher is {self.agency_ori}")
        check_times(event, datetime.now(UTC))
        return self.codec.encode(event)

    def flush(self) -> PublishReport:
        """Spool what is buffered, send everything pending, and report."""
        self._accept_buffer()
        return self._finish_report()

    def _accept_buffer(self) -> None:
        if self._buffer:
            self.spool.add(self._buffer)
            self._buffer = []
        if self.online:
            self._send_pending()

    def _send_pending(self) -> None:
        while self.online and (records := self.spool.pending(self.batch_size)):
            self._send(records)

    def _send(self, records: list[SpooledRecord]) -> None:
        assert self._producer is not None
        self.spool.mark_in_flight([r.seq for r in records])
        futures: list[tuple[SpooledRecord, Any]] = []
        error: str | None = None
        try:
            for r in records:
                headers = [(EVENT_ID_HEADER, r.event_id.encode())]
                futures.append((r, self._producer.send(r.topic, key=r.key, value=r.value, headers=headers)))
            self._producer.flush(timeout=self.delivery_timeout_s + 5)
        except KafkaError as exc:
            error = f"{type(exc).__name__}: {exc}"
        delivered, floors = [], {}
        for record, future in futures:
            if future.is_done and future.succeeded():
                meta = future.value
                delivered.append(record.seq)
                floors[(meta.topic, meta.partition)] = max(floors.get((meta.topic, meta.partition), 0), meta.offset + 1)
                self.report.partitions[meta.partition] = self.report.partitions.get(meta.partition, 0) + 1
            elif error is None:
                error = f"{type(future.exception).__name__}: {future.exception}" if future.is_done else "delivery timed out"
        self.spool.confirm(delivered, floors)
        self.report.published += len(delivered)
        if error is not None:
            self._go_offline(error)

    # -- recovery --------------------------------------------------------------------------------
    def drain(self) -> PublishReport:
        """Send what the spool holds, exactly once: in-flight records already on the broker are not resent."""
        if not self.online:
            self._connect()
        if not self.online:
            raise KafkaUnavailableError(
                f"the broker is still unreachable ({self.report.offline_reason}); "
                f"{self.spool.count()} record(s) stay in {self.spool.path}")
        uncertain = self.spool.in_flight()
        if uncertain:
            on_broker = self._event_ids_above_floors()
            found = [r.seq for r in uncertain if r.event_id in on_broker]
            self.spool.confirm(found, {})
            self.spool.requeue([r.seq for r in uncertain if r.event_id not in on_broker])
            self.report.recovered += len(found)
            log.info("drain checked in-flight records", found_on_broker=len(found), resending=len(uncertain) - len(found))
            self.spool.set_floors({(self.topic, p): o for p, o in self._end_offsets().items()})
        self._send_pending()
        return self._finish_report()

    def _event_ids_above_floors(self) -> set[str]:
        """Event ids on the topic at or above each partition's floor (where uncertain records could be)."""
        floors = self.spool.floors(self.topic)
        ends = self._end_offsets()
        consumer = self._consumer()
        try:
            records = read_range(consumer, {TopicPartition(self.topic, p): floors.get(p, 0) for p in ends},
                                 {TopicPartition(self.topic, p): end for p, end in ends.items()},
                                 timeout_s=self.delivery_timeout_s * 4)
        finally:
            consumer.close()
        return {v.decode() for r in records for k, v in r.headers if k == EVENT_ID_HEADER}

    # -- lifecycle -------------------------------------------------------------------------------
    def _finish_report(self) -> PublishReport:
        self.report.spooled = self.spool.count()
        self.report.seconds = time.monotonic() - self._started
        return self.report

    def _close_producer(self, timeout_s: float) -> None:
        """A broker that died meanwhile cannot make closing fail: whatever was not confirmed is still in the
        spool for ``--drain``."""
        if self._producer is None:
            return
        try:
            self._producer.close(timeout=timeout_s)
        except KafkaTimeoutError:
            log.warning("producer closed with unconfirmed sends; they stay in the spool",
                        agency=self.agency_ori, spooled=self.spool.count())
        self._producer = None

    def close(self) -> None:
        self._close_producer(self.delivery_timeout_s)
        self.spool.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

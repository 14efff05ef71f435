"""Benchmarks that print figures, each next to a raw kafka-python baseline measured in the same run."""

from __future__ import annotations

import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from kafka.admin import NewTopic

from hub.kafka import make_admin, make_producer
from hub.settings import HubSettings, get_settings
from hub.topics import ensure_topics
from producers.publisher import Publisher
from producers.sample import generate
from schemas.codec import Codec, parse_event
from schemas.topics import INGEST


@dataclass(frozen=True)
class BenchResult:
    name: str
    events: int
    seconds: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(name: str, events: int, work: Callable[[], object]) -> BenchResult:
    started = time.perf_counter()
    work()
    return BenchResult(name, events, time.perf_counter() - started, _peak_rss_mb())


def bench_publish(count: int, settings: HubSettings | None = None) -> list[BenchResult]:
    """validate, encode, raw kafka-python produce of the same bytes, and the full Publisher path."""
    settings = settings or get_settings()
    sample = generate(count, seed=11)
    # One agency publishes them all (a Publisher is per agency), so every generated event is measured.
    publisher_agency = sample.events[0].source_agency
    agency = publisher_agency.ori
    events = [e.model_copy(update={"source_agency": publisher_agency}) for e in sample.events]
    dicts = [e.model_dump(mode="json") for e in events]
    codec = Codec()
    encoded: list[bytes] = []
    run = uuid.uuid4().hex[:8]
    bench_settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}bench.{run}.",
                                                 "runtime_dir": settings.runtime_dir / "bench" / run})
    raw_topic = bench_settings.topic("raw")
    ingest_topic = INGEST.name(bench_settings.topic_prefix, ori=agency)
    admin = make_admin(settings)
    admin.create_topics([NewTopic(raw_topic, INGEST.partitions, 1)])
    ensure_topics([(ingest_topic, INGEST)], bench_settings)

    def raw_produce() -> None:
        producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024)
        for value in encoded:
            producer.send(raw_topic, value=value)
        producer.flush()
        producer.close()

    def publish() -> None:
        with Publisher(agency, bench_settings) as publisher:
            for event in events:
                publisher.publish(event)
            report = publisher.flush()
        assert report.published == len(events), report

    try:
        return [
            _timed("validate (pydantic, from JSON dicts)", len(dicts), lambda: [parse_event(d) for d in dicts]),
            _timed("encode (Avro single-object)", len(events), lambda: encoded.extend(codec.encode(e) for e in events)),
            _timed("baseline: raw kafka-python produce, acks=all", len(encoded), raw_produce),
            _timed("hub Publisher: encode+spool+produce+confirm", len(events), publish),
        ]
    finally:
        admin.delete_topics([raw_topic, ingest_topic])
        admin.close()

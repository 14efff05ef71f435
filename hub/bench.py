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


@dataclass(frozen=True)
class PipelineResult:
    name: str
    events: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def bench_pipeline(count: int, paced: int = 2000, rate: float = 400.0,
                   settings: HubSettings | None = None) -> list[PipelineResult]:
    """Dedup end to end against a raw consume-produce passthrough on the same broker and input.

    Throughput: each drains a backlog of ``count`` published events. Latency: ``paced`` more events
    published at ``rate``/s; latency is from the input's create time to the output being readable
    (read_committed), so it includes the stage's commit interval.
    """
    import threading

    from consumers.runner import StageRunner
    from consumers.stages import STAGES
    from consumers.stages.dedup import DedupStage
    from hub.kafka import make_consumer
    from hub.topics import hub_topics
    from schemas.topics import CANONICAL

    settings = settings or get_settings()
    run = uuid.uuid4().hex[:8]
    bench = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}bench.{run}.",
                                        "runtime_dir": settings.runtime_dir / "bench" / run})
    sample = generate(count + paced, seed=13)
    backlog, live = sample.events[:count], sample.events[count:]
    agencies = sorted({e.agency_ori for e in sample.events})
    passthrough_topic = bench.topic("passthrough")
    ensure_topics(hub_topics(bench.topic_prefix, agencies, sorted(STAGES)), bench)
    admin = make_admin(bench)
    admin.create_topics([NewTopic(passthrough_topic, INGEST.partitions, 1)])
    admin.close()
    pattern = "^" + bench.topic_prefix.replace(".", r"\.") + r"ingest\..+"

    def publish(events: list, pace: float | None = None) -> dict[str, float]:
        sent: dict[str, float] = {}
        publishers = {}
        for event in events:
            publisher = publishers.get(event.agency_ori) or publishers.setdefault(
                event.agency_ori, Publisher(event.agency_ori, bench, batch_size=1 if pace else 2000))
            sent[event.event_id] = time.time()
            publisher.publish(event)
            if pace:
                time.sleep(1 / pace)
        for publisher in publishers.values():
            publisher.flush()
            publisher.close()
        return sent

    def passthrough(until_count: int, stop: threading.Event, ready: threading.Event) -> int:
        consumer = make_consumer(settings=bench, group_id=f"{bench.topic_prefix}passthrough")
        consumer.subscribe(pattern=pattern)
        producer = make_producer(bench, linger_ms=5, batch_size=256 * 1024)
        moved = 0
        while moved < until_count and not stop.is_set():
            polled = consumer.poll(timeout_ms=200)
            if consumer.assignment():
                ready.set()
            for records in polled.values():
                for r in records:
                    producer.send(passthrough_topic, key=r.key, value=r.value, headers=r.headers)
                    moved += 1
            producer.flush()
            consumer.commit()
        producer.close()
        consumer.close()
        return moved

    def dedup(until_count: int, stop: threading.Event, ready: threading.Event) -> int:
        runner = StageRunner(DedupStage(), bench, commit_interval_s=0.1)
        processed = 0

        def done(handled: int) -> bool:
            nonlocal processed
            processed += handled
            if runner.ready:
                ready.set()
            return processed >= until_count or stop.is_set()

        runner.run(until=done)
        return processed

    def arrivals(topic: str, stop: threading.Event, seen: dict[str, float], key_of) -> None:
        consumer = make_consumer(topic, settings=bench, group_id=None, auto_offset_reset="latest")
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                now = time.time()
                for r in records:
                    seen.setdefault(key_of(r), now)
        consumer.close()

    codec = Codec()
    publish(backlog)
    results = []
    stages = (("baseline: raw kafka-python consume-produce passthrough", passthrough, passthrough_topic,
               lambda r: codec.decode(r.value).event_id),
              ("hub dedup stage (transactions, state, changelog)", dedup, CANONICAL.name(bench.topic_prefix),
               lambda r: codec.decode(r.value).decision.event_id))
    for name, stage, output_topic, key_of in stages:
        stop, ready = threading.Event(), threading.Event()
        started = time.perf_counter()
        moved = stage(count, stop, ready)
        seconds = time.perf_counter() - started
        seen: dict[str, float] = {}
        stop, ready = threading.Event(), threading.Event()
        watcher = threading.Thread(target=arrivals, args=(output_topic, stop, seen, key_of), daemon=True)
        worker = threading.Thread(target=stage, args=(paced, stop, ready), daemon=True)
        watcher.start()
        worker.start()
        ready.wait(timeout=60)  # measure steady state, not the consumer group's join and state restore
        time.sleep(1)
        sent = publish(live, pace=rate)
        deadline = time.monotonic() + 60
        while len(seen) < len(sent) * 0.95 and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        worker.join(timeout=30)
        watcher.join(timeout=10)
        latencies = [(seen[i] - t) * 1000 for i, t in sent.items() if i in seen]
        results.append(PipelineResult(name, moved, seconds, _percentile(latencies, 0.5), _percentile(latencies, 0.99)))
        live = generate(paced, seed=len(results) + 100).events  # fresh event ids for the next stage's paced run
    return results

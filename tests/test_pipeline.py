"""The processing core on the real broker: exactly once through SIGKILL, dead letters, restore."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from kafka import TopicPartition

from hub.kafka import make_consumer, make_producer
from hub.topics import ensure_topics, hub_topics
from producers.publisher import Publisher
from producers.sample import generate
from schemas.codec import Codec
from schemas.topics import CANONICAL, INGEST, deadletter_topic
from tests.conftest import hub_env, topic_records
from tests.factories import make_event
from tests.test_dedup import PartitionedRun, final_groups
from consumers.stages.dedup import DedupStage

HUB = [sys.executable, "-m", "hub"]


def _setup(settings, agencies):
    ensure_topics(hub_topics(settings.topic_prefix, sorted(agencies), ["dedup"]), settings)


def _publish(settings, events):
    by_agency: dict[str, list] = {}
    for event in events:
        by_agency.setdefault(event.agency_ori, []).append(event)
    for ori, batch in by_agency.items():
        with Publisher(ori, settings) as publisher:
            for event in batch:
                publisher.publish(event)
            assert publisher.flush().published == len(batch)


def _start_dedup(settings):
    return subprocess.Popen([*HUB, "run", "dedup", "--commit-interval", "0.3"], env=hub_env(settings),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _lag(settings, agencies) -> int:
    """Messages in the ingest topics that the dedup group has not committed yet."""
    consumer = make_consumer(settings=settings, group_id=f"{settings.topic_prefix}hub.dedup")  # never subscribes
    try:
        partitions = [TopicPartition(INGEST.name(settings.topic_prefix, ori=ori), p)
                      for ori in agencies for p in range(INGEST.partitions)]
        ends = consumer.end_offsets(partitions)
        return sum(end - (consumer.committed(tp) or 0) for tp, end in ends.items())
    finally:
        consumer.close()


def _canonical_outputs(settings) -> list:
    codec = Codec()
    return [codec.decode(r.value) for r in topic_records(settings, CANONICAL.name(settings.topic_prefix))]


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.slow
def test_dedup_killed_mid_stream_emits_every_canonical_event_exactly_once(hub_settings):
    sample = generate(50_000, seed=21)
    agencies = {e.agency_ori for e in sample.events}
    _setup(hub_settings, agencies)
    _publish(hub_settings, sample.events)
    expected = PartitionedRun(DedupStage())
    for event in sorted(sample.events, key=lambda e: e.report_time):
        expected.feed(event)
    expected_outputs = len(expected.outputs)

    first = _start_dedup(hub_settings)
    canonical_topic = CANONICAL.name(hub_settings.topic_prefix)
    consumer = make_consumer(settings=hub_settings, group_id=None, isolation_level="read_uncommitted")
    partitions = [TopicPartition(canonical_topic, p) for p in range(CANONICAL.partitions)]
    _wait(lambda: sum(consumer.end_offsets(partitions).values()) > expected_outputs // 3, 300,
          "a third of the output")
    consumer.close()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert _lag(hub_settings, agencies) > 0, "the kill must land mid-stream"

    second = _start_dedup(hub_settings)
    _wait(lambda: _lag(hub_settings, agencies) == 0, 600, "the restarted stage to catch up")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0, second.stderr.read()

    produced = _canonical_outputs(hub_settings)
    revisions = Counter((c.canonical_id, c.revision) for c in produced)
    doubled = [k for k, n in revisions.items() if n > 1]
    assert doubled == [], f"{len(doubled)} canonical revisions appear more than once"
    highest = Counter()
    for canonical_id, revision in revisions:
        highest[canonical_id] = max(highest[canonical_id], revision)
    assert sum(highest.values()) == len(revisions), "each canonical event has revisions 1..n, none missing"
    assert len(produced) == expected_outputs
    assert final_groups(produced) == final_groups(expected.outputs), "the same reports end up together"


def test_poison_messages_go_to_the_dead_letter_topic_and_processing_continues(hub_settings):
    _setup(hub_settings, ["CACBP0100"])
    ingest = INGEST.name(hub_settings.topic_prefix, ori="CACBP0100")
    producer = make_producer(hub_settings)
    poison = [b"not avro at all", b"\xc3\x01" + b"\x00" * 8 + b"garbage"]
    for value in poison:
        producer.send(ingest, key=b"county:06073", value=value)
    producer.flush()
    producer.close()
    good = make_event()
    _publish(hub_settings, [good])
    stage = _start_dedup(hub_settings)
    try:
        _wait(lambda: _lag(hub_settings, ["CACBP0100"]) == 0, 120, "the stage to consume everything")
    finally:
        stage.send_signal(signal.SIGTERM)
        stage.wait(timeout=60)
    dead = topic_records(hub_settings, hub_settings.topic(deadletter_topic("dedup")))
    assert sorted(r.value for r in dead) == sorted(poison)
    headers = dict(dead[0].headers)
    assert headers["dlq.source_topic"].decode() == ingest and headers["dlq.reason"]
    assert {"dlq.source_partition", "dlq.source_offset", "dlq.stage"} <= set(headers)
    [canonical] = [Codec().decode(r.value) for r in topic_records(hub_settings, CANONICAL.name(hub_settings.topic_prefix))]
    assert canonical.primary.event_id == good.event_id

"""The fault suite (issue 12): a three-node cluster, every agency publishing at once from its own host (its own
spool), every stage in a process of its own, and the faults a real cluster has, one after another while traffic
flows: a node SIGKILLed, a node paused (SIGSTOP), every broker down, every stage process SIGKILLed.

Afterwards: the highest version of every accepted record reached events.canonical (0 lost), no canonical revision
or feed item was written twice (0 duplicated), every stage caught up by itself within ``RECOVERY_S`` of the last
fault (no stage exited; the only restarts are the test's own, after SIGKILLing them), and a replay of the history
reproduces every dissemination decision (0 differences), which needs live processing to have seen the log's order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError

from consumers.registry import load_registry
from consumers.replay import Replay
from consumers.runner import stage_lag
from consumers.stages import STAGES
from hub.broker import LocalBroker
from hub.control import apply_registry
from hub.exceptions import KafkaUnavailableError
from hub.kafka import make_admin, make_consumer, make_producer
from hub.settings import HubSettings
from hub.topics import ensure_topics, hub_topics
from hub.vault import hub_codec
from producers.directory import load_agencies
from producers.publisher import Publisher
from producers.sample import generate
from schemas.topics import CANONICAL, FEED, deadletter_topic
from tests.conftest import hub_env, running_local_broker, topic_records

pytestmark = pytest.mark.slow

UNITS = sorted(u.unit_id for u in load_registry().task_forces)
#: Every stage caught up within this long after the last fault ended.
RECOVERY_S = 240.0
NODE_DOWN_S = 10.0
PAUSE_S = 60.0
OUTAGE_S = 15.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalBroker]:
    with running_local_broker("fault-cluster", runtime_dir=tmp_path_factory.mktemp("faults"), nodes=3,
                              heap="384m") as broker:
        yield broker


class Stages:
    """Each stage in a process of its own, as on separate hosts; logs kept for the assertions."""

    def __init__(self, settings: HubSettings, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("a")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "hub", "run", name, "--commit-interval", "0.3"], env=hub_env(self.settings),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill_all(self) -> None:
        for name, process in self.processes.items():
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        for name in list(self.processes):
            self.start(name)

    def exited(self) -> dict[str, int]:
        return {name: code for name, p in self.processes.items() if (code := p.poll()) is not None}

    def said(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.logs.glob("*.log")))

    def stop(self) -> dict[str, int]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return {name: process.wait(timeout=60) for name, process in self.processes.items()}


def _publish_until_done(settings: HubSettings, ori: str, events: list, faults_over: threading.Event,
                        accepted: Counter, errors: list[str]) -> None:
    """One agency's system: publish in small batches while the faults happen, spooling while the brokers are away,
    then drain the spool."""
    try:
        with Publisher(ori, settings) as publisher:
            for start in range(0, len(events), 2):  # about 25 batches per agency, spread over the faults
                for event in events[start:start + 2]:
                    publisher.publish(event)
                    accepted[event.event_id] += 1
                publisher.flush()
                if not publisher.online:
                    try:
                        publisher.drain()
                    except KafkaUnavailableError:
                        pass  # still away: the spool keeps them
                if not faults_over.is_set():
                    time.sleep(4)
            deadline = time.monotonic() + RECOVERY_S
            while (report := publisher.flush()).spooled and time.monotonic() < deadline:
                try:
                    report = publisher.drain()
                except KafkaUnavailableError:
                    time.sleep(2)
            if report.spooled:
                errors.append(f"{ori}: {report.spooled} reports still spooled")
    except Exception as exc:  # noqa: BLE001 - the main thread asserts on it
        errors.append(f"{ori}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-6)}")


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"waited {timeout_s:.0f} s for {what}"
        time.sleep(3)
    return time.monotonic() - started


def _caught_up(settings: HubSettings) -> bool:
    try:
        return all(sum(stage_lag(STAGES[name](), settings).values()) == 0 for name in STAGES)
    except Exception:  # noqa: BLE001 - a broker still coming back: not caught up yet
        return False


def test_offset_lookups_wait_for_a_partition_whose_leader_died(cluster):
    """kafka-python leaves a leaderless partition out of its offset lookups (a bare KeyError, or None for "no such
    record"); the hub's consumers wait for a leader and otherwise time out, like the Java client."""
    settings = HubSettings(bootstrap_servers=cluster.bootstrap_servers or "")
    topic = "faults.leaderless"
    admin = make_admin(settings)
    try:  # one replica per partition, partition 1 on node 2 alone: killing node 2 leaves it without a leader
        admin.create_topics([NewTopic(topic, replica_assignments={0: [1], 1: [2]})])
    finally:
        admin.close()
    producer = make_producer(settings)
    for partition in (0, 1):
        producer.send(topic, value=b"x", partition=partition)
    producer.flush()
    producer.close()
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    plain = KafkaConsumer(bootstrap_servers=cluster.bootstrap_servers, request_timeout_ms=5000)
    hub_consumer = make_consumer(settings=settings, group_id=None)
    node_back = threading.Timer(3, cluster.restart_nodes, args=([2],))
    cluster.kill_node(2)
    try:
        def plain_lookup_fails() -> bool:
            try:
                plain.end_offsets(partitions, timeout_ms=2000)
            except KeyError:
                return True
            except KafkaTimeoutError:
                pass  # the brokers have not yet noticed that node 2 is gone
            return False

        _wait(plain_lookup_fails, 60, "kafka-python's lookup to meet the leaderless partition")
        assert plain.offsets_for_times({tp: 0 for tp in partitions}, timeout_ms=2000)[partitions[1]] is None
        for lookup in (hub_consumer.end_offsets, hub_consumer.beginning_offsets,
                       lambda tps, timeout_ms: hub_consumer.offsets_for_times({tp: 0 for tp in tps}, timeout_ms)):
            with pytest.raises(KafkaTimeoutError, match=r"no leader for .*partition=1"):
                lookup(partitions, timeout_ms=2000)
        node_back.start()
        assert hub_consumer.end_offsets(partitions, timeout_ms=120_000) == {partitions[0]: 1, partitions[1]: 1}
    finally:
        plain.close()
        hub_consumer.close()
        if node_back.is_alive():
            node_back.join()
        cluster.restart_nodes([2])


def test_the_pipeline_rides_out_node_loss_a_pause_an_outage_and_stage_kills(cluster, tmp_path):
    settings = HubSettings(bootstrap_servers=cluster.bootstrap_servers or "", topic_prefix="faults.",
                           runtime_dir=tmp_path / "hub", log_format="json")
    ensure_topics(hub_topics(settings.topic_prefix, sorted(load_agencies()), sorted(STAGES), UNITS), settings)
    apply_registry(settings=settings, applied_by="test")
    (tmp_path / "logs").mkdir()
    stages = Stages(settings, tmp_path / "logs")
    for name in STAGES:
        stages.start(name)
    sample = generate(800, seed=41)
    by_agency: dict[str, list] = {}
    for event in sorted(sample.events, key=lambda e: e.report_time):
        by_agency.setdefault(event.agency_ori, []).append(event)
    faults_over = threading.Event()
    accepted: Counter = Counter()
    errors: list[str] = []
    try:
        _wait(lambda: stages.said().count("partition assigned") >= len(STAGES), 180, "every stage's partitions")
        publishers = [threading.Thread(target=_publish_until_done, name=f"publisher-{ori}",
                                       args=(settings.model_copy(update={"runtime_dir": tmp_path / ori}), ori, events,
                                             faults_over, accepted, errors))
                      for ori, events in by_agency.items()]
        for publisher in publishers:
            publisher.start()
        timeline = []

        def fault(what: str, action: Callable[[], None], lasts_s: float, recover: Callable[[], None]) -> None:
            time.sleep(5)  # traffic flows between faults
            action()
            time.sleep(lasts_s)
            recover()
            timeline.append(what)

        fault("node 2 SIGKILLed", lambda: cluster.kill_node(2), NODE_DOWN_S, lambda: cluster.restart_nodes([2]))
        paused = next(n.pid for n in cluster.status() if n.node_id == 3)
        fault("node 3 paused", lambda: os.kill(paused, signal.SIGSTOP), PAUSE_S, lambda: os.kill(paused, signal.SIGCONT))
        fault("every broker down", lambda: [cluster.kill_node(n) for n in (1, 2, 3)], OUTAGE_S,
              lambda: cluster.restart_nodes([1, 2, 3]))
        fault("every stage SIGKILLed", lambda: None, 0, stages.kill_all)
        faults_over.set()
        for publisher in publishers:
            publisher.join(timeout=RECOVERY_S + 60)
        assert errors == [], errors
        assert not stages.exited(), f"stages exited instead of recovering: {stages.exited()}"
        recovered_s = _wait(lambda: _caught_up(settings), RECOVERY_S, "every stage to catch up")
        assert not stages.exited(), f"stages exited instead of recovering: {stages.exited()}"

        codec = hub_codec(settings)
        canonical = [codec.decode(r.value) for r in topic_records(settings, CANONICAL.name(settings.topic_prefix))]
        written = Counter((c.canonical_id, c.revision) for c in canonical)
        credited = {report.event_id for c in canonical for report in c.reports}
        # A re-submission at the same or a lower version changes nothing (no output): what must arrive is the
        # highest version of every record.
        records: dict[tuple, list] = {}
        for event in sample.events:
            records.setdefault((event.agency_ori, event.source_system, event.source_record_id), []).append(event)
        lost = [key for key, versions in records.items()
                if not {e.event_id for e in versions if e.record_version == max(v.record_version for v in versions)}
                & credited]
        assert set(accepted) == {e.event_id for e in sample.events}, "every agency's publisher accepted its reports"
        assert not lost, f"{len(lost)} accepted records never reached events.canonical: {lost[:5]}"
        dead = {name: len(topic_records(settings, settings.topic(deadletter_topic(name)))) for name in STAGES}
        assert not any(dead.values()), f"valid records were dead-lettered during the faults: {dead}"
        assert max(written.values()) == 1, "each canonical revision is written once"
        deliveries = Counter(codec.decode(r.value).item_id for unit in UNITS
                             for r in topic_records(settings, FEED.name(settings.topic_prefix, unit=unit)))
        assert deliveries and max(deliveries.values()) == 1, "each feed item is delivered once"

        replay = Replay(settings, "faults", datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
        replay.run()
        comparison = replay.compare()
        said = stages.said()
        late = said.count("inputs processed out of timestamp order")
        print(f"faults: {', '.join(timeline)}; {len(accepted)} reports from {len(by_agency)} agencies, none lost or "
              f"doubled; caught up {recovered_s:.0f} s after the last fault; {comparison.live_decisions} live "
              f"decisions, {len(comparison.differences)} replay differences; {late} late-input reports")
        assert comparison.live_decisions > 0
        assert comparison.differences == [], [d.describe() for d in comparison.differences[:10]]
    finally:
        faults_over.set()
        stopped = stages.stop()
    assert "stage making no progress" in said or "processing again from the last commit" in said, \
        "the faults show in the stages' logs"
    assert set(stopped.values()) <= {0}, f"SIGTERM stops each stage cleanly: {stopped}"

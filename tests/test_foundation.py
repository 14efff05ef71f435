"""The foundation: settings, the local broker's lifecycle, and a round trip through the real broker."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic

from hub.broker import LocalBroker, free_port_block
from hub.exceptions import BrokerStartError, KafkaUnavailableError, PortInUseError
from hub.kafka import make_admin, make_consumer, make_producer
from hub.settings import HubSettings
from tests.conftest import unique

HUB = [sys.executable, "-m", "hub"]


# -- settings (no broker) ------------------------------------------------------------------------
def test_settings_read_hub_prefixed_environment(monkeypatch):
    monkeypatch.setenv("HUB_BOOTSTRAP_SERVERS", "a:1, b:2")
    monkeypatch.setenv("HUB_TOPIC_PREFIX", "x.")
    settings = HubSettings()
    assert settings.bootstrap_list == ["a:1", "b:2"]
    assert settings.topic("ingest") == "x.ingest"


@pytest.mark.parametrize("value", ["", "localhost", "host:port", "a:1,b"])
def test_settings_reject_malformed_bootstrap(value):
    with pytest.raises(ValueError, match="host:port"):
        HubSettings(bootstrap_servers=value)


def test_settings_reject_unknown_security_protocol():
    with pytest.raises(ValueError, match="security_protocol"):
        HubSettings(security_protocol="KERBEROS")


def test_unreachable_cluster_is_a_clear_error():
    settings = HubSettings(bootstrap_servers=f"127.0.0.1:{free_port_block()}", connect_timeout_s=1)
    with pytest.raises(KafkaUnavailableError, match="no Kafka broker answered") as info:
        make_producer(settings)
    assert "hub broker start" in str(info.value)


# -- the real broker -----------------------------------------------------------------------------
def _create(settings: HubSettings, name: str, partitions: int = 3) -> str:
    topic = settings.topic(name)
    admin = make_admin(settings)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    return topic


def test_produce_consume_round_trip(hub_settings):
    topic = _create(hub_settings, "roundtrip")
    producer = make_producer(hub_settings)
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(50)}
    for key, value in sent.items():
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    consumer = make_consumer(topic, settings=hub_settings, group_id=unique("g"), consumer_timeout_ms=5000)
    received = {m.key: m.value for m in consumer}
    consumer.close()
    assert received == sent


def test_a_join_that_finishes_between_polls_is_kept(hub_settings):
    """kafka-python 3.0.12 dropped a join that finished after ``poll()`` stopped waiting for it and sent a new
    JoinGroup; a group leader doing that starts a new rebalance, so a leader whose joins outlast its polls
    rebalanced for ever and never took its new assignment (``hub.kafka`` keeps such a join).

    Two members polling in turn already meet it (each one's join finishes while the other polls). Then the leader
    subscribes to a second topic while the other member polls only once a second: the leader's JoinGroup waits at
    the broker until that member rejoins, far longer than the leader's 50 ms polls."""
    first, second = _create(hub_settings, "joined"), _create(hub_settings, "added")
    group = unique("g")
    members = [make_consumer(first, settings=hub_settings, group_id=group) for _ in range(2)]
    deadline = time.monotonic() + 30
    while not all(m.assignment() for m in members) and time.monotonic() < deadline:
        for member in members:
            member.poll(timeout_ms=100)
    assert all(m.assignment() for m in members), ("the two members never shared the first topic: each join that "
                                                  "finished between one's polls was dropped and a new one sent")
    leader, other = members if _leads(members[0]) else members[::-1]
    leader.subscribe([first, second])
    deadline = time.monotonic() + 20
    while not any(tp.topic == second for tp in leader.assignment()) and time.monotonic() < deadline:
        for _ in range(6):
            leader.poll(timeout_ms=50)
            time.sleep(0.1)
        other.poll(timeout_ms=50)
        time.sleep(0.3)  # the leader's join answer arrives now, while nobody waits for it
    taken = sorted(tp.partition for tp in leader.assignment() if tp.topic == second)
    for member in members:
        member.close()
    assert taken == [0, 1, 2], f"the leader never took the second topic's partitions (holds {taken} after 20 s)"


def test_a_partition_paused_and_resumed_is_fetched_again(hub_settings):
    """kafka-python 3.0.12 parks the records of a partition paused while they were being handed out and, once it is
    resumed, gave them back only in a poll that began with nothing in line; meanwhile it never fetched that
    partition again (``hub.kafka`` gives them back). Pausing a partition mid-batch, reading the other one to its
    end, then resuming must bring the rest of the paused one."""
    topic = _create(hub_settings, "paused", partitions=2)
    producer = make_producer(hub_settings)
    for partition in (0, 1):
        for n in range(100):
            producer.send(topic, value=f"{partition}-{n}".encode(), partition=partition)
    producer.flush()
    producer.close()
    consumer = make_consumer(settings=hub_settings, group_id=None)
    partitions = [TopicPartition(topic, p) for p in (0, 1)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    received: dict[int, int] = {0: 0, 1: 0}

    def poll(max_records: int) -> dict:
        batch = consumer.poll(timeout_ms=500, max_records=max_records)
        for tp, records in batch.items():
            received[tp.partition] += len(records)
        return batch

    first = {}
    deadline = time.monotonic() + 30
    while not first and time.monotonic() < deadline:
        first = poll(10)  # a part of one partition's fetched batch: the rest stays in line
    paused = next(iter(first))
    other = next(tp for tp in partitions if tp != paused)
    consumer.pause(paused)
    deadline = time.monotonic() + 30
    while received[other.partition] < 100 and time.monotonic() < deadline:
        poll(1000)
    consumer.resume(paused)
    deadline = time.monotonic() + 15
    while received[paused.partition] < 100 and time.monotonic() < deadline:
        poll(1000)
    consumer.close()
    assert received == {0: 100, 1: 100}, f"partition {paused.partition} was not fetched again after its resume"


def _leads(consumer) -> bool:
    return bool(consumer._coordinator._is_leader)  # kafka-python keeps no public flag for it


def test_kcat_sees_the_broker(kafka, hub_settings):
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (`apt-get install kcat`); .ci/run installs it")
    topic = _create(hub_settings, "kcat")
    listing = subprocess.run(["kcat", "-b", kafka.bootstrap_servers, "-L", "-t", topic],
                             capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0, listing.stderr
    assert f'topic "{topic}" with 3 partitions' in listing.stdout


# -- the local broker's lifecycle ----------------------------------------------------------------
@pytest.fixture
def spare_broker(tmp_path):
    """A second local broker instance of its own, so lifecycle tests never disturb the session broker."""
    broker = LocalBroker(HubSettings(runtime_dir=Path(".hub").resolve()), name=unique("lifecycle"))
    yield broker
    broker.stop(wipe=True)


def _java_pids_for(broker: LocalBroker) -> list[int]:
    out = subprocess.run(["pgrep", "-f", str(broker.dir)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_start_is_idempotent_and_stop_leaves_no_jvm(spare_broker):
    port = free_port_block()
    first = spare_broker.start(port=port)
    pid = spare_broker.status()[0].pid
    second = spare_broker.start(port=port)
    assert first == second
    assert spare_broker.status()[0].pid == pid, "a second start must not launch another JVM"
    assert spare_broker.stop() == 1
    assert _java_pids_for(spare_broker) == []
    assert not spare_broker.running


def test_stale_pid_file_is_ignored(spare_broker):
    port = free_port_block()
    spare_broker.start(port=port)
    spare_broker.kill_node(1)
    pid_file = spare_broker.node_dir(1) / "kafka.pid"
    pid_file.write_text("999999")  # no such process
    assert not spare_broker.running
    assert not pid_file.exists(), "a stale pid file is removed when noticed"
    spare_broker.start(port=port)
    assert spare_broker.running


def test_port_taken_is_reported(spare_broker):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError, match=str(port)):
            spare_broker.start(port=port)


def test_failed_start_shows_the_log_tail(spare_broker):
    with pytest.raises(BrokerStartError, match="--nodes must be 1 or 3"):
        spare_broker.start(nodes=2)
    port = free_port_block()
    # A heap too small for the JVM makes it exit at once: start must say so, with the log, and clean up.
    with pytest.raises(BrokerStartError, match=r"node 1 exited during start-up \(exit code 1\)") as info:
        spare_broker.start(port=port, heap="1k", timeout=60)
    assert "Error occurred during initialization of VM" in str(info.value)
    assert _java_pids_for(spare_broker) == []


def test_corrupt_storage_is_reported(spare_broker):
    port = free_port_block()
    spare_broker.start(port=port)
    spare_broker.stop()
    (spare_broker.node_dir(1) / "data" / "meta.properties").write_text("node.id=7\nversion=1\ncluster.id=x\n")
    with pytest.raises(BrokerStartError, match="formatting KRaft storage of node 1 failed") as info:
        spare_broker.start(port=port)
    assert "Invalid cluster.id" in str(info.value) and "--wipe" in str(info.value)


@pytest.mark.slow
def test_three_node_cluster_survives_losing_a_node(spare_broker):
    layout = spare_broker.start(nodes=3, port=free_port_block())
    settings = HubSettings(bootstrap_servers=layout.bootstrap_servers, runtime_dir=spare_broker.dir)
    topic = settings.topic(unique("replicated"))
    admin = make_admin(settings)
    admin.create_topics([NewTopic(topic, 3, 3)])
    admin.close()
    spare_broker.kill_node(3)
    producer = make_producer(settings)
    for i in range(100):
        producer.send(topic, value=str(i).encode())
    producer.flush(timeout=60)
    producer.close()
    consumer = make_consumer(topic, settings=settings, group_id=unique("g"), consumer_timeout_ms=8000)
    values = sorted(int(m.value) for m in consumer)
    consumer.close()
    assert values == list(range(100))
    survivors = {n.node_id: n.pid for n in spare_broker.status() if n.running}
    assert sorted(survivors) == [1, 2]
    spare_broker.start(nodes=3, port=layout.port)  # `hub broker start` again: only the node that is down starts
    after = {n.node_id: n.pid for n in spare_broker.status()}
    assert after[3] is not None and {n: after[n] for n in survivors} == survivors, \
        "the running nodes keep their processes"
    assert spare_broker.stop() == 3


# -- the CLI -------------------------------------------------------------------------------------
def test_cli_help_answers_questions():
    out = subprocess.run([*HUB, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "HUB_BOOTSTRAP_SERVERS" in out.stdout and "broker" in out.stdout


def test_cli_bad_input_is_one_clear_line(tmp_path):
    env = {"HUB_RUNTIME_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([*HUB, "broker", "start", "--nodes", "2"], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    assert "--nodes must be 1 or 3" in out.stderr and "Traceback" not in out.stderr


def test_cli_status_without_broker_exits_nonzero(tmp_path):
    out = subprocess.run([*HUB, "broker", "status"], capture_output=True, text=True,
                         env={"HUB_RUNTIME_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert "hub broker start" in out.stdout

"""One real Kafka for the whole test session, and isolated names for each test.

Where the cluster comes from, in order:
1. ``HUB_BOOTSTRAP_SERVERS`` is set: that cluster.
2. A Docker engine answers: testcontainers' KafkaContainer in KRaft mode.
3. Otherwise: the local broker from ``deploy/`` (``hub.broker.LocalBroker``), on free ports under
   ``.hub/test-broker``, started here and stopped when the session ends.
Kafka is never mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.broker import LocalBroker, free_port_block
from hub.settings import HubSettings


@dataclass
class KafkaUnderTest:
    bootstrap_servers: str
    source: str  # "env", "testcontainers" or "local"
    local: LocalBroker | None = None


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaUnderTest]:
    if servers := os.environ.get("HUB_BOOTSTRAP_SERVERS"):
        yield KafkaUnderTest(servers, "env")
        return
    if _docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield KafkaUnderTest(container.get_bootstrap_server(), "testcontainers")
        return
    with running_local_broker("test-broker", heap="768m") as broker:
        yield KafkaUnderTest(broker.bootstrap_servers or "", "local", broker)


@contextmanager
def running_local_broker(name: str, runtime_dir: Path | None = None, **start: Any) -> Iterator[LocalBroker]:
    """A LocalBroker on free ports, wiped before and after. With its own ``runtime_dir`` it borrows the shared
    jar cache (a symlink) instead of fetching the jars again."""
    settings = HubSettings() if runtime_dir is None else HubSettings(runtime_dir=runtime_dir)
    if runtime_dir is not None and not settings.kafka_home.exists():
        runtime_dir.mkdir(parents=True, exist_ok=True)
        settings.kafka_home.symlink_to(HubSettings().kafka_home, target_is_directory=True)
    broker = LocalBroker(settings, name=name)
    broker.stop(wipe=True)
    broker.start(port=free_port_block(), **start)
    try:
        yield broker
    finally:
        broker.stop(wipe=True)


@pytest.fixture
def local_kafka(kafka: KafkaUnderTest) -> LocalBroker:
    """The session broker when this suite manages it (tests that stop or restart the broker need that)."""
    if kafka.local is None:
        pytest.skip(f"needs the suite's own local broker; this run uses a {kafka.source} cluster")
    return kafka.local


def unique(name: str) -> str:
    """A topic, group or transactional id no other test (or earlier run) uses."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def hub_settings(kafka: KafkaUnderTest, tmp_path) -> HubSettings:
    """Settings pointing at the session cluster, with a topic prefix of this test's own."""
    return HubSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=unique("t") + ".",
        runtime_dir=tmp_path / "runtime",
        log_format="json",
    )


def topic_records(settings: HubSettings, topic: str, timeout_s: float = 60.0) -> list:
    """Every record on every partition of ``topic``, read from the beginning to the current end."""
    from hub.kafka import read_topic

    return read_topic(topic, settings, timeout_s)


def publish_events(settings: HubSettings, events: list, *, intake: bool = True) -> None:
    """Publish events the way agencies do: one Publisher per agency, every event confirmed; then (``intake``)
    run the intake stage until every one is sealed into events.ingested.<ORI>, where dedup reads them."""
    from consumers.runner import StageRunner
    from consumers.stages.intake import IntakeStage
    from producers.publisher import Publisher

    by_agency: dict[str, list] = {}
    for event in events:
        by_agency.setdefault(event.agency_ori, []).append(event)
    for ori, batch in by_agency.items():
        with Publisher(ori, settings) as publisher:
            for event in batch:
                publisher.publish(event)
            assert publisher.flush().published == len(batch)
    if intake:
        StageRunner(IntakeStage(), settings, commit_interval_s=0.2).run_until_caught_up()


def hub_env(settings: HubSettings) -> dict[str, str]:
    """Environment for running the `hub` CLI as a subprocess against the test cluster."""
    return {**os.environ, "HUB_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "HUB_TOPIC_PREFIX": settings.topic_prefix, "HUB_RUNTIME_DIR": str(settings.runtime_dir),
            "HUB_LOG_FORMAT": "json", "HUB_METRICS_PORT": "0"}  # tests run many stages on one host


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET (an error status is an answer too; 0 when nothing answered)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited, only its parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def codec_with_keys(settings: HubSettings, records: list) -> Any:
    """The hub's codec for ``settings``, with record keys made for the reports of canonical events a test builds
    itself (reports that were never published, so never sealed, have none)."""
    from datetime import date

    from hub.vault import hub_codec
    from schemas.protection import record_key_ids

    codec = hub_codec(settings)
    for record in records:
        for key_id in record_key_ids(record):
            codec.vault.ensure(key_id, date(2031, 1, 1))
    return codec


SOAK_FIRST, SOAK_LAST = "test_low_traffic_soak_started", "test_low_traffic_stages_keep_running_and_deliver_every_event"


def pytest_collection_modifyitems(items: list) -> None:
    """Start the low-traffic soak (tests/test_low_traffic.py) before every other test and check it after them all,
    so its ten minutes run beside the suite instead of after it."""
    first = [i for i in items if i.name == SOAK_FIRST]
    last = [i for i in items if i.name == SOAK_LAST]
    items[:] = first + [i for i in items if i.name not in (SOAK_FIRST, SOAK_LAST)] + last

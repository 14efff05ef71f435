"""Low, steady traffic never outlives a transaction (issue 11): stages fed one event every 2 s for 10 minutes, with
the broker's transaction timeout shortened to 3 s, keep running, never have a transaction aborted, and deliver
every event exactly once.

The soak runs on a broker of its own, beside the rest of the suite: ``conftest.py`` orders the test that starts it
first and the one that checks it last, so its 10 minutes overlap the other tests instead of adding to them (and
the machine is busy meanwhile, which only makes the test harder). ``HUB_SOAK_SECONDS`` shortens it for a quick run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from consumers.registry import load_registry
from hub.control import apply_registry
from hub.settings import HubSettings
from hub.topics import ensure_topics, hub_topics
from hub.vault import hub_codec
from producers.publisher import Publisher
from schemas.topics import CANONICAL
from tests.conftest import hub_env, running_local_broker, topic_records
from tests.factories import make_event

SOAK_S = float(os.environ.get("HUB_SOAK_SECONDS", "600"))
INTERVAL_S = 2.0
TRANSACTION_TIMEOUT_S = 3.0
AGENCY = {"ori": "AZDPS0000", "name": "Arizona Department of Public Safety", "level": "STATE"}
STAGES = ("intake", "dedup")


@dataclass
class Soak:
    settings: HubSettings
    stages: dict[str, subprocess.Popen] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    deaths: list[str] = field(default_factory=list)  # stages seen exited while the feed ran
    started: float = field(default_factory=time.monotonic)
    feeder: threading.Thread | None = None

    def feed(self) -> None:
        """One event every INTERVAL_S, each its own seizure, confirmed by the broker before the next."""
        start = datetime(2026, 6, 1, tzinfo=timezone.utc)
        with Publisher(AGENCY["ori"], self.settings) as publisher:
            n = 0
            while time.monotonic() - self.started < SOAK_S:
                event = make_event(source_agency=AGENCY, source_record_id=f"SOAK-{n}", payload__seizure_number=None,
                                   event_time=start + timedelta(hours=n), report_time=start + timedelta(hours=n, minutes=5))
                publisher.publish(event)
                publisher.flush()
                self.published.append(event.event_id)
                self.deaths += [f"{name} exited {p.returncode}" for name, p in self.stages.items()
                                if p.poll() is not None and f"{name} exited {p.returncode}" not in self.deaths]
                n += 1
                time.sleep(INTERVAL_S)


@pytest.fixture(scope="session")
def low_traffic_soak(tmp_path_factory) -> Iterator[Soak]:
    runtime = tmp_path_factory.mktemp("soak")
    with running_local_broker("soak-broker", runtime_dir=runtime, heap="384m") as broker:
        settings = HubSettings(bootstrap_servers=broker.bootstrap_servers or "", topic_prefix="soak.",
                               runtime_dir=runtime, log_format="json")
        units = sorted(u.unit_id for u in load_registry().task_forces)
        ensure_topics(hub_topics(settings.topic_prefix, [AGENCY["ori"]], list(STAGES), units), settings)
        apply_registry(settings=settings, applied_by="soak")  # dedup and alerts route: they wait for one
        soak = Soak(settings)
        logs = {}
        for name in STAGES:
            logs[name] = (runtime / f"{name}.log").open("w")
            soak.stages[name] = subprocess.Popen(
                [sys.executable, "-m", "hub", "run", name, "--transaction-timeout", str(TRANSACTION_TIMEOUT_S)],
                env=hub_env(settings), stdout=logs[name], stderr=subprocess.STDOUT, text=True)
        soak.feeder = threading.Thread(target=soak.feed, name="soak-feeder", daemon=True)
        soak.feeder.start()
        try:
            yield soak
        finally:
            for process in soak.stages.values():
                process.terminate()
                process.wait(timeout=60)
            for log in logs.values():
                log.close()


def test_low_traffic_soak_started(low_traffic_soak: Soak):
    time.sleep(min(10.0, SOAK_S))
    assert low_traffic_soak.published, "the feeder publishes its first events"
    assert all(p.poll() is None for p in low_traffic_soak.stages.values()), "both stages start"


def test_low_traffic_stages_keep_running_and_deliver_every_event(low_traffic_soak: Soak):
    soak = low_traffic_soak
    assert soak.feeder is not None
    soak.feeder.join(timeout=SOAK_S + 120)
    assert not soak.feeder.is_alive(), "the feed ends after the soak time"
    expected = len(soak.published)
    assert expected >= 0.8 * SOAK_S / INTERVAL_S, f"only {expected} events were fed in {SOAK_S:.0f} s"
    codec = hub_codec(soak.settings)
    deadline = time.monotonic() + 120
    while True:
        delivered = Counter(codec.decode(r.value).decision.event_id
                            for r in topic_records(soak.settings, CANONICAL.name(soak.settings.topic_prefix)))
        if sum(delivered.values()) >= expected or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not soak.deaths and all(p.poll() is None for p in soak.stages.values()), \
        f"a stage stopped during the soak: {soak.deaths}"
    assert delivered == Counter(soak.published), "every event fed reaches events.canonical exactly once"
    logs = {name: (Path(soak.settings.runtime_dir) / f"{name}.log").read_text() for name in STAGES}
    retried = {name: log.count("processing again from the last commit") for name, log in logs.items()}
    assert retried == {name: 0 for name in STAGES}, f"transactions outlived the {TRANSACTION_TIMEOUT_S} s timeout"
    print(f"soak: {expected} events over {SOAK_S:.0f} s, one every {INTERVAL_S:.0f} s; transaction timeout "
          f"{TRANSACTION_TIMEOUT_S:.0f} s; delivered {sum(delivered.values())}; retried transactions {retried}")

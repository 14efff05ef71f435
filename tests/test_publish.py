"""Publishing on the real broker: precise rejects, nothing lost, exactly once across a broker crash."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest
from kafka import TopicPartition

from hub.kafka import make_consumer
from hub.topics import ensure_topics
from producers.exceptions import AgencyMismatchError, TopicMissingError
from producers.publisher import EVENT_ID_HEADER, Publisher
from schemas.topics import INGEST
from tests.conftest import hub_env, topic_records
from tests.factories import event_dict, make_event
from hub.vault import hub_codec

HUB = [sys.executable, "-m", "hub"]
AGENCY = "CACBP0100"


def _ingest(settings, ori=AGENCY):
    topic = INGEST.name(settings.topic_prefix, ori=ori)
    ensure_topics([(topic, INGEST)], settings)
    return topic


def _write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def _ids_on(settings, topic):
    return Counter(dict(r.headers)[EVENT_ID_HEADER].decode() for r in topic_records(settings, topic))


def test_bad_records_are_reported_precisely_and_the_rest_published(hub_settings, tmp_path):
    topic = _ingest(hub_settings)
    good = [event_dict(source_record_id=f"R{i}") for i in range(20)]
    bad = {
        3: (event_dict(payload__drugs__0__purity=1.7), "payload.drugs.0.purity"),
        7: ("{this is not json", "(line)"),
        12: (event_dict(source_agency__ori="CAHSI0100"), "source_agency.ori"),
        15: (event_dict(event_time="2025-10-03 14:05"), "event_time"),
    }
    lines = list(good)
    for line_number in sorted(bad):
        lines.insert(line_number - 1, bad[line_number][0])
    source = tmp_path / "export.jsonl"
    _write_jsonl(source, lines)
    rejects = tmp_path / "rejects.jsonl"
    out = subprocess.run([*HUB, "publish", "--agency", AGENCY, str(source), "--rejects", str(rejects)],
                         capture_output=True, text=True, env=hub_env(hub_settings), timeout=120)
    assert out.returncode == 2, out.stderr
    for line_number, (_, field) in bad.items():
        assert f"{source}:{line_number}: {field}:" in out.stderr
    reported = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["file"], r["line"], r["problems"][0]["field"]) for r in reported] == [
        (str(source), n, field) for n, (_, field) in sorted(bad.items())]
    on_broker = _ids_on(hub_settings, topic)
    assert on_broker == Counter(g["event_id"] for g in good)
    decoded = {hub_codec(hub_settings).decode(r.value).source_record_id for r in topic_records(hub_settings, topic)}
    assert decoded == {f"R{i}" for i in range(20)}


def test_csv_with_dotted_columns_publishes(hub_settings, tmp_path):
    topic = _ingest(hub_settings)
    source = tmp_path / "rms.csv"
    source.write_text(
        "event_type,source_system,source_record_id,record_version,event_time,report_time,location.port_of_entry,"
        "handling.dissemination,handling.tlp,handling.cui_categories.0,payload.drugs.0.drug_type,"
        "payload.drugs.0.form,payload.drugs.0.pill_count,payload.conveyance\n"
        "SEIZURE,SEACATS,C1,1,2025-10-04T10:00:00Z,2025-10-04T11:00:00Z,OTAY_MESA,WHITE,GREEN,SP_SUB,FENTANYL,PILLS,"
        "5000,COMMERCIAL_TRUCK\n")
    out = subprocess.run([*HUB, "publish", "--agency", AGENCY, str(source)], capture_output=True, text=True,
                         env=hub_env(hub_settings), timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    [record] = topic_records(hub_settings, topic)
    event = hub_codec(hub_settings).decode(record.value)
    assert event.payload.drugs[0].pill_count == 5000 and event.source_agency.name.startswith("CBP")
    assert record.key == b"county:06073"


def test_all_or_nothing_publishes_nothing_when_one_record_is_bad(hub_settings, tmp_path):
    topic = _ingest(hub_settings)
    source = tmp_path / "batch.jsonl"
    _write_jsonl(source, [event_dict(), event_dict(location__port_of_entry="NOWHERE"), event_dict()])
    out = subprocess.run([*HUB, "publish", "--agency", AGENCY, "--all-or-nothing", str(source)],
                         capture_output=True, text=True, env=hub_env(hub_settings), timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    assert "nothing was published" in out.stdout
    assert topic_records(hub_settings, topic) == []


def test_publisher_sdk_guards_agency_and_topic(hub_settings):
    with pytest.raises(TopicMissingError, match="hub topics init"):
        Publisher("CAHSI0100", hub_settings)
    _ingest(hub_settings)
    with Publisher(AGENCY, hub_settings) as publisher:
        with pytest.raises(AgencyMismatchError, match="publishes only its own records"):
            publisher.publish(make_event(source_agency__ori="CAHSI0100"))
        publisher.publish(make_event())
        report = publisher.flush()
    assert (report.published, report.spooled) == (1, 0)


def test_unreachable_broker_spools_then_drain_sends_once(hub_settings, kafka):
    topic = _ingest(hub_settings)
    events = [make_event(source_record_id=f"S{i}") for i in range(50)]
    offline = hub_settings.model_copy(update={"bootstrap_servers": "127.0.0.1:1", "connect_timeout_s": 1})
    with Publisher(AGENCY, offline) as publisher:
        assert not publisher.online
        for event in events:
            publisher.publish(event)
        report = publisher.flush()
    assert (report.published, report.spooled) == (0, 50)
    assert topic_records(hub_settings, topic) == []
    with Publisher(AGENCY, hub_settings) as publisher:
        report = publisher.drain()
    assert (report.published, report.spooled) == (50, 0)
    assert _ids_on(hub_settings, topic) == Counter(e.event_id for e in events)


@pytest.mark.slow
def test_broker_killed_mid_publish_then_drain_leaves_every_record_exactly_once(hub_settings, local_kafka, tmp_path):
    topic = _ingest(hub_settings)
    total = 40_000
    source = tmp_path / "big.jsonl"
    _write_jsonl(source, (event_dict(source_record_id=f"K{i}") for i in range(total)))
    expected = Counter(json.loads(line)["event_id"] for line in source.read_text().splitlines())
    env = hub_env(hub_settings)
    publishing = subprocess.Popen([*HUB, "publish", "--agency", AGENCY, str(source), "--delivery-timeout", "5",
                                   "--batch-size", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env, cwd=tmp_path)
    consumer = make_consumer(settings=hub_settings, group_id=None)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    deadline = time.monotonic() + 120
    while sum(consumer.end_offsets(partitions).values()) < total // 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    consumer.close()
    local_kafka.kill_node(1)  # SIGKILL: no controlled shutdown, batches in flight
    try:
        assert not local_kafka.running
        stdout, stderr = publishing.communicate(timeout=300)
    finally:
        local_kafka.restart_node(1)  # the rest of the session needs the broker, whatever happened here
    assert publishing.returncode == 3, f"exit {publishing.returncode}\n{stdout}\n{stderr[-3000:]}"
    assert "wait in the spool" in stdout
    drained = subprocess.run([*HUB, "publish", "--agency", AGENCY, "--drain"], capture_output=True, text=True,
                             env=env, timeout=300, cwd=tmp_path)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    on_broker = _ids_on(hub_settings, topic)
    assert sum(on_broker.values()) == total, "nothing lost, nothing doubled"
    assert on_broker == expected


@pytest.mark.slow
def test_hundred_thousand_generated_events_all_reach_the_broker(hub_settings, tmp_path):
    from producers.sample import generate, write_sample

    sample = generate(100_000, seed=3)
    files = write_sample(sample, tmp_path / "sample")
    env = hub_env(hub_settings)
    init = subprocess.run([*HUB, "topics", "init"], capture_output=True, text=True, env=env, timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    for ori, path in files.items():
        out = subprocess.run([*HUB, "publish", "--agency", ori, str(path)], capture_output=True, text=True,
                             env=env, timeout=600, cwd=tmp_path)
        assert out.returncode == 0, f"{ori}: {out.stdout}{out.stderr}"
    on_broker: Counter = Counter()
    for ori in files:
        on_broker += _ids_on(hub_settings, INGEST.name(hub_settings.topic_prefix, ori=ori))
    assert sum(on_broker.values()) == 100_000
    assert on_broker == Counter(e.event_id for e in sample.events)

"""Archives: written by the hub from a real topic, read by the official Apache avro package, restored."""

from __future__ import annotations

import subprocess
import sys

import avro.datafile
import avro.io
import pytest

from hub.topics import ensure_topics, hub_topics
from hub.vault import hub_codec
from producers.sample import generate
from schemas.archive import read_archive
from schemas.topics import INGESTED
from tests.conftest import hub_env, publish_events, topic_records
from tests.factories import key_id

HUB = [sys.executable, "-m", "hub"]


@pytest.mark.kafka
def test_an_archive_reads_back_with_apache_avro_and_restores_byte_for_byte(hub_settings, tmp_path):
    events = [e for e in generate(300, seed=8).events if e.agency_ori == "CACBP0100"]
    topic = INGESTED.name(hub_settings.topic_prefix, ori="CACBP0100")  # the hub's sealed history of its reports
    ensure_topics(hub_topics(hub_settings.topic_prefix, ["CACBP0100"], ["intake"]), hub_settings)
    publish_events(hub_settings, events)
    env = hub_env(hub_settings)
    archived = subprocess.run([*HUB, "archive", INGESTED.name(ori="CACBP0100"), "--to", str(tmp_path / "archive")],
                              capture_output=True, text=True, env=env, timeout=120)
    assert archived.returncode == 0, archived.stdout + archived.stderr
    [path] = sorted((tmp_path / "archive").glob("*.avro"))

    with path.open("rb") as source:  # a different Avro implementation, reading the embedded writer schema
        read = list(avro.datafile.DataFileReader(source, avro.io.DatumReader()))
    # Report data is sealed (a ProtectedRecord per event, under its record key), so the archive can be purged too.
    assert sorted(r["value"]["key_ids"][0] for r in read) == sorted(key_id(e) for e in events)
    assert {r["value"]["inner_type"] for r in read} == {"gov.taskforce.hub.CaseEvent"}
    assert {r["topic"] for r in read} == {topic}
    codec = hub_codec(hub_settings)  # with the key vault, the hub reads the events themselves back
    assert sorted(codec.decode(a.value).event_id for a in read_archive(path)) == sorted(e.event_id for e in events)

    original = {(r.partition, r.offset): r.value for r in topic_records(hub_settings, topic)}
    assert {(a.partition, a.offset): a.value for a in read_archive(path)} == original

    refused = subprocess.run([*HUB, "archive", "restore", str(tmp_path / "archive"), "--topic", "ingest.nowhere"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode != 0 and "no such topic" in refused.stdout + refused.stderr
    ensure_topics([(hub_settings.topic("events.restored"), INGESTED)], hub_settings)
    restored = subprocess.run([*HUB, "archive", "restore", str(tmp_path / "archive"), "--topic", "events.restored"],
                              capture_output=True, text=True, env=env, timeout=120)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    copy = topic_records(hub_settings, hub_settings.topic("events.restored"))
    assert sorted(r.value for r in copy) == sorted(original.values())

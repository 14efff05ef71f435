"""The record-key table on Kafka (``hub.keys``): shared by hub processes that share nothing else, guarded by the
KEK, and telling a purged key from one the hub never had."""

from __future__ import annotations

import base64
import threading
import time
from datetime import date

import pytest

from consumers.runner import UNKNOWN_KEYS, StageRunner
from consumers.stages.dedup import DedupStage
from hub.kafka import make_producer, read_topic
from hub.topics import ensure_topics, hub_topics
from hub.vault import READ_FRESHNESS_S, KafkaKeyVault, KekMismatchError, MemoryKeyVault, hub_codec
from schemas.codec import Codec
from schemas.exceptions import RecordPurgedError
from schemas.models import AuditEvent, AuditEventType, AuditOutcome
from schemas.topics import INGESTED, deadletter_topic
from tests.conftest import publish_events
from tests.factories import make_event

pytestmark = pytest.mark.kafka


def _host(settings, tmp_path, name: str, kek: bytes):
    """The settings of one hub host: its own runtime dir, the shared KEK in a file of its own."""
    path = tmp_path / name / "kek"
    path.parent.mkdir(parents=True)
    path.write_bytes(base64.b64encode(kek))
    return settings.model_copy(update={"runtime_dir": tmp_path / name, "kek_file": path})


def test_two_hosts_share_keys_and_purges_through_kafka_only(hub_settings, tmp_path):
    ensure_topics(hub_topics(hub_settings.topic_prefix, [], []), hub_settings)
    kek = bytes(range(32))
    one, two = (KafkaKeyVault(_host(hub_settings, tmp_path, name, kek)) for name in ("one", "two"))
    key = one.ensure("report-1", date(2030, 1, 1))
    assert two.get("report-1") == key and two.review_dates(["report-1"]) == {"report-1": date(2030, 1, 1)}
    assert one.destroy("report-1", reason="review date passed") is True
    time.sleep(READ_FRESHNESS_S)  # the bound on how long a running process may still hold a purged key
    assert two.get("report-1") is None and two.tombstone("report-1").reason == "review date passed"
    with pytest.raises(RecordPurgedError):
        two.ensure("report-1", date(2030, 1, 1))  # a purged report is never sealed again
    raw = b"".join(r.value or b"" for r in read_topic(hub_settings.key_table, hub_settings))
    assert key not in raw and b"review date passed" in raw, "only wrapped keys and markers are on the topic"
    one.close()
    two.close()

    stranger = KafkaKeyVault(_host(hub_settings, tmp_path, "stranger", bytes(32)))
    with pytest.raises(KekMismatchError, match="KEK"):
        stranger.get("report-1")
    stranger.close()


def test_a_record_sealed_under_a_key_the_hub_never_had_is_dead_lettered_not_skipped(hub_settings):
    ensure_topics(hub_topics(hub_settings.topic_prefix, ["CACBP0100"], ["intake", "dedup"]), hub_settings)
    genuine = make_event(source_record_id="GENUINE-1")
    publish_events(hub_settings, [genuine])  # sealed by the intake stage under a key on hub.keys
    forged = make_event(source_record_id="FORGED-1")
    producer = make_producer(hub_settings)
    producer.send(INGESTED.name(hub_settings.topic_prefix, ori="CACBP0100"), key=b"county:06073",
                  value=Codec(vault=MemoryKeyVault()).encode(forged)).get(30)  # sealed elsewhere
    producer.close()
    before = UNKNOWN_KEYS.labels("dedup")._value.get()
    StageRunner(DedupStage(), hub_settings, commit_interval_s=0.2).run_until_caught_up()

    assert UNKNOWN_KEYS.labels("dedup")._value.get() == before + 1
    [dead] = read_topic(hub_settings.topic(deadletter_topic("dedup")), hub_settings)
    reason = dict(dead.headers)["dlq.reason"].decode()
    assert "RecordKeyUnknownError" in reason and forged.event_id in reason and "never had" in reason
    codec = hub_codec(hub_settings)
    rejected = [a for a in (codec.decode(r.value) for r in read_topic(hub_settings.topic("audit"), hub_settings))
                if isinstance(a, AuditEvent) and a.event_type == AuditEventType.RECORD_REJECTED]
    assert len(rejected) == 1 and rejected[0].outcome == AuditOutcome.FAILURE
    canonical = [codec.decode(r.value) for r in read_topic(hub_settings.topic("events.canonical"), hub_settings)]
    assert [c.primary.event_id for c in canonical] == [genuine.event_id]
    codec.vault.close()


def test_a_key_whose_transaction_is_still_open_is_waited_for_not_called_unknown(hub_settings, tmp_path):
    """The brokers write a commit's markers partition by partition: a record can be readable before the key sealed
    with it. A reader that misses a key waits for the table's open transactions before calling it unknown."""
    ensure_topics(hub_topics(hub_settings.topic_prefix, [], []), hub_settings)
    kek = bytes(range(1, 33))
    writer, reader = (KafkaKeyVault(_host(hub_settings, tmp_path, name, kek)) for name in ("writer", "reader"))
    assert reader.get("already-there") is None  # the reader has read the table once, as a running stage has
    producer = make_producer(hub_settings, transactional_id=f"{hub_settings.topic_prefix}test-keys")
    producer.init_transactions()
    producer.begin_transaction()
    writer.bind(lambda key, value: producer.send(hub_settings.key_table, key=key, value=value))
    key = writer.ensure("in-flight", date(2030, 1, 1))  # written in the open transaction, not committed yet
    producer.flush()
    committing = threading.Timer(3, producer.commit_transaction)
    committing.start()
    asked = time.monotonic()
    try:
        assert reader.get("in-flight") == key
        assert time.monotonic() - asked >= 2, "found only once the transaction had committed"
    finally:
        committing.join()
        producer.close()
        writer.close()
        reader.close()
    late_reader = KafkaKeyVault(_host(hub_settings, tmp_path, "late-reader", kek))
    asked = time.monotonic()
    assert late_reader.get("never-written") is None
    assert time.monotonic() - asked < 10, "with nothing open on the table, an unknown key is answered at once"
    late_reader.close()

"""The tamper-evident audit chain: pure chain checks, then sealing and `hub audit` on the real broker."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.audit import GENESIS, link, seal, verify_chain
from consumers.exceptions import StageError
from consumers.registry import load_registry
from consumers.runner import StageRunner
from consumers.stage import Message
from consumers.stages.route import RouteStage
from consumers.stages.seal import SealStage
from consumers.state import MemoryPartitionStore, State
from hub.auditing import audit_event, record_query
from hub.control import apply_registry
from hub.kafka import make_producer
from hub.topics import ensure_topics, hub_topics
from schemas.codec import Codec
from schemas.models import AuditEventType
from schemas.topics import AUDIT_CHAIN, AUDIT_QUERIES, CANONICAL, deadletter_topic
from tests.conftest import codec_with_keys, hub_env, topic_records
from tests.test_sharing import canonical, event

HUB = [sys.executable, "-m", "hub"]
AT = datetime(2026, 11, 27, tzinfo=timezone.utc)


def chain(records: list[bytes], partition: int = 0) -> list[tuple[int, bytes]]:
    codec, prev, out = Codec(), GENESIS, []
    for offset, record in enumerate(records):
        item = seal(partition, offset + 1, prev, record, AT)
        prev = item.hash
        out.append((offset, codec.encode(item)))
    return out


records = st.lists(st.binary(min_size=1, max_size=40), min_size=2, max_size=12)


@given(records)
def test_an_untouched_chain_verifies(data):
    report = verify_chain(0, chain(data))
    assert report.broken is None and report.records == len(data)


@settings(max_examples=60)
@given(records, st.data())
def test_altering_removing_or_swapping_a_record_is_caught_where_it_happened(data, draw):
    sealed = chain(data)
    at = draw.draw(st.integers(0, len(sealed) - 1))
    codec = Codec()
    altered = list(sealed)
    item = codec.decode(sealed[at][1])
    altered[at] = (at, codec.encode(item.model_copy(update={"record": item.record + b"!"})))
    assert verify_chain(0, altered).broken.offset == at
    removed = sealed[:at] + sealed[at + 1:]
    if at < len(sealed) - 1:
        assert verify_chain(0, removed).broken.offset == sealed[at + 1][0]
    if at < len(sealed) - 1:
        swapped = sealed[:at] + [sealed[at + 1], sealed[at]] + sealed[at + 2:]
        assert verify_chain(0, swapped).broken.offset == sealed[at + 1][0]


def test_a_forged_seal_with_a_correct_hash_but_no_place_in_the_chain_is_caught():
    sealed = chain([b"a", b"b"])
    forged = seal(0, 3, link(GENESIS, b"zzz"), b"forged", AT)  # consistent in itself, linked to nothing
    report = verify_chain(0, [*sealed, (2, Codec().encode(forged))])
    assert report.broken.offset == 2 and "previous hash" in report.broken.reason
    assert verify_chain(0, [*sealed, (2, b"not even avro")]).broken.offset == 2


def test_verifying_from_a_checkpoint_starts_after_it_and_checks_the_seal_it_signed():
    sealed = chain([b"a", b"b", b"c", b"d"])
    full = verify_chain(0, sealed[:2])
    head = full.last
    assert (head.offset, head.sequence) == (1, 2)
    rest = verify_chain(0, sealed, start=head)
    assert rest.broken is None and rest.records == 2 and rest.last.offset == 3
    codec = Codec()
    altered = codec.decode(sealed[1][1]).model_copy(update={"record": b"B"})
    changed = verify_chain(0, [sealed[0], (1, codec.encode(altered)), *sealed[2:]], start=head)
    assert changed.broken.offset == 1 and "checkpoint signed has been changed" in changed.broken.reason
    missing = verify_chain(0, [sealed[0], *sealed[2:]], start=head)
    assert missing.broken.offset == 2 and "missing" in missing.broken.reason
    assert "shorter" in verify_chain(0, sealed[:1], start=head).broken.reason


def test_audit_and_its_queries_feed_one_chain_per_partition_and_nothing_else_is_sealed_from_the_queries():
    stage, store, codec = SealStage(), MemoryPartitionStore(), Codec()
    change = audit_event("alerts", AuditEventType.ALERT_STATUS_CHANGED, "agency-cahsi0100", "acknowledged")
    query = audit_event("hub audit", AuditEventType.AUDIT_QUERIED, "auditor-oig", "verify")

    def sealed(topic: str, value) -> list:
        state = State(store)
        outputs = stage.process(Message(topic, 2, 0, b"k", value, 0, codec.encode(value)), state)
        store.apply(state.take_writes(), None)
        return [o.value for o in outputs]

    chain = [*sealed("t.audit", change), *sealed("t.audit.queries", query), *sealed("t.audit", change)]
    assert [(s.partition, s.sequence) for s in chain] == [(2, 1), (2, 2), (2, 3)]
    assert verify_chain(2, [(i, codec.encode(s)) for i, s in enumerate(chain)]).broken is None
    with pytest.raises(StageError, match="only audit queries"):  # an auditor cannot write other audit records
        sealed("t.audit.queries", change)


@pytest.mark.kafka
def test_the_sealed_audit_verifies_answers_who_saw_and_names_a_forged_record(hub_settings, tmp_path):
    units = sorted(u.unit_id for u in load_registry().task_forces)
    ensure_topics(hub_topics(hub_settings.topic_prefix, ["CACBP0100"], ["route", "seal"], units), hub_settings)
    apply_registry(settings=hub_settings, applied_by="test")
    routed = [canonical(event("CACBP0100", port="SAN_YSIDRO")) for _ in range(20)]
    codec, producer = codec_with_keys(hub_settings, routed), make_producer(hub_settings)
    for record in routed:
        producer.send(hub_settings.topic(CANONICAL.pattern), key=record.canonical_id.encode(),
                      value=codec.encode(record))
    producer.flush()
    StageRunner(RouteStage(), hub_settings, commit_interval_s=0.2).run_until_idle(idle_polls=10)
    query = record_query("test", "who-saw E-1", hub_settings)  # on audit.queries, the sealer's second input
    not_a_query = audit_event("test", AuditEventType.ACCESS_CHANGED, "auditor-oig", "forged")
    producer.send(hub_settings.topic(AUDIT_QUERIES.pattern), key=b"forged", value=codec.encode(not_a_query)).get(30)
    StageRunner(SealStage(), hub_settings, commit_interval_s=0.2).run_until_idle(idle_polls=10)
    chained = [codec.decode(codec.decode(r.value).record) for r in
               topic_records(hub_settings, hub_settings.topic(AUDIT_CHAIN.pattern))]
    assert query.audit_id in {getattr(c, "audit_id", None) for c in chained}
    assert not_a_query.audit_id not in {getattr(c, "audit_id", None) for c in chained}
    [refused] = topic_records(hub_settings, hub_settings.topic(deadletter_topic("seal")))
    assert refused.key == b"forged"
    env = hub_env(hub_settings)

    verified = subprocess.run([*HUB, "audit", "verify"], capture_output=True, text=True, env=env, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "every chain intact" in verified.stdout

    seen = subprocess.run([*HUB, "audit", "who-saw", routed[0].primary.event_id], capture_output=True, text=True,
                          env=env, timeout=120)
    assert seen.returncode == 0 and "best-san-diego" in seen.stdout and "owner.full" in seen.stdout

    checkpoint = tmp_path / "checkpoint.json"
    made = subprocess.run([*HUB, "audit", "checkpoint", "--out", str(checkpoint)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert made.returncode == 0 and checkpoint.exists(), made.stdout + made.stderr
    tampered = tmp_path / "tampered.json"
    document = json.loads(checkpoint.read_text())
    document["heads"][0]["hash"] = "f" * 64
    tampered.write_text(json.dumps(document))
    refused = subprocess.run([*HUB, "audit", "verify", "--from-checkpoint", str(tampered)], capture_output=True,
                             text=True, env=env, timeout=120)
    assert refused.returncode == 1 and "does not verify" in refused.stderr

    chain_topic = hub_settings.topic(AUDIT_CHAIN.pattern)
    sealed = topic_records(hub_settings, chain_topic)
    victim = sealed[-1]
    genuine = codec.decode(victim.value)
    forged = seal(victim.partition, genuine.sequence + 1, genuine.hash, b"a record nobody audited", AT)
    forged = forged.model_copy(update={"prev_hash": link(GENESIS, b"x")})  # spliced in: no link to the chain
    metadata = producer.send(chain_topic, key=b"forged", value=codec.encode(forged), partition=victim.partition).get(30)
    producer.close()
    caught = subprocess.run([*HUB, "audit", "verify"], capture_output=True, text=True, env=env, timeout=120)
    assert caught.returncode == 1
    assert f"partition {victim.partition}, offset {metadata.offset}" in caught.stdout, caught.stdout
    resumed = subprocess.run([*HUB, "audit", "verify", "--from-checkpoint", str(checkpoint)], capture_output=True,
                             text=True, env=env, timeout=120)
    assert resumed.returncode == 1 and "checkpoint @" in resumed.stdout
    assert f"partition {victim.partition}, offset {metadata.offset}" in resumed.stdout, resumed.stdout

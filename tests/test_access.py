"""Broker-enforced access: the ACL model without Kafka, then a matrix of principals x resources on a real
SCRAM broker (SASL_PLAINTEXT, and SASL_SSL with the generated CA) that must allow exactly what the model says."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata
from kafka.errors import (
    ClusterAuthorizationFailedError, GroupAuthorizationFailedError, KafkaError, SaslAuthenticationFailedError,
    TopicAuthorizationFailedError, TransactionalIdAuthorizationFailedError,
)

from consumers.audit import GENESIS, seal
from hub.access import (
    AccessReport, AclRule, PrincipalReport, apply_access, broker_acls, credentials_for, desired_acls, in_scope,
    load_auditors, passwords_file, show_acls,
)
from hub.auditing import record_query
from hub.broker import LocalBroker
from hub.credentials import load_passwords
from hub.exceptions import (
    AccessConfigError, AccessError, AuthenticationFailedError, CredentialsMissingError, KafkaUnavailableError,
)
from hub.kafka import make_admin, make_consumer, make_producer, read_topic
from hub.settings import HubSettings
from hub.topics import ensure_topics, hub_topics
from producers.directory import DEFAULT_DIRECTORY
from schemas.codec import Codec
from schemas.models import AuditEventType, AuditOutcome
from tests.conftest import hub_env, running_local_broker, unique
from tests.test_file_modes import exposed, listing

PREFIX = "t."
AGENCIES = ["CACBP0100", "AZHSI0100"]
TASK_FORCES = ["best-san-diego", "best-tucson"]
AUDITORS = ["oig"]
TOPICS = [f"{PREFIX}{kind}.{a}" for kind in ("ingest", "alerts.control", "agency") for a in AGENCIES] + [
    f"{PREFIX}feed.{u}" for u in TASK_FORCES] + [
    f"{PREFIX}{t}" for t in ("events.canonical", "hub.keys", "audit", "audit.chain", "audit.queries")]
HUB = [sys.executable, "-m", "hub"]


# -- the model, no Kafka ---------------------------------------------------------------------------
def _rules_of(rules: set[AclRule], principal: str) -> set[tuple[str, str, str, str]]:
    return {(r.resource_type, r.pattern, r.name, r.operation) for r in rules if r.principal == principal}


def test_agency_may_use_only_its_own_ingest_alert_control_and_agency_topics():
    rules = desired_acls("p.", ["CACBP0100", "AZHSI0100"], [])
    assert _rules_of(rules, "agency-cacbp0100") == {
        ("TOPIC", "LITERAL", "p.ingest.CACBP0100", "WRITE"), ("TOPIC", "LITERAL", "p.ingest.CACBP0100", "DESCRIBE"),
        ("TOPIC", "LITERAL", "p.ingest.CACBP0100", "READ"),  # read back by `hub publish --drain`, without a group
        ("TOPIC", "LITERAL", "p.alerts.control.CACBP0100", "WRITE"),
        ("TOPIC", "LITERAL", "p.alerts.control.CACBP0100", "DESCRIBE"),
        ("TOPIC", "LITERAL", "p.agency.CACBP0100", "READ"),  # its alerts and releases, read without a group
        ("TOPIC", "LITERAL", "p.agency.CACBP0100", "DESCRIBE")}
    assert all(r.permission == "ALLOW" for r in rules)


def test_auditor_reads_the_audit_log_and_writes_only_its_queries():
    rules = desired_acls("p.", ["CACBP0100"], ["best-tucson"], ["oig"])
    assert _rules_of(rules, "auditor-oig") == {
        ("TOPIC", "LITERAL", "p.audit", "READ"), ("TOPIC", "LITERAL", "p.audit", "DESCRIBE"),
        ("TOPIC", "LITERAL", "p.audit.chain", "READ"), ("TOPIC", "LITERAL", "p.audit.chain", "DESCRIBE"),
        ("TOPIC", "LITERAL", "p.audit.checkpoints", "READ"), ("TOPIC", "LITERAL", "p.audit.checkpoints", "DESCRIBE"),
        ("TOPIC", "LITERAL", "p.audit.queries", "WRITE"), ("TOPIC", "LITERAL", "p.audit.queries", "DESCRIBE")}
    without = desired_acls("p.", ["CACBP0100"], ["best-tucson"])
    assert rules - without == {r for r in rules if r.principal == "auditor-oig"}


def test_auditors_come_from_their_file_and_are_slugs(tmp_path):
    assert load_auditors() == ["oig"]
    for text in ("auditors:\n  - {name: Inspector General}\n", "auditors:\n  - {title: oig}\n", "auditors: ["):
        bad = tmp_path / "auditors.yaml"
        bad.write_text(text)
        with pytest.raises(AccessConfigError):
            load_auditors(bad)


def test_every_access_change_is_audited_under_the_principal_that_made_it():
    created = AclRule("agency-cacbp0100", "TOPIC", "LITERAL", "p.alerts.control.CACBP0100", "WRITE")
    deleted = AclRule("tf-best-tucson", "GROUP", "PREFIXED", "p.feed.best-tucson.", "READ")
    report = AccessReport([PrincipalReport("hub", "kept", 4), PrincipalReport("auditor-oig", "created", 6)],
                          [created], [deleted])
    events = report.audit_events("admin")
    assert [(e.event_type, e.principal, e.outcome, e.subject_ids) for e in events] == [
        (AuditEventType.ACCESS_CHANGED, "admin", AuditOutcome.SUCCESS, [p])
        for p in ("auditor-oig", "agency-cacbp0100", "tf-best-tucson")]
    assert [e.detail for e in events] == [
        "user auditor-oig: SCRAM credential created",
        "ACL created: ALLOW agency-cacbp0100 WRITE on TOPIC LITERAL p.alerts.control.CACBP0100",
        "ACL deleted: ALLOW tf-best-tucson READ on GROUP PREFIXED p.feed.best-tucson."]
    assert AccessReport([PrincipalReport("hub", "kept", 4)]).audit_events("admin") == []


def test_task_force_reads_its_feed_and_its_own_groups_only():
    rules = desired_acls("p.", [], ["best-tucson", "best-tucson-west"])
    assert _rules_of(rules, "tf-best-tucson") == {
        ("TOPIC", "LITERAL", "p.feed.best-tucson", "READ"), ("TOPIC", "LITERAL", "p.feed.best-tucson", "DESCRIBE"),
        ("GROUP", "LITERAL", "p.feed.best-tucson", "READ"), ("GROUP", "PREFIXED", "p.feed.best-tucson.", "READ")}
    # the group prefix ends with a dot, so best-tucson's rules never cover best-tucson-west's groups
    assert not any(r.name.startswith("p.feed.best-tucson-west") for r in rules if r.principal == "tf-best-tucson")


def test_hub_owns_the_prefix_and_its_groups_and_transactions():
    hub = _rules_of(desired_acls("p.", [], []), "hub")
    assert ("TOPIC", "PREFIXED", "p.", "ALL") in hub
    assert {("GROUP", "PREFIXED", "p.hub.", "ALL"), ("TRANSACTIONAL_ID", "PREFIXED", "p.hub.", "ALL")} <= hub
    assert {op for kind, _, _, op in hub if kind == "CLUSTER"} == {"IDEMPOTENT_WRITE"}
    assert ("TOPIC", "LITERAL", "*", "ALL") in _rules_of(desired_acls("", [], []), "hub")


def test_model_is_pure_and_rejects_names_that_are_not_oris_or_slugs():
    assert desired_acls(PREFIX, AGENCIES, TASK_FORCES) == desired_acls(PREFIX, AGENCIES, TASK_FORCES)
    for agencies, units, auditors in ([["cacbp0100"], [], []], [["CACBP0100*"], [], []], [[], ["Best San Diego"], []],
                                      [[], ["a."], []], [[], [], ["OIG"]], [[], [], ["*"]]):
        with pytest.raises(AccessConfigError):
            desired_acls(PREFIX, agencies, units, auditors)


def test_scope_leaves_other_users_and_other_prefixes_alone():
    assert in_scope(AclRule("agency-X", "TOPIC", "LITERAL", "t.ingest.X", "WRITE"), "t.")
    assert in_scope(AclRule("hub", "CLUSTER", "LITERAL", "kafka-cluster", "CREATE"), "t.")
    assert not in_scope(AclRule("agency-X", "TOPIC", "LITERAL", "u.ingest.X", "WRITE"), "t.")
    assert in_scope(AclRule("auditor-oig", "TOPIC", "LITERAL", "t.audit", "READ"), "t.")
    assert not in_scope(AclRule("auditor", "TOPIC", "LITERAL", "t.ingest.X", "READ"), "t.")


# -- a real broker with SCRAM and ACLs --------------------------------------------------------------
@dataclass
class Secured:
    broker: LocalBroker
    admin: HubSettings  # the super user, with this module's prefix and runtime dir

    def as_(self, principal: str, **overrides: object) -> HubSettings:
        return self.admin.model_copy(update=credentials_for(principal, self.admin) | overrides)


@pytest.fixture(scope="module", params=["sasl", "sasl+tls"])
def secured(request, tmp_path_factory) -> Iterator[Secured]:
    runtime = tmp_path_factory.mktemp("access-runtime")
    with running_local_broker("access-broker", runtime, auth="scram", tls=request.param == "sasl+tls") as broker:
        admin = broker.client_settings().model_copy(update={"topic_prefix": PREFIX, "connect_timeout_s": 5.0})
        apply_access(admin, PREFIX, AGENCIES, TASK_FORCES, auditors=AUDITORS)
        secured = Secured(broker, admin)
        hub_admin = make_admin(secured.as_("hub"))
        hub_admin.create_topics([NewTopic(t, 1, 1) for t in TOPICS])
        hub_admin.close()
        producer = make_producer(secured.as_("hub"))
        for unit in TASK_FORCES:
            producer.send(f"{PREFIX}feed.{unit}", key=unit.encode(), value=b"routed").get(30)
        sealed = Codec().encode(seal(0, 1, GENESIS, b"audited", datetime.now(timezone.utc)))
        for topic, value in (("ingest.CACBP0100", b"report"), ("alerts.control.CACBP0100", b"ack"),
                             ("agency.CACBP0100", b"told"), ("agency.AZHSI0100", b"told"),
                             ("audit", b"decision"), ("audit.chain", sealed), ("audit.queries", b"query"),
                             ("hub.keys", b"wrapped key")):
            producer.send(PREFIX + topic, value=value).get(30)
        producer.close()
        yield secured


def _read_assigned(settings: HubSettings, topic: str) -> list:
    """Poll partition 0 of a topic from the start without a consumer group (as `hub publish --drain` and
    `hub audit` read) until a record arrives (or 10 s pass)."""
    consumer = make_consumer(settings=settings, group_id=None)
    partition = TopicPartition(topic, 0)
    try:
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        for _ in range(20):
            if records := [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]:
                return records
        return []
    finally:
        consumer.close()


def _cli_env(settings: HubSettings) -> dict[str, str]:
    """Environment for the `hub` CLI connecting as ``settings``' principal."""
    env = hub_env(settings) | {"HUB_SECURITY_PROTOCOL": settings.security_protocol,
                               "HUB_SASL_MECHANISM": settings.sasl_mechanism,
                               "HUB_SASL_USERNAME": settings.sasl_username, "HUB_SASL_PASSWORD": settings.sasl_password}
    return env | ({"HUB_SSL_CAFILE": str(settings.ssl_cafile)} if settings.ssl_cafile else {})


def _read(settings: HubSettings, topic: str, group: str) -> list:
    """Poll a topic with a consumer group until a record arrives (or 10 s pass); commits what it read."""
    consumer = make_consumer(topic, settings=settings, group_id=group)
    try:
        records: list = []
        for _ in range(20):
            records += [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]
            if records:
                consumer.commit()
                break
        return records
    finally:
        consumer.close()


def test_broker_state_files_are_private(secured):
    assert stat.S_IMODE(secured.broker.credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(passwords_file(secured.admin).stat().st_mode) == 0o600
    assert stat.S_IMODE((secured.broker.node_dir(1) / "server.properties").stat().st_mode) == 0o600
    assert not exposed(secured.broker.dir), listing("broker files others may read", exposed(secured.broker.dir))


def test_no_password_is_on_the_brokers_command_line(secured):
    """Any local user can read a process's argv in /proc: the running JVMs must not hold a password there."""
    passwords = [secured.broker.admin_password(), *load_passwords(passwords_file(secured.admin)).values()]
    for node in secured.broker.status():
        argv = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
        assert b"kafka.Kafka" in argv, argv
        assert not [arg for arg in argv for pw in passwords if pw.encode() in arg], f"node {node.node_id}: {argv}"


def test_agency_produces_to_its_own_ingest_topic_with_an_idempotent_producer(secured):
    producer = make_producer(secured.as_("agency-cacbp0100"), enable_idempotence=True, acks="all")
    try:
        assert producer.send(f"{PREFIX}ingest.CACBP0100", value=b"seizure").get(30).offset >= 0
    finally:
        producer.close()


def test_agency_reads_back_its_own_ingest_topic_without_a_group(secured):
    assert [r.value for r in _read_assigned(secured.as_("agency-cacbp0100"), f"{PREFIX}ingest.CACBP0100")][:1] == [
        b"report"]


def test_agency_reads_its_own_alerts_and_releases_without_a_group(secured):
    assert [r.value for r in _read_assigned(secured.as_("agency-cacbp0100"), f"{PREFIX}agency.CACBP0100")] == [
        b"told"]


def test_agency_acts_on_alerts_on_its_own_control_topic(secured):
    producer = make_producer(secured.as_("agency-azhsi0100"))
    try:
        assert producer.send(f"{PREFIX}alerts.control.AZHSI0100", key=b"alert", value=b"ack").get(30).offset >= 0
    finally:
        producer.close()


def test_hub_alerts_ack_acts_only_as_the_connected_agency(secured):
    command = [*HUB, "alerts", "ack", "alert-1", "--agency", "AZHSI0100", "--by", "Lt. Vega"]
    acked = subprocess.run(command, capture_output=True, text=True, env=_cli_env(secured.as_("agency-azhsi0100")),
                           timeout=120)
    assert acked.returncode == 0 and "as agency-azhsi0100" in acked.stdout, acked.stdout + acked.stderr
    posing = subprocess.run(command, capture_output=True, text=True, env=_cli_env(secured.as_("agency-cacbp0100")),
                            timeout=120)
    assert posing.returncode == 1 and "may act only for its own agency" in posing.stderr, posing.stderr


def test_auditor_reads_the_audit_log_and_records_its_queries_without_a_transaction(secured):
    auditor = secured.as_("auditor-oig")
    assert [r.value for r in _read_assigned(auditor, f"{PREFIX}audit")] == [b"decision"]
    assert len(_read_assigned(auditor, f"{PREFIX}audit.chain")) == 1
    event = record_query("test", "who-saw E-1", auditor)  # an idempotent producer: WRITE on the topic suffices
    queries = [Codec().decode(r.value) for r in read_topic(f"{PREFIX}audit.queries", secured.as_("hub"))[1:]]
    assert [(q.audit_id, q.principal) for q in queries] == [(event.audit_id, "auditor-oig")]
    producer = make_producer(auditor, transactional_id=f"{PREFIX}hub.audit.oig", max_block_ms=10_000)
    try:  # so the auditor could not write audit records the way the hub does (one transaction) either
        with pytest.raises(TransactionalIdAuthorizationFailedError):
            producer.init_transactions()
    finally:
        producer.close()
    for other in ("agency-cacbp0100", "tf-best-tucson"):  # no record, no query
        with pytest.raises(AccessError, match="may not record queries"):
            record_query("test", "who-saw E-1", secured.as_(other))


def test_hub_audit_verify_runs_as_the_auditor_and_is_recorded_under_its_principal(secured):
    auditor = secured.as_("auditor-oig")
    verified = subprocess.run([*HUB, "audit", "verify"], capture_output=True, text=True, env=_cli_env(auditor),
                              timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 audit records verified, every chain intact" in verified.stdout
    queries = [Codec().decode(r.value) for r in read_topic(f"{PREFIX}audit.queries", secured.as_("hub"))[1:]]
    assert any((q.event_type, q.principal, q.detail) == (AuditEventType.AUDIT_QUERIED, "auditor-oig", "verify")
               for q in queries)
    refused = subprocess.run([*HUB, "audit", "verify"], capture_output=True, text=True,
                             env=_cli_env(secured.as_("agency-cacbp0100")), timeout=120)
    assert refused.returncode == 1 and "may not record queries" in refused.stderr, refused.stderr


@pytest.mark.parametrize("principal, topic", [
    ("agency-cacbp0100", "ingest.AZHSI0100"),  # another agency's ingest
    ("agency-cacbp0100", "feed.best-san-diego"),  # a feed
    ("agency-cacbp0100", "events.canonical"),  # the hub's own streams
    ("agency-cacbp0100", "alerts.control.AZHSI0100"),  # acting on alerts as another agency
    ("tf-best-san-diego", "feed.best-san-diego"),  # a task force only reads its feed
    ("tf-best-san-diego", "ingest.CACBP0100"),
    ("tf-best-san-diego", "alerts.control.CACBP0100"),
    ("auditor-oig", "audit"),  # an auditor records its queries, never the audit log itself
    ("auditor-oig", "audit.chain"),
    ("auditor-oig", "alerts.control.CACBP0100"),
])
def test_writes_outside_the_model_are_refused(secured, principal, topic):
    # not idempotent: a principal with no WRITE anywhere is refused one step earlier (see the next test)
    producer = make_producer(secured.as_(principal), max_block_ms=10_000, enable_idempotence=False, acks=1)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(PREFIX + topic, value=b"x").get(30)
    finally:
        producer.close()


def test_task_force_consumes_its_feed_with_its_own_group(secured):
    feed = f"{PREFIX}feed.best-san-diego"
    records = _read(secured.as_("tf-best-san-diego"), feed, unique(f"{feed}.analysts"))
    assert [r.value for r in records] == [b"routed"]
    assert _read(secured.as_("tf-best-tucson"), f"{PREFIX}feed.best-tucson", f"{PREFIX}feed.best-tucson")


def test_idempotent_producing_needs_write_on_some_topic(secured):
    """KIP-679: InitProducerId is allowed by WRITE on any topic, so only principals without one are refused."""
    producer = make_producer(secured.as_("tf-best-san-diego"), max_block_ms=10_000)
    try:
        with pytest.raises(KafkaError, match="ClusterAuthorizationFailedError"):
            producer.send(f"{PREFIX}feed.best-san-diego", value=b"x").get(30)
    finally:
        producer.close()


@pytest.mark.parametrize("principal, topic, may_describe", [
    ("tf-best-san-diego", "feed.best-tucson", False),  # another task force's feed
    ("tf-best-san-diego", "ingest.CACBP0100", False),
    ("agency-cacbp0100", "ingest.AZHSI0100", False),  # another agency's reports
    ("agency-cacbp0100", "agency.AZHSI0100", False),  # another agency's alerts and releases
    ("tf-best-san-diego", "agency.CACBP0100", False),
    ("auditor-oig", "agency.CACBP0100", False),
    ("agency-cacbp0100", "alerts.control.CACBP0100", True),  # it writes its actions, it does not read them
    ("agency-cacbp0100", "feed.best-san-diego", False),
    ("agency-cacbp0100", "audit", False),
    ("auditor-oig", "ingest.CACBP0100", False),  # an auditor reads the audit log, not the data it is about
    ("auditor-oig", "feed.best-san-diego", False),
    ("auditor-oig", "events.canonical", False),
    ("auditor-oig", "hub.keys", False),
    ("auditor-oig", "audit.queries", True),  # written, not read: the queries are in the chain it reads
])
def test_reads_outside_the_model_are_refused(secured, principal, topic, may_describe):
    consumer = make_consumer(settings=secured.as_(principal), group_id=None)
    partition = TopicPartition(PREFIX + topic, 0)
    try:
        if may_describe:  # offsets are visible; the fetch itself is refused
            assert consumer.end_offsets([partition])[partition] > 0
            consumer.assign([partition])
            consumer.seek(partition, 0)
            with pytest.raises(TopicAuthorizationFailedError):
                for _ in range(10):
                    assert not consumer.poll(timeout_ms=500)
        else:  # the topic is invisible; kafka-python then never routes a fetch, so no record can arrive
            with pytest.raises(TopicAuthorizationFailedError):
                consumer.end_offsets([partition])
            consumer.assign([partition])
            consumer.seek(partition, 0)
            assert not any(consumer.poll(timeout_ms=500) for _ in range(3))
    finally:
        consumer.close()


@pytest.mark.parametrize("group", [f"{PREFIX}feed.best-tucson", f"{PREFIX}feed.best-tucson.x",
                                   f"{PREFIX}feed.best-san-diegoX", f"{PREFIX}hub.dedup", "analysts"])
def test_task_force_cannot_use_other_groups(secured, group):
    with pytest.raises(GroupAuthorizationFailedError):
        _read(secured.as_("tf-best-san-diego"), f"{PREFIX}feed.best-san-diego", group)


def test_hub_runs_a_transactional_stage(secured):
    """Consume ingest, produce to the canonical stream and commit the offsets in one transaction, as the runner does."""
    hub = secured.as_("hub")
    seed = make_producer(secured.as_("agency-azhsi0100"))
    seed.send(f"{PREFIX}ingest.AZHSI0100", value=b"report").get(30)
    seed.close()
    group = f"{PREFIX}hub.dedup"
    consumer = make_consumer(f"{PREFIX}ingest.AZHSI0100", settings=hub, group_id=group)
    producer = make_producer(hub, transactional_id=f"{group}.0")
    try:
        producer.init_transactions()
        records: list = []
        for _ in range(20):
            records += [r for batch in consumer.poll(timeout_ms=500).values() for r in batch]
            if records:
                break
        assert records
        producer.begin_transaction()
        producer.send(f"{PREFIX}events.canonical", value=b"canonical")
        last = records[-1]
        offsets = {TopicPartition(last.topic, last.partition): OffsetAndMetadata(last.offset + 1, "", -1)}
        producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
        producer.commit_transaction()
    finally:
        producer.close()
        consumer.close()
    check = make_consumer(settings=hub, group_id=group)
    try:
        committed = check.committed(TopicPartition(f"{PREFIX}ingest.AZHSI0100", 0))
    finally:
        check.close()
    assert committed == records[-1].offset + 1


def test_hub_transactional_ids_and_groups_must_carry_its_prefix(secured):
    producer = make_producer(secured.as_("hub"), transactional_id=f"{PREFIX}other.0", max_block_ms=10_000)
    try:
        with pytest.raises(TransactionalIdAuthorizationFailedError):
            producer.init_transactions()
    finally:
        producer.close()
    with pytest.raises(GroupAuthorizationFailedError):
        _read(secured.as_("hub"), f"{PREFIX}events.canonical", f"{PREFIX}feed.best-tucson")


def test_hub_creates_and_verifies_its_topics(secured):
    hub = secured.as_("hub")
    wanted = [(name, spec) for name, spec in hub_topics(PREFIX, AGENCIES, ["dedup"]) if name not in TOPICS]
    assert {status.action for status in ensure_topics(wanted, hub)} == {"created"}
    assert {status.action for status in ensure_topics(wanted, hub)} == {"ok"}


def test_only_admin_manages_acls_and_topics(secured):
    hub = make_admin(secured.as_("hub"))
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            broker_acls(hub)
    finally:
        hub.close()
    agency = make_admin(secured.as_("agency-cacbp0100"))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            agency.create_topics([NewTopic(f"{PREFIX}ingest.NEW000000", 1, 1)])
    finally:
        agency.close()


def test_wrong_password_fails_authentication(secured):
    """Named as a refused login on the first try, never as an unreachable broker (see the next test for why it
    once was)."""
    settings = secured.as_("agency-cacbp0100", sasl_password="not-the-password", connect_timeout_s=6.0)
    with pytest.raises(AuthenticationFailedError) as refused:
        make_producer(settings)
    assert isinstance(refused.value.__cause__, SaslAuthenticationFailedError)


def test_bytes_that_arrive_with_the_brokers_close_are_not_dropped():
    """The broker answers a wrong password with its SaslAuthenticate error and closes the connection at once, so
    both often arrive in one read; kafka-python 3.0.12 dropped such bytes (hub/kafka.py hands them over first)."""
    from types import SimpleNamespace

    from kafka.errors import KafkaConnectionError
    from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport

    for transport in (KafkaTCPTransport, KafkaSSLTransport):
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        broker.sendall(b"SaslAuthenticate error")
        broker.close()
        connection = SimpleNamespace(_sock=ours)
        try:
            assert transport._sock_recv(connection) == (b"SaslAuthenticate error", None), transport
            data, closed = transport._sock_recv(connection)
            assert data == b"" and isinstance(closed, KafkaConnectionError), transport
        finally:
            ours.close()


def test_unauthenticated_client_gets_nothing(secured):
    settings = secured.admin.model_copy(update={"security_protocol": "SSL" if secured.broker.layout.tls else "PLAINTEXT",
                                                "sasl_username": None, "sasl_password": None, "connect_timeout_s": 2.0})
    with pytest.raises(KafkaUnavailableError):
        make_consumer(settings=settings, group_id=None)


def test_unknown_principal_has_no_credentials(secured):
    with pytest.raises(CredentialsMissingError):
        credentials_for("agency-zzzzz0000", secured.admin)


def test_apply_is_idempotent_and_removes_only_stale_rules_it_owns(secured):
    admin = secured.admin
    foreign = AclRule("auditor", "TOPIC", "LITERAL", f"{PREFIX}feed.best-tucson", "READ")
    other_prefix = AclRule("agency-cacbp0100", "TOPIC", "LITERAL", "u.ingest.CACBP0100", "WRITE")
    client = make_admin(admin)
    client.create_acls([foreign.to_kafka(), other_prefix.to_kafka()])
    client.close()
    try:
        again = apply_access(admin, PREFIX, AGENCIES, TASK_FORCES, auditors=AUDITORS)
        assert (again.created, again.deleted) == ([], [])
        assert {p.credential for p in again.principals} == {"kept"}

        shrunk = apply_access(admin, PREFIX, AGENCIES, ["best-san-diego"], auditors=AUDITORS)
        assert {r.principal for r in shrunk.deleted} == {"tf-best-tucson"} and len(shrunk.deleted) == 4
        assert {foreign, other_prefix} <= set(show_acls(admin))
        with pytest.raises(GroupAuthorizationFailedError):
            _read(secured.as_("tf-best-tucson"), f"{PREFIX}feed.best-tucson", f"{PREFIX}feed.best-tucson")
    finally:
        restored = apply_access(admin, PREFIX, AGENCIES, TASK_FORCES, auditors=AUDITORS)
        client = make_admin(admin)
        client.delete_acls([foreign.to_kafka(), other_prefix.to_kafka()])
        client.close()
    assert len(restored.created) == 4
    assert set(show_acls(admin)) == desired_acls(PREFIX, AGENCIES, TASK_FORCES, AUDITORS)


def test_hub_access_apply_audits_each_change_under_the_admin_principal(secured, tmp_path):
    """The real CLI, as the super user, exits 0 and leaves one audit record per change it made (a user created, ACLs
    created and deleted), each naming the authenticated principal; a run that changes nothing audits nothing."""
    admin = secured.admin
    newcomer = unique("gao")  # an auditor the broker has no user for yet
    directory = yaml.safe_load(DEFAULT_DIRECTORY.read_text())
    agencies = tmp_path / "agencies.yaml"
    agencies.write_text(yaml.safe_dump({"agencies": [a for a in directory["agencies"] if a["ori"] in AGENCIES]}))
    auditors = tmp_path / "auditors.yaml"
    auditors.write_text(yaml.safe_dump({"auditors": [{"name": name} for name in (*AUDITORS, newcomer)]}))
    command = [*HUB, "access", "apply", "--agencies", str(agencies), "--auditors", str(auditors),
               "--task-forces", TASK_FORCES[0]]  # drops the other unit: its ACLs go
    apply_access(admin, PREFIX, AGENCIES, TASK_FORCES, auditors=[])  # the CLI will add the auditor back
    before = desired_acls(PREFIX, AGENCIES, TASK_FORCES)
    after = desired_acls(PREFIX, AGENCIES, TASK_FORCES[:1], [*AUDITORS, newcomer])
    changes = sorted([f"user auditor-{newcomer}: SCRAM credential created",
                      *(f"ACL created: {rule}" for rule in after - before),
                      *(f"ACL deleted: {rule}" for rule in before - after)])

    def audited() -> list:
        codec = Codec()
        return [e for e in (codec.decode(r.value) for r in read_topic(f"{PREFIX}audit", admin)[1:])
                if e.event_type == AuditEventType.ACCESS_CHANGED]

    earlier = len(audited())
    try:
        applied = subprocess.run(command, capture_output=True, text=True, env=_cli_env(admin), timeout=120)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert f"ACLs created: {len(after - before)}, deleted: {len(before - after)}" in applied.stdout, applied.stdout
        events = audited()[earlier:]
        assert sorted(e.detail for e in events) == changes, "one audit record per change"
        assert {e.principal for e in events} == {admin.sasl_username}
        assert {e.subject_ids[0] for e in events} == {f"auditor-{newcomer}", f"auditor-{AUDITORS[0]}",
                                                     f"tf-{TASK_FORCES[1]}"}
        again = subprocess.run(command, capture_output=True, text=True, env=_cli_env(admin), timeout=120)
        assert again.returncode == 0 and "ACLs created: 0, deleted: 0" in again.stdout, again.stdout + again.stderr
        assert len(audited()) == earlier + len(changes), "nothing changed, nothing audited"
        assert {rule for rule in show_acls(admin) if in_scope(rule, PREFIX)} == after
    finally:
        apply_access(admin, PREFIX, AGENCIES, TASK_FORCES, auditors=AUDITORS)
    assert set(show_acls(admin)) == desired_acls(PREFIX, AGENCIES, TASK_FORCES, AUDITORS)


def test_explicit_password_is_set_on_the_broker(secured):
    apply_access(secured.admin, PREFIX, AGENCIES, TASK_FORCES, passwords={"tf-best-tucson": "chosen-by-the-unit"},
                 auditors=AUDITORS)
    settings = secured.as_("tf-best-tucson")
    assert settings.sasl_password == "chosen-by-the-unit"
    assert _read(settings, f"{PREFIX}feed.best-tucson", f"{PREFIX}feed.best-tucson.fresh")
    with pytest.raises(AccessConfigError):
        apply_access(secured.admin, PREFIX, AGENCIES, TASK_FORCES, passwords={"mallory": "x"})


def test_tls_listener_presents_the_generated_ca(secured):
    layout = secured.broker.layout
    if not layout.tls:
        pytest.skip("plain SASL variant")
    ca = Path(secured.admin.ssl_cafile)
    host, port = layout.bootstrap_servers.split(",")[0].split(":")
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    untrusted = secured.as_("agency-cacbp0100", ssl_cafile=None, connect_timeout_s=2.0)
    with pytest.raises(KafkaUnavailableError):  # the system CAs do not know the local CA
        make_producer(untrusted)


def test_the_subscriber_sdk_reads_its_own_feed_as_the_unit(secured):
    import time
    from datetime import datetime, timedelta, timezone

    from consumers.subscriber import Subscriber
    from schemas.codec import Codec
    from tests.test_routing import routed
    from tests.test_sharing import canonical, event

    record = canonical(event("CACBP0100", port="SAN_YSIDRO"))
    [item] = [o.value for o in routed(record) if o.topic == "feed.best-san-diego"]
    since = datetime.now(timezone.utc) + timedelta(milliseconds=1)  # after the fixture's raw "routed" record
    time.sleep(0.01)
    producer = make_producer(secured.as_("hub"))
    producer.send(f"{PREFIX}feed.best-san-diego", key=b"k", value=Codec().encode(item)).get(30)
    producer.close()
    unit = secured.as_("tf-best-san-diego").model_copy(update={"topic_prefix": PREFIX})
    with Subscriber("best-san-diego", unit, start=since) as subscriber:
        assert [i.item_id for i in subscriber.items(idle_s=1)] == [item.item_id]
    with Subscriber("best-san-diego", unit) as again:  # the group committed: nothing new
        assert list(again.items(idle_s=1)) == []

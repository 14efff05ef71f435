"""The red-team matrix: every principal kind against every topic kind and every operation, allowed or refused exactly
as the access model says (hub/access.py), on a real broker with SCRAM and with SCRAM over TLS.

The client is independent of the hub's: librdkafka, through confluent-kafka, acting as each principal. kafka-python,
the hub's own client, cross-checks topic administration (tests/test_access.py covers its reads, writes, groups and
transactions). What each cell should do is derived from the model alone, ``desired_acls`` read with Kafka's ACL rules
(:func:`model_allows`), never from what the broker did: a change to the model, to the broker or to how access is
applied that opens or closes a door fails here, listing every cell that differs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import (
    Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, Producer, TopicCollection, TopicPartition,
)
from confluent_kafka.admin import (
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, AlterConfigOpType, ConfigEntry,
    ConfigResource, NewTopic, OffsetSpec, ResourcePatternType, ResourceType,
)
from kafka.admin import ConfigResource as KafkaPythonConfigResource, ConfigResourceType
from kafka.admin import NewTopic as KafkaPythonNewTopic

from hub.access import CLUSTER, desired_acls
from hub.credentials import new_password
from hub.kafka import make_admin
from hub.settings import HubSettings
from schemas.topics import (
    ALERT_CONTROL, AUDIT, AUDIT_CHAIN, AUDIT_QUERIES, CANONICAL, FEED, INGEST, INGESTED, KEYS, REGISTRY,
    changelog_topic, deadletter_topic,
)
from tests.test_access import AGENCIES, AUDITORS, PREFIX, TASK_FORCES, Secured, secured  # noqa: F401 (a fixture)

AGENCY, OTHER_AGENCY = AGENCIES
UNIT, OTHER_UNIT = TASK_FORCES
MODEL = desired_acls(PREFIX, AGENCIES, TASK_FORCES, AUDITORS)

#: One topic of every kind; "own" and "other" are AGENCY's and UNIT's against the other agency's and unit's.
TOPICS = [INGEST.name(PREFIX, ori=AGENCY), INGEST.name(PREFIX, ori=OTHER_AGENCY), INGESTED.name(PREFIX, ori=AGENCY),
          CANONICAL.name(PREFIX), FEED.name(PREFIX, unit=UNIT), FEED.name(PREFIX, unit=OTHER_UNIT),
          ALERT_CONTROL.name(PREFIX, ori=AGENCY), ALERT_CONTROL.name(PREFIX, ori=OTHER_AGENCY),
          AUDIT.name(PREFIX), AUDIT_CHAIN.name(PREFIX), AUDIT_QUERIES.name(PREFIX), KEYS.name(PREFIX),
          PREFIX + changelog_topic("dedup"), PREFIX + deadletter_topic("dedup"), REGISTRY.name(PREFIX)]
NEW_TOPICS = [f"{PREFIX}redteam.new", "redteam.new"]  # inside and outside the hub's prefix
#: A unit's own groups, a name its prefix must not cover, another unit's group, the stages' and a replay's groups.
GROUPS = [f"{PREFIX}feed.{UNIT}", f"{PREFIX}feed.{UNIT}.analysts", f"{PREFIX}feed.{UNIT}X",
          f"{PREFIX}feed.{OTHER_UNIT}", f"{PREFIX}hub.dedup", f"{PREFIX}replay.redteam.dedup", "analysts"]
TRANSACTIONAL_IDS = [f"{PREFIX}hub.dedup.0", f"{PREFIX}replay.redteam.dedup.0", f"{PREFIX}feed.{UNIT}.0", "hub.dedup.0"]
PROBE_ACL = AclBinding(ResourceType.TOPIC, f"{PREFIX}redteam.probe", ResourcePatternType.LITERAL, "User:redteam-probe",
                       "*", AclOperation.READ, AclPermissionType.ALLOW)
PROBE_ACL_FILTER = AclBindingFilter(ResourceType.TOPIC, f"{PREFIX}redteam.probe", ResourcePatternType.LITERAL,
                                    "User:redteam-probe", None, AclOperation.ANY, AclPermissionType.ANY)
EVERY_ACL = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                             AclPermissionType.ANY)
WAIT_S = 30.0
QUIET = logging.getLogger("tests.redteam.librdkafka")  # librdkafka's own log lines: the outcomes say what matters
QUIET.disabled = True
# A producer whose transactional id was refused still tries to abort when it is closed, and says so.
pytestmark = pytest.mark.filterwarnings("ignore:Producer abort_transaction failed during close:RuntimeWarning")


@dataclass(frozen=True)
class Kind:
    """A principal kind as a client logs in: its SCRAM user, a topic it may read (its group joins subscribe to it)
    and whether its credentials are the ones ``hub access apply`` set."""

    user: str
    home: str
    credentials: str = "own"  # "own", "wrong password" or "unknown user"


KINDS = {
    "hub": Kind("hub", CANONICAL.name(PREFIX)),
    "agency": Kind(f"agency-{AGENCY.lower()}", INGEST.name(PREFIX, ori=AGENCY)),
    "task-force": Kind(f"tf-{UNIT}", FEED.name(PREFIX, unit=UNIT)),
    "auditor": Kind(f"auditor-{AUDITORS[0]}", AUDIT.name(PREFIX)),
    "unknown-user": Kind("agency-zzzzz0000", INGEST.name(PREFIX, ori=AGENCY), "unknown user"),
    "wrong-password": Kind(f"agency-{AGENCY.lower()}", INGEST.name(PREFIX, ori=AGENCY), "wrong password"),
}


# -- the model, read as Kafka's StandardAuthorizer reads ACLs -----------------------------------------------------
Permission = tuple[str, str, str]  # (resource type, resource name, operation)
#: An ALLOW of any of these operations also allows the key (Kafka's implicit DESCRIBE and DESCRIBE_CONFIGS).
IMPLIED_BY = {"DESCRIBE": {"READ", "WRITE", "DELETE", "ALTER"}, "DESCRIBE_CONFIGS": {"ALTER_CONFIGS"}}


def model_allows(user: str, resource_type: str, name: str, operation: str) -> bool:
    """Whether the model's ACLs let ``user`` do ``operation`` on a resource: a matching DENY wins, else any matching
    ALLOW of the operation, of ALL, or of one that implies it. LITERAL rules match the name or ``*``, PREFIXED ones
    any name they start."""
    def matching(permission: str, operations: set[str]) -> bool:
        return any(rule.principal == user and rule.resource_type == resource_type and rule.permission == permission
                   and rule.operation in operations
                   and (name.startswith(rule.name) if rule.pattern == "PREFIXED" else rule.name in (name, "*"))
                   for rule in MODEL)

    if matching("DENY", {operation, "ALL"}):
        return False
    return matching("ALLOW", {operation, "ALL", *IMPLIED_BY.get(operation, ())})


@dataclass(frozen=True)
class Cell:
    """One operation on one resource; allowed when every need is granted, a need being met by any one of its
    permissions (creating a topic: CREATE on the topic or on the cluster)."""

    operation: str
    resource: str
    needs: tuple[tuple[Permission, ...], ...]

    def expected(self, kind: Kind) -> str:
        authenticated = kind.credentials == "own"
        allowed = authenticated and all(any(model_allows(kind.user, *p) for p in need) for need in self.needs)
        return ALLOWED if allowed else REFUSED

    @property
    def key(self) -> tuple[str, str]:
        return self.operation, self.resource


def cell(operation: str, resource: str, *needs: Permission | tuple[Permission, ...]) -> Cell:
    return Cell(operation, resource, tuple(need if isinstance(need[0], tuple) else (need,) for need in needs))


def row_of(kind: Kind) -> list[Cell]:
    """Every cell of one principal kind's row of the matrix, with what each operation needs from the ACLs."""
    cells = []
    for topic in TOPICS:
        cells += [cell("produce", topic, ("TOPIC", topic, "WRITE")),
                  cell("read", topic, ("TOPIC", topic, "READ")),
                  cell("describe", topic, ("TOPIC", topic, "DESCRIBE")),
                  cell("describe configs", topic, ("TOPIC", topic, "DESCRIBE_CONFIGS")),
                  cell("alter configs", topic, ("TOPIC", topic, "ALTER_CONFIGS")),
                  cell("delete", topic, ("TOPIC", topic, "DELETE"))]
    for topic in TOPICS + NEW_TOPICS:
        cells.append(cell("create", topic, (("TOPIC", topic, "CREATE"), ("CLUSTER", CLUSTER, "CREATE"))))
    for group in GROUPS:
        cells.append(cell("join group", group, ("GROUP", group, "READ"), ("TOPIC", kind.home, "DESCRIBE")))
        cells += [cell(f"commit offsets as {group}", topic, ("GROUP", group, "READ"), ("TOPIC", topic, "READ"))
                  for topic in TOPICS]
    cells += [cell("init transactions", tid, ("TRANSACTIONAL_ID", tid, "WRITE")) for tid in TRANSACTIONAL_IDS]
    cells += [cell("create ACL", "cluster", ("CLUSTER", CLUSTER, "ALTER")),
              cell("delete ACLs", "cluster", ("CLUSTER", CLUSTER, "ALTER")),
              cell("describe ACLs", "cluster", ("CLUSTER", CLUSTER, "DESCRIBE"))]
    return cells


def test_the_model_reads_as_kafka_does():
    """The reading of the model the matrix relies on, on rules whose meaning is not in doubt."""
    assert model_allows(f"agency-{AGENCY.lower()}", "TOPIC", INGEST.name(PREFIX, ori=AGENCY), "DESCRIBE")  # implied by WRITE
    assert not model_allows(f"agency-{AGENCY.lower()}", "TOPIC", INGEST.name(PREFIX, ori=OTHER_AGENCY), "DESCRIBE")
    assert model_allows("hub", "TOPIC", f"{PREFIX}anything", "DELETE")  # ALL on the prefix
    assert not model_allows("hub", "TOPIC", "anything", "DELETE")
    assert model_allows(f"tf-{UNIT}", "GROUP", f"{PREFIX}feed.{UNIT}.x", "READ")
    assert not model_allows(f"tf-{UNIT}", "GROUP", f"{PREFIX}feed.{UNIT}X", "READ")
    assert not model_allows("hub", "CLUSTER", CLUSTER, "DESCRIBE")  # IDEMPOTENT_WRITE implies nothing
    row = row_of(KINDS["agency"])
    assert len({c.key for c in row}) == len(row), "every cell is tried once"


# -- librdkafka as each principal ---------------------------------------------------------------------------------
ALLOWED, REFUSED = "allowed", "refused"
REFUSALS = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


@dataclass(frozen=True)
class Outcome:
    verdict: str  # ALLOWED, REFUSED, or anything else: neither, which never matches the model
    detail: str = ""


def outcome_of(error: KafkaError | None, *, also_allowed: tuple[int, ...] = ()) -> Outcome:
    """An operation's result: done (or an error only an authorized request gets) is allowed, an authentication or
    authorization error refused, anything else unclear."""
    if error is None or error.code() in also_allowed:
        return Outcome(ALLOWED, error.name() if error else "")
    if error.code() in REFUSALS:
        return Outcome(REFUSED, error.name())
    return Outcome("unclear", f"{error.name()}: {error.str()}")


LOGIN_REFUSED = Outcome(REFUSED, "the broker refused the login")
NO_ANSWER = Outcome("unclear", f"no answer within {WAIT_S:.0f} s")


class Login:
    """One principal's librdkafka clients. Notices when the broker refuses the credentials (nothing can be done
    after that), so every wait ends there, never at a timeout."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.refused = threading.Event()

    def config(self, **extra: Any) -> dict[str, Any]:
        s = self.settings
        config = {"bootstrap.servers": s.bootstrap_servers, "security.protocol": s.security_protocol,
                  "sasl.mechanisms": s.sasl_mechanism, "sasl.username": s.sasl_username,
                  "sasl.password": s.sasl_password, "client.id": "redteam", "logger": QUIET,
                  "error_cb": self._on_error, "reconnect.backoff.max.ms": 1000}
        return config | ({"ssl.ca.location": str(s.ssl_cafile)} if s.ssl_cafile else {}) | extra

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            self.refused.set()

    def wait(self, done: Callable[[], bool], serve: Callable[[float], Any]) -> bool:
        """Serve a client's callbacks until ``done()`` (True), the login is refused or time runs out (False)."""
        deadline = time.monotonic() + WAIT_S
        while not done():
            if self.refused.is_set() or time.monotonic() > deadline:
                return False
            serve(0.1)
        return True

    def unresolved(self) -> Outcome:
        return LOGIN_REFUSED if self.refused.is_set() else NO_ANSWER


Outcomes = dict[tuple[str, str], Outcome]


def try_admin_operations(login: Login) -> Outcomes:
    """Describe, configure and create (validate-only) every topic kind, commit offsets for every group on every topic
    kind (OffsetCommit, as a consumer does), and create, list and delete ACLs: one admin client, every request
    in flight at once."""
    admin = AdminClient(login.config())
    pending: dict[tuple[str, str], tuple[Any, Callable[[Any], Outcome]]] = {}

    def failure(future: Any) -> KafkaError | None:
        return future.exception().args[0] if future.exception() else None

    def plain(future: Any) -> Outcome:
        return outcome_of(failure(future))

    for topic, future in admin.describe_topics(TopicCollection(TOPICS), request_timeout=WAIT_S).items():
        pending["describe", topic] = future, plain
    for resource, future in admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in TOPICS],
                                                   request_timeout=WAIT_S).items():
        pending["describe configs", resource.name] = future, plain
    retention = [ConfigEntry("retention.ms", "604800000", incremental_operation=AlterConfigOpType.SET)]
    for resource, future in admin.incremental_alter_configs(
            [ConfigResource(ResourceType.TOPIC, t, incremental_configs=retention) for t in TOPICS],
            validate_only=True, request_timeout=WAIT_S).items():
        pending["alter configs", resource.name] = future, plain
    for topic, future in admin.create_topics([NewTopic(t, 1, 1) for t in TOPICS + NEW_TOPICS], validate_only=True,
                                             request_timeout=WAIT_S).items():
        # the broker checks CREATE before it looks: "already exists" answers an authorized request
        pending["create", topic] = future, lambda f: outcome_of(failure(f), also_allowed=(
            KafkaError.TOPIC_ALREADY_EXISTS,))
    for group in GROUPS:
        [future] = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(t, 0, 0) for t in TOPICS])],
            request_timeout=WAIT_S).values()
        pending[f"commit offsets as {group}", "*"] = future, plain  # replaced below by one outcome per topic
    pending["create ACL", "cluster"] = admin.create_acls([PROBE_ACL], request_timeout=WAIT_S)[PROBE_ACL], plain
    [deleted] = admin.delete_acls([PROBE_ACL_FILTER], request_timeout=WAIT_S).values()
    pending["delete ACLs", "cluster"] = deleted, plain
    # librdkafka reports a refused DescribeAcls as an empty list: what counts is whether it disclosed the ACLs
    pending["describe ACLs", "cluster"] = admin.describe_acls(EVERY_ACL, request_timeout=WAIT_S), lambda f: (
        plain(f) if failure(f) else Outcome(ALLOWED) if f.result() else Outcome(REFUSED, "no ACL disclosed"))

    login.wait(lambda: all(future.done() for future, _ in pending.values()), admin.poll)
    outcomes: Outcomes = {}
    for (operation, resource), (future, judge) in pending.items():
        if not future.done():
            outcome = login.unresolved()
        elif operation.startswith("commit offsets") and not failure(future):
            outcomes |= {(operation, tp.topic): outcome_of(tp.error) for tp in future.result().topic_partitions}
            continue
        else:
            outcome = judge(future)
        if operation.startswith("commit offsets"):  # the whole request failed: so did every topic's commit
            outcomes |= {(operation, topic): outcome for topic in TOPICS}
        else:
            outcomes[operation, resource] = outcome
    return outcomes


def try_deleting_topics(login: Login) -> Outcomes:
    """Delete every topic kind (last in a row: where the model allows it, the topics are really gone)."""
    admin = AdminClient(login.config())
    futures = admin.delete_topics(TOPICS, operation_timeout=WAIT_S, request_timeout=WAIT_S)
    login.wait(lambda: all(f.done() for f in futures.values()), admin.poll)
    return {("delete", topic): outcome_of(f.exception().args[0] if f.exception() else None) if f.done()
            else login.unresolved() for topic, f in futures.items()}


def try_producing(login: Login) -> Outcomes:
    """One record to every topic kind, without idempotence (that needs WRITE on some topic, tested in test_access)."""
    producer = Producer(login.config(**{"enable.idempotence": False, "acks": 1,
                                        "message.timeout.ms": int(WAIT_S * 1000)}))
    outcomes: Outcomes = {}

    def delivered(error: KafkaError | None, message: Any) -> None:
        if error is None or error.code() not in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            outcomes["produce", message.topic()] = outcome_of(error)

    for topic in TOPICS:
        producer.produce(topic, value=b"red team", on_delivery=delivered)
    login.wait(lambda: len(outcomes) == len(TOPICS), producer.poll)
    producer.purge()
    producer.flush(1)
    return {("produce", topic): outcomes.get(("produce", topic)) or login.unresolved() for topic in TOPICS}


def try_reading(login: Login) -> Outcomes:
    """Fetch every topic kind from the start without a consumer group, as ``hub audit`` and ``--drain`` read.

    A topic the principal may not describe is missing from its metadata, so no client can even address a fetch to
    it: asked for by name, the broker refuses it. The others are fetched until a record or a refusal arrives."""
    consumer = Consumer(login.config(**{"group.id": f"{PREFIX}redteam.reader", "enable.auto.commit": False,
                                        "enable.auto.offset.store": False}))
    outcomes: Outcomes = {}
    try:
        listed: list[set[str]] = []

        def list_topics(_: float) -> None:
            try:
                listed.append(set(consumer.list_topics(timeout=1).topics))
            except KafkaException:
                consumer.poll(0)  # serves the error callback that may say why

        if not login.wait(lambda: bool(listed), list_topics):
            return {("read", topic): login.unresolved() for topic in TOPICS}
        [visible] = listed
        for topic in set(TOPICS) - visible:
            error = consumer.list_topics(topic, timeout=10).topics[topic].error
            outcomes["read", topic] = outcome_of(error) if error else Outcome("unclear", "listed only by name")
        consumer.assign([TopicPartition(topic, 0, 0) for topic in TOPICS if topic in visible])

        def serve(timeout: float) -> None:
            message = consumer.poll(timeout)
            if message is None or ("read", message.topic()) in outcomes:
                return
            if message.error() is None:
                outcomes["read", message.topic()] = Outcome(ALLOWED)
            elif message.topic() and message.error().code() in REFUSALS:  # others (coordinator lookups) say nothing
                outcomes["read", message.topic()] = outcome_of(message.error())

        login.wait(lambda: len(outcomes) == len(TOPICS), serve)
    finally:
        consumer.close()
    return {("read", topic): outcomes.get(("read", topic)) or login.unresolved() for topic in TOPICS}


def try_joining(login: Login, group: str, topic: str) -> Outcomes:
    """Join ``group`` subscribed to ``topic`` (JoinGroup and SyncGroup): allowed once partitions are assigned."""
    assigned = threading.Event()
    refusal: list[KafkaError] = []
    consumer = Consumer(login.config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.subscribe([topic], on_assign=lambda _consumer, _partitions: assigned.set())

        def serve(timeout: float) -> None:
            message = consumer.poll(timeout)
            if message is not None and message.error() and message.error().code() in REFUSALS:
                refusal.append(message.error())

        login.wait(lambda: assigned.is_set() or bool(refusal), serve)
    finally:
        consumer.close()
    outcome = Outcome(ALLOWED) if assigned.is_set() else outcome_of(refusal[0]) if refusal else login.unresolved()
    return {("join group", group): outcome}


def try_transactional_id(login: Login, transactional_id: str) -> Outcomes:
    """InitProducerId for ``transactional_id``, as a stage's transactional producer starts."""
    producer = Producer(login.config(**{"transactional.id": transactional_id}))
    result: list[Outcome] = []

    def serve(_: float) -> None:
        try:
            producer.init_transactions(0.5)
            result.append(Outcome(ALLOWED))
        except KafkaException as exc:
            if exc.args[0].retriable():
                producer.poll(0)  # serves the error callback that may say the login was refused
            else:
                result.append(outcome_of(exc.args[0]))

    login.wait(lambda: bool(result), serve)
    return {("init transactions", transactional_id): result[0] if result else login.unresolved()}


def try_row(login: Login, kind: Kind) -> Outcomes:
    """Every cell of a row: all at once, then group joins (they must not meet the offset commits of their group),
    then deletions."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes: Outcomes = {}
        first = [pool.submit(try_admin_operations, login), pool.submit(try_producing, login),
                 pool.submit(try_reading, login), *(pool.submit(try_transactional_id, login, tid)
                                                    for tid in TRANSACTIONAL_IDS)]
        for future in first:
            outcomes |= future.result()
        for joined in [pool.submit(try_joining, login, group, kind.home) for group in GROUPS]:
            outcomes |= joined.result()
    return outcomes | try_deleting_topics(login)


# -- the broker under test ---------------------------------------------------------------------------------------
@dataclass
class Matrix:
    secured: Secured

    @property
    def mode(self) -> str:
        return "SCRAM over TLS" if self.secured.broker.layout.tls else "SCRAM"

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.secured.broker.layout.tls else "SASL_PLAINTEXT"

    def settings(self, kind: Kind) -> HubSettings:
        if kind.credentials == "unknown user":
            return self.secured.as_("hub", sasl_username=kind.user, sasl_password=new_password())
        if kind.credentials == "wrong password":
            return self.secured.as_(kind.user, sasl_password=new_password())
        return self.secured.as_(kind.user)

    def restore_topics(self) -> None:
        """Create and seed, as the super user, every topic of the matrix that is missing or empty (a row may have
        deleted them), so that every read has a record to find."""
        login = Login(self.secured.admin)
        admin = AdminClient(login.config())
        producer = Producer(login.config(**{"acks": "all", "message.timeout.ms": 5000}))
        deadline = time.monotonic() + 2 * WAIT_S
        try:
            while unready := [topic for topic in TOPICS if not has_record(admin, topic)]:
                assert time.monotonic() < deadline, f"could not restore {unready}"
                absent = sorted(set(unready) - set(admin.list_topics(timeout=10).topics))
                for created in (admin.create_topics([NewTopic(t, 1, 1) for t in absent]) if absent else {}).values():
                    created.exception()  # a deletion still settling refuses it: the next round tries again
                for topic in sorted(set(unready) - set(absent)):
                    producer.produce(topic, value=b"seed")
                producer.flush(10)
                time.sleep(0.2)
        finally:
            producer.flush(10)

    def warm_coordinators(self) -> None:
        """Create the offsets and transaction-state topics now, so that no cell waits for them."""
        admin = AdminClient(Login(self.secured.admin).config())  # kept: its futures die with it
        [committed] = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(f"{PREFIX}redteam.warm-up", [TopicPartition(TOPICS[0], 0, 0)])]).values()
        committed.result(WAIT_S)
        producer = Producer(Login(self.secured.as_("hub")).config(**{"transactional.id": f"{PREFIX}hub.warm-up"}))
        producer.init_transactions(WAIT_S)


def has_record(admin: AdminClient, topic: str) -> bool:
    [end] = admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.latest()}, request_timeout=10).values()
    try:
        return end.result().offset > 0
    except KafkaException:  # gone, or not yet known to the broker
        return False


@pytest.fixture(scope="module")
def matrix(secured: Secured) -> Iterator[Matrix]:
    matrix = Matrix(secured)
    matrix.restore_topics()
    matrix.warm_coordinators()
    yield matrix


# -- the matrix --------------------------------------------------------------------------------------------------
def mismatches(kind: Kind, cells: list[Cell], outcomes: Outcomes) -> list[str]:
    found = []
    for c in cells:
        outcome = outcomes.get(c.key, Outcome("untried"))
        if outcome.verdict != c.expected(kind):
            detail = f" ({outcome.detail})" if outcome.detail else ""
            found.append(f"  {c.operation} {c.resource}: the model says {c.expected(kind)}, the broker: "
                         f"{outcome.verdict}{detail}")
    return found


@pytest.mark.kafka
@pytest.mark.parametrize("kind_name", list(KINDS))
def test_each_principal_kind_may_do_exactly_what_the_model_allows(matrix, kind_name):
    """One row of the matrix, through librdkafka: every mismatch at once."""
    kind = KINDS[kind_name]
    cells = row_of(kind)
    login = Login(matrix.settings(kind))
    assert login.settings.security_protocol == matrix.protocol
    try:
        outcomes = try_row(login, kind)
    finally:
        matrix.restore_topics()  # the hub may delete them all
    # A refused login refuses every cell: it must be the broker's answer to bad credentials, and only to those.
    assert login.refused.is_set() == (kind.credentials != "own"), f"login refused: {login.refused.is_set()}"
    wrong = mismatches(kind, cells, outcomes)
    assert not wrong, (f"{kind_name} ({kind.user}, {kind.credentials} credentials) over {matrix.mode}: {len(wrong)} of "
                       f"{len(cells)} cells differ from the model:\n" + "\n".join(wrong))


@pytest.mark.kafka
def test_kafka_python_agrees_on_topic_administration(matrix):
    """The hub's own client on the cells tests/test_access.py leaves to this file: altering configs and creating every
    topic kind (validate-only), and deleting it where the model refuses that (an allowed deletion is the hub's, and
    would really delete: the librdkafka row covers it)."""
    wrong = []
    for kind_name in ("hub", "agency", "task-force", "auditor"):
        kind = KINDS[kind_name]
        expected = {c.key: c.expected(kind) for c in row_of(kind)}
        admin = make_admin(matrix.settings(kind))
        try:
            altered = admin.alter_configs(
                [KafkaPythonConfigResource(ConfigResourceType.TOPIC, t, configs={"retention.ms": "604800000"})
                 for t in TOPICS], validate_only=True, raise_on_unknown=False, incremental=True)["topic"]
            created = admin.create_topics([KafkaPythonNewTopic(t, 1, 1) for t in TOPICS], validate_only=True,
                                          raise_errors=False)["topics"]
            deletable = [t for t in TOPICS if expected["delete", t] == REFUSED]
            deleted = admin.delete_topics(deletable, raise_errors=False)["topics"] if deletable else []
        finally:
            admin.close()
        seen = {("alter configs", name): ALLOWED if result == "OK" else
                REFUSED if "TopicAuthorizationFailedError" in result else result for name, result in altered.items()}
        seen |= {("create", t["name"]): {0: ALLOWED, 36: ALLOWED, 29: REFUSED}.get(t["error_code"], str(t))
                 for t in created}
        seen |= {("delete", t["name"]): {0: ALLOWED, 29: REFUSED}.get(t["error_code"], str(t)) for t in deleted}
        wrong += [f"  {kind_name} {operation} {topic}: the model says {expected[operation, topic]}, kafka-python saw "
                  f"{verdict}" for (operation, topic), verdict in sorted(seen.items())
                  if verdict != expected[operation, topic]]
        assert len(seen) == 2 * len(TOPICS) + len(deletable), f"{kind_name}: a cell went unanswered: {sorted(seen)}"
    matrix.restore_topics()
    assert not wrong, f"over {matrix.mode}, kafka-python saw {len(wrong)} cells differ from the model:\n" + "\n".join(
        wrong)

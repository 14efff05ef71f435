"""Broker-enforced access: who may touch which topic, group and transaction, as SCRAM users and Kafka ACLs.

The model (least privilege; the broker refuses everything no rule allows):

- ``hub``, the service principal running every stage: ALL on topics prefixed ``{prefix}`` (it reads ingest,
  writes the derived streams and feeds, creates topics), on consumer groups and transactional ids prefixed
  ``{prefix}hub.`` (the runner's ``{prefix}hub.<stage>`` groups and ``{prefix}hub.<stage>.<n>`` transactional
  ids) and ``{prefix}replay.`` (a replay's stages run under ``{prefix}replay.<namespace>.``), and IDEMPOTENT_WRITE on the cluster (kept explicit, though WRITE on its topics would do). No CREATE or
  DESCRIBE on the cluster: ALL on its prefix already lets it create its topics, cluster CREATE would let it
  create any topic, and cluster DESCRIBE would show it every ACL and consumer group.
- ``agency-{ori}`` (the ORI in lower case), one per publishing agency: WRITE, DESCRIBE and READ on its own ``{prefix}ingest.{ORI}``
  (``hub publish --drain`` reads it back by assigning partitions, without a consumer group, so no GROUP rule),
  and WRITE and DESCRIBE on its own ``{prefix}alerts.control.{ORI}`` (``hub alerts ack|resolve``: the alerts
  stage takes the acting agency from that topic's name), and READ and DESCRIBE on its own ``{prefix}agency.{ORI}``
  (its alerts and its records' releases, read by assigning partitions). Idempotent producing needs no cluster ACL:
  since Kafka 3.0 (KIP-679) WRITE on any topic allows InitProducerId.
- ``tf-{unit}``, one per BEST task force: READ and DESCRIBE on its own ``{prefix}feed.{unit}``, READ on the
  consumer group named ``{prefix}feed.{unit}`` and on groups prefixed ``{prefix}feed.{unit}.``. The dot keeps
  ``tf-best-tucson`` out of ``tf-best-tucson-west``'s groups, which a bare ``feed.{unit}`` prefix would not.
- ``auditor-{name}``, one per auditor of ``deploy/auditors.yaml``: READ and DESCRIBE on ``{prefix}audit``,
  ``{prefix}audit.chain`` and ``{prefix}audit.checkpoints`` (read by assigning partitions, no group), WRITE and
  DESCRIBE on ``{prefix}audit.queries``, where ``hub audit`` records each of its queries before running it (CJIS: access to
  the audit log is audited). That record is one message from an idempotent producer, not a transaction, so the
  auditor needs no transactional id (KIP-679 again: WRITE on the topic allows InitProducerId). Nothing else: it
  cannot write ``audit``, and the seal stage refuses anything but audit queries on ``audit.queries``. The
  auditors share that topic, so the principal an auditor's query names is its own word, not the broker's.

Principals are cluster-wide while ACLs name prefixed resources, so :func:`apply_access` manages an ACL when its
principal follows the naming above and its resource is the cluster or a name under ``prefix``; anything else
(other users, other prefixes) is left alone. SCRAM credentials are created but never deleted: a principal
dropped from the lists loses its ACLs, which already leaves it nothing to do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kafka.admin import (
    ACL, ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient, ResourcePattern,
    ResourcePatternFilter, ResourceType, ScramMechanism, UserScramCredentialUpsertion,
)
from kafka.errors import KafkaError, SecurityDisabledError
import yaml

from hub.auditing import audit_event
from hub.credentials import load_passwords, new_password, save_passwords
from hub.exceptions import AccessConfigError, AccessError, CredentialsMissingError
from hub.kafka import make_admin
from hub.settings import REPO_ROOT, HubSettings, get_settings
from schemas.models import ORI_PATTERN, AuditEvent, AuditEventType
from schemas.topics import (
    AGENCY_FEED, ALERT_CONTROL, AUDIT, AUDIT_CHAIN, AUDIT_CHECKPOINTS, AUDIT_QUERIES, FEED, INGEST,
)

HUB = "hub"
AGENCY = "agency-"
TASK_FORCE = "tf-"
AUDITOR = "auditor-"
CLUSTER = "kafka-cluster"
MECHANISM = "SCRAM-SHA-512"
UNIT_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
PASSWORDS_FILE = "principals.json"
DEFAULT_AUDITORS = REPO_ROOT / "deploy" / "auditors.yaml"

ResourceKind = Literal["TOPIC", "GROUP", "TRANSACTIONAL_ID", "CLUSTER"]
PatternKind = Literal["LITERAL", "PREFIXED"]
Operation = Literal["ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "CLUSTER_ACTION",
                    "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE", "CREATE_TOKENS", "DESCRIBE_TOKENS"]


@dataclass(frozen=True, order=True)
class AclRule:
    """One Kafka ACL in plain words; ``principal`` is the SCRAM user name (``User:`` is added on the wire)."""

    principal: str
    resource_type: ResourceKind
    pattern: PatternKind
    name: str
    operation: Operation
    permission: Literal["ALLOW", "DENY"] = "ALLOW"
    host: str = "*"

    def __str__(self) -> str:
        return (f"{self.permission} {self.principal} {self.operation} on {self.resource_type} {self.pattern} "
                f"{self.name}" + (f" from {self.host}" if self.host != "*" else ""))

    def to_kafka(self) -> ACL:
        return ACL(f"User:{self.principal}", self.host, ACLOperation[self.operation],
                   ACLPermissionType[self.permission],
                   ResourcePattern(ResourceType[self.resource_type], self.name, ACLResourcePatternType[self.pattern]))

    @classmethod
    def from_kafka(cls, acl: ACL) -> AclRule | None:
        """The rule for a broker ACL, or None for one whose principal is not a ``User:``."""
        kind, _, user = acl.principal.partition(":")
        if kind != "User":
            return None
        pattern = acl.resource_pattern
        return cls(user, pattern.resource_type.name, pattern.pattern_type.name, pattern.resource_name,
                   acl.operation.name, acl.permission_type.name, acl.host)


def agency_principal(ori: str) -> str:
    """``agency-cacbp0100``: lower case, because a Kubernetes name is (Strimzi names a SCRAM user after its
    KafkaUser resource), and Kafka principals are case-sensitive."""
    return f"{AGENCY}{ori.lower()}"


def task_force_principal(unit_id: str) -> str:
    return f"{TASK_FORCE}{unit_id}"


def auditor_principal(name: str) -> str:
    return f"{AUDITOR}{name}"


def principals(agencies: list[str], task_forces: list[str], auditors: list[str] = ()) -> list[str]:
    """Every principal the model names, hub first."""
    return [HUB, *map(agency_principal, agencies), *map(task_force_principal, task_forces),
            *map(auditor_principal, auditors)]


def is_managed(principal: str) -> bool:
    return principal == HUB or principal.startswith((AGENCY, TASK_FORCE, AUDITOR))


def _check_names(agencies: list[str], task_forces: list[str], auditors: list[str] = ()) -> None:
    bad = [f"agency {a!r}" for a in agencies if not ORI_PATTERN.match(a)]
    bad += [f"task force {t!r}" for t in task_forces if not UNIT_PATTERN.match(t)]
    bad += [f"auditor {a!r}" for a in auditors if not UNIT_PATTERN.match(a)]
    if bad:
        raise AccessConfigError(f"invalid names: {', '.join(bad)}",
                                hint="Agencies are 9-character ORIs (CACBP0100); task forces and auditors are "
                                     "lower-case slugs (best-san-diego, oig).")


def load_auditors(path: Path = DEFAULT_AUDITORS) -> list[str]:
    """The auditors' names (``auditors: [{name: oig, ...}]``), checked like task-force ids."""
    try:
        entries = (yaml.safe_load(path.read_text()) or {}).get("auditors") or []
        names = [str(entry["name"]) for entry in entries]
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError) as exc:
        raise AccessConfigError(f"cannot read the auditors in {path}: {type(exc).__name__}: {exc}",
                                hint="List them as `auditors:` entries with a `name:` each "
                                     "(see deploy/auditors.yaml).") from exc
    _check_names([], [], names)
    return sorted(names)


def desired_acls(prefix: str, agencies: list[str], task_forces: list[str],
                 auditors: list[str] = ()) -> set[AclRule]:
    """The complete ACL set for the hub, its agencies, task forces and auditors (see the module docstring). Pure."""
    _check_names(agencies, task_forces, auditors)
    # Kafka has no empty prefix: without one, the literal wildcard "*" names every topic.
    rules = {AclRule(HUB, "TOPIC", "PREFIXED", prefix, "ALL") if prefix else AclRule(HUB, "TOPIC", "LITERAL", "*", "ALL")}
    # A replay runs the stages under its own prefix, {prefix}replay.<namespace>. (consumers/replay.py).
    rules |= {AclRule(HUB, kind, "PREFIXED", name, "ALL") for kind in ("GROUP", "TRANSACTIONAL_ID")
              for name in (f"{prefix}hub.", f"{prefix}replay.")}
    rules.add(AclRule(HUB, "CLUSTER", "LITERAL", CLUSTER, "IDEMPOTENT_WRITE"))
    for ori in agencies:
        user, ingest, control = agency_principal(ori), INGEST.name(prefix, ori=ori), ALERT_CONTROL.name(prefix, ori=ori)
        rules |= {AclRule(user, "TOPIC", "LITERAL", ingest, op) for op in ("WRITE", "DESCRIBE", "READ")}
        rules |= {AclRule(user, "TOPIC", "LITERAL", control, op) for op in ("WRITE", "DESCRIBE")}
        rules |= {AclRule(user, "TOPIC", "LITERAL", AGENCY_FEED.name(prefix, ori=ori), op)
                  for op in ("READ", "DESCRIBE")}
    for unit in task_forces:
        user, feed = task_force_principal(unit), FEED.name(prefix, unit=unit)
        rules |= {AclRule(user, "TOPIC", "LITERAL", feed, op) for op in ("READ", "DESCRIBE")}
        rules |= {AclRule(user, "GROUP", "LITERAL", feed, "READ"), AclRule(user, "GROUP", "PREFIXED", f"{feed}.", "READ")}
    for name in auditors:
        user = auditor_principal(name)
        rules |= {AclRule(user, "TOPIC", "LITERAL", spec.name(prefix), op)
                  for spec in (AUDIT, AUDIT_CHAIN, AUDIT_CHECKPOINTS) for op in ("READ", "DESCRIBE")}
        rules |= {AclRule(user, "TOPIC", "LITERAL", AUDIT_QUERIES.name(prefix), op) for op in ("WRITE", "DESCRIBE")}
    return rules


def in_scope(rule: AclRule, prefix: str) -> bool:
    """Whether :func:`apply_access` for ``prefix`` owns this broker ACL (module docstring)."""
    if not is_managed(rule.principal):
        return False
    return rule.resource_type == "CLUSTER" or rule.name.startswith(prefix) or (not prefix and rule.name == "*")


# -- credentials ----------------------------------------------------------------------------------
def passwords_file(settings: HubSettings | None = None) -> Path:
    return (settings or get_settings()).runtime_dir / PASSWORDS_FILE


def credentials_for(principal: str, settings: HubSettings | None = None) -> dict[str, Any]:
    """HubSettings fields that connect as ``principal`` (password from the runtime dir's principals file).

    ``settings`` is the connection being adapted (address, TLS CA): its security protocol keeps TLS on if it
    has it. Use as ``settings.model_copy(update=credentials_for("agency-cacbp0100", settings))``.
    """
    s = settings or get_settings()
    password = load_passwords(passwords_file(s)).get(principal)
    if password is None:
        raise CredentialsMissingError(f"no password for principal {principal!r} in {passwords_file(s)}")
    return {"security_protocol": "SASL_SSL" if s.security_protocol.endswith("SSL") else "SASL_PLAINTEXT",
            "sasl_mechanism": MECHANISM, "sasl_username": principal, "sasl_password": password}


@dataclass(frozen=True)
class PrincipalReport:
    principal: str
    credential: Literal["created", "updated", "kept"]
    rules: int


@dataclass
class AccessReport:
    """What :func:`apply_access` found and changed; ``created``/``deleted`` are empty on a second run."""

    principals: list[PrincipalReport] = field(default_factory=list)
    created: list[AclRule] = field(default_factory=list)
    deleted: list[AclRule] = field(default_factory=list)

    def audit_events(self, principal: str) -> list[AuditEvent]:
        """One ACCESS_CHANGED record per change (user created or updated, ACL created or deleted), attributed to
        ``principal``, the authenticated user who made it."""
        changes = [(f"user {p.principal}: SCRAM credential {p.credential}", p.principal)
                   for p in self.principals if p.credential != "kept"]
        changes += [(f"ACL created: {rule}", rule.principal) for rule in self.created]
        changes += [(f"ACL deleted: {rule}", rule.principal) for rule in self.deleted]
        return [audit_event("hub access", AuditEventType.ACCESS_CHANGED, principal, detail, subject_ids=[subject])
                for detail, subject in changes]


def _ensure_credentials(admin: KafkaAdminClient, names: list[str], explicit: dict[str, str], store: Path,
                        ) -> dict[str, str]:
    """Create missing SCRAM users, set explicitly given passwords; returns principal -> created|updated|kept."""
    known = load_passwords(store)
    existing = {user for user, info in admin.describe_user_scram_credentials().items()
                if any(c["mechanism"] == ScramMechanism.SCRAM_SHA_512 for c in info["credential_infos"])}
    outcome, upserts = {}, {}
    for name in names:
        if name in explicit:
            upserts[name], outcome[name] = explicit[name], "updated" if name in existing else "created"
        elif name in existing and name in known:
            outcome[name] = "kept"
        else:  # new user, or one whose password this runtime dir lost: (re)set it so it is known again
            upserts[name] = known.get(name) or new_password()
            outcome[name] = "updated" if name in existing else "created"
    if upserts:
        errors = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(name, ScramMechanism.SCRAM_SHA_512, pw) for name, pw in upserts.items()])
        failed = {user: error for user, error in errors.items() if error}
        if failed:
            raise AccessError(f"the broker refused SCRAM credentials: {failed}")
        save_passwords(store, known | upserts)
        _wait_until(lambda: set(upserts) <= set(admin.describe_user_scram_credentials()), "SCRAM credentials")
    return outcome


def broker_acls(admin: KafkaAdminClient) -> set[AclRule]:
    """Every ``User:`` ACL the broker holds."""
    everything = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                           ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
    acls, _ = admin.describe_acls(everything)
    return {rule for acl in acls if (rule := AclRule.from_kafka(acl)) is not None}


def _sync_acls(admin: KafkaAdminClient, wanted: set[AclRule], prefix: str) -> tuple[list[AclRule], list[AclRule]]:
    current = broker_acls(admin)
    missing = sorted(wanted - current)
    stale = sorted(rule for rule in current - wanted if in_scope(rule, prefix))
    if missing:
        result = admin.create_acls([rule.to_kafka() for rule in missing])
        if result["failed"]:
            raise AccessError(f"the broker refused {len(result['failed'])} ACL(s): {result['failed'][:3]}")
    if stale:
        for _, _, error in admin.delete_acls([rule.to_kafka() for rule in stale]):
            if error is not None and error.errno:
                raise AccessError(f"the broker refused to delete ACLs: {error.__name__}")
    _wait_until(lambda: (now := broker_acls(admin)) >= wanted and not (set(stale) & now), "ACLs")
    return missing, stale


def _wait_until(done, what: str, timeout_s: float = 15.0) -> None:
    """Changes go through the controller; return once the broker we talk to enforces them."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AccessError(f"the broker did not show the new {what} within {timeout_s:.0f}s")
        time.sleep(0.1)


def apply_access(admin_settings: HubSettings, prefix: str, agencies: list[str], task_forces: list[str],
                 passwords: dict[str, str] | None = None, auditors: list[str] = ()) -> AccessReport:
    """Make the broker's users and ACLs match the model for these agencies, task forces and auditors (idempotent).

    ``admin_settings`` must connect as a super user; ``passwords`` sets given principals' passwords (others are
    generated once and kept in the runtime dir's principals file, mode 0600).
    """
    wanted = desired_acls(prefix, agencies, task_forces, auditors)
    names = principals(agencies, task_forces, auditors)
    unknown = sorted(set(passwords or {}) - set(names))
    if unknown:
        raise AccessConfigError(f"passwords given for principals outside the model: {', '.join(unknown)}",
                                hint="Pass passwords only for the hub, agency-<ORI>, tf-<unit> and auditor-<name> "
                                     "principals being applied.")
    with _admin_session(admin_settings, "change access") as admin:
        credentials = _ensure_credentials(admin, names, passwords or {}, passwords_file(admin_settings))
        created, deleted = _sync_acls(admin, wanted, prefix)
    counts = {name: sum(rule.principal == name for rule in wanted) for name in names}
    return AccessReport([PrincipalReport(name, credentials[name], counts[name]) for name in names], created, deleted)


def show_acls(admin_settings: HubSettings) -> list[AclRule]:
    """The broker's ACLs, sorted by principal."""
    with _admin_session(admin_settings, "list ACLs") as admin:
        return sorted(broker_acls(admin))


@contextmanager
def _admin_session(admin_settings: HubSettings, action: str) -> Iterator[Any]:
    """An admin client whose broker refusals become AccessErrors that say what to do."""
    admin = make_admin(admin_settings)
    try:
        yield admin
    except SecurityDisabledError as exc:
        raise AccessError(f"cannot {action}: the broker has no authorizer (it was started without --auth scram)",
                          hint="Start it with `hub broker start --auth scram` (after `hub broker stop --wipe`).") from exc
    except KafkaError as exc:
        raise AccessError(f"the broker refused to {action}: {type(exc).__name__}: {exc}",
                          hint="Connect as the super user: `hub broker status` prints its HUB_SASL_* settings.") from exc
    finally:
        admin.close()

"""CJIS audit records for actions that are not dissemination decisions: purges, review extensions, rejected
records, alert state changes, access changes, replays and queries of the audit log itself.

Each is an :class:`AuditEvent` carrying timestamp, component, event type, principal and outcome, sealed into the
hash chain by the seal stage like every other audit record. Queries of the audit log go to ``audit.queries``,
everything else to ``audit``: an auditor may record its own queries without being able to write ``audit``.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone

from kafka.errors import AuthorizationError, KafkaTimeoutError

from hub.exceptions import AccessError, TopicMissingError
from hub.kafka import make_producer, produce_atomically
from hub.settings import HubSettings, get_settings
from schemas.codec import Codec
from schemas.models import AuditEvent, AuditEventType, AuditOutcome
from schemas.topics import AUDIT, AUDIT_QUERIES

AUDIT_NAMESPACE = uuid.UUID("8f6b7f0e-2a43-4c55-9a0e-6f1f3f2c9b17")


def principal_of(settings: HubSettings | None = None) -> str:
    """Who is acting: the Kafka principal when SASL is on, else the operating-system user."""
    settings = settings or get_settings()
    return settings.sasl_username or getpass.getuser()


def audit_event(component: str, event_type: AuditEventType, principal: str, detail: str, *,
                subject_ids: Iterable[str] = (), outcome: AuditOutcome = AuditOutcome.SUCCESS,
                at: datetime | None = None, identity: str | None = None) -> AuditEvent:
    """An audit record; ``identity`` makes its id deterministic (a stage's records are the same in a replay)."""
    audit_id = uuid.uuid5(AUDIT_NAMESPACE, identity) if identity else uuid.uuid4()
    return AuditEvent(audit_id=str(audit_id), recorded_at=at or datetime.now(timezone.utc), component=component,
                      event_type=event_type, principal=principal, outcome=outcome, subject_ids=list(subject_ids),
                      detail=detail)


def write_audit(events: Iterable[AuditEvent], settings: HubSettings | None = None) -> int:
    """Append audit records (all or none: one transaction); returns how many were written."""
    settings = settings or get_settings()
    batch = list(events)
    if not batch:
        return 0
    codec = Codec()
    produce_atomically(settings, f"{settings.topic_prefix}hub.audit.{uuid.uuid4().hex[:8]}",
                       [(settings.topic(AUDIT.pattern), e.audit_id.encode(), codec.encode(e)) for e in batch])
    return len(batch)


def record_query(component: str, query: str, settings: HubSettings | None = None) -> AuditEvent:
    """Record a query of the audit log on ``audit.queries``, under the caller's principal, before it runs.

    One record needs no transaction: an idempotent producer writes it with nothing but WRITE on that topic (an
    auditor holds no transactional id), and it is visible to read_committed readers as soon as it is acked.
    """
    settings = settings or get_settings()
    event = audit_event(component, AuditEventType.AUDIT_QUERIED, principal_of(settings), query)
    topic = settings.topic(AUDIT_QUERIES.pattern)
    producer = make_producer(settings, max_block_ms=15_000)
    try:
        producer.send(topic, key=event.audit_id.encode(), value=Codec().encode(event)).get(30)
    except AuthorizationError as exc:
        raise AccessError(f"{event.principal} may not record queries on {topic}, so the query does not run "
                          "(CJIS: every access to the audit log is audited)",
                          hint="Connect as an auditor-<name> principal (deploy/auditors.yaml, `hub access apply`) "
                               "or as hub.") from exc
    except KafkaTimeoutError as exc:
        raise TopicMissingError(f"{topic} did not answer: it does not exist, or the broker is unreachable") from exc
    finally:
        producer.close()
    return event

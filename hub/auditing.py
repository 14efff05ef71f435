"""CJIS audit records for actions that are not dissemination decisions: purges, review extensions, rejected
records, alert state changes, access changes, replays and queries of the audit log itself.

Each is an :class:`AuditEvent` on the ``audit`` topic (sealed into the hash chain by the seal stage like every
other audit record), carrying timestamp, component, event type, principal and outcome.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone

from hub.kafka import produce_atomically
from hub.settings import HubSettings, get_settings
from schemas.codec import Codec
from schemas.models import AuditEvent, AuditEventType, AuditOutcome
from schemas.topics import AUDIT

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

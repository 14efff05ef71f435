"""The control plane: applying the task-force registry to the control topic every router reads.

A registry file is validated, compared with the applied revision, and written as a new
:class:`RegistryRevision` to the compacted control topic and to the audit topic in one transaction, so every
change (units, areas, clearances, subscriptions) is both in effect and on the record, or neither. The revision
names the authenticated principal that applied it; a person's name, if given, is only in the detail of the
:class:`AuditEvent` written with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from consumers.registry import DEFAULT_REGISTRY, Registry, load_registry
from hub.auditing import audit_event, principal_of
from hub.exceptions import ConfigError
from hub.kafka import produce_atomically, read_topic
from hub.settings import HubSettings, get_settings
from producers.directory import load_agencies
from schemas.codec import Codec
from schemas.models import AuditEventType, RegistryRevision
from schemas.topics import AUDIT, REGISTRY

REGISTRY_KEY = b"registry"


class RegistryVersionError(ConfigError):
    """The file's version does not move the applied registry forward."""

    hint = "Raise `version:` at the top of the registry file above the applied one (`hub taskforces show`)."


@dataclass(frozen=True)
class ApplyResult:
    revision: RegistryRevision
    previous_version: int | None
    applied: bool  # False when the same document was already in effect


def applied_revision(settings: HubSettings | None = None) -> RegistryRevision | None:
    """The registry revision in effect (the highest version on the control topic), if any."""
    settings = settings or get_settings()
    codec = Codec()
    revisions = [codec.decode(r.value) for r in read_topic(settings.topic(REGISTRY.pattern), settings)]
    return max(revisions, key=lambda r: r.version, default=None)


def document_of(registry: Registry) -> str:
    """Canonical JSON: the same registry always gives the same bytes and hash."""
    return json.dumps(registry.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def revision_of(registry: Registry, current: RegistryRevision | None, applied_by: str) -> RegistryRevision:
    """The revision that makes ``registry`` the one in effect after ``current``, with its changes in words."""
    document = document_of(registry)
    changes = Registry.model_validate(json.loads(current.document)).diff(registry) if current else \
        [f"initial registry: {', '.join(sorted(u.unit_id for u in registry.task_forces))}"]
    return RegistryRevision(
        version=registry.version, document=document, sha256=hashlib.sha256(document.encode()).hexdigest(),
        applied_by=applied_by, applied_at=datetime.now(timezone.utc), changes=changes)


def apply_registry(path: Path = DEFAULT_REGISTRY, settings: HubSettings | None = None,
                   applied_by: str | None = None) -> ApplyResult:
    """Validate ``path`` and make it the registry in effect (idempotent for an unchanged file); ``applied_by`` is
    the free-text name of the person applying it (the principal is the connection's)."""
    settings = settings or get_settings()
    registry = load_registry(path, agencies=load_agencies())
    document = document_of(registry)
    current = applied_revision(settings)
    if current is not None and current.document == document:
        return ApplyResult(current, current.version, applied=False)
    if current is not None and registry.version <= current.version:
        raise RegistryVersionError(f"{path} has version {registry.version}, but version {current.version} is "
                                   "already applied with different content")
    principal = principal_of(settings)
    revision = revision_of(registry, current, principal)
    event = audit_event("hub taskforces", AuditEventType.OTHER, principal,
                        f"registry version {revision.version} applied (sha256 {revision.sha256[:12]})"
                        + (f" by {applied_by}" if applied_by else "") + ": " + "; ".join(revision.changes),
                        subject_ids=[f"registry v{revision.version}"])
    codec = Codec()
    value = codec.encode(revision)
    produce_atomically(settings, f"{settings.topic_prefix}hub.control.registry",
                       [(settings.topic(REGISTRY.pattern), REGISTRY_KEY, value),
                        (settings.topic(AUDIT.pattern), REGISTRY_KEY, value),
                        (settings.topic(AUDIT.pattern), REGISTRY_KEY, codec.encode(event))])
    return ApplyResult(revision, current.version if current else None, applied=True)

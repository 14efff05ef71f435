"""Topics are part of the contract: names, partitions, keys, retention and cleanup, declared here only.

``hub topics init`` creates or verifies them. Every ingest topic has the same partition count and the
same key rule, so records the dedup stage must compare (one real-world seizure reported by several
agencies) land in the same partition number of every agency's topic and reach the same stage instance.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.models import CaseEvent, Location
from schemas.reference import PORTS_OF_ENTRY

CleanupPolicy = Literal["delete", "compact"]
FOREVER = -1
# A location within this distance of a port of entry belongs to that port's county for keying.
NEAREST_PORT_KM = 50.0


class TopicSpec(BaseModel):
    """One topic family; ``pattern`` may name parameters, e.g. ``ingest.{ori}``."""

    model_config = ConfigDict(frozen=True)

    pattern: str
    purpose: str
    partitions: int
    key: str
    value: str
    cleanup_policy: CleanupPolicy
    retention_ms: int

    def name(self, prefix: str = "", **params: str) -> str:
        return prefix + self.pattern.format(**params)

    @property
    def configs(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


INGEST = TopicSpec(
    pattern="ingest.{ori}",
    purpose="Events one agency publishes; the broker can restrict each agency to its own topic.",
    partitions=6,
    key="location area: 'county:<FIPS>' (ports and points near a port map to the port's county), "
    "else 'state:<XX>', else 'agency:<ORI>'",
    value="CaseEvent, Avro single-object encoding (schemas/avsc)",
    cleanup_policy="delete",
    retention_ms=FOREVER,  # the audit replay re-reads ingest history; purges are handled by retention sweeps
)




def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def location_area(location: Location) -> str | None:
    """The coarse area a location falls in, shared by every report of the same real-world event."""
    if location.port_of_entry:
        return f"county:{PORTS_OF_ENTRY[location.port_of_entry].county_fips}"
    if location.county_fips:
        return f"county:{location.county_fips}"
    if location.latitude is not None and location.longitude is not None:
        lat, lon = location.latitude, location.longitude
        distance, port = min((distance_km(lat, lon, p.latitude, p.longitude), p) for p in PORTS_OF_ENTRY.values())
        if distance <= NEAREST_PORT_KM:
            return f"county:{port.county_fips}"
    if location.state:
        return f"state:{location.state}"
    return None


def ingest_key(event: CaseEvent) -> bytes:
    """The record key of an event on its ingest topic (see :data:`INGEST`)."""
    return (location_area(event.location) or f"agency:{event.agency_ori}").encode()


CANONICAL = TopicSpec(
    pattern="events.canonical",
    purpose="One record per real-world event: each revision of a canonical event crediting every reporting agency.",
    partitions=6,
    key="canonical_id (the latest revision per key is the current state)",
    value="CanonicalEvent, Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=FOREVER,
)

CHANGELOG = TopicSpec(
    pattern="changelog.{stage}",
    purpose="A stage's state changes, written in the same transaction as its outputs; restores local stores.",
    partitions=INGEST.partitions,  # partition N holds the state of input partition N
    key="namespace + key of the state entry",
    value="JSON of the entry and its event-time expiry; tombstone for deletes",
    cleanup_policy="compact",
    retention_ms=FOREVER,
)

DEADLETTER = TopicSpec(
    pattern="deadletter.{stage}",
    purpose="Messages a stage could not decode or process, with the reason and origin in headers.",
    partitions=1,
    key="the original key",
    value="the original bytes, untouched",
    cleanup_policy="delete",
    retention_ms=FOREVER,
)


def changelog_topic(stage: str) -> str:
    return CHANGELOG.name(stage=stage)


def deadletter_topic(stage: str) -> str:
    return DEADLETTER.name(stage=stage)


CORRELATION_KEYS = TopicSpec(
    pattern="correlate.by-key",
    purpose="Canonical events re-keyed by each entity they touch (and by map cell for planned operations), "
    "so one deconflict instance sees every record touching the same target or place.",
    partitions=6,
    key="'<SCHEME>:<canonical identifier>' or 'cell:<lat>:<lon>' (0.05 degree cells)",
    value="CanonicalEvent, Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=7 * 24 * 3600 * 1000,  # a repartition topic: consumed within seconds, kept a week for replays
)

ALERTS_RAISED = TopicSpec(
    pattern="alerts.raised",
    purpose="Alerts as the deconflict stage raises them, before their lifecycle.",
    partitions=6,
    key="alert_id",
    value="DeconflictionAlert, Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=FOREVER,
)

ALERT_CONTROL = TopicSpec(
    pattern="alerts.control",
    purpose="Acknowledgements and resolutions (`hub alerts ack|resolve`), co-partitioned with alerts.raised.",
    partitions=6,
    key="alert_id",
    value="AlertAction, Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=FOREVER,
)

ALERTS = TopicSpec(
    pattern="alerts",
    purpose="Every state change of every alert (open, acknowledged, resolved, escalated): what parties follow.",
    partitions=6,
    key="alert_id",
    value="DeconflictionAlert, Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=FOREVER,
)

FEED = TopicSpec(
    pattern="feed.{unit}",
    purpose="What one BEST task force may see: full records and pointers, after the sharing rules; the broker "
    "lets only that unit's principal read it.",
    partitions=3,
    key="record id (canonical id or alert id)",
    value="FeedItem, Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=FOREVER,
)

AUDIT = TopicSpec(
    pattern="audit",
    purpose="Every dissemination decision (sent, sent as pointer, withheld, and why) and every registry change, "
    "written in the same transaction as what it records (28 CFR 23, CJIS audit).",
    partitions=6,
    key="record id, or 'registry'",
    value="RoutingDecision or RegistryRevision, Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=FOREVER,
)

REGISTRY = TopicSpec(
    pattern="control.taskforces",
    purpose="The applied task-force registry (`hub taskforces apply`); every router reads all of it.",
    partitions=1,
    key="'registry'",
    value="RegistryRevision, Avro single-object encoding",
    cleanup_policy="compact",
    retention_ms=FOREVER,
)

AUDIT_CHAIN = TopicSpec(
    pattern="audit.chain",
    purpose="The tamper-evident audit log: every audit record sealed into a per-partition SHA-256 chain by the "
    "seal stage, the only writer of each partition (`hub audit verify` checks it).",
    partitions=6,
    key="as the audited record",
    value="AuditSeal, Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=FOREVER,
)

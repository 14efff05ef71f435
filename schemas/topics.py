"""Topics are part of the contract: names, partitions, keys, retention and cleanup, declared here only.

``hub topics init`` creates or verifies them. Every ingested topic has the same partition count and intake keys
each record by one rule (:func:`dedup_block`), so records the dedup stage must compare (one real-world seizure
reported by several agencies) land in the same partition number of every agency's topic and reach the same stage
instance.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.limits import MAX_REPORT_BYTES
from schemas.models import CaseEvent

CleanupPolicy = Literal["delete", "compact", "compact,delete"]
FOREVER = -1
HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
#: Largest record batch an agency may write to its ingest topic: a publisher's 256 KiB batch plus one report.
INGEST_BATCH_LIMIT = 256 * 1024 + MAX_REPORT_BYTES + 4096
#: Compacted topics that hold data a purge must remove: segments roll hourly and any dirty share is cleaned, so a
#: replaced value (a destroyed key, a tombstoned feed item) is gone from the broker's disks within hours.
PROMPT_COMPACTION = {"segment.ms": str(HOUR_MS), "max.compaction.lag.ms": str(HOUR_MS),
                     "min.cleanable.dirty.ratio": "0.01"}


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
    extra_configs: dict[str, str] = {}

    def name(self, prefix: str = "", **params: str) -> str:
        return prefix + self.pattern.format(**params)

    @property
    def configs(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms), **self.extra_configs}


INGEST = TopicSpec(
    pattern="ingest.{ori}",
    purpose="Events one agency publishes, in the clear (agencies hold no hub key); only that agency's principal "
    "may write it. The intake stage seals each record into events.ingested.<ORI>, so this is kept only a week.",
    partitions=6,
    key="dedup block (schemas.topics.dedup_block): 'all', one partition",
    value="CaseEvent, Avro single-object encoding (schemas/avsc)",
    cleanup_policy="delete",
    # Long enough to ride out an intake outage; hourly segments make the bound on a plain copy 7 days + 1 hour.
    retention_ms=7 * DAY_MS,
    extra_configs={
        "segment.ms": str(HOUR_MS),
        # The broker stamps each record: the time intake checks a report's dates against is not the agency's to set.
        "message.timestamp.type": "LogAppendTime",
        # The broker refuses a batch an agency could not have made of valid reports (publishers batch 256 KiB).
        "max.message.bytes": str(INGEST_BATCH_LIMIT),
    },
)

INGESTED = TopicSpec(
    pattern="events.ingested.{ori}",
    purpose="Every report one agency published and intake accepted, sealed under its record key: the history "
    "dedup and replays read. One topic per agency, as on ingest, so dedup's watermark waits for the agency "
    "whose backlog it has not read yet. Intake keys each record by its dedup block itself, whatever key the "
    "publisher gave it, so the partition a report reaches dedup on is the hub's choice, not the agency's.",
    partitions=INGEST.partitions,
    key="dedup block (schemas.topics.dedup_block), set by intake",
    value="ProtectedRecord sealing a CaseEvent",
    cleanup_policy="delete",
    retention_ms=FOREVER,  # purges are crypto-shredding: destroying a report's key makes its record unreadable
)

KEYS = TopicSpec(
    pattern="hub.keys",
    purpose="The record keys of every report, each wrapped under the hub's key-encryption key; a purge replaces "
    "an entry with a marker that holds no key. Only the hub principal may read or write it.",
    partitions=1,
    key="event id (and '__kek__': which KEK the keys are wrapped under)",
    value="JSON: wrapped key, nonce, review-by date; or destroyed_at and reason",
    cleanup_policy="compact",
    retention_ms=FOREVER,
    extra_configs=PROMPT_COMPACTION,
)




def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))


#: The one dedup block (see :func:`dedup_block`).
DEDUP_BLOCK = "all"


def dedup_block(event: CaseEvent) -> str:
    """Which reports dedup compares, as a record key: all of them, in one partition.

    Seizures are matched across agencies, and a report may place one by port, geocode, county, state or the
    reporting office: any key built from the place put two reports of one seizure in two partitions, where no dedup
    instance compared them (and a version adding a geocode in another partition than the first). Keying only seizures
    together is not enough either: the runner merges the agencies' topics in timestamp order within a partition
    number, and that order is what makes an arrest and the seizure it follows, or two agencies' raids, reach
    deconfliction in the same order on one host or many; records in different partitions lose it. So every record
    shares one key. The cost: intake and dedup run on one partition, so on one instance at a time (a second instance
    stands by), and every later stage still spreads by its own keys.
    """
    return DEDUP_BLOCK


def ingest_key(event: CaseEvent) -> bytes:
    """The record key of an event on its ingest topic (see :data:`INGEST`): its dedup block."""
    return dedup_block(event).encode()


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
    key="namespace + key of the state entry (identifiers in it hashed under a key derived from the KEK)",
    value="JSON of the entry and its event-time expiry, sealed under the record keys of the reports it carries; "
    "tombstone for deletes",
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
    retention_ms=30 * DAY_MS,  # the intake's dead letters are an agency's plain records: fix and resend within 30 days
)


#: Headers of the tombstone a purge writes over a feed item: which reports were purged, and the notice to the unit
#: (28 CFR 23.20(g): recipients are told of corrections and purges).
PURGED_EVENTS_HEADER = "purge.event_ids"
PURGE_NOTICE_HEADER = "purge.notice"


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
    pattern="alerts.control.{ori}",
    purpose="One agency's acknowledgements and resolutions (`hub alerts ack|resolve`), co-partitioned with "
    "alerts.raised; the broker lets only that agency's principal write it, so the topic names who acted.",
    partitions=6,
    key="alert_id",
    value="AlertAction, Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=FOREVER,
)

CLOCK = TopicSpec(
    pattern="hub.clock",
    purpose="The hub's wall clock as a logged input: `hub run clock` writes a tick to every partition each second "
    "(HUB_CLOCK_TICK_S), so the alerts stage escalates an unacknowledged alert on time with no other traffic, and a "
    "replay, which copies the ticks, escalates it at the same moment. Only hub principals write it.",
    partitions=6,  # co-partitioned with alerts.raised: each alerts instance gets its partitions' ticks
    key="none (each tick is written to a partition by number)",
    value="ClockTick, Avro single-object encoding",
    cleanup_policy="delete",
    # Long enough for the replays auditors run over an alert's life (its state is kept 400 days): about 520,000
    # ticks a day of ~30 bytes, some 15 MB a day before compression.
    retention_ms=400 * DAY_MS,
    extra_configs={"segment.ms": str(DAY_MS)},
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
    key="record id (canonical id or alert id): compaction keeps a record's latest revision; a purge writes a "
    "tombstone with a purge notice in its headers",
    value="FeedItem in the clear (delivered to the unit over TLS), Avro single-object encoding",
    cleanup_policy="compact,delete",
    retention_ms=90 * DAY_MS,
    extra_configs={**PROMPT_COMPACTION, "delete.retention.ms": str(7 * DAY_MS)},  # notices stay a week
)

AGENCY_FEED = TopicSpec(
    pattern="agency.{ori}",
    purpose="What the hub tells one agency: the current state of every deconfliction alert it is a party to, and "
    "the release record (every unit's decision: sent, sent as pointer, withheld, and why) of each revision of its "
    "records, unless another agency's BLACK report shares the record; the broker lets only that agency's principal "
    "read it. The console's agency pages and `hub alerts list` read it.",
    partitions=3,
    key="alert id (compaction keeps an alert's latest state; a purge writes a tombstone), or "
    "'<record id>@<revision>' for a release record (each revision's release is kept)",
    value="DeconflictionAlert in the clear (delivered to a party over TLS, as feed items are) or RoutingDecisions, "
    "Avro single-object encoding",
    cleanup_policy="compact",
    retention_ms=FOREVER,
    extra_configs={**PROMPT_COMPACTION, "delete.retention.ms": str(7 * DAY_MS)},
)

AUDIT = TopicSpec(
    pattern="audit",
    purpose="Every dissemination decision (sent, sent as pointer, withheld, and why) and every registry change, "
    "written in the same transaction as what it records (28 CFR 23, CJIS audit).",
    partitions=6,
    key="record id, or 'registry'",
    value="RoutingDecisions (RoutingDecision before v7) or RegistryRevision, Avro single-object encoding",
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

AUDIT_QUERIES = TopicSpec(
    pattern="audit.queries",
    purpose="Queries of the audit log (`hub audit`), recorded by whoever ran them (CJIS: access to the audit log is "
    "audited); auditors may write here but not to audit. Co-partitioned with audit: the seal stage chains both.",
    partitions=AUDIT.partitions,  # partition N of both inputs feeds chain partition N, which has one writer
    key="audit_id",
    value="AuditEvent (AUDIT_QUERIED), Avro single-object encoding",
    cleanup_policy="delete",
    retention_ms=FOREVER,
    # The broker stamps each query, so the time its seal records is not the writer's to choose.
    extra_configs={"message.timestamp.type": "LogAppendTime"},
)

AUDIT_CHECKPOINTS = TopicSpec(
    pattern="audit.checkpoints",
    purpose="Each signed checkpoint `hub audit checkpoint` writes, published so auditors on their own hosts can read "
    "the last one (and check its signature with the hub's public key) without the hub host's files.",
    partitions=1,
    key="'checkpoint'",
    value="JSON: the signed checkpoint document, byte for byte as written to its file",
    cleanup_policy="delete",
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

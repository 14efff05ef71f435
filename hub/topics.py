"""Create or verify the contract's topics on a cluster, reporting drift instead of hiding it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError

from hub.kafka import make_admin
from hub.settings import HubSettings, get_settings
from schemas.topics import (
    AGENCY_FEED, ALERT_CONTROL, ALERTS, ALERTS_RAISED, AUDIT, AUDIT_CHAIN, CANONICAL, CHANGELOG, CORRELATION_KEYS,
    DEADLETTER, AUDIT_CHECKPOINTS, AUDIT_QUERIES, CLOCK, FEED, INGEST, INGESTED, KEYS, REGISTRY, TopicSpec,
)

Action = Literal["created", "ok", "drift"]


@dataclass(frozen=True)
class TopicStatus:
    name: str
    action: Action
    details: str = ""


def ensure_topics(wanted: list[tuple[str, TopicSpec]], settings: HubSettings | None = None) -> list[TopicStatus]:
    """Create missing topics; compare existing ones' partitions and configs with their spec."""
    admin = make_admin(settings or get_settings())
    try:
        brokers = len(admin.describe_cluster().get("brokers", [])) or 1
        replication = min(3, brokers)
        existing = set(admin.list_topics())
        statuses = []
        missing = [(name, spec) for name, spec in wanted if name not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(name, spec.partitions, replication, topic_configs=spec.configs)
                                     for name, spec in missing])
            except TopicAlreadyExistsError:
                pass  # created concurrently by another `hub topics init`; verified below next time
            statuses += [TopicStatus(name, "created", f"{spec.partitions} partitions, RF {replication}")
                         for name, spec in missing]
        present = [(name, spec) for name, spec in wanted if name in existing]
        statuses += [_verify(admin, name, spec) for name, spec in present]
        return statuses
    finally:
        admin.close()


def _verify(admin, name: str, spec: TopicSpec) -> TopicStatus:
    partitions = len(admin.describe_topics([name])[0]["partitions"])
    response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=list(spec.configs))],
                                      config_filter="all")
    actual = {k: v["value"] for k, v in response["topic"][name].items()}
    drift = [f"partitions {partitions} != {spec.partitions}"] if partitions != spec.partitions else []
    drift += [f"{key}={actual.get(key)} != {value}" for key, value in spec.configs.items() if actual.get(key) != value]
    return TopicStatus(name, "drift", "; ".join(drift)) if drift else TopicStatus(name, "ok")


def hub_topics(prefix: str, agencies: list[str], stages: list[str],
               units: list[str] = ()) -> list[tuple[str, TopicSpec]]:
    """Every topic the hub needs: per agency its ingest, ingested, alert control and own (``agency.<ORI>``) topics,
    the derived streams, one feed per task force, and per stage its changelog and dead-letter topics."""
    wanted = [(spec.name(prefix, ori=ori), spec) for ori in agencies
              for spec in (INGEST, INGESTED, ALERT_CONTROL, AGENCY_FEED)]
    wanted += [(spec.name(prefix), spec) for spec in (KEYS, CANONICAL, CORRELATION_KEYS, ALERTS_RAISED,
                                                      ALERTS, AUDIT, AUDIT_QUERIES, AUDIT_CHAIN, AUDIT_CHECKPOINTS,
                                                      REGISTRY, CLOCK)]
    wanted += [(FEED.name(prefix, unit=unit), FEED) for unit in units]
    for stage in stages:
        wanted += [(CHANGELOG.name(prefix, stage=stage), CHANGELOG), (DEADLETTER.name(prefix, stage=stage), DEADLETTER)]
    return wanted

"""Replay: re-run the pipeline over a period of ingest history in an isolated namespace, and compare.

A replay copies the sealed ingest history (``events.ingested.<ORI>``, written by the intake stage) up to the end of the
period (with keys, headers, partitions and timestamps), the hub clock's ticks and the alert actions taken into topics under its own
prefix: what came before the period only rebuilds the state the period's decisions depended on, and only the period is compared. It puts the registry in effect (or a proposed one) on its own
control topic, and runs the same stages with the same runner, each until its inputs are read to the end. Its
consumer groups, transactional ids, state stores and feeds all carry the prefix, so nothing live is read as
state or written. The runner's timestamp-ordered merge makes the stages take the same decisions as live did on
the same records; :func:`compare_decisions` (pure) then reports every difference between the replayed
dissemination decisions and the audit log of what was actually sent.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kafka import TopicPartition

from consumers.registry import Registry
from consumers.runner import StageRunner
from consumers.stages import STAGES
from consumers.stages.route import registry_of
from hub.control import applied_revision, revision_of
from hub.exceptions import ConfigError, KafkaUnavailableError
from hub.kafka import make_admin, make_consumer, make_producer, read_topic
from hub.settings import HubSettings
from hub.topics import ensure_topics, hub_topics
from hub.vault import hub_codec
from schemas.codec import Codec
from schemas.models import FeedItem, RegistryRevision, RoutingDecision, routing_decisions
from schemas.protection import event_id_of, record_key_ids
from schemas.topics import ALERT_CONTROL, AUDIT, CLOCK, FEED, INGESTED, REGISTRY

#: The stages a replay re-runs, in pipeline order (sealing the audit chain is not a dissemination decision).
REPLAYED_STAGES = ("dedup", "correlate", "deconflict", "alerts")  # routing runs in dedup and alerts
#: What a dissemination decision is compared on (the registry version may differ by design).
COMPARED_FIELDS = ("form", "rule", "subscription_id", "event_ids", "owner_oris")

#: only-live / only-replay: a decision on one side only; changed: another form (what was sent changed);
#: reason: the same form under another rule or subscription; feed-item: same decision, different content.
DifferenceKind = Literal["only-live", "only-replay", "changed", "reason", "feed-item"]
Progress = Callable[[str, int, int | None], None]  # (step, done, total or None)


@dataclass(frozen=True)
class Difference:
    """One dissemination that the replay did not reproduce, named by unit, record and revision."""

    kind: DifferenceKind
    unit_id: str
    record_id: str
    revision: str
    live: str  # "FULL (white.full)", or "-" when absent
    replayed: str
    live_reason: str = ""
    replayed_reason: str = ""
    decision_id: str = ""

    def describe(self) -> str:
        return f"{self.unit_id}: {self.record_id} rev {self.revision}: live {self.live}; replay {self.replayed}"


@dataclass
class Comparison:
    """What the compare looked at and what differed."""

    live_decisions: int = 0
    replayed_decisions: int = 0
    boundary_decisions: int = 0  # involve reports the replay did not include (other agencies, after the period)
    purged_decisions: int = 0  # live decisions about records carrying a report purged since: unreadable now
    feed_items: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def delivery_changes(self) -> int:
        """Differences in what a unit received (not only in why it was withheld or sent)."""
        return sum(d.kind != "reason" for d in self.differences)


@dataclass
class ReplayResult:
    namespace: str
    period_events: int  # ingest records of the compared period
    replayed_events: int  # every ingest record re-run (the period and the history before it)
    seconds: float
    stage_seconds: dict[str, float]
    registry_version: int

    @property
    def events_per_s(self) -> float:
        """Ingest records re-run per second, copying and every stage included."""
        return self.replayed_events / self.seconds if self.seconds else 0.0


# -- the comparison (pure) -----------------------------------------------------------------------
def _summary(decision: RoutingDecision | None) -> str:
    return "-" if decision is None else f"{decision.form} ({decision.rule})"


def compare_decisions(live: Iterable[RoutingDecision], replayed: Iterable[RoutingDecision], period_events: set[str],
                      replayed_events: set[str], units: set[str] | None = None,
                      purged_events: frozenset[str] = frozenset()) -> Comparison:
    """Every difference between what was decided live and in the replay about records with a report in
    ``period_events``. A record that also has reports the replay did not include (``replayed_events`` holds
    those it did) is a boundary decision on both sides, counted but not compared; so is one carrying a report
    purged since (``purged_events``): the replay could not read it, as intended."""
    def in_scope(decision: RoutingDecision) -> bool:
        return bool(set(decision.event_ids) & period_events) and (units is None or decision.unit_id in units)

    live_by_id: dict[str, RoutingDecision] = {}
    boundary_events: set[str] = set()
    boundary = 0
    purged = 0
    for decision in filter(in_scope, live):
        if set(decision.event_ids) & purged_events:
            boundary_events |= set(decision.event_ids) & replayed_events
            purged += 1
            continue
        if not set(decision.event_ids) <= replayed_events:
            boundary_events |= set(decision.event_ids) & replayed_events
            boundary += 1
            continue
        live_by_id[decision.decision_id] = decision
    replayed_by_id = {}
    for decision in filter(in_scope, replayed):
        if set(decision.event_ids) & boundary_events:
            boundary += 1
            continue
        replayed_by_id[decision.decision_id] = decision
    comparison = Comparison(len(live_by_id), len(replayed_by_id), boundary, purged)
    for decision_id in sorted(live_by_id.keys() | replayed_by_id.keys()):
        before, after = live_by_id.get(decision_id), replayed_by_id.get(decision_id)
        if before is not None and after is not None and all(
                getattr(before, name) == getattr(after, name) for name in COMPARED_FIELDS):
            continue
        kind: DifferenceKind = ("only-replay" if before is None else "only-live" if after is None
                                else "changed" if before.form != after.form else "reason")
        either = before or after
        assert either is not None
        comparison.differences.append(Difference(
            kind, either.unit_id, either.record_id, either.revision, _summary(before), _summary(after),
            before.reason if before else "", after.reason if after else "", decision_id))
    comparison.differences.sort(key=lambda d: (d.unit_id, d.record_id, d.revision))
    return comparison


def compare_feed_items(live: Iterable[FeedItem], replayed: Iterable[FeedItem], item_ids: set[str]) -> list[Difference]:
    """Items delivered under the same decision whose content differs (the registry version aside); an item's id
    is its decision's."""
    def content(item: FeedItem) -> dict[str, Any]:
        return item.model_dump(mode="json", exclude={"registry_version"})

    live_items = {i.item_id: i for i in live if i.item_id in item_ids}
    replayed_items = {i.item_id: i for i in replayed if i.item_id in item_ids}
    differences = []
    for item_id in sorted(live_items.keys() & replayed_items.keys()):
        before, after = content(live_items[item_id]), content(replayed_items[item_id])
        if before != after:
            item = live_items[item_id]
            record = (item.event.canonical_id if item.event else item.alert.alert_id if item.alert
                      else item.pointer.record_id if item.pointer else item_id)
            differences.append(Difference("feed-item", item.unit_id, record, item_id, f"item {item_id}",
                                          f"differs in {', '.join(_changed_paths(before, after))}",
                                          decision_id=item_id))
    return differences


def _changed_paths(before: Any, after: Any, path: str = "", limit: int = 5) -> list[str]:
    """The dotted paths (``event.decision.explanation``) where two JSON values differ, the first ``limit``."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[str] = []
        for key in sorted(before.keys() | after.keys()):
            if before.get(key) != after.get(key):
                found += _changed_paths(before.get(key), after.get(key), f"{path}.{key}".lstrip("."), limit)
        return found[:limit]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for n, (b, a) in enumerate(zip(before, after)) if b != a
                for p in _changed_paths(b, a, f"{path}.{n}", limit)][:limit]
    return [path]


# -- running a replay ----------------------------------------------------------------------------
def replay_settings(settings: HubSettings, namespace: str) -> HubSettings:
    """The same cluster under the replay's own topic prefix (and so its own groups, transactional ids and state),
    reading the live key table: a replay seals nothing new, it opens what live sealed."""
    return settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}replay.{namespace}.",
                                       "key_table_prefix": settings.key_table_prefix or settings.topic_prefix})


class Replay:
    """One replay of the ingest history up to ``until``, compared over ``[since, until)`` (optionally some
    agencies only)."""

    def __init__(self, settings: HubSettings, namespace: str, since: datetime, until: datetime, *,
                 agencies: Iterable[str] = (), registry: Registry | None = None,
                 progress: Progress | None = None) -> None:
        self.live = settings
        self.namespace = namespace
        self.isolated = replay_settings(settings, namespace)
        self.since, self.until = since, until
        self.agencies = set(agencies)
        self.registry = registry
        self.progress = progress or (lambda step, done, total: None)
        self.codec = hub_codec(settings)
        self.period_events: set[str] = set()  # written in [since, until): compared
        self.replayed_events: set[str] = set()  # every ingest record copied (the period and the history before it)
        self.purged_events: set[str] = set()  # copied, but purged under retention: the stages cannot read them

    def run(self) -> ReplayResult:
        revision = self._registry_revision()
        units = sorted(unit.unit_id for unit in registry_of(revision).task_forces)
        ingest = self._live_ingest_topics()
        ensure_topics(hub_topics(self.isolated.topic_prefix, sorted(ingest), list(REPLAYED_STAGES), units),
                      self.isolated)
        self._write_registry(revision)
        started = time.monotonic()
        self._copy_history([*(self.live.topic(spec.name(ori=ori)) for ori in ingest for spec in (INGESTED, ALERT_CONTROL)),
                            self.live.topic(CLOCK.pattern)])
        stage_seconds = {"copy": time.monotonic() - started}
        for name in REPLAYED_STAGES:
            began = time.monotonic()
            runner = StageRunner(STAGES[name](), self.isolated, commit_interval_s=0.2)
            runner.run_until_caught_up(progress=lambda n, name=name: self.progress(name, n, None))
            stage_seconds[name] = time.monotonic() - began
        return ReplayResult(self.namespace, len(self.period_events), len(self.replayed_events),
                            time.monotonic() - started, stage_seconds, revision.version)

    def compare(self, units: set[str] | None = None) -> Comparison:
        """The replay's dissemination decisions and feed items against the live audit log and feeds."""
        replayed = self._decisions(self.isolated)
        comparison = compare_decisions(self._decisions(self.live), replayed, self.period_events, self.replayed_events,
                                       units, frozenset(self.purged_events))
        differing = {d.decision_id for d in comparison.differences}
        delivered = {d.decision_id for d in replayed if (units is None or d.unit_id in units)} - differing
        for unit in sorted({d.unit_id for d in replayed if d.decision_id in delivered}):
            replayed_items = self._feed(self.isolated, unit)
            comparison.feed_items += len(replayed_items)
            comparison.differences += compare_feed_items(self._feed(self.live, unit), replayed_items, delivered)
        return comparison

    def remove(self) -> None:
        """Delete the replay's topics and state stores (the live namespace is never touched)."""
        admin = make_admin(self.isolated)
        try:
            mine = [t for t in admin.list_topics() if t.startswith(self.isolated.topic_prefix)]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()
        for stage in REPLAYED_STAGES:
            shutil.rmtree(self.isolated.runtime_dir / "state" / f"{self.isolated.topic_prefix}{stage}",
                          ignore_errors=True)

    # -- steps -----------------------------------------------------------------------------------
    def _registry_revision(self) -> RegistryRevision:
        current = applied_revision(self.live)
        if self.registry is not None:
            return revision_of(self.registry, current, applied_by="hub replay")
        if current is None:
            raise ConfigError("no task-force registry is applied, so there is nothing to replay against",
                              hint="Run `hub taskforces apply FILE` (or pass `hub replay --registry FILE`).")
        return current

    def _write_registry(self, revision: RegistryRevision) -> None:
        producer = make_producer(self.isolated)
        try:
            producer.send(self.isolated.topic(REGISTRY.pattern), key=b"registry", value=self.codec.encode(revision))
            producer.flush()
        finally:
            producer.close()

    def _live_ingest_topics(self) -> dict[str, str]:
        """Live ingest topics by agency ORI (restricted to the requested agencies); the namespace must be new."""
        pattern = re.compile(re.escape(self.live.topic_prefix) + r"ingest\.(.+)")
        consumer = make_consumer(settings=self.live, group_id=None)
        try:
            topics = consumer.topics()
        finally:
            consumer.close()
        if any(t.startswith(self.isolated.topic_prefix) for t in topics):
            raise ConfigError(f"the replay namespace {self.isolated.topic_prefix} already exists (a kept or "
                              "interrupted replay): its topics and consumer groups would mix with this one",
                              hint="Choose another --namespace, or delete that one's topics first.")
        found = {m.group(1): t for t in topics if (m := pattern.fullmatch(t))}
        if not self.agencies:
            return found
        unknown = self.agencies - set(found)
        if unknown:
            raise ConfigError(f"no ingest topic for agency {', '.join(sorted(unknown))}",
                              hint="Check the ORI: `hub topics init` creates one ingest topic per agency.")
        return {ori: t for ori, t in found.items() if ori in self.agencies}

    def _copy_history(self, topics: list[str]) -> None:
        """Copy each live partition's records up to the period's end to the same partition of the replay's topic,
        keeping key, value, headers and timestamp."""
        consumer = make_consumer(settings=self.live, group_id=None)
        producer = make_producer(self.isolated, linger_ms=20, batch_size=512 * 1024)
        try:
            partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
            if not partitions:
                return
            ends = consumer.end_offsets(partitions)
            starts = consumer.beginning_offsets(partitions)
            stops = consumer.offsets_for_times({tp: int(self.until.timestamp() * 1000) for tp in partitions})
            bounds = {tp: (starts[tp], stops[tp].offset if stops[tp] else ends[tp]) for tp in partitions}
            pending = {tp: stop for tp, (start, stop) in bounds.items() if start < stop}
            if not pending:
                return
            total = sum(stop - bounds[tp][0] for tp, stop in pending.items())
            consumer.assign(list(pending))
            for tp in pending:
                consumer.seek(tp, bounds[tp][0])
            done, stalled_since = 0, time.monotonic()
            since_ms = int(self.since.timestamp() * 1000)
            actions = self.live.topic(ALERT_CONTROL.name(ori=""))
            clock = self.live.topic(CLOCK.pattern)
            while pending:
                batches = consumer.poll(timeout_ms=500)
                for tp, records in batches.items():
                    target = self.isolated.topic(tp.topic[len(self.live.topic_prefix):])
                    for record in (r for r in records if r.offset < bounds[tp][1]):
                        done += 1
                        producer.send(target, key=record.key, value=record.value, headers=record.headers,
                                      partition=tp.partition, timestamp_ms=record.timestamp)
                        if not tp.topic.startswith(actions) and tp.topic != clock:  # a report, not an action or tick
                            key_id = _report_key_id(record, self.codec)
                            event_id = event_id_of(key_id)
                            self.replayed_events.add(event_id)
                            if self.codec.vault is not None and self.codec.vault.destroyed(key_id):
                                self.purged_events.add(event_id)
                            if record.timestamp >= since_ms:
                                self.period_events.add(event_id)
                for tp in [tp for tp, stop in pending.items() if consumer.position(tp) >= stop]:
                    pending.pop(tp)
                    consumer.pause(tp)
                if batches:
                    stalled_since = time.monotonic()
                elif time.monotonic() - stalled_since > 60:
                    raise KafkaUnavailableError(f"copying the period stalled on {', '.join(map(str, pending))}")
                self.progress("copy", done, total)
            producer.flush()
        finally:
            producer.close()
            consumer.close()

    def _decisions(self, settings: HubSettings) -> list[RoutingDecision]:
        return [decision for r in read_topic(settings.topic(AUDIT.pattern), settings)
                for decision in routing_decisions(self.codec.decode(r.value))]

    def _feed(self, settings: HubSettings, unit: str) -> list[FeedItem]:
        """The unit's feed items (a purge's tombstones are not items)."""
        return [self.codec.decode(r.value) for r in read_topic(settings.topic(FEED.name(unit=unit)), settings)
                if r.value is not None]


def _report_key_id(record: Any, codec: Codec) -> str:
    """The record key id of an ingested report: its envelope's, else (a plain record) the one it would be sealed
    under."""
    envelope = codec.envelope_of(record.value)
    return envelope.key_ids[0] if envelope is not None else record_key_ids(codec.decode(record.value))[0]

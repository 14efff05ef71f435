"""The benchmark's Quix Streams application: the hub's dedup-and-route work on Quix's runtime, for comparison.

``hub bench pipeline --compare-quix`` runs it on the same broker, in the same run, over the same sealed
``events.ingested.<ORI>`` records the hub's dedup stage reads (copied to one topic, partition for partition). Per
record it does what dedup (which routes) does: open the sealed record with the hub's key table, decode and validate
it, keep dedup state in Quix's RocksDB store (exact repeats, re-submissions, and the cross-agency content match with
the hub's own record linkage over hour buckets), route the canonical event with the hub's sharing policy and registry, and
seal and encode every output (the canonical event, one feed item per unit it goes to, one audit record listing every
unit's decision, and that record again on each owner's ``agency.<ORI>``), all exactly-once. The outputs go to topics
of its own (``quix.*`` under the run's prefix).

Left out, so the figure flatters Quix slightly: citations, BLACK twins and primacy moves; the other stages
(intake, correlate, deconflict, alerts, seal) do not run at all. The ratio it gives is therefore one of runtimes
(client, runner, state store) doing the same kind of work, not of whole flows.
"""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

from consumers.linkage import Profile, compare
from consumers.stage import Message, Output
from consumers.stages.dedup import (
    CANONICAL_NAMESPACE, DedupConfig, _buckets, _credited, _new_event, credit_of, probability,
)
from consumers.stages.route import RouteStage
from hub.control import applied_revision
from hub.settings import HubSettings
from hub.vault import hub_codec
from schemas.models import CanonicalEvent, CaseEvent, DedupDecision, DedupRule, EventType
from schemas.topics import AGENCY_FEED, AUDIT, CANONICAL, FEED, INGESTED

QUIX_PREFIX = "quix."
#: Its input: the benchmark copies every ``events.ingested.<ORI>`` record here, partition for partition.
QUIX_INPUT = "ingested"


@dataclass
class QuixProgress:
    """What the Quix process reports to the benchmark through shared values."""

    processed: Any  # multiprocessing.Value("q"): input records processed
    first_at: Any  # multiprocessing.Value("d"): wall time the first record was processed (0: none yet)
    peak_rss_mb: Any  # multiprocessing.Value("d"): the process's peak RSS, set by the benchmark's wrapper


class DedupAndRoute:
    """One input record in, its encoded outputs ``(logical topic, key, value)`` out; Quix keeps ``state`` per key."""

    def __init__(self, settings: HubSettings, agencies: list[str] = ()) -> None:
        self.agencies = list(agencies)  # the owners the router tells on their own topics (agency.<ORI>)
        revision = applied_revision(settings)
        if revision is None:
            raise RuntimeError("no task-force registry applied in the benchmark's namespace")
        self.codec = hub_codec(settings)
        self.router = RouteStage(revision)
        self.config = DedupConfig()

    def outputs(self) -> list[str]:
        """Every logical topic it may write."""
        units = sorted(unit.unit_id for unit in self.router.registry.task_forces)  # type: ignore[union-attr]
        return [CANONICAL.pattern, AUDIT.name(), *(FEED.name(unit=unit) for unit in units),
                *(AGENCY_FEED.name(ori=ori) for ori in self.agencies)]

    def __call__(self, value: bytes, state: Any) -> list[tuple[str, bytes, bytes]]:
        event: CaseEvent = self.codec.decode(value)
        canonical = self._dedup(event, state)
        if canonical is None:
            return []
        key = canonical.canonical_id.encode()
        routed = self.router.process(Message("", 0, 0, key, canonical, 0), state=None)  # type: ignore[arg-type]
        return [(output.topic, output.key or b"", self.codec.encode(output.value))
                for output in [Output(CANONICAL.pattern, key, canonical), *routed]]

    def _dedup(self, event: CaseEvent, state: Any) -> CanonicalEvent | None:
        if state.get(f"event|{event.event_id}") is not None:
            return None
        state.set(f"event|{event.event_id}", True)
        record_key = f"record|{event.agency_ori}|{event.source_system}|{event.source_record_id}"
        seen = state.get(record_key)
        if seen is not None:
            if event.record_version <= seen["version"]:
                return None
            previous = CanonicalEvent.model_validate(state.get(f"canonical|{seen['canonical_id']}"))
            canonical = previous.model_copy(update={"revision": previous.revision + 1, "decision": DedupDecision(
                rule=DedupRule.RESUBMISSION_UPDATE, score=1.0, event_id=event.event_id, explanation="new version")})
        else:
            canonical = self._matched(event, state) or _new_event(
                str(uuid.uuid5(CANONICAL_NAMESPACE, event.event_id)), event)
        state.set(record_key, {"version": event.record_version, "canonical_id": canonical.canonical_id})
        state.set(f"canonical|{canonical.canonical_id}", canonical.model_dump(mode="json"))
        if event.event_type == EventType.SEIZURE:
            bucket = f"candidates|{_buckets(event.event_time.timestamp(), 0)[0]}"
            state.set(bucket, [*(state.get(bucket) or []), Profile.of(canonical.canonical_id, event).as_dict()])
        return canonical

    def _matched(self, event: CaseEvent, state: Any) -> CanonicalEvent | None:
        if event.event_type != EventType.SEIZURE:
            return None
        best: tuple[float, str, str] | None = None
        profile = Profile.of("", event)
        for bucket in _buckets(event.event_time.timestamp(), self.config.max_hours_apart):
            for summary in state.get(f"candidates|{bucket}") or []:
                if summary["agency"] == event.agency_ori:
                    continue
                comparison = compare(profile, Profile(**summary))
                if comparison.matches(self.config.threshold) and (best is None or comparison.score > best[0]):
                    best = (comparison.score, comparison.explain(), summary["canonical_id"])
        if best is None:
            return None
        score, explanation, canonical_id = best
        score = probability(score)
        previous = CanonicalEvent.model_validate(state.get(f"canonical|{canonical_id}"))
        decision = DedupDecision(rule=DedupRule.CROSS_AGENCY_MATCH, score=score, explanation=explanation,
                                 event_id=event.event_id)
        return _credited(previous, credit_of(event, DedupRule.CROSS_AGENCY_MATCH, score), decision)


def run_quix_app(settings: HubSettings, agencies: list[str], progress: QuixProgress, stop: Any) -> None:
    """Run the application over ``agencies``' records until ``stop`` is set (in a process of its own: spawned by
    the benchmark)."""
    # confluent-kafka's schema-registry client, which Quix Streams imports, warns about its own httpx dependency.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from quixstreams import Application
    from quixstreams.kafka.configuration import ConnectionConfig
    from quixstreams.models.serializers import Serializer
    from quixstreams.models.topics import TopicConfig

    connection = ConnectionConfig(
        bootstrap_servers=settings.bootstrap_servers, security_protocol=settings.security_protocol,
        sasl_mechanism=settings.sasl_mechanism if settings.sasl_username else None,
        sasl_username=settings.sasl_username, sasl_password=settings.sasl_password,
        ssl_ca_location=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    app = Application(broker_address=connection, consumer_group=f"{settings.topic_prefix}{QUIX_PREFIX}dedup",
                      auto_offset_reset="earliest", processing_guarantee="exactly-once", commit_interval=1.0,
                      state_dir=str(settings.runtime_dir / "quix-state"), loglevel="WARNING",
                      on_message_processed=lambda *_: _count(progress))
    config = TopicConfig(num_partitions=INGESTED.partitions, replication_factor=1)

    class EncodedValue(Serializer):
        """The encoded value of an output ``(logical topic, key, value)``: the topic and key are chosen from it."""

        def __call__(self, value: tuple[str, bytes, bytes], ctx: Any) -> bytes:
            return value[2]

    work = DedupAndRoute(settings, agencies)
    topics = {logical: app.topic(f"{settings.topic_prefix}{QUIX_PREFIX}{logical}", value_serializer=EncodedValue(),
                                 config=config) for logical in work.outputs()}

    def output_topic(value: tuple[str, bytes, bytes], *_: Any) -> Any:
        return topics[value[0]]

    stream = app.dataframe(app.topic(f"{settings.topic_prefix}{QUIX_PREFIX}{QUIX_INPUT}", value_deserializer="bytes",
                                     config=config))
    stream = stream.apply(work, stateful=True, expand=True)
    stream.to_topic(output_topic, key=lambda value: value[1])
    threading.Thread(target=_stop_when_set, args=(stop, app), daemon=True).start()
    app.run()


def _stop_when_set(stop: Any, app: Any) -> None:
    """Polls rather than ``stop.wait()``: a process that ends while a thread waits on a multiprocessing Event
    leaves whoever sets it waiting for ever."""
    while not stop.is_set():
        time.sleep(0.2)
    app.stop()


def _count(progress: QuixProgress) -> None:
    with progress.processed.get_lock():
        if progress.processed.value == 0:
            progress.first_at.value = time.time()
        progress.processed.value += 1

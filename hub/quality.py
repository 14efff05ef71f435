"""How well the hub links records: precision, recall and F1 of dedup and deconfliction on labelled exports.

``hub bench quality`` publishes :mod:`producers.exports`' labelled set through each agency's Publisher, runs the
intake, dedup, correlate and deconflict stages over it on the broker, reads back what they wrote, and scores it
per category against the labels. ``--in-memory`` runs the same stage code over in-memory state, partitioned as
Kafka partitions it, in a second or two: for tuning. Nothing here decides anything; it only measures.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from kafka.partitioner.default import murmur2

from consumers.stage import Message, Stage
from consumers.stages.correlate import CorrelateStage, DeconflictStage
from consumers.stages.dedup import DedupStage
from consumers.state import MemoryPartitionStore, State
from producers.exports import ExportLabels, generate_exports
from schemas.codec import parse_event
from schemas.exceptions import RecordInvalidError
from schemas.models import AlertKind, CanonicalEvent, CaseEvent, DeconflictionAlert
from schemas.topics import CORRELATION_KEYS, INGESTED, dedup_block

Mode = Literal["broker", "in-memory"]
CATEGORIES = ("dedup, all pairs", "cross-agency, no citation", "reports citing another agency's record",
              "resubmissions and updates", "TARGET alerts (shared entities)", "EVENT alerts (operations)")


@dataclass(frozen=True)
class Score:
    category: str
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True)
class QualityReport:
    mode: Mode
    records: int
    rejected: list[tuple[int, str]]  # (record number, why) of records the contract refused
    scores: list[Score]
    lookalike_alerts: int  # alerts between records whose identifiers only look alike: each one is false
    seconds: float
    mistakes: list[str] = field(default_factory=list)  # a few wrong decisions, with what they rested on


@dataclass
class Outcome:
    """What the stages wrote: every canonical event revision and every alert raised."""

    canonicals: list[CanonicalEvent] = field(default_factory=list)
    alerts: list[DeconflictionAlert] = field(default_factory=list)


def bench_quality(incidents: int = 650, seed: int = 2024, mode: Mode = "broker", settings: Any = None,
                  mistakes: int = 10) -> QualityReport:
    """Generate the labelled exports, run them through the stages (on the broker, or in memory) and score them."""
    exports = generate_exports(incidents, seed)
    events, rejected = [], []
    for number, record in enumerate(exports.records, start=1):
        try:
            events.append(parse_event(record))
        except RecordInvalidError as exc:
            rejected.append((number, str(exc).splitlines()[0]))
    started = time.monotonic()
    outcome = run_in_memory(events) if mode == "in-memory" else run_on_broker(events, settings)
    seconds = time.monotonic() - started
    scores, lookalikes, wrong = score(exports.labels, events, outcome, mistakes)
    return QualityReport(mode, len(exports.records), rejected, scores, lookalikes, seconds, wrong)


# -- running the stages ------------------------------------------------------------------------------
class _InMemory:
    """The stages' own code over in-memory state, each input partitioned as the Kafka producer partitions it."""

    def __init__(self) -> None:
        self.stores: dict[tuple[str, int], MemoryPartitionStore] = defaultdict(MemoryPartitionStore)

    def run(self, stage: Stage, key: bytes, value: Any, partitions: int) -> list[Any]:
        partition = (murmur2(key) & 0x7FFFFFFF) % partitions  # the Java and kafka-python default partitioner
        store = self.stores[(stage.name, partition)]
        state = State(store)
        outputs = stage.process(Message(stage.name, partition, 0, key, value, 0), state)
        store.apply(state.take_writes(), None)
        return outputs


def run_in_memory(events: Iterable[CaseEvent]) -> Outcome:
    memory, outcome = _InMemory(), Outcome()
    dedup, correlate, deconflict = DedupStage(), CorrelateStage(), DeconflictStage()
    for event in events:
        for canonical in memory.run(dedup, dedup_block(event).encode(), event, INGESTED.partitions):
            outcome.canonicals.append(canonical.value)
            for keyed in correlate.process(Message("", 0, 0, None, canonical.value, 0), State(MemoryPartitionStore())):
                outcome.alerts += [o.value for o in memory.run(deconflict, keyed.key, keyed.value,
                                                               CORRELATION_KEYS.partitions)]
    return outcome


def run_on_broker(events: list[CaseEvent], settings: Any = None) -> Outcome:
    """Publish ``events`` as each agency would, drain intake, dedup, correlate and deconflict in turn (in a topic
    namespace of the run's own), and read back what dedup and deconflict wrote."""
    from hub.bench import BenchmarkError, _drain, _namespace, _publish, _run_stage
    from consumers.runner import stage_lag
    from consumers.stages import STAGES
    from hub.kafka import read_topic
    from hub.settings import get_settings
    from hub.vault import hub_codec
    from schemas.topics import ALERTS_RAISED, CANONICAL

    bench = _namespace(settings or get_settings(), sorted({e.agency_ori for e in events}))
    _publish(bench, events)
    for name in ("intake", "dedup", "correlate", "deconflict"):
        _drain(name, lambda clock, until, ready, name=name: _run_stage(name, bench, ready, until, clock))
        behind = sum(stage_lag(STAGES[name](), bench).values())
        if behind:
            raise BenchmarkError(f"the {name} stage stopped {behind} records short of its backlog",
                                 hint="the broker may be overloaded: run it again")
    codec = hub_codec(bench)
    outcome = Outcome()
    outcome.canonicals = [codec.decode(r.value) for r in read_topic(CANONICAL.name(bench.topic_prefix), bench)]
    outcome.alerts = [codec.decode(r.value) for r in read_topic(ALERTS_RAISED.name(bench.topic_prefix), bench)]
    return outcome


# -- scoring -----------------------------------------------------------------------------------------
def _pairs(groups: dict[str, set[str]]) -> set[frozenset[str]]:
    return {frozenset(pair) for members in groups.values() for pair in itertools.combinations(sorted(members), 2)}


def _score(category: str, predicted: set[frozenset[str]], actual: set[frozenset[str]]) -> Score:
    return Score(category, len(predicted & actual), len(predicted - actual), len(actual - predicted))


def score(labels: ExportLabels, events: list[CaseEvent], outcome: Outcome,
          mistakes: int = 10) -> tuple[list[Score], int, list[str]]:
    """Per category, pairs the stages put together against the pairs the labels say belong together.

    Dedup is scored over pairs of reports (each version of a record is a report): together when the same canonical
    event credits them (following the ids an event went on under), and truly together when the labels give them one
    incident. Alerts are scored over pairs of incidents."""
    moved = {c.canonical_id: c.superseded_by for c in outcome.canonicals if c.superseded_by}
    cluster: dict[str, str] = {}
    explained: dict[str, str] = {}
    for canonical in outcome.canonicals:
        for credit in canonical.reports:
            cluster.setdefault(credit.event_id, canonical.canonical_id)
        explained[canonical.decision.event_id] = canonical.decision.explanation

    def current(canonical_id: str) -> str:
        while canonical_id in moved:
            canonical_id = moved[canonical_id]
        return canonical_id

    accepted = [e for e in events if e.event_id in cluster]
    predicted_groups: dict[str, set[str]] = defaultdict(set)
    actual_groups: dict[str, set[str]] = defaultdict(set)
    for event in accepted:
        predicted_groups[current(cluster[event.event_id])].add(event.event_id)
        actual_groups[labels.incident_of[event.event_id]].add(event.event_id)
    predicted, actual = _pairs(predicted_groups), _pairs(actual_groups)
    record_of, agency_of = labels.record_of, {e.event_id: e.agency_ori for e in accepted}

    def kind(pair: frozenset[str]) -> str:
        a, b = sorted(pair)
        if record_of[a] == record_of[b]:
            return "resubmission"
        if agency_of[a] == agency_of[b]:
            return "same agency"
        return "citing" if frozenset({record_of[a], record_of[b]}) in labels.citing else "no citation"

    def of_kind(pairs: set[frozenset[str]], wanted: str) -> set[frozenset[str]]:
        return {p for p in pairs if kind(p) == wanted}

    scores = [_score(CATEGORIES[0], predicted, actual),
              _score(CATEGORIES[1], of_kind(predicted, "no citation"), of_kind(actual, "no citation")),
              _score(CATEGORIES[2], of_kind(predicted, "citing"), of_kind(actual, "citing")),
              _score(CATEGORIES[3], of_kind(predicted, "resubmission") | of_kind(predicted, "same agency"),
                     of_kind(actual, "resubmission") | of_kind(actual, "same agency"))]
    alerted: dict[AlertKind, set[frozenset[str]]] = defaultdict(set)
    for alert in outcome.alerts:
        incidents = frozenset(labels.incident_of.get(p.event_id, p.event_id) for p in alert.parties)
        if len(incidents) == 2:
            alerted[alert.alert_kind].add(incidents)
    scores += [_score(CATEGORIES[4], alerted[AlertKind.TARGET], labels.shared_entities),
               _score(CATEGORIES[5], alerted[AlertKind.EVENT], labels.conflicts)]
    lookalikes = len((alerted[AlertKind.TARGET] | alerted[AlertKind.EVENT]) & labels.lookalikes)
    position = {e.event_id: n for n, e in enumerate(accepted)}

    def later(pair: frozenset[str]) -> str:
        """Why the later report of a pair went where it went."""
        return explained.get(max(pair, key=position.__getitem__), "")

    wrong = [f"merged, but {' and '.join(sorted(labels.incident_of[e] for e in pair))} are two incidents: "
             f"{later(pair)}" for pair in sorted(predicted - actual, key=sorted)[:mistakes]]
    wrong += [f"kept apart, but one incident ({labels.incident_of[next(iter(pair))]}): {later(pair)}"
              for pair in sorted(actual - predicted, key=sorted)[:mistakes]]
    return scores, lookalikes, wrong

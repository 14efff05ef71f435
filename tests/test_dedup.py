"""Dedup as a pure function over typed events: rules, and precision/recall on the labelled sample."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import timedelta

import pytest

from consumers.exceptions import UpdateTooLateError
from consumers.registry import load_registry
from consumers.sharing import route
from consumers.stage import Message
from consumers.stages.dedup import DedupConfig, DedupStage
from consumers.state import MemoryPartitionStore, State
from consumers.state.base import SEPARATOR
from producers.sample import generate
from schemas.models import CanonicalEvent, DedupRule
from schemas.topics import dedup_block
from tests.factories import make_event

REGISTRY = load_registry()


class PartitionedRun:
    """Feeds events to one stage instance per partition key, committing state after every event."""

    def __init__(self, stage: DedupStage) -> None:
        self.stage = stage
        self.stores: dict[bytes, MemoryPartitionStore] = defaultdict(MemoryPartitionStore)
        self.latest: dict[str, CanonicalEvent] = {}  # current events only
        self.moved: dict[str, str] = {}  # canonical id -> the id it went on under
        self.outputs: list[CanonicalEvent] = []

    def current(self, canonical_id: str) -> CanonicalEvent:
        """The event ``canonical_id`` names now, following the ids it went on under."""
        while canonical_id in self.moved:
            canonical_id = self.moved[canonical_id]
        return self.latest[canonical_id]

    def feed(self, event) -> list[CanonicalEvent]:
        key = dedup_block(event).encode()
        state = State(self.stores[key])
        outputs = self.stage.process(Message("ingest", 0, 0, key, event, 0), state)
        self.stores[key].apply(state.take_writes(), None)
        produced = [o.value for o in outputs]
        for canonical in produced:
            self.latest[canonical.canonical_id] = canonical
            if canonical.superseded_by is not None:
                self.moved[canonical.canonical_id] = canonical.superseded_by
                del self.latest[canonical.canonical_id]  # it goes on under the new id: counted there
        self.outputs += produced
        return produced


def test_exact_duplicate_counts_once():
    run = PartitionedRun(DedupStage())
    event = make_event()
    assert len(run.feed(event)) == 1
    assert run.feed(event) == []


def test_resubmission_same_version_is_a_duplicate_higher_is_an_update():
    run = PartitionedRun(DedupStage())
    first = make_event(source_record_id="FPF-1")
    run.feed(first)
    assert run.feed(make_event(source_record_id="FPF-1")) == []
    [update] = run.feed(make_event(source_record_id="FPF-1", record_version=2, payload__operation_name="Blue Lotus"))
    assert update.revision == 2 and update.decision.rule == DedupRule.RESUBMISSION_UPDATE
    assert update.primary.payload.operation_name == "Blue Lotus"
    assert [r.record_version for r in update.reports] == [2]
    assert run.feed(make_event(source_record_id="FPF-1", record_version=1)) == [], "an older version changes nothing"


HSI = {"ori": "CAHSI0100", "name": "HSI San Diego", "level": "FEDERAL"}


def test_cross_reference_merges_and_credits_both_agencies():
    run = PartitionedRun(DedupStage())
    [cbp] = run.feed(make_event())
    hsi = make_event(source_agency=HSI, source_system="ICM", source_record_id="SD-9",
                     event_time="2025-10-03T20:00:00Z", payload__seizure_number=None,
                     record_references=[{"system": "SEACATS", "number": "2026250400000101", "ori": "CACBP0100"}])
    [merged] = run.feed(hsi)
    assert merged.canonical_id == cbp.canonical_id and merged.revision == 2
    assert merged.agencies == ["CACBP0100", "CAHSI0100"]
    assert merged.decision.rule == DedupRule.CROSS_REFERENCE


def test_cross_agency_match_within_tolerance_and_not_beyond():
    config = DedupConfig()
    run = PartitionedRun(DedupStage(config))
    [cbp] = run.feed(make_event())
    near = make_event(source_agency=HSI, source_system="ICM", source_record_id="SD-10",
                      event_time="2025-10-03T15:05:00Z",
                      payload__drugs__0__net_weight={"value": 5.55, "unit": "KG"}, payload__seizure_number=None)
    [merged] = run.feed(near)
    assert merged.canonical_id == cbp.canonical_id and merged.decision.rule == DedupRule.CROSS_AGENCY_MATCH
    assert "place within 1 km" in merged.decision.explanation and 0 < merged.decision.score <= 1
    too_heavy = make_event(source_agency={**HSI, "ori": "CA0370000"}, source_system="RMS", source_record_id="X",
                           payload__drugs__0__net_weight={"value": 30, "unit": "LB"}, payload__seizure_number=None,
                           entities=[])
    [separate] = run.feed(too_heavy)
    assert separate.canonical_id != cbp.canonical_id and separate.decision.rule == DedupRule.NEW_EVENT


def test_same_agency_never_merges_across_records():
    run = PartitionedRun(DedupStage())
    run.feed(make_event())
    [other] = run.feed(make_event(source_record_id="2026250400000999", payload__seizure_number="2026250400000999"))
    assert other.decision.rule == DedupRule.NEW_EVENT


@pytest.mark.parametrize("seed", [5, 17])
def test_planted_duplicates_found_without_false_merges(seed):
    sample = generate(20_000, seed=seed)
    run = PartitionedRun(DedupStage())
    for event in sorted(sample.events, key=lambda e: e.report_time):
        run.feed(event)
    group_of = {}  # event id -> canonical id (final revision)
    for canonical in run.latest.values():
        for report in canonical.reports:
            group_of[report.event_id] = canonical.canonical_id
    by_id = {e.event_id: e for e in sample.events}
    predicted_pairs = set()
    for canonical in run.latest.values():
        ids = sorted(r.event_id for r in canonical.reports if r.rule != DedupRule.RESUBMISSION_UPDATE)
        agencies = {by_id[i].agency_ori for i in ids}
        if len(agencies) > 1:
            predicted_pairs |= {(a, b) for a in ids for b in ids if a < b}
    expected_pairs = {(a, b) for g in sample.labels.duplicate_groups for a in g for b in g if a < b}
    true_positives = len(predicted_pairs & expected_pairs)
    precision = true_positives / len(predicted_pairs) if predicted_pairs else 1.0
    recall = true_positives / len(expected_pairs)
    print(f"seed {seed}: {len(sample.labels.duplicate_groups)} planted groups, "
          f"{len(expected_pairs)} pairs; precision {precision:.3f}, recall {recall:.3f}")
    assert precision == 1.0 and recall == 1.0
    for chain in sample.labels.resubmissions:
        assert len({group_of.get(i) for i in chain if i in group_of}) == 1, chain
    # A report matching another agency's BLACK report stands as an event of its own (its agency must not learn of
    # the BLACK record), credited to the BLACK event too: the hub counts it there, once.
    in_black_events = {r.event_id for c in run.latest.values() if c.primary.handling.dissemination == "BLACK"
                       for r in c.reports if r.event_id != c.primary.event_id}
    totals = {c.canonical_id for c in run.latest.values() if c.primary.event_id not in in_black_events}
    assert len(totals) == len(sample.events) - sum(len(g) - 1 for g in sample.labels.duplicate_groups) \
        - sum(len(chain) - 1 for chain in sample.labels.resubmissions), "totals count each real-world event once"


def test_state_expires_by_event_time():
    """What a report is matched on goes after the retention; which reports and versions were seen (two small
    entries) stays for the memory, so a re-sent report is still known."""
    stage = DedupStage(DedupConfig(retention_days=1, memory_days=10))
    store = MemoryPartitionStore()
    state = State(store)
    event = make_event()
    stage.process(Message("ingest", 0, 0, b"k", event, 0), state)
    store.apply(state.take_writes(), None)
    assert store.size() > 2
    state.expire((event.event_time + timedelta(days=2)).timestamp())
    store.apply(state.take_writes(), None)
    assert sorted(key.split(SEPARATOR)[0] for key, _ in store.scan("")) == ["event", "record"]
    state.expire((event.event_time + timedelta(days=11)).timestamp())
    store.apply(state.take_writes(), None)
    assert store.size() == 0


def _as_the_runner_runs(stage: DedupStage, events, commit_every: int) -> list[dict]:
    """What ``stage`` writes for ``events``, run as the runner runs it on one partition: reads hide what the
    partition's clock has expired; every ``commit_every`` events the batch commits and expired entries are deleted."""
    store = MemoryPartitionStore()
    state = State(store)
    written = []
    for n, event in enumerate(events, 1):
        message = Message("ingest", 0, n, b"all", event, 0)
        state.hide_expired(stage.grace.total_seconds())
        written += [o.value.model_dump() for o in stage.process(message, state)]
        state.keep_last()
        state.advance_clock("ingest", stage.event_time(message), n)
        if n % commit_every == 0:
            state.expire(state.clock(stage.grace.total_seconds()) - stage.grace.total_seconds())
            store.apply(state.take_writes(), None)
    return written


def test_what_dedup_decides_does_not_depend_on_where_commits_fall():
    """A year of reports, then the same reports re-sent (an agency's export replayed): live commits every few
    records, a replay in other batches; both must decide alike, and the re-sent reports repeat nothing even though
    the events they belong to left the 30-day matching window long before."""
    sample = generate(400, seed=3)
    reports = sorted(sample.events, key=lambda e: e.report_time)
    assert reports[-1].event_time - reports[0].event_time > timedelta(days=200), "the clock must pass expiries"
    # and a partner's report citing a seizure whose event the clock expired long before it arrived
    cbp = make_event(event_time=reports[0].event_time.isoformat())
    late = make_event(source_agency=HSI, source_system="ICM", source_record_id="SD-9",
                      event_time=reports[0].event_time.isoformat(), payload__seizure_number=None,
                      record_references=[{"system": "SEACATS", "number": "2026250400000101", "ori": "CACBP0100"}])
    reports = [cbp, *reports, late]
    every_record = _as_the_runner_runs(DedupStage(), reports + reports, commit_every=1)
    once = _as_the_runner_runs(DedupStage(), reports + reports, commit_every=10_000)
    in_sevens = _as_the_runner_runs(DedupStage(), reports + reports, commit_every=7)
    assert every_record == once == in_sevens
    assert every_record == _as_the_runner_runs(DedupStage(), reports, commit_every=3), "re-sent reports repeat nothing"
    [late_event] = [c for c in every_record if c["primary"]["event_id"] == late.event_id]
    assert late_event["revision"] == 1 and len(late_event["reports"]) == 1, "too late to match: an event of its own"


def test_an_update_after_its_event_left_state_is_dead_lettered_not_dropped():
    stage = DedupStage(DedupConfig(retention_days=30))
    first = make_event()
    much_later = make_event(event_time=first.event_time + timedelta(days=90))
    update = first.model_copy(update={"record_version": 2, "event_id": f"{first.event_id}-v2"})
    with pytest.raises(UpdateTooLateError, match="left dedup's state 30 days of event time"):
        _as_the_runner_runs(stage, [first, much_later, update], commit_every=1)


def final_events(canonicals) -> dict[frozenset[str], str]:
    """Which reports ended up together, and the id of the event they form (events that went on under another id
    are left out: they are counted there)."""
    latest: dict[str, CanonicalEvent] = {}
    for c in canonicals:
        if c.revision > getattr(latest.get(c.canonical_id), "revision", 0):
            latest[c.canonical_id] = c
    return {frozenset(r.event_id for r in c.reports): c.canonical_id for c in latest.values() if not c.superseded_by}


def final_groups(canonicals) -> set[frozenset[str]]:
    return set(final_events(canonicals))


def seizures(groups: set[frozenset[str]]) -> set[frozenset[str]]:
    """Groups sharing a report, merged (connected components)."""
    merged: list[set[str]] = []
    for group in groups:
        touching = [m for m in merged if m & group]
        union = set(group).union(*touching)
        merged = [m for m in merged if not m & group] + [union]
    return {frozenset(m) for m in merged}


def test_grouping_does_not_depend_on_which_agency_topic_is_read_first():
    sample = generate(10_000, seed=29)
    in_time_order = PartitionedRun(DedupStage())
    for event in sorted(sample.events, key=lambda e: e.report_time):
        in_time_order.feed(event)
    topic_by_topic = PartitionedRun(DedupStage())  # how a backlog is read: one agency's topic after another
    for ori in sorted({e.agency_ori for e in sample.events}, reverse=True):
        for event in sorted((e for e in sample.events if e.agency_ori == ori), key=lambda e: e.report_time):
            topic_by_topic.feed(event)
    black = {e.event_id for e in sample.events if e.handling.dissemination == "BLACK"}
    one_way, other_way = final_events(topic_by_topic.outputs), final_events(in_time_order.outputs)
    # The same reports form the same event under the same id, whichever arrived first.
    assert {g: i for g, i in one_way.items() if not g & black} == {g: i for g, i in other_way.items() if not g & black}
    # Reports matching a BLACK report are kept apart from it in events of their own (so their agencies cannot learn of
    # it) and credited to the BLACK owners' events: which of those a report lands in may depend on arrival order,
    # but which reports the hub holds to be one seizure (events sharing a report) does not.
    assert seizures(set(one_way)) == seizures(set(other_way))


def test_a_merged_event_is_the_same_whatever_order_its_reports_arrive_in():
    """The event's id, which report is primary, which reports are credited, and so what every unit receives of the
    merged event, depend on the reports alone: each planted group of reports (no BLACK ones) fed in every order."""
    sample = generate(3_000, seed=11)
    by_id = {e.event_id: e for e in sample.events}
    groups = [[by_id[i] for i in g] for g in sample.labels.duplicate_groups
              if not any(by_id[i].handling.dissemination == "BLACK" for i in g)][:40]
    assert len(groups) >= 20 and any(len(g) > 2 for g in groups)
    for group in groups:
        outcomes = set()
        for order in itertools.permutations(group):
            run = PartitionedRun(DedupStage())
            for event in order:
                run.feed(event)
            [merged] = [c for c in run.latest.values() if len(c.reports) > 1]
            decisions = tuple((d.unit_id, d.form, d.rule) for d in route(merged, REGISTRY))
            outcomes.add((merged.canonical_id, merged.primary.event_id, frozenset(r.event_id for r in merged.reports),
                          decisions))
        assert len(outcomes) == 1, f"group {[e.event_id for e in group]}: {len(outcomes)} outcomes by arrival order"

"""The sample generator: deterministic, exact, valid on the wire, and labelled truthfully (no Kafka)."""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from producers.directory import load_agencies
from producers.sample import DEFAULT_START, SampleLabels, SampleSet, generate, write_sample
from schemas.codec import Codec, parse_event
from schemas.models import CaseEvent, EventType
from schemas.reference import PORTS_OF_ENTRY

# What a reasonable rule must accept as reports of one seizure, and what counts as an event conflict.
SAME_SEIZURE_KM = 2.0
SAME_SEIZURE_WINDOW = timedelta(hours=3)
CONFLICT_KM = 0.3


@pytest.fixture(scope="module")
def sample() -> SampleSet:
    return generate(4000, seed=11)


# -- helpers -------------------------------------------------------------------------------------
def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    (lat1, lon1), (lat2, lon2) = (map(math.radians, a)), (map(math.radians, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def _point(event: CaseEvent) -> tuple[float, float]:
    location = event.location
    if location.has_coordinates:
        return location.latitude, location.longitude
    port = PORTS_OF_ENTRY[location.port_of_entry]
    return port.latitude, port.longitude


def _identifiers(event: CaseEvent) -> set[tuple[str, str]]:
    return {(i.scheme.value, i.value) for entity in event.entities for i in entity.identifiers}


def _same_seizure(a: CaseEvent, b: CaseEvent) -> bool:
    """Two agencies' reports of one seizure: a shared drug, the same port or within 2 km, within 3 h."""
    if a.agency_ori == b.agency_ori or abs(a.event_time - b.event_time) > SAME_SEIZURE_WINDOW:
        return False
    if not {d.drug_type for d in a.payload.drugs} & {d.drug_type for d in b.payload.drugs}:
        return False
    ports = a.location.port_of_entry, b.location.port_of_entry
    if all(ports):
        return ports[0] == ports[1]
    return _km(_point(a), _point(b)) <= SAME_SEIZURE_KM


def _groups_by_rule(events: list[CaseEvent]) -> set[frozenset[str]]:
    """Cross-agency duplicate groups a simple rule finds (connected pairs)."""
    seizures = sorted((e for e in events if e.event_type is EventType.SEIZURE), key=lambda e: e.event_time)
    parent = {e.event_id: e.event_id for e in seizures}

    def root(i: str) -> str:
        while parent[i] != i:
            i = parent[i]
        return i

    for index, event in enumerate(seizures):
        for later in itertools.takewhile(lambda o: o.event_time - event.event_time <= SAME_SEIZURE_WINDOW,
                                         seizures[index + 1:]):
            if _same_seizure(event, later):
                parent[root(later.event_id)] = root(event.event_id)
    groups: dict[str, set[str]] = defaultdict(set)
    for event_id in parent:
        groups[root(event_id)].add(event_id)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def _conflicts_by_rule(events: list[CaseEvent]) -> set[frozenset[str]]:
    operations = [e for e in events if e.event_type is EventType.PLANNED_OPERATION]
    return {frozenset((a.event_id, b.event_id)) for a, b in itertools.combinations(operations, 2)
            if a.agency_ori != b.agency_ori and _km(_point(a), _point(b)) <= CONFLICT_KM
            and a.payload.starts_at < b.payload.ends_at and b.payload.starts_at < a.payload.ends_at}


def _check_labels(sample: SampleSet) -> None:
    """Every label names existing events and says something true about them."""
    by_id = {e.event_id: e for e in sample.events}
    labels = sample.labels
    for group in labels.duplicate_groups:
        members = [by_id[i] for i in group]
        assert all(m.event_type is EventType.SEIZURE for m in members)
        assert len({m.agency_ori for m in members}) == len(members) >= 2
    for chain in labels.resubmissions:
        versions = [by_id[i] for i in chain]
        assert len(versions) >= 2
        assert len({(v.agency_ori, v.source_record_id) for v in versions}) == 1
        assert [v.record_version for v in versions] == sorted(v.record_version for v in versions)
        assert all(a.report_time < b.report_time for a, b in itertools.pairwise(versions))
    for correlation in labels.target_correlations:
        events = [by_id[i] for i in correlation["event_ids"]]
        assert all((correlation["scheme"], correlation["value"]) in _identifiers(e) for e in events)
        assert correlation["agencies"] == sorted({e.agency_ori for e in events})
        assert len(correlation["agencies"]) >= 2
    for conflict in labels.event_conflicts:
        first, second = (by_id[i] for i in conflict["event_ids"])
        assert first.event_type is second.event_type is EventType.PLANNED_OPERATION
        assert conflict["agencies"] == [first.agency_ori, second.agency_ori]
        assert first.agency_ori != second.agency_ori


def _fingerprint(sample: SampleSet) -> str:
    lines = [json.dumps(e.model_dump(mode="json"), sort_keys=True) for e in sample.events]
    return hashlib.sha256("\n".join(lines + [sample.labels.to_json()]).encode()).hexdigest()


# -- determinism and size ------------------------------------------------------------------------
def test_same_seed_same_output_and_other_seed_other_output():
    assert _fingerprint(generate(600, seed=3)) == _fingerprint(generate(600, seed=3))
    assert _fingerprint(generate(600, seed=3)) != _fingerprint(generate(600, seed=4))


def test_output_does_not_depend_on_hash_randomisation():
    code = ("import hashlib, json; from producers.sample import generate; s = generate(300, seed=5); "
            "print(hashlib.sha256(json.dumps([e.model_dump(mode='json') for e in s.events]).encode()"
            " + s.labels.to_json().encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(digests) == 1 and len(digests.pop().strip()) == 64


@pytest.mark.parametrize("count", [0, 1, 2, 7, 39, 40, 333])
def test_exactly_count_events_in_report_time_order(count):
    events = generate(count, seed=count).events
    assert len(events) == count
    assert len({e.event_id for e in events}) == count
    assert [e.report_time for e in events] == sorted(e.report_time for e in events)


def test_times_are_fixed_by_the_start_not_the_clock(sample):
    assert min(e.event_time for e in sample.events) >= DEFAULT_START - timedelta(hours=1)
    later = generate(50, seed=1, start=datetime(2026, 3, 1, tzinfo=UTC))
    assert min(e.event_time for e in later.events) >= datetime(2026, 3, 1, tzinfo=UTC) - timedelta(hours=1)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="count"):
        generate(-1)
    with pytest.raises(ValueError, match="timezone"):
        generate(10, start=datetime(2025, 10, 1))


def test_leaves_the_garbage_collector_as_it_was():
    generate(20)
    assert gc.isenabled()


# -- validity on the wire ------------------------------------------------------------------------
def test_every_event_passes_the_contract(sample):
    for event in sample.events:
        assert parse_event(event.model_dump(mode="json")) == event


def test_events_round_trip_through_the_codec(sample):
    codec = Codec()
    per_type = Counter()
    for event in sample.events:
        if per_type[event.event_type] < 40:
            per_type[event.event_type] += 1
            assert codec.decode(codec.encode(event)) == event
    assert set(per_type) == set(EventType)


# -- realism ---------------------------------------------------------------------------------------
def test_traffic_looks_like_a_southwest_border_task_force(sample):
    seizures = [e for e in sample.events if e.event_type is EventType.SEIZURE]
    drugs = Counter(d.drug_type.value for s in seizures for d in s.payload.drugs)
    assert {"FENTANYL", "METHAMPHETAMINE", "COCAINE", "MARIJUANA"} <= set(drugs)
    assert any(s.location.port_of_entry for s in seizures)
    assert {s.payload.operation_name for s in seizures} >= {"Operation Apollo", "Operation Blue Lotus"}
    assert any(p.serial_number for s in seizures for p in s.payload.pill_presses)
    assert any(s.payload.turned_over_to for s in seizures)
    assert len(sample.by_agency()) == len(load_agencies())
    assert {e.handling.dissemination.value for e in sample.events} == {"WHITE", "GRAY", "BLACK"}
    assert any(e.handling.intelligence for e in sample.events)
    assert any(e.payload.defendant_count >= 20 for e in sample.events if e.event_type is EventType.INDICTMENT)


def test_lab_results_come_after_the_seizure_they_cite(sample):
    by_id = {e.event_id: e for e in sample.events}
    labs = [e for e in sample.events if e.event_type is EventType.LAB_RESULT]
    assert labs
    for lab in labs:
        seizure = by_id[lab.payload.seizure_event_id]
        assert seizure.event_type is EventType.SEIZURE
        assert seizure.payload.seizure_number == lab.payload.seizure_number
        assert seizure.event_time < lab.event_time and seizure.report_time < lab.report_time


def test_fentanyl_powder_is_mostly_at_or_below_ten_percent_pure(sample):
    by_id = {e.event_id: e for e in sample.events}
    purities = [lab.payload.purity for lab in sample.events if lab.event_type is EventType.LAB_RESULT
                and lab.payload.drug_type.value == "FENTANYL"
                and by_id[lab.payload.seizure_event_id].payload.drugs[0].form.value == "POWDER"]
    assert len(purities) > 10
    assert sum(p <= 0.10 for p in purities) / len(purities) > 0.6


# -- labels --------------------------------------------------------------------------------------
def test_labels_are_consistent_with_the_events(sample):
    _check_labels(sample)
    counts = sample.labels.counts()
    assert all(groups > 0 for groups, _ in counts.values())


def test_a_simple_rule_finds_exactly_the_labelled_duplicate_groups(sample):
    labelled = {frozenset(g) for g in sample.labels.duplicate_groups}
    assert _groups_by_rule(sample.events) == labelled


def test_duplicate_reports_agree_on_what_was_seized(sample):
    by_id = {e.event_id: e for e in sample.events}
    for group in sample.labels.duplicate_groups:
        members = [by_id[i] for i in group]
        assert len({frozenset(d.drug_type for d in m.payload.drugs) for m in members}) == 1
        assert max(m.event_time for m in members) - min(m.event_time for m in members) <= timedelta(hours=2)


def test_a_simple_rule_finds_exactly_the_labelled_event_conflicts(sample):
    labelled = {frozenset(c["event_ids"]) for c in sample.labels.event_conflicts}
    assert _conflicts_by_rule(sample.events) == labelled


def test_every_identifier_shared_across_agencies_is_labelled(sample):
    agencies_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for event in sample.events:
        for key in _identifiers(event):
            agencies_of[key].add(event.agency_ori)
    shared = {key for key, agencies in agencies_of.items() if len(agencies) >= 2}
    labelled = {(c["scheme"], c["value"]) for c in sample.labels.target_correlations}
    assert labelled == shared
    assert {"PHONE_E164", "VIN", "LICENSE_PLATE", "PERSON_NAME_DOB", "PILL_PRESS_SERIAL",
            "ORGANIZATION_NAME"} <= {scheme for scheme, _ in labelled}


def test_every_reused_record_id_is_a_labelled_resubmission(sample):
    records = Counter((e.agency_ori, e.source_record_id) for e in sample.events)
    by_id = {e.event_id: e for e in sample.events}
    labelled = Counter({(by_id[c[0]].agency_ori, by_id[c[0]].source_record_id): len(c)
                        for c in sample.labels.resubmissions})
    assert +records - Counter(dict.fromkeys(records, 1)) == +labelled - Counter(dict.fromkeys(labelled, 1))
    assert any(by_id[c[-1]].record_version > 1 for c in sample.labels.resubmissions)
    assert any(by_id[c[0]].record_version == by_id[c[1]].record_version for c in sample.labels.resubmissions)


def test_labels_survive_json():
    labels = generate(300, seed=2).labels
    assert SampleLabels.from_json(labels.to_json()) == labels


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), count=st.integers(0, 120))
def test_any_seed_gives_exact_valid_labelled_output(seed, count):
    sample = generate(count, seed=seed)
    assert len(sample.events) == count
    _check_labels(sample)
    assert _groups_by_rule(sample.events) == {frozenset(g) for g in sample.labels.duplicate_groups}
    assert _conflicts_by_rule(sample.events) == {frozenset(c["event_ids"]) for c in sample.labels.event_conflicts}


def test_works_with_a_small_directory():
    directory = load_agencies()
    pair = {ori: directory[ori] for ori in ("CACBP0100", "CAHSI0100")}
    sample = generate(800, seed=9, agencies=pair)
    assert set(sample.by_agency()) == set(pair)
    assert sample.labels.duplicate_groups
    _check_labels(sample)
    alone = generate(50, seed=9, agencies={"CA0370000": directory["CA0370000"]})
    assert len(alone.events) == 50 and not alone.labels.target_correlations


# -- files and the command -------------------------------------------------------------------------
def test_write_sample_writes_one_file_per_agency_and_the_labels(tmp_path):
    sample = generate(500, seed=4)
    written = write_sample(sample, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{ori}.jsonl" for ori in sample.by_agency()] + ["labels.json"])
    read_back = {}
    for ori, path in written.items():
        for line in path.read_text().splitlines():
            event = parse_event(json.loads(line))
            assert event.agency_ori == ori
            read_back[event.event_id] = event
    assert read_back == {e.event_id: e for e in sample.events}
    assert SampleLabels.from_json((tmp_path / "out" / "labels.json").read_text()) == sample.labels


def test_hub_sample_command(tmp_path):
    from hub.cli import app
    from hub.cli import sample as _registers_the_command  # noqa: F401

    result = CliRunner().invoke(app, ["sample", "--count", "300", "--seed", "3", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "CACBP0100" in result.output and "duplicate_groups" in result.output
    assert (tmp_path / "labels.json").exists()
    assert sum(len(p.read_text().splitlines()) for p in tmp_path.glob("*.jsonl")) == 300

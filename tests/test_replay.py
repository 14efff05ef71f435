"""Replay: the pure comparison, and on the broker a re-run of sample traffic that reproduces what was sent,
names the differences a registry change makes, and leaves everything live untouched."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from kafka import TopicPartition

from consumers.registry import DEFAULT_REGISTRY, Registry, load_registry
from consumers.replay import REPLAYED_STAGES, Replay, compare_decisions
from consumers.runner import StageRunner
from consumers.stages import STAGES
from hub.control import apply_registry
from hub.exceptions import ConfigError
from hub.kafka import make_consumer
from hub.settings import HubSettings
from hub.topics import ensure_topics, hub_topics
from hub.vault import hub_codec
from producers.directory import load_agencies
from producers.sample import generate
from schemas.models import EventType, RoutingDecision, SharedRecordKind, routing_decisions
from schemas.topics import AUDIT, CANONICAL, INGESTED
from tests.conftest import hub_env, publish_events, topic_records, unique

UNITS = sorted(u.unit_id for u in load_registry().task_forces)


# -- the comparison, without Kafka -----------------------------------------------------------------
def decision(unit: str = "best-yuma", record: str = "r1", revision: str = "1", events: tuple[str, ...] = ("e1",),
             form: str = "FULL", rule: str = "white.full") -> RoutingDecision:
    return RoutingDecision(
        decision_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{unit}|{record}|{revision}")), record_id=record,
        record_kind=SharedRecordKind.CANONICAL_EVENT, revision=revision, event_ids=list(events), owner_oris=["AZ0140000"],
        unit_id=unit, principal=f"tf-{unit}", form=form, rule=rule, reason=f"because {rule}", subscription_id=None,
        registry_version=1, decided_at=datetime(2026, 1, 1, tzinfo=timezone.utc), component="route")


def test_identical_decisions_compare_equal_and_each_kind_of_difference_is_named():
    same = [decision(record=f"r{i}", events=(f"e{i}",)) for i in range(3)]
    assert compare_decisions(same, same, {"e0", "e1", "e2"}, {"e0", "e1", "e2"}).differences == []
    live = [*same, decision(record="gone", events=("e3",))]
    replayed = [decision(record="r0", events=("e0",), form="WITHHELD", rule="not-subscribed"),
                decision(record="r1", events=("e1",), rule="co-reporter.full"), same[2],
                decision(record="new", events=("e4",))]
    events = {"e0", "e1", "e2", "e3", "e4"}
    result = compare_decisions(live, replayed, events, events)
    kinds = {d.record_id: d.kind for d in result.differences}
    assert kinds == {"r0": "changed", "r1": "reason", "gone": "only-live", "new": "only-replay"}
    assert result.delivery_changes == 3
    [changed] = [d for d in result.differences if d.kind == "changed"]
    assert (changed.live, changed.replayed) == ("FULL (white.full)", "WITHHELD (not-subscribed)")


def test_records_outside_the_period_or_unit_are_not_compared_and_boundary_ones_are_counted():
    live = [decision(record="old", events=("e0",)), decision(record="mixed", events=("e1", "other-agency")),
            decision(unit="best-tucson", record="r2", events=("e2",))]
    replayed = [decision(record="mixed", revision="1", events=("e1",))]
    result = compare_decisions(live, replayed, period_events={"e1", "e2"}, replayed_events={"e0", "e1", "e2"},
                               units={"best-yuma"})
    assert result.differences == []
    assert result.boundary_decisions == 2  # the live mixed record, and the replay's record of the same report


def test_decisions_about_purged_reports_are_counted_apart():
    live = [decision(record="r0", events=("e0",)), decision(record="r1", events=("e1",))]
    replayed = [decision(record="r1", events=("e1",))]
    result = compare_decisions(live, replayed, {"e0", "e1"}, {"e0", "e1"}, purged_events=frozenset({"e0"}))
    assert result.differences == [] and result.purged_decisions == 1


# -- on the broker ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def replay_hub(kafka, tmp_path_factory) -> HubSettings:
    """One hub namespace for this module: the replays below only read its live topics (the first checks that)."""
    return HubSettings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=unique("t") + ".",
                       runtime_dir=tmp_path_factory.mktemp("replay") / "runtime", log_format="json")


@pytest.fixture(scope="module")
def live_history(replay_hub):
    """Sample traffic published by the agencies and run through every stage, as it happened live."""
    hub_settings = replay_hub
    sample = generate(600, seed=23)
    agencies = sorted(load_agencies())
    ensure_topics(hub_topics(hub_settings.topic_prefix, agencies, sorted(STAGES), UNITS), hub_settings)
    apply_registry(settings=hub_settings, applied_by="test")
    publish_events(hub_settings, sample.events)
    for name in REPLAYED_STAGES:
        StageRunner(STAGES[name](), hub_settings, commit_interval_s=0.2).run_until_idle(idle_polls=10)
    return sample


def _live_positions(settings) -> dict:
    """End offsets of every live topic and committed offsets of every live group (what a replay must not move)."""
    consumer = make_consumer(settings=settings, group_id=None)
    try:
        topics = [t for t in consumer.topics()
                  if t.startswith(settings.topic_prefix) and not t.startswith(settings.topic_prefix + "replay.")]
        partitions = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
        ends = consumer.end_offsets(partitions)
    finally:
        consumer.close()
    committed = {}
    for name in REPLAYED_STAGES:
        group = make_consumer(settings=settings, group_id=f"{settings.topic_prefix}hub.{name}")
        try:
            committed[name] = {tp: group.committed(tp) for tp in partitions}
        finally:
            group.close()
    return {"ends": ends, "committed": committed}


def test_a_replay_reproduces_what_was_sent_and_touches_nothing_live(live_history, replay_hub):
    hub_settings = replay_hub
    before = _live_positions(hub_settings)
    job = Replay(hub_settings, "same", datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
    result = job.run()
    comparison = job.compare()
    assert result.replayed_events == result.period_events == 600
    assert comparison.live_decisions > 1000 and comparison.feed_items > 100
    assert comparison.replayed_decisions == comparison.live_decisions
    assert comparison.differences == [], [d.describe() for d in comparison.differences[:5]]
    assert _live_positions(hub_settings) == before, "a replay must not write to live topics or move live groups"
    print(f"replay: {result.replayed_events} events in {result.seconds:.1f} s ({result.events_per_s:.0f}/s), "
          f"{comparison.live_decisions} decisions and {comparison.feed_items} feed items identical")
    with pytest.raises(ConfigError, match="already exists"):  # a namespace is never reused
        Replay(hub_settings, "same", datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc)).run()
    job.remove()


def test_a_replay_of_a_later_period_rebuilds_earlier_state_and_still_matches(live_history, replay_hub):
    hub_settings = replay_hub
    # The period is in the hub's time: when intake took each report in (the ingested records' timestamps).
    stamps = sorted(r.timestamp for ori in load_agencies()
                    for r in topic_records(hub_settings, INGESTED.name(hub_settings.topic_prefix, ori=ori)))
    middle = datetime.fromtimestamp(stamps[len(stamps) // 2] / 1000, tz=timezone.utc)
    done = subprocess.run([sys.executable, "-m", "hub", "replay", "--from", middle.isoformat(), "--compare",
                           "--namespace", "later"], env=hub_env(hub_settings), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 differences" in done.stdout
    in_period = re.search(r"\(([\d,]+) in the\s+period", done.stdout)
    assert in_period and int(in_period.group(1).replace(",", "")) == sum(t >= stamps[len(stamps) // 2] for t in stamps)


def test_a_registry_change_shows_as_the_expected_named_differences(live_history, replay_hub, tmp_path: Path):
    hub_settings = replay_hub
    # BEST Imperial Valley stops taking arrests through its area subscription.
    document = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    document["version"] = 2
    unit = next(u for u in document["task_forces"] if u["unit_id"] == "best-imperial-valley")
    subscription = next(s for s in unit["subscriptions"] if s["subscription_id"] == "aor-interdiction")
    subscription["event_types"] = ["SEIZURE", "LAB_RESULT"]
    changed = tmp_path / "taskforces.yaml"
    changed.write_text(yaml.safe_dump(document))

    codec = hub_codec(hub_settings)
    records = {c.canonical_id: c for c in (codec.decode(r.value) for r in
                                             topic_records(hub_settings, CANONICAL.name(hub_settings.topic_prefix)))}
    live = [d for r in topic_records(hub_settings, hub_settings.topic("audit")) for d in
            routing_decisions(codec.decode(r.value))]

    expected = {d.decision_id for d in live if d.unit_id == "best-imperial-valley"
                and d.subscription_id == "aor-interdiction" and d.form != "WITHHELD"
                and records[d.record_id].event_type == EventType.ARREST}
    assert expected, "the sample must have arrests Imperial Valley received through aor-interdiction"

    job = Replay(hub_settings, "what-if", datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc),
                 registry=Registry.model_validate(document))
    job.run()
    comparison = job.compare()
    deliveries = [d for d in comparison.differences if d.kind != "reason"]
    assert {d.unit_id for d in comparison.differences} == {"best-imperial-valley"}
    unexpected = [d.describe() for d in deliveries if d.kind != "changed" or not d.replayed.startswith("WITHHELD")]
    assert not unexpected, unexpected[:5]
    # Every arrest it received through that subscription is now withheld, or (named as a "reason" difference)
    # received through its other subscription; nothing else it received changes.
    by_id = {d.decision_id: d for d in live}
    named = {(d.record_id, d.revision): d for d in comparison.differences}
    expected_keys = {(by_id[i].record_id, by_id[i].revision) for i in expected}
    assert deliveries and {(d.record_id, d.revision) for d in deliveries} <= expected_keys
    assert expected_keys <= named.keys()
    assert all(named[key].kind == "changed" or "aor-interdiction" not in named[key].replayed_reason
               for key in expected_keys)
    # Arrests withheld before and now withheld for another reason are named too (not delivery changes).
    assert all(d.live.startswith("WITHHELD") or (d.record_id, d.revision) in expected_keys
               for d in comparison.differences if d.kind == "reason")

    done = subprocess.run([sys.executable, "-m", "hub", "replay", "--registry", str(changed), "--compare",
                           "--task-force", "best-imperial-valley", "--namespace", "cli-what-if"],
                          env=hub_env(hub_settings), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    # The command finds exactly what the replay above found: replays are deterministic.
    assert (f"{len(comparison.differences)} differences ({len(deliveries)} in what was delivered"
            in done.stdout.replace(",", ""))
    assert "best-imperial-valley" in done.stdout and "not-subscribed" in done.stdout
    job.remove()


@pytest.mark.kafka
def test_history_re_sent_by_its_agencies_repeats_nothing_and_replays_with_no_difference(kafka, tmp_path):
    """Every agency re-sends its year of records (an export replayed): live, dedup knows them all (no new decision);
    a replay of both sendings, committed at other points, decides exactly as live did."""
    settings = HubSettings(bootstrap_servers=kafka.bootstrap_servers, topic_prefix=unique("t") + ".",
                           runtime_dir=tmp_path / "runtime", log_format="json")
    sample = generate(300, seed=29)
    ensure_topics(hub_topics(settings.topic_prefix, sorted(load_agencies()), sorted(STAGES), UNITS), settings)
    apply_registry(settings=settings, applied_by="test")
    decided = []
    for _ in range(2):
        publish_events(settings, sample.events)
        for name in REPLAYED_STAGES:
            StageRunner(STAGES[name](), settings, commit_interval_s=0.05).run_until_idle(idle_polls=10)
        codec = hub_codec(settings)
        decided.append(sum(len(routing_decisions(codec.decode(r.value)))
                           for r in topic_records(settings, settings.topic(AUDIT.pattern))))
    ingested = sum(len(topic_records(settings, INGESTED.name(settings.topic_prefix, ori=ori)))
                   for ori in {e.agency_ori for e in sample.events})
    assert ingested == 2 * len(sample.events), "both sendings reached dedup"
    assert decided[0] > 300 and decided[1] == decided[0], "the second sending decided nothing new"
    job = Replay(settings, "resent", datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
    job.run()
    comparison = job.compare()
    assert comparison.live_decisions == decided[0]
    assert comparison.differences == [], [d.describe() for d in comparison.differences[:5]]
    job.remove()

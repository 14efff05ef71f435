"""Routing to task-force feeds: the stage over typed records, then on the real broker (feeds' bytes, audit,
registry changes while the router runs)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from consumers.registry import DEFAULT_REGISTRY, Registry, load_registry
from consumers.runner import StageRunner
from consumers.sharing import route
from consumers.stage import Message
from consumers.stages import STAGES
from consumers.stages.route import RouteStage
from hub.exceptions import TopicMissingError
from consumers.state import MemoryPartitionStore, State
from hub.auditing import principal_of
from hub.control import applied_revision, apply_registry, document_of
from hub.kafka import make_producer
from hub.topics import ensure_topics, hub_topics
from producers.directory import load_agencies
from producers.sample import generate
from schemas.codec import Codec
from schemas.models import (AuditEvent, DisseminationLevel, FeedItem, RegistryRevision, RoutingDecision,
                            routing_decisions)
from schemas.topics import AGENCY_FEED, AUDIT, CANONICAL, FEED
from schemas.topics import REGISTRY as REGISTRY_TOPIC
from tests.conftest import codec_with_keys, publish_events, topic_records
from tests.test_sharing import alert, canonical, event
from hub.vault import hub_codec

REGISTRY = load_registry()
UNITS = sorted(u.unit_id for u in REGISTRY.task_forces)


def revision_of(registry: Registry) -> RegistryRevision:
    from datetime import datetime, timezone
    import hashlib

    document = document_of(registry)
    return RegistryRevision(version=registry.version, document=document,
                            sha256=hashlib.sha256(document.encode()).hexdigest(), applied_by="test",
                            applied_at=datetime.now(timezone.utc))


def routed(record, registry: Registry = REGISTRY) -> list:
    stage = RouteStage(revision_of(registry))
    return stage.process(Message("events.canonical", 0, 0, b"k", record, 0), State(MemoryPartitionStore()))


# -- the stage over typed records ------------------------------------------------------------------
def test_one_audit_record_holds_every_units_decision_and_only_full_or_pointer_reach_feeds():
    record = canonical(event("CACBP0100", port="SAN_YSIDRO", handling={"dissemination": "GRAY"}))
    outputs = routed(record)
    [audited] = [o.value for o in outputs if o.topic == AUDIT.name()]
    audits = routing_decisions(audited)
    feeds = {o.topic: o.value for o in outputs if o.topic.startswith("feed.")}
    assert sorted(a.unit_id for a in audits) == UNITS
    decisions = {d.unit_id: d for d in route(record, REGISTRY)}
    assert set(feeds) == {FEED.name(unit=u) for u, d in decisions.items() if d.form != "WITHHELD"}
    for audit in audits:
        assert audit.form == decisions[audit.unit_id].form and audit.rule == decisions[audit.unit_id].rule
        assert audit.principal == f"tf-{audit.unit_id}" and audit.registry_version == REGISTRY.version
    for topic, item in feeds.items():
        assert item.form == decisions[item.unit_id].form
        if item.form == "POINTER":
            assert item.event is None and item.pointer.record_id == record.canonical_id
            assert "SAN_YSIDRO" not in item.model_dump_json()


def test_audit_records_of_either_schema_read_as_the_same_per_unit_decisions():
    """v7 writes one record for every unit; the per-unit records written before it read the same way."""
    record = canonical(event("CACBP0100", port="SAN_YSIDRO", handling={"dissemination": "GRAY"}))
    [audited] = [o.value for o in routed(record) if o.topic == AUDIT.name()]
    codec = Codec()
    per_unit = routing_decisions(codec.decode(codec.encode(audited)))
    before_v7 = [codec.decode(codec.encode(RoutingDecision.model_validate(d.model_dump()))) for d in per_unit]
    assert [type(d) for d in before_v7] == [RoutingDecision] * len(UNITS)
    assert [d.model_dump() for d in per_unit] == [d.model_dump() for r in before_v7 for d in routing_decisions(r)]
    assert {d.decision_id for d in per_unit} == {d.item_id for d in (o.value for o in routed(record))
                                                  if isinstance(d, FeedItem)} | {
        d.decision_id for d in per_unit if d.form == "WITHHELD"}
    assert routing_decisions(RegistryRevision.model_validate(revision_of(REGISTRY).model_dump())) == []


def test_a_black_record_produces_audit_but_no_feed_item_for_non_owners():
    record = canonical(event("CACBP0100", port="SAN_YSIDRO", handling={"dissemination": "BLACK"}))
    owners = {u.unit_id for u in REGISTRY.task_forces if record.primary.agency_ori in u.agencies}
    outputs = routed(record)
    assert {o.value.unit_id for o in outputs if o.topic.startswith("feed.")} == owners
    withheld = [d for o in outputs if o.topic == AUDIT.name() for d in routing_decisions(o.value)
                if d.form == "WITHHELD"]
    assert {a.unit_id for a in withheld} == set(UNITS) - owners


def test_owners_get_each_revisions_release_and_parties_the_alert_in_the_clear_on_their_own_topic():
    record = canonical(event("CACBP0100", port="SAN_YSIDRO"), event("CA0370000", port="SAN_YSIDRO",
                                                                    source_record_id="R-2"))
    outputs = routed(record)
    [audited] = [o.value for o in outputs if o.topic == AUDIT.name()]
    told = {o.topic: o for o in outputs if o.topic.startswith("agency.")}
    assert set(told) == {AGENCY_FEED.name(ori=ori) for ori in ("CACBP0100", "CA0370000")}
    assert all(o.value == audited and o.key == f"{record.canonical_id}@{record.revision}".encode()
               and not o.in_clear for o in told.values()), "the release record, kept per revision"
    raised = alert("CA0370000", "TXDPS0000")
    to_parties = [o for o in routed(raised) if o.topic.startswith("agency.")]
    assert {(o.topic, type(o.value).__name__, o.in_clear) for o in to_parties} == {
        (AGENCY_FEED.name(ori=ori), kind, kind == "DeconflictionAlert")
        for ori in ("CA0370000", "TXDPS0000") for kind in ("DeconflictionAlert", "RoutingDecisions")}
    assert {o.key for o in to_parties if o.in_clear} == {raised.alert_id.encode()}, "compaction keeps its state"


def test_dedup_routes_the_canonical_event_it_writes_in_the_same_call():
    """The hub runs route inside dedup (``Fused``): one input gives the canonical event, its feed items and its one
    audit record, which the runner then commits in one transaction."""
    stage = STAGES["dedup"]()
    assert stage.name == "dedup" and stage.global_inputs == (REGISTRY_TOPIC.pattern,)
    assert stage.waiting_for() and "hub taskforces apply" in stage.waiting_for()
    stage.on_global(Message(f"hub.{REGISTRY_TOPIC.pattern}", 0, 0, b"registry", revision_of(REGISTRY), 0))
    assert stage.waiting_for() is None
    report = event("CACBP0100", port="SAN_YSIDRO")
    outputs = stage.process(Message("events.ingested.CACBP0100", 0, 7, b"k", report, 0),
                            State(MemoryPartitionStore()))
    [written] = [o.value for o in outputs if o.topic == CANONICAL.pattern]
    [audited] = [o.value for o in outputs if o.topic == AUDIT.name()]
    assert audited.record_id == written.canonical_id and audited.event_ids == [report.event_id]
    assert {o.topic for o in outputs if o.topic.startswith("feed.")} == {
        FEED.name(unit=d.unit_id) for d in route(written, REGISTRY) if d.form != "WITHHELD"}


def test_only_a_stateless_stage_runs_inside_another():
    from consumers.stage import Fused
    from consumers.stages.correlate import CorrelateStage
    from hub.exceptions import ConfigError

    with pytest.raises(ConfigError, match="keeps state"):
        Fused(STAGES["intake"](), CorrelateStage())


def test_the_router_waits_for_a_registry():
    assert RouteStage().waiting_for() and "hub taskforces apply" in RouteStage().waiting_for()
    assert RouteStage(revision_of(REGISTRY)).waiting_for() is None


# -- on the broker ---------------------------------------------------------------------------------
def _setup(settings, agencies) -> None:
    """Every stage's topics, and those of the route stage run on its own (the hub runs it inside dedup and alerts)."""
    ensure_topics(hub_topics(settings.topic_prefix, sorted(agencies), sorted({*STAGES, "route"}), UNITS), settings)


def _drain(settings, stage) -> int:
    return StageRunner(stage, settings, commit_interval_s=0.2).run_until_idle(idle_polls=10)


def _audit(settings) -> list[RoutingDecision]:
    codec = Codec()
    return [d for r in topic_records(settings, settings.topic(AUDIT.pattern)) for d in
            routing_decisions(codec.decode(r.value))]


@pytest.mark.kafka
def test_black_records_never_reach_a_non_owner_feed_and_gray_ones_only_as_pointers(hub_settings):
    sample = generate(1_500, seed=44)
    agencies = {e.agency_ori for e in sample.events}
    _setup(hub_settings, agencies)
    apply_registry(settings=hub_settings, applied_by="test")
    publish_events(hub_settings, sample.events)
    _drain(hub_settings, STAGES["dedup"]())  # routes the canonical events it writes, in the same transactions
    routed_count = len(topic_records(hub_settings, hub_settings.topic(CANONICAL.pattern)))
    assert routed_count > 0

    feed_bytes = {unit: [r.value for r in topic_records(hub_settings, FEED.name(hub_settings.topic_prefix, unit=unit))]
                  for unit in UNITS}
    black = [e for e in sample.events if e.handling.dissemination == DisseminationLevel.BLACK]
    assert black, "the sample plants BLACK records"
    delivered_to_owner = 0
    for report in black:
        marker = report.event_id.encode()
        for unit in REGISTRY.task_forces:
            found = any(marker in value for value in feed_bytes[unit.unit_id])
            if report.agency_ori in unit.agencies:
                delivered_to_owner += found
            else:
                assert not found, f"BLACK event {report.event_id} of {report.agency_ori} leaked to {unit.unit_id}"
    assert delivered_to_owner, "BLACK records do reach their owners' feeds (so the check above can fail)"

    decisions = _audit(hub_settings)
    assert len(decisions) == routed_count * len(UNITS), "one decision per routed record and unit"
    codec = hub_codec(hub_settings)
    items = {unit: {item.item_id: item for item in map(codec.decode, values)} for unit, values in feed_bytes.items()}
    gray = [d for d in decisions if d.rule == "gray.pointer"]
    assert gray, "the sample plants GRAY records"
    for decision in gray:
        item = items[decision.unit_id][decision.decision_id]
        assert item.form == "POINTER" and item.event is None and item.pointer.record_id == decision.record_id
    for decision in (d for d in decisions if d.form == "WITHHELD"):
        assert decision.decision_id not in items[decision.unit_id]


@pytest.mark.kafka
def test_a_subscription_change_takes_effect_without_restarting_the_router(hub_settings, tmp_path: Path):
    _setup(hub_settings, ["CACBP0100"])  # the owner of the seizures it routes: told on agency.CACBP0100
    apply_registry(settings=hub_settings, applied_by="test")
    runner = StageRunner(RouteStage(), hub_settings, commit_interval_s=0.2)
    stop = threading.Event()
    router = threading.Thread(target=runner.run, kwargs={"until": lambda handled: stop.is_set()}, daemon=True)
    router.start()
    producer, codec = make_producer(hub_settings), hub_codec(hub_settings)

    def route_seizure_in_san_ysidro() -> str:
        record = canonical(event("CACBP0100", port="SAN_YSIDRO"))
        codec_with_keys(hub_settings, [record])
        producer.send(hub_settings.topic(CANONICAL.pattern), key=record.canonical_id.encode(), value=codec.encode(record))
        producer.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            yuma = [d for d in _audit(hub_settings) if d.record_id == record.canonical_id and d.unit_id == "best-yuma"]
            if yuma:
                return yuma[0]
            time.sleep(0.5)
        raise AssertionError("the router did not decide in time")

    try:
        before = route_seizure_in_san_ysidro()
        assert before.form == "WITHHELD" and before.registry_version == 1

        document = yaml.safe_load(DEFAULT_REGISTRY.read_text())
        document["version"] = 2
        yuma = next(u for u in document["task_forces"] if u["unit_id"] == "best-yuma")
        yuma["subscriptions"].append({"subscription_id": "san-ysidro-watch", "event_types": ["SEIZURE"],
                                      "regions": {"ports_of_entry": ["SAN_YSIDRO"]}})
        changed = tmp_path / "taskforces.yaml"
        changed.write_text(yaml.safe_dump(document))
        result = apply_registry(changed, settings=hub_settings, applied_by="test")
        assert result.applied and any("best-yuma" in c and "subscriptions" in c for c in result.revision.changes)

        # The router tails the registry topic between polls: the change applies within moments, not in order
        # with records already on their way.
        after = route_seizure_in_san_ysidro()
        for _ in range(20):
            if after.registry_version == 2:
                break
            time.sleep(0.5)
            after = route_seizure_in_san_ysidro()
        assert router.is_alive(), "the same router process decided both"
        assert (after.form, after.subscription_id, after.registry_version) == ("FULL", "san-ysidro-watch", 2)
        feed = [codec.decode(r.value) for r in topic_records(hub_settings,
                                                             FEED.name(hub_settings.topic_prefix, unit="best-yuma"))]
        assert after.record_id in [i.event.canonical_id for i in feed if isinstance(i, FeedItem)]
        assert all(i.registry_version == 2 for i in feed), "best-yuma received nothing under version 1"
        assert applied_revision(hub_settings).version == 2
    finally:
        stop.set()
        router.join(timeout=30)
        producer.close()


@pytest.mark.kafka
def test_applying_a_registry_is_idempotent_audited_and_refuses_a_stale_version(hub_settings, tmp_path: Path):
    from hub.control import RegistryVersionError

    _setup(hub_settings, ["CACBP0100"])  # the owner of the seizures it routes: told on agency.CACBP0100
    first = apply_registry(settings=hub_settings, applied_by="Sgt. Ortiz")
    assert first.applied and first.revision.changes[0].startswith("initial registry")
    assert not apply_registry(settings=hub_settings).applied
    document = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    document["task_forces"] = [u for u in document["task_forces"] if u["unit_id"] != "best-yuma"]
    stale = tmp_path / "stale.yaml"
    stale.write_text(yaml.safe_dump(document))
    with pytest.raises(RegistryVersionError) as refused:
        apply_registry(stale, settings=hub_settings)
    assert "version 1" in str(refused.value) and "Raise `version:`" in str(refused.value)
    codec = Codec()
    audited = [codec.decode(r.value) for r in topic_records(hub_settings, hub_settings.topic(AUDIT.pattern))]
    revisions = [v for v in audited if isinstance(v, RegistryRevision)]
    assert [(r.version, r.applied_by) for r in revisions] == [(1, principal_of(hub_settings))]
    [event] = [v for v in audited if isinstance(v, AuditEvent)]  # the person's name only in the detail
    assert event.principal == principal_of(hub_settings) and "by Sgt. Ortiz" in event.detail
    assert json.loads(revisions[0].document)["version"] == 1
    assert sorted(load_agencies()) and load_registry() == Registry.model_validate(json.loads(revisions[0].document))


@pytest.mark.kafka
def test_a_router_without_its_topics_says_which_and_how_to_create_them(hub_settings):
    from hub.exceptions import TopicMissingError

    with pytest.raises(TopicMissingError) as missing:
        StageRunner(RouteStage(), hub_settings).run()
    assert "changelog.route" in str(missing.value) and "hub topics init" in str(missing.value)



@pytest.mark.kafka
def test_a_missing_agency_topic_stops_the_router_with_what_to_do_and_nothing_half_written(hub_settings):
    """A deployment upgraded without `hub topics init` lacks agency.<ORI>: the stage stops and says so at once,
    rather than hang a transaction per retry; the record is not dead-lettered (it did nothing wrong)."""
    _setup(hub_settings, [])
    apply_registry(settings=hub_settings, applied_by="test")
    record = canonical(event("CACBP0100", port="SAN_YSIDRO"))
    codec = codec_with_keys(hub_settings, [record])
    producer = make_producer(hub_settings)
    producer.send(hub_settings.topic(CANONICAL.pattern), key=record.canonical_id.encode(), value=codec.encode(record))
    producer.flush()
    producer.close()
    with pytest.raises(TopicMissingError, match="agency.CACBP0100") as stopped:
        _drain(hub_settings, RouteStage())
    assert "hub topics init" in str(stopped.value)
    assert _audit(hub_settings) == [] and topic_records(hub_settings, hub_settings.topic("deadletter.route")) == []
    _setup(hub_settings, ["CACBP0100"])
    _drain(hub_settings, RouteStage())  # once created, the same record goes through
    assert {d.record_id for d in _audit(hub_settings)} == {record.canonical_id}

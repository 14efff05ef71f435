"""Every party on its own host, sharing nothing but Kafka (issue 10), compared with the single-host run.

Sixteen agencies, two hub hosts, three task forces and an auditor each get their own network namespace (reaching
only the SCRAM+TLS broker), OS user, HOME and runtime directory, and hold only their own Kafka login (hub hosts
also the KEK); see tests/topology.py. The agencies publish sample traffic with `hub publish`, each hub host runs one
instance of every stage with `hub run`, the task forces read their feeds with `hub subscribe`, the auditor queries
the audit log, an agency acknowledges an alert, and the hub purges one report. The same traffic is also run on one
host (in this process, under another topic prefix): canonical events, feed items and routing decisions must be
the same (for alerts: the same conflicts, each delivered alike; see ``_conflicts``), and the purged report
unreadable on every path afterwards.

Agencies publish one after another in the same order in both runs: records are ordered by the time they were
published, so the same order makes the same dedup decisions.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from consumers.registry import load_registry
from consumers.runner import StageRunner, stage_lag
from consumers.stages import STAGES
from consumers.subscriber import Subscriber
from hub.access import apply_access, credentials_for, load_auditors
from hub.control import apply_registry
from hub.kafka import make_admin, read_topic
from hub.settings import HubSettings
from hub.topics import ensure_topics, hub_topics
from hub.vault import hub_codec
from producers.directory import load_agencies
from producers.publisher import Publisher
from producers.sample import generate
from schemas.exceptions import RecordPurgedError
from schemas.models import (AuditEvent, AuditEventType, AuditOutcome, CaseEvent, DeconflictionAlert,
                            FeedItem, routing_decisions)
from schemas.topics import ALERTS, AUDIT, CANONICAL, INGEST, INGESTED
from tests import topology
from tests.factories import SEIZURE, key_id, make_event

PIPELINE = ("intake", "dedup", "correlate", "deconflict", "alerts", "seal")
UNITS = ("best-san-diego", "best-tucson", "best-laredo")
SPREAD, SINGLE = "topo.", "single."
UNAVAILABLE = topology.available()
pytestmark = [pytest.mark.kafka, pytest.mark.slow,
              pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")]


def _due_report() -> CaseEvent:
    """An intelligence report whose review-by date passed yesterday: the one `hub retention sweep` purges."""
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    return make_event(SEIZURE, source_record_id="TOPO-INTEL-1", payload__seizure_number="TOPO-PURGE-0001",
                      handling__intelligence={"criminal_predicate": "21 USC 841 distribution", "sensitivity": "HIGH",
                                              "confidence": "PROBABLE", "control_official": "SAC San Diego",
                                              "review_by": yesterday.isoformat()})


@dataclass
class Traffic:
    by_agency: dict[str, list[CaseEvent]]
    due: CaseEvent

    @property
    def agencies(self) -> list[str]:
        return sorted(self.by_agency)

    @property
    def count(self) -> int:
        return sum(len(events) for events in self.by_agency.values())


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    # The sample spans about 245 days (follow-ups come months after a seizure): started 250 days ago it ends before
    # now, and no report of it is past its review-by date (at least a year after the report) yet.
    start = datetime.combine(datetime.now(timezone.utc).date() - timedelta(days=250), datetime.min.time(), timezone.utc)
    sample = generate(240, seed=10, start=start)
    by_agency = {ori: list(events) for ori, events in sample.by_agency().items()}
    due = _due_report()
    by_agency.setdefault(due.agency_ori, []).append(due)
    return Traffic(by_agency, due)


# -- what both runs are compared on ------------------------------------------------------------------
def _decoded(settings: HubSettings, topic: str) -> list:
    codec = hub_codec(settings)  # the hub operator's view: hub principal and KEK
    try:
        return [codec.decode(r.value) for r in read_topic(settings.topic(topic), settings) if r.value is not None]
    finally:
        codec.vault.close()


def _canonical(settings: HubSettings) -> dict[tuple[str, int], dict]:
    return {(c.canonical_id, c.revision): c.model_dump(mode="json") for c in _decoded(settings, CANONICAL.pattern)}


def _decisions(settings: HubSettings) -> dict[str, dict]:
    return {d.decision_id: d.model_dump(mode="json") for a in _decoded(settings, AUDIT.pattern)
            for d in routing_decisions(a)}


def _audit_events(settings: HubSettings) -> list[AuditEvent]:
    return [a for a in _decoded(settings, AUDIT.pattern) if isinstance(a, AuditEvent)]


def _differences(spread: dict, single: dict) -> list[str]:
    """What differs between the two runs' records, by id and field (for the assertion message)."""
    found = [f"{key} ({(spread.get(key) or single[key]).get('record_kind', '')} "
             f"{(spread.get(key) or single[key]).get('revision', '')}): only in the "
             f"{'spread' if key in spread else 'single-host'} run" for key in sorted(spread.keys() ^ single.keys(), key=str)]
    for key in sorted(spread.keys() & single.keys(), key=str):
        found += [f"{key}: {field}: spread {spread[key].get(field)!r}, single {single[key].get(field)!r}"
                  for field in sorted(spread[key].keys() | single[key].keys())
                  if spread[key].get(field) != single[key].get(field)]
    return found[:10]


def _conflicts(settings: HubSettings) -> dict[str, tuple]:
    """Alert id -> the conflict it reports: kind, matched target or place, and the two agencies.

    Which two reports an alert names can differ between runs: when an agency has several records touching one
    target, the first to meet the other agency's record depends on how the correlate instances interleaved their
    writes to correlate.by-key. The conflicts found, and what each unit receives about them, do not."""
    return {a.alert_id: (a.alert_kind, a.matched, tuple(sorted(p.agency.ori for p in a.parties)))
            for a in _decoded(settings, ALERTS.pattern)}


def _decided_alert(decision: dict) -> tuple[str | None, tuple]:
    return (decision["record_id"] if decision["record_kind"] == "ALERT" else None,
            (decision["unit_id"], decision["revision"], decision["form"], decision["rule"]))


def _delivered_alert(item: dict) -> tuple[str | None, tuple]:
    pointer = item["pointer"] or {}
    alert_id = (item["alert"] or {}).get("alert_id") or (pointer["record_id"] if pointer.get("record_kind") == "ALERT"
                                                         else None)
    status = (item["alert"] or {}).get("status")
    return alert_id, (item["unit_id"], status, item["form"], item["rule"])


def _split(records: dict[str, dict], conflicts: dict[str, tuple], about_alert) -> tuple[dict, set]:
    """Records about canonical events, by id (compared exactly), and what each unit got about each conflict when
    it was raised: (conflict, unit, form, rule). Later revisions are left out: an alert escalates once the stream
    passes its deadline, which comes from the reports it names (see ``_conflicts``)."""
    events, alerts = {}, set()
    for key, record in records.items():
        alert_id, (unit, status, form, rule) = about_alert(record)
        if alert_id is None:
            events[key] = record
        elif status in ("OPEN", None):  # None: a pointer, which names no status
            alerts.add((conflicts[alert_id], unit, form, rule))
    return events, alerts


def _feed(settings: HubSettings, unit: str) -> dict[str, dict]:
    with Subscriber(unit, settings, start="beginning") as subscriber:
        return {i.item_id: i.model_dump(mode="json") for i in subscriber.items(idle_s=1)}


# -- the single-host run -------------------------------------------------------------------------------
def _single_host_run(admin: HubSettings, traffic: Traffic, runtime_dir: Path, kek: Path) -> HubSettings:
    """Everything in this process under one login: the result the spread-out run must reproduce."""
    settings = admin.model_copy(update={"topic_prefix": SINGLE, "runtime_dir": runtime_dir, "kek_file": kek})
    units = sorted(u.unit_id for u in load_registry().task_forces)
    ensure_topics(hub_topics(SINGLE, sorted(load_agencies()), list(PIPELINE), units), settings)
    apply_registry(settings=settings, applied_by="single-host run")
    for ori in traffic.agencies:
        with Publisher(ori, settings) as publisher:
            for event in traffic.by_agency[ori]:
                publisher.publish(event)
            assert publisher.flush().published == len(traffic.by_agency[ori])
    for name in PIPELINE:
        StageRunner(STAGES[name](), settings, commit_interval_s=0.2).run_until_caught_up()
    return settings


# -- the parties ---------------------------------------------------------------------------------------
@dataclass
class Parties:
    admin: HubSettings  # the broker's super user, used only to set the stage and to inspect it
    operator: HubSettings  # what a hub host holds (hub principal + KEK), for reading sealed topics afterwards
    single: HubSettings
    hubs: list[topology.Host]
    agencies: dict[str, topology.Host]
    task_forces: dict[str, topology.Host]
    auditor: topology.Host
    logs: Path


def _hub(host: topology.Host, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    return host.run([str(topology._python()), "-m", "hub", *args], timeout=timeout)


def _give(host: topology.Host, name: str, data: bytes) -> Path:
    """A file in the host's own HOME, readable by its user only."""
    path = host.home / name
    path.write_bytes(data)
    os.chown(path, host.uid, host.gid)
    path.chmod(0o600)
    return path


def _wait_for(done, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(1.0)


def _group_members(admin: HubSettings, group: str) -> int:
    client = make_admin(admin)
    try:
        return len(client.describe_groups([group])[group]["members"])
    finally:
        client.close()


@pytest.fixture(scope="module")
def parties(traffic: Traffic, tmp_path_factory) -> Iterator[Parties]:
    base = tmp_path_factory.mktemp("topology")
    with topology.Network() as net, topology.secured_broker(net, base / "broker") as broker:
        admin = broker.client_settings().model_copy(update={"topic_prefix": SPREAD, "log_format": "json"})
        units = sorted(u.unit_id for u in load_registry().task_forces)
        agencies = sorted(load_agencies())
        ensure_topics(hub_topics(SPREAD, agencies, list(PIPELINE), units), admin)
        apply_access(admin, SPREAD, agencies, units, auditors=load_auditors())
        kek = base / "kek"
        kek.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
        kek.chmod(0o600)
        single = _single_host_run(admin, traffic, base / "single", kek)

        def party(name: str, principal: str) -> topology.Host:
            host = net.host(name)
            host.login(admin.model_copy(update=credentials_for(principal, admin)))
            return host

        hubs = [party(f"hub{n}", "hub") for n in (1, 2)]
        for host in hubs:
            host.kafka_env["HUB_KEK_FILE"] = str(_give(host, "kek", kek.read_bytes()))
        operator = admin.model_copy(update={**credentials_for("hub", admin), "runtime_dir": base / "operator",
                                            "kek_file": kek})
        yield Parties(admin, operator, single, hubs,
                      {ori: party(ori.lower(), f"agency-{ori.lower()}") for ori in traffic.agencies},
                      {unit: party(f"tf{n}", f"tf-{unit}") for n, unit in enumerate(UNITS, 1)},
                      party("oig", "auditor-oig"), base / "logs")


@pytest.fixture(scope="module")
def spread(parties: Parties, traffic: Traffic) -> Parties:
    """The same traffic with every party on its own host: agencies publish, then both hub hosts run every stage."""
    applied = _hub(parties.hubs[0], "taskforces", "apply", "--by", "Registry Officer")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for ori in traffic.agencies:
        lines = "".join(e.model_dump_json() + "\n" for e in traffic.by_agency[ori])
        host = parties.agencies[ori]
        published = _hub(host, "publish", "--agency", ori, str(_give(host, "export.jsonl", lines.encode())))
        assert published.returncode == 0, f"{ori}: {published.stdout}{published.stderr}"
    parties.logs.mkdir(exist_ok=True)
    for name in PIPELINE:  # started in pipeline order (as the single-host run ran them), then all keep running
        for instance, host in enumerate(parties.hubs):
            log = (parties.logs / f"{name}-{instance}.log").open("w")
            host.spawn([str(topology._python()), "-m", "hub", "run", name, "--instance", str(instance),
                        "--commit-interval", "0.3"], env={"HUB_LOG_FORMAT": "json", "HUB_METRICS_PORT": "0"}, stdout=log,
                       stderr=subprocess.STDOUT)
        group = f"{SPREAD}hub.{name}"
        _wait_for(lambda: _group_members(parties.admin, group) == 2, 120, f"both {name} instances to join")
        _wait_for(lambda: not sum(stage_lag(STAGES[name](), parties.admin).values()), 300, f"{name} to catch up")
    return parties


# -- the checks ----------------------------------------------------------------------------------------
def test_agencies_publish_with_their_own_login_and_every_report_is_sealed_by_the_hub(spread, traffic):
    ingested = [r for ori in traffic.agencies for r in read_topic(INGESTED.name(SPREAD, ori=ori), spread.admin)]
    assert len(ingested) == traffic.count, "intake sealed every report the agencies published"
    assert not any(b"TOPO-PURGE-0001" in r.value for r in ingested), "the hub's history is never plain"
    plain = read_topic(INGEST.name(SPREAD, ori=traffic.due.agency_ori), spread.admin)
    assert any(b"TOPO-PURGE-0001" in r.value for r in plain), "an agency publishes in the clear (it holds no key)"
    for ori, host in list(spread.agencies.items())[:1]:
        assert not any(host.home.glob("**/*kek*")) and "HUB_KEK_FILE" not in host.environment()
        drained = _hub(host, "publish", "--agency", ori, "--drain")  # reads its own topic back: allowed
        assert drained.returncode == 0, drained.stdout + drained.stderr


def test_the_spread_run_gives_the_single_host_result(spread):
    canonical, single = _canonical(spread.operator), _canonical(spread.single)
    assert canonical and not _differences(canonical, single), _differences(canonical, single)
    conflicts, single_conflicts = _conflicts(spread.operator), _conflicts(spread.single)
    assert conflicts and sorted(conflicts.values()) == sorted(single_conflicts.values())
    decisions, single = _decisions(spread.operator), _decisions(spread.single)
    (events, alerts), (single_events, single_alerts) = (_split(decisions, conflicts, _decided_alert),
                                                        _split(single, single_conflicts, _decided_alert))
    assert events and not _differences(events, single_events), _differences(events, single_events)
    assert alerts and alerts == single_alerts
    for unit, host in spread.task_forces.items():
        read = _hub(host, "subscribe", "--task-force", unit, "--from-beginning", "--format", "jsonl")
        assert read.returncode == 0, read.stdout + read.stderr
        items = {i.item_id: i.model_dump(mode="json")
                 for i in (FeedItem.model_validate_json(line) for line in read.stdout.splitlines()
                           if line.startswith("{"))}
        (events, alerts), (single_events, single_alerts) = (_split(items, conflicts, _delivered_alert),
                                                            _split(_feed(spread.single, unit), single_conflicts,
                                                                   _delivered_alert))
        assert events and not _differences(events, single_events), (unit, _differences(events, single_events))
        assert alerts == single_alerts, unit
        full = [d for d in decisions.values() if d["unit_id"] == unit and d["form"] == "FULL"]
        assert full and {d["decision_id"] for d in full} <= set(items), "every FULL item routed to the unit"
    for stage in PIPELINE:
        assert _group_members(spread.admin, f"{SPREAD}hub.{stage}") == 2


def test_an_agency_acts_on_its_own_alert_under_its_own_principal(spread):
    alerts = [a for a in _decoded(spread.operator, ALERTS.pattern) if isinstance(a, DeconflictionAlert)]
    assert alerts, "the sample traffic raises deconfliction alerts"
    alert = alerts[0]
    party = next(p.agency.ori for p in alert.parties if p.agency.ori in spread.agencies)
    outsider = next(ori for ori in spread.agencies if ori not in {p.agency.ori for p in alert.parties})
    acked = _hub(spread.agencies[party], "alerts", "ack", alert.alert_id, "--agency", party, "--by", "Det. Reyes")
    assert acked.returncode == 0, acked.stdout + acked.stderr
    refused = _hub(spread.agencies[outsider], "alerts", "ack", alert.alert_id, "--agency", outsider, "--by", "X")
    assert refused.returncode == 0, refused.stdout + refused.stderr  # written; the alerts stage refuses it

    def audited() -> list[AuditEvent]:
        return [a for a in _audit_events(spread.operator)
                if a.event_type == AuditEventType.ALERT_STATUS_CHANGED and alert.alert_id in a.subject_ids
                and a.principal.startswith("agency-")]
    _wait_for(lambda: len(audited()) >= 2, 120, "the alerts stage to take both actions")
    outcomes = {(a.principal, a.outcome) for a in audited()}
    assert (f"agency-{party.lower()}", AuditOutcome.SUCCESS) in outcomes
    assert (f"agency-{outsider.lower()}", AuditOutcome.FAILURE) in outcomes


def test_the_auditor_queries_the_audit_log_with_its_own_login(spread, traffic):
    _wait_for(lambda: not sum(stage_lag(STAGES["seal"](), spread.admin).values()), 120, "the seal stage")
    verified = _hub(spread.auditor, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    who = _hub(spread.auditor, "audit", "who-saw", traffic.due.event_id)
    assert who.returncode == 0 and "best-san-diego" in who.stdout, who.stdout + who.stderr
    peek = _hub(spread.auditor, "subscribe", "--task-force", "best-san-diego", "--from-beginning")
    assert peek.returncode != 0 and "no feed topic" in peek.stdout + peek.stderr, "the broker hides feeds from it"


def test_a_purge_on_one_hub_host_reaches_every_path(spread, traffic):
    due, due_key = traffic.due.event_id, key_id(traffic.due)
    dry = _hub(spread.hubs[1], "retention", "sweep", "--within", "0")
    assert dry.returncode == 0 and due in dry.stdout and "1 past their review-by date" in dry.stdout, dry.stdout
    purged = _hub(spread.hubs[1], "retention", "sweep", "--purge", "--authorized-by", "Records Officer J. Doe")
    assert purged.returncode == 0 and "purged 1 reports" in purged.stdout, purged.stdout + purged.stderr

    codec = hub_codec(spread.operator)
    [sealed] = [r for r in read_topic(INGESTED.name(SPREAD, ori=traffic.due.agency_ori), spread.admin)
                if codec.envelope_of(r.value).key_ids == [due_key]]
    with pytest.raises(RecordPurgedError):
        codec.decode(sealed.value)
    carrying = [r for r in read_topic(spread.admin.topic(CANONICAL.pattern), spread.admin)
                if due_key in codec.envelope_of(r.value).key_ids]
    assert carrying
    for record in carrying:
        with pytest.raises(RecordPurgedError):
            codec.decode(record.value)
    codec.vault.close()
    read = _hub(spread.task_forces["best-san-diego"], "subscribe", "--task-force", "best-san-diego",
                "--from-beginning", "--format", "jsonl")
    assert "purge notice" in read.stdout and due in read.stdout, read.stdout[-2000:]
    [purge] = [a for a in _audit_events(spread.operator) if a.event_type == AuditEventType.RECORD_PURGED]
    assert purge.principal == "hub" and "Records Officer J. Doe" in purge.detail and purge.subject_ids == [due]

"""``hub demo``: the whole flow on the local broker, every party a process of its own (``hub/deployment.py``)."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from datetime import datetime, timezone
from collections.abc import Callable

import typer
from rich.table import Table

from consumers.registry import load_registry
from consumers.replay import REPLAYED_STAGES
from consumers.sharing import told_owners
from hub import deployment
from hub.access import load_auditors
from hub.checkpoints import public_key_path
from hub.cli import app, console
from hub.deployment import Deployment, Party
from hub.kafka import make_consumer, read_topic
from hub.settings import HubSettings
from hub.vault import hub_codec
from producers.directory import load_agencies
from producers.sample import SampleSet, generate
from schemas.codec import Codec
from schemas.models import CanonicalEvent, EventType, FeedItem, RoutingDecision, routing_decisions
from schemas.topics import ALERTS, AUDIT, CANONICAL, INGEST

SHOWN_UNITS = ["best-san-diego", "best-tucson", "best-laredo"]  # side by side; examples may add others
QUIET = {"HUB_LOG_LEVEL": "warning"}  # commands whose output is shown: their summary, not their info logs


@app.command("demo")
def demo(
    count: int = typer.Option(2000, "--count", help="Sample events to generate and publish."),
    hub_hosts: int = typer.Option(1, "--hub-hosts", min=1, max=4, help="Hub hosts, each running every stage "
                                  "(one instance per host; they share the KEK and split the partitions)."),
) -> None:
    """The real topology on the local broker (started with SASL/SCRAM and TLS if needed): the cluster operator
    creates the topics and one login per party, then every party runs as a separate process with only its own
    login and directory. Agencies publish multi-agency sample traffic with `hub publish`, the hub runs each stage
    with `hub run` (intake, dedup, correlation, deconfliction, alerts, audit sealing; dedup and the alerts stage
    route what they write under the sharing rules), task forces read their feeds with `hub subscribe` (including a
    gray pointer and a withheld black record), the hub replays and compares, and an auditor verifies the audit
    chain and asks who received one seizure. The broker keeps running afterwards."""
    began = time.monotonic()
    sample = generate(count, seed=2026)
    parties = _set_up(sample, hub_hosts)
    _publish(parties, sample)
    stages: list[subprocess.Popen[bytes]] = []
    try:
        console.rule("5. the hub: intake, dedup, correlate, deconflict, alert lifecycle, routing to the task forces "
                     "(hub taskforces apply, hub run STAGE, as hub)")
        _apply_registry(parties.hub)
        for name in deployment.PIPELINE[:5]:
            _run_stage(parties, name, stages)
        canonical = _show_canonical(parties.operator.settings)
        _show_alerts(parties.operator.settings)
        console.rule("6. the BEST task forces' feeds (routed by dedup and the alerts stage; "
                     "hub subscribe as tf-<unit>)")
        _show_feeds(parties)
        console.rule("7. the auditor's view (hub replay --compare, hub run seal, hub audit checkpoint as hub; "
                     "hub audit as auditor-oig)")
        _replay(parties.hub)
        _run_stage(parties, "seal", stages)
        _checkpoint(parties.hub)
        _audit(parties.auditors["oig"], canonical)
    finally:
        with console.status("stopping the hub's stages (SIGTERM)"):
            deployment.stop(stages)
    _show_console(parties)
    console.rule()
    admin = parties.operator.settings
    console.print(f"done in {time.monotonic() - began:.0f} s. The broker keeps running at {admin.bootstrap_servers} "
                  f"({admin.security_protocol}): `hub broker status` prints the admin's HUB_* settings, each party's "
                  f"files are in {parties.operator.directory.parent}, `hub broker stop` stops it.", highlight=False)


def _show_console(parties: Deployment) -> None:
    """Step 8: the console and the alerts stage, left running, with a sign-in for a task force, an agency with open
    alerts and the auditor."""
    console.rule("8. the analysts' console (hub console, on a web host holding only the CA)")
    unit, auditor = next(iter(parties.task_forces.values())), parties.auditors["oig"]
    alerts = _latest(parties.operator.settings, ALERTS.pattern, lambda a: a.alert_id).values()
    waiting = Counter(ori for a in alerts if a.status in ("OPEN", "ESCALATED") for ori in told_owners(a))
    ori = max(parties.agencies, key=lambda candidate: waiting[candidate])
    agency = parties.agencies[ori]
    with console.status("starting hub console, and hub run alerts to apply what agencies do there"):
        process, address = deployment.start_console(unit, public_key_path(parties.hub.settings))
        stage = deployment.keep_running(parties.hubs[0], "alerts", "run", "alerts", "--instance", "0",
                                        env={"HUB_LOG_FORMAT": "json"})
    console.print(f"The console is at {address} (pid {process.pid}), with the alerts stage (pid {stage.pid}) applying "
                  f"acknowledgements; both keep running: `kill {process.pid} {stage.pid}` stops them, and the next "
                  "`hub demo` replaces them. Sign in with a principal's own Kafka password:", highlight=False)
    table = Table("who", "principal", "password", "sees")
    table.add_row("a task force", unit.principal, unit.settings.sasl_password or "",
                  "its feed (live, filters, whom to call), its alerts, the map of its seizures and operations, charts")
    table.add_row("an agency", agency.principal, agency.settings.sasl_password or "",
                  f"the alerts it is a party to ({waiting[ori]} open or escalated) with acknowledge and "
                  "resolve, and who received each of its records")
    table.add_row("an auditor", auditor.principal, auditor.settings.sasl_password or "",
                  "the audit chains verified, the last signed checkpoint, replays, who saw a record, an agency's "
                  "releases")
    console.print(table)


def _set_up(sample: SampleSet, hub_hosts: int) -> Deployment:
    """Steps 0-2: the secured broker, what the cluster operator sets up as admin, and who is who."""
    auditors = load_auditors()
    units = sorted(u.unit_id for u in load_registry().task_forces)
    with console.status("starting Kafka with SASL/SCRAM and TLS") as status:
        broker = deployment.start_secured_broker(progress=status.update)
        admin = broker.client_settings()
        status.update("as the cluster operator: topics, logins and ACLs")
        topics, access = deployment.set_up_cluster(admin, sorted(load_agencies()), units, auditors)
        parties = deployment.standard_parties(admin, broker.layout.cluster_id, sample.by_agency(), units, auditors,
                                              hub_hosts)
    _show_parties(parties, admin)

    console.rule("1. the cluster operator: topics, logins and ACLs (hub topics init, hub access apply)")
    console.print(f"as admin (the only super user) at {admin.bootstrap_servers} ({admin.security_protocol}): "
                  f"{len(topics)} topics (" + ", ".join(f"{a} {sum(s.action == a for s in topics)}"
                                                        for a in ("created", "ok", "drift"))
                  + f"); {len(access.principals)} logins ({sum(p.credential == 'created' for p in access.principals)}"
                  f" new), {len(access.created)} ACLs created, {len(access.deleted)} removed", highlight=False)

    console.rule("2. sample traffic (hub sample)")
    labels = sample.labels
    console.print(f"{len(sample.events)} events from {len(parties.agencies)} agencies, each agency's export written "
                  f"into its own directory; planted: {len(labels.duplicate_groups)} cross-agency duplicate groups, "
                  f"{len(labels.resubmissions)} resubmissions, {len(labels.target_correlations)} shared targets, "
                  f"{len(labels.event_conflicts)} operation conflicts")
    return parties


def _show_parties(parties: Deployment, admin: HubSettings) -> None:
    """Step 0: who is who, so that every later step can say as whom it runs."""
    console.rule("0. who is who")
    root = parties.operator.directory.parent
    table = Table("party", "principal", "directory", "holds", title=f"the parties' directories: {root}/ (0700)")
    for party in parties.parties():
        table.add_row(party.name, party.principal, f"{party.directory.name}/", ", ".join(party.holds))
    console.print(table)
    console.print("Each party is a separate process with its own login and directory, sharing nothing with the "
                  f"others but Kafka ({admin.bootstrap_servers}, SASL/SCRAM over TLS, ACLs per principal), so any "
                  "of them could run on its own host; the topology test in `make test` also gives each its own "
                  "network namespace and OS user. The operator's view (hub login and KEK) is what this process "
                  "uses to show the sealed topics.", highlight=False)


def _publish(parties: Deployment, sample: SampleSet) -> None:
    """Steps 3-4: each agency writes its export into its own directory and publishes it with `hub publish` as
    itself; then what reached the broker, counted and read back by the operator."""
    console.rule("3. each agency publishes its own file (hub publish, as agency-<ORI>)")
    operator = parties.operator.settings
    ingest = {ori: INGEST.name(operator.topic_prefix, ori=ori) for ori in parties.agencies}
    before = _counts(operator, ingest)
    per_agency = sample.by_agency()
    for ori, party in parties.agencies.items():
        export = deployment.give(party, f"{ori}.jsonl", "".join(e.model_dump_json() + "\n"
                                                                for e in per_agency[ori]).encode())
        with console.status(f"hub publish --agency {ori} (as {party.name})"):
            done = deployment.run(party, "publish", "--agency", ori, export.name, "--rejects", f"{ori}.rejects.jsonl")
        summary = done.stdout.strip().splitlines()  # the summary table: border, header, rule, row, border
        if ori == next(iter(parties.agencies)):
            console.print(f"  {'agency':<10}{summary[1]}", highlight=False)
        console.print(f"  {ori:<10}{summary[3]}", highlight=False)

    console.rule("4. what is on the broker now (in the clear: only the agency and the hub may read it)")
    after = _counts(operator, ingest)
    table = Table("agency", "topic", "new events on broker", "in the file")
    for ori in parties.agencies:
        table.add_row(ori, ingest[ori], str(after[ori] - before[ori]), str(len(per_agency[ori])))
    console.print(table)
    _show_examples(operator, ingest)


def _run_stage(parties: Deployment, name: str, running: list[subprocess.Popen[bytes]]) -> None:
    """Start `hub run NAME` on every hub host (added to ``running``, which the caller stops at the end) and wait
    until the stage has caught up with its inputs."""
    began = time.monotonic()
    logs = [host.directory / "logs" / f"{name}.log" for host in parties.hubs]
    started = [deployment.start(host, "run", name, "--instance", str(instance), "--commit-interval", "0.3",
                                log=log, env={"HUB_LOG_FORMAT": "json"})
               for instance, (host, log) in enumerate(zip(parties.hubs, logs))]
    running += started
    with console.status(f"hub run {name}: starting") as status:
        backlog = deployment.wait_caught_up(
            name, parties.operator.settings, started[0], logs[0],
            progress=lambda behind: status.update(f"hub run {name}: {behind:,} input records to go"))
    hosts = ", ".join(f"{h.name} pid {p.pid}" for h, p in zip(parties.hubs, started))
    console.print(f"  {name}: caught up on {backlog:,} input records in {time.monotonic() - began:.1f} s ({hosts}; "
                  "keeps running)", highlight=False)


def _apply_registry(hub: Party) -> None:
    """The hub puts the task-force registry in effect (before dedup and the alerts stage start: they route)."""
    console.print(f"$ hub taskforces apply  [dim](as {hub.name})[/]", style="bold")
    applied = deployment.run(hub, "taskforces", "apply", "--by", "Registry Officer", env=QUIET)
    console.print(applied.stdout.rstrip(), highlight=False)


def _audit(auditor: Party, canonical: dict[str, CanonicalEvent]) -> None:
    """The auditor, with its own login, verifies the chains and asks who received a seizure several agencies
    reported (each query is itself recorded on audit.queries)."""
    seizure = next((c for c in canonical.values() if c.event_type == EventType.SEIZURE and len(c.agencies) > 1), None)
    for command in (["audit", "verify"], *([["audit", "who-saw", seizure.primary.event_id]] if seizure else [])):
        console.print(f"$ hub {' '.join(command)}  [dim](as {auditor.name})[/]", style="bold", highlight=False)
        done = deployment.run(auditor, *command, env=QUIET)
        console.print(done.stdout.rstrip(), highlight=False)


def _checkpoint(hub: Party) -> None:
    """The hub signs where the audit chains stand and publishes it (the console shows auditors the last one)."""
    console.print(f"$ hub audit checkpoint  [dim](as {hub.name})[/]", style="bold")
    done = deployment.run(hub, "audit", "checkpoint", env=QUIET)
    written = done.stdout.find("checkpoint of")  # the verification's table came first: `hub audit verify` shows it
    console.print(done.stdout[max(written, 0):].rstrip(), highlight=False)


def _latest(settings: HubSettings, topic: str, key_of: Callable) -> dict:
    """The newest record per key of a sealed topic, opened with the operator's hub login and KEK."""
    codec = hub_codec(settings)
    try:
        return {key_of(value): value for value in (codec.decode(r.value) for r in
                                                   read_topic(settings.topic(topic), settings) if r.value is not None)}
    finally:
        codec.vault.close()


def _show_canonical(settings: HubSettings) -> dict[str, CanonicalEvent]:
    latest = {key: event for key, event in _latest(settings, CANONICAL.pattern, lambda c: c.canonical_id).items()
              if event.superseded_by is None}  # an event that went on under another id counts there
    reports = sum(len(c.reports) for c in latest.values())
    merged = [c for c in latest.values() if len(c.agencies) > 1]
    console.print(f"the canonical stream holds {len(latest):,} real-world events from {reports:,} reports; "
                  f"{len(merged):,} were reported by several agencies (read as the operator: hub login and KEK)")
    if merged:
        example = max(merged, key=lambda c: len(c.reports))
        console.print(f"[bold]canonical seizure {example.canonical_id}[/] (revision {example.revision}), credited to:")
        for credit in example.reports:
            console.print(f"  {credit.agency.ori} {credit.agency.name}: {credit.source_system} "
                          f"{credit.source_record_id} ({credit.rule}, score {credit.score:.2f})", highlight=False)
        console.print(f"  last decision: {example.decision.rule}: {example.decision.explanation}", highlight=False)
    return latest


def _show_alerts(settings: HubSettings) -> None:
    alerts = _latest(settings, ALERTS.pattern, lambda a: a.alert_id)
    table = Table("kind", "status", "alerts")
    for (kind, status), n in sorted(Counter((a.alert_kind, a.status) for a in alerts.values()).items()):
        table.add_row(kind, status, str(n))
    console.print(table)
    urgent = [a for a in alerts.values() if a.urgent]
    if urgent:
        alert = urgent[0]
        console.print(f"[bold red]urgent {alert.alert_kind} alert {alert.alert_id}[/] ({alert.status}): "
                      f"{alert.explanation}", highlight=False)
        for party in alert.parties:
            contact = party.contact
            who = f"{contact.name} {contact.telephone or ''}" if contact else "no contact on record"
            console.print(f"  {party.agency.ori} {party.agency.name}: {who}", highlight=False)
        console.print(f"  acknowledge with: hub alerts ack {alert.alert_id} --agency {alert.parties[0].agency.ori} "
                      "--by NAME  (as agency-" f"{alert.parties[0].agency.ori})", highlight=False)


def _read_feeds(units: dict[str, Party]) -> dict[str, dict[str, FeedItem]]:
    """Each unit's feed as the unit itself reads it (`hub subscribe`, its own login), all units at once."""
    with console.status(f"hub subscribe, as {', '.join(p.name for p in units.values())}"):
        done = deployment.run_together([(party, ["subscribe", "--task-force", unit, "--from-beginning",
                                                 "--format", "jsonl"]) for unit, party in units.items()], env=QUIET)
    feeds = {}
    for unit, result in zip(units, done):
        items = (FeedItem.model_validate_json(line) for line in result.stdout.splitlines() if line.startswith("{"))
        feeds[unit] = {item.item_id: item for item in items}  # the newest revision of each item
    return feeds


def _examples(decisions: list[RoutingDecision]) -> list[tuple[str, str, dict[str, RoutingDecision]]]:
    """One GRAY and one BLACK record that some unit received in full: (what, record id, unit -> decision) for that
    unit and up to two units the rule kept it from."""
    by_record: dict[str, dict[str, RoutingDecision]] = {}
    for decision in decisions:
        by_record.setdefault(decision.record_id, {})[decision.unit_id] = decision
    found = []
    for rule, what in (("gray.pointer", "a GRAY record"), ("black.withheld", "a BLACK record")):
        example = next(((record_id, per) for record_id, per in sorted(by_record.items())
                        if any(d.rule == rule for d in per.values()) and any(d.form == "FULL" for d in per.values())),
                       None)
        if example is not None:
            record_id, per_unit = example
            shown = [next(u for u, d in sorted(per_unit.items()) if d.form == "FULL"),
                     *[u for u, d in sorted(per_unit.items()) if d.rule == rule][:2]]
            found.append((what, record_id, {u: per_unit[u] for u in shown}))
    return found


def _show_feeds(parties: Deployment) -> None:
    """Several units' feeds side by side, then one gray and one black record as each unit concerned sees it. Which
    unit got what under which rule comes from the audit log (the operator's view); what each unit holds comes
    from its own `hub subscribe`."""
    audited = _latest(parties.operator.settings, AUDIT.pattern,
                      lambda a: (getattr(a, "record_id", "registry"), getattr(a, "revision", "")))
    decisions = [d for a in audited.values() for d in routing_decisions(a)]
    examples = _examples(decisions)
    units = list(dict.fromkeys([*SHOWN_UNITS, *(u for _, _, per_unit in examples for u in per_unit)]))
    feeds = _read_feeds({unit: parties.task_forces[unit] for unit in units})
    table = Table("feed items", *SHOWN_UNITS)
    for label, match in (("full events", lambda i: i.event is not None), ("alerts", lambda i: i.alert is not None),
                         ("pointers (gray, or above the unit's clearance)", lambda i: i.pointer is not None)):
        table.add_row(label, *(f"{sum(map(match, feeds[u].values())):,}" for u in SHOWN_UNITS))
    console.print(table)
    for what, record_id, per_unit in examples:
        view = Table(f"{what}: {record_id[:8]}", *per_unit)
        view.add_row("in the unit's feed (hub subscribe)", *(
            feeds[u][d.decision_id].form if d.decision_id in feeds[u] else "nothing (same as no record)"
            for u, d in per_unit.items()))
        view.add_row("rule (audit log)", *(d.rule for d in per_unit.values()))
        console.print(view)
    withheld = Counter(d.rule for d in decisions if d.form == "WITHHELD")
    console.print("audit topic: " + ", ".join(f"{n:,} {form.lower()}" for form, n in
                                               sorted(Counter(d.form for d in decisions).items()))
                  + "; withheld by rule: " + ", ".join(f"{rule} {n:,}" for rule, n in withheld.most_common()))
    console.print(f"read a feed as its unit: hub subscribe --task-force {units[0]} --from-beginning "
                  f"(with tf-{units[0]}'s login)", highlight=False)


def _replay(hub: Party) -> None:
    """`hub replay --compare` as the hub: the routing decisions re-derived from the history match the audit log.
    Each run gets a namespace of its own, so one that was interrupted (and left its topics) does not block the
    next."""
    namespace = f"demo-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    console.print(f"$ hub replay --compare --namespace {namespace}  [dim](as {hub.name})[/]", style="bold",
                  highlight=False)
    with console.status(f"hub replay --compare --namespace {namespace}"):
        done = deployment.run(hub, "replay", "--compare", "--namespace", namespace, env=QUIET, check=False)
    summary = [line for line in done.stdout.splitlines() if not line.startswith(("copy", *REPLAYED_STAGES))]
    console.print("\n".join(summary), highlight=False)
    if done.returncode and done.stderr.strip():  # the error, or a traceback's exception, not its frames
        lines = [line for line in done.stderr.splitlines() if line.strip() and not line[0].isspace()
                 and not line.startswith("Traceback")]
        console.print("\n".join(lines[-2:]), style="red", highlight=False)


def _counts(settings: HubSettings, topics: dict[str, str]) -> dict[str, int]:
    from kafka import TopicPartition

    consumer = make_consumer(settings=settings, group_id=None)
    try:
        counts = {}
        for ori, topic in topics.items():
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            counts[ori] = sum(consumer.end_offsets(partitions).values())
        return counts
    finally:
        consumer.close()


def _show_examples(settings: HubSettings, topics: dict[str, str]) -> None:
    """Decode a few events back from the broker: a seizure with its estimated doses, a lab result, an arrest. They
    are plain (agencies hold no hub key), so no key is needed to read them: the ACLs keep others out."""
    wanted = {EventType.SEIZURE, EventType.LAB_RESULT, EventType.ARREST}
    consumer = make_consumer(*topics.values(), settings=settings, group_id=None, consumer_timeout_ms=5000)
    codec = Codec()
    try:
        for message in consumer:
            event = codec.decode(message.value)
            if event.event_type not in wanted or (
                    event.event_type == EventType.SEIZURE and not event.payload.estimated_doses()):
                continue
            wanted.discard(event.event_type)
            summary = {"event_id": event.event_id, "agency": event.source_agency.name,
                       "at": event.location.port_of_entry or event.location.state, "key": message.key.decode()}
            if event.event_type == EventType.SEIZURE:
                summary["drugs"] = ", ".join(f"{d.drug_type} {d.form}" for d in event.payload.drugs)
                summary["estimated fentanyl doses"] = f"{event.payload.estimated_doses():,.0f}"
            console.print(f"[bold]{event.event_type}[/] from {message.topic}", summary)
            if not wanted:
                break
    finally:
        consumer.close()

"""``hub demo``: the whole flow on the local broker, end to end (grows with each capability)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import typer
from rich.table import Table

from consumers.replay import REPLAYED_STAGES
from consumers.runner import StageRunner
from consumers.stages import STAGES
from consumers.registry import load_registry
from hub.broker import LocalBroker
from hub.control import apply_registry
from hub.cli import app, console
from hub.kafka import make_consumer
from hub.settings import get_settings
from hub.topics import ensure_topics, hub_topics
from producers.directory import load_agencies
from producers.sample import generate, write_sample
from hub.vault import hub_codec
from schemas.models import EventType, RoutingDecision
from schemas.topics import ALERTS, AUDIT, CANONICAL, FEED, INGEST


@app.command("demo")
def demo(count: int = typer.Option(2000, "--count", help="Sample events to generate and publish.")) -> None:
    """The whole flow on the local broker: start it if needed, create the topics, generate multi-agency sample
    traffic, publish each agency's file with `hub publish`, run dedup, deconfliction and the alert lifecycle,
    apply the task-force registry and route to the feeds, show several units' feeds side by side (including a
    gray pointer and a withheld black record), and end with the auditor's view: a verified audit chain and
    who received one seizure."""
    settings = get_settings()
    with console.status("starting Kafka") as status:
        LocalBroker().start(progress=lambda m: status.update(m))
    console.rule("1. topics (schemas/topics.py)")
    agencies = load_agencies()
    topics = {ori: INGEST.name(settings.topic_prefix, ori=ori) for ori in agencies}
    statuses = ensure_topics([(t, INGEST) for t in topics.values()], settings)
    console.print(f"{len(statuses)} ingest topics: "
                  + ", ".join(f"{a} {sum(s.action == a for s in statuses)}" for a in ("created", "ok", "drift")))

    console.rule("2. sample traffic (hub sample)")
    sample = generate(count, seed=2026)
    files = write_sample(sample, settings.runtime_dir / "demo")
    labels = sample.labels
    console.print(f"{len(sample.events)} events from {len(files)} agencies; planted: "
                  f"{len(labels.duplicate_groups)} cross-agency duplicate groups, {len(labels.resubmissions)} "
                  f"resubmissions, {len(labels.target_correlations)} shared targets, "
                  f"{len(labels.event_conflicts)} operation conflicts")

    console.rule("3. each agency publishes its own file (hub publish)")
    before = _counts(settings, topics)
    for ori, path in sorted(files.items()):
        done = subprocess.run([sys.executable, "-m", "hub", "publish", "--agency", ori, str(path),
                               "--rejects", str(path.with_suffix(".rejects.jsonl"))],
                              capture_output=True, text=True)
        if done.returncode != 0:
            console.print(done.stdout, done.stderr, highlight=False)
            raise typer.Exit(done.returncode)
        summary = done.stdout.strip().splitlines()  # the summary table: border, header, rule, row, border
        if ori == min(files):
            console.print(f"  {'agency':<10}{summary[1]}", highlight=False)
        console.print(f"  {ori:<10}{summary[3]}", highlight=False)

    console.rule("4. what is on the broker now")
    after = _counts(settings, topics)
    table = Table("agency", "topic", "new events on broker", "in the file")
    per_agency = sample.by_agency()
    for ori in sorted(files):
        table.add_row(ori, topics[ori], str(after[ori] - before[ori]), str(len(per_agency[ori])))
    console.print(table)
    _show_examples(settings, topics)

    console.rule("5. intake, dedup, correlate, deconflict, alert lifecycle (hub run all)")
    ensure_topics(hub_topics(settings.topic_prefix, sorted(agencies), sorted(STAGES)), settings)
    for name in ("intake", "dedup", "correlate", "deconflict", "alerts"):
        processed = _catch_up(settings, name)
        console.print(f"  {name}: {processed:,} messages processed")
    _show_canonical(settings)
    _show_alerts(settings)

    console.rule("6. routing to BEST task forces under the sharing rules (hub taskforces apply, hub run route)")
    registry = load_registry()
    ensure_topics(hub_topics(settings.topic_prefix, [], [], sorted(u.unit_id for u in registry.task_forces)),
                  settings)
    applied = apply_registry(applied_by="demo")
    console.print(f"registry version {applied.revision.version} in effect ({len(registry.task_forces)} units)")
    console.print(f"  route: {_catch_up(settings, 'route'):,} messages processed")
    _show_feeds(settings, ["best-san-diego", "best-tucson", "best-laredo"])

    console.rule("7. the auditor's view (hub replay --compare, hub run seal, hub audit verify, hub audit who-saw)")
    console.print("$ hub replay --compare", style="bold", highlight=False)
    done = subprocess.run([sys.executable, "-m", "hub", "replay", "--compare", "--namespace", "demo"],
                          capture_output=True, text=True, env={**os.environ, "HUB_LOG_LEVEL": "warning"})
    summary = [line for line in done.stdout.splitlines() if not line.startswith(("copy", *REPLAYED_STAGES))]
    console.print("\n".join(summary), done.stderr.rstrip(), highlight=False)
    console.print(f"  seal: {_catch_up(settings, 'seal'):,} audit records sealed into the hash chains")
    seizure = next(c for c in _latest(settings, CANONICAL.pattern, lambda c: c.canonical_id).values()
                   if c.event_type == EventType.SEIZURE and len(c.agencies) > 1)
    for command in (["audit", "verify"], ["audit", "who-saw", seizure.primary.event_id]):
        console.print(f"$ hub {' '.join(command)}", style="bold", highlight=False)
        done = subprocess.run([sys.executable, "-m", "hub", *command], capture_output=True, text=True)
        console.print(done.stdout.rstrip(), done.stderr.rstrip(), highlight=False)


def _catch_up(settings, name: str) -> int:
    """Run one stage in-process until its inputs are drained (the demo's stand-in for `hub run`)."""
    runner = StageRunner(STAGES[name](), settings, commit_interval_s=0.2)
    with console.status(f"running {name}") as status:
        return runner.run_until_idle(progress=lambda n: status.update(f"running {name}: {n:,} messages"))


def _latest(settings, topic: str, key_of) -> dict:
    """The newest record per key of a derived topic (the current state of each canonical event or alert)."""
    latest: dict = {}
    consumer = make_consumer(settings.topic(topic), settings=settings, group_id=None, consumer_timeout_ms=3000)
    codec = hub_codec(settings)
    for message in consumer:
        value = codec.decode(message.value)
        latest[key_of(value)] = value
    consumer.close()
    return latest


def _show_canonical(settings) -> None:
    latest = _latest(settings, CANONICAL.pattern, lambda c: c.canonical_id)
    reports = sum(len(c.reports) for c in latest.values())
    merged = [c for c in latest.values() if len(c.agencies) > 1]
    console.print(f"the canonical stream holds {len(latest):,} real-world events from {reports:,} reports; "
                  f"{len(merged):,} were reported by several agencies")
    if merged:
        example = max(merged, key=lambda c: len(c.reports))
        console.print(f"[bold]canonical seizure {example.canonical_id}[/] (revision {example.revision}), credited to:")
        for credit in example.reports:
            console.print(f"  {credit.agency.ori} {credit.agency.name}: {credit.source_system} "
                          f"{credit.source_record_id} ({credit.rule}, score {credit.score:.2f})", highlight=False)
        console.print(f"  last decision: {example.decision.rule}: {example.decision.explanation}", highlight=False)


def _show_alerts(settings) -> None:
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
                      "--by NAME", highlight=False)


def _show_feeds(settings, units: list[str]) -> None:
    """Several units' feeds side by side, then one gray and one black record as each unit sees it."""
    feeds = {unit: list(_latest(settings, FEED.name(unit=unit), lambda i: i.item_id).values()) for unit in units}
    table = Table("feed items", *units)
    for label, match in (("full events", lambda i: i.event is not None), ("alerts", lambda i: i.alert is not None),
                         ("pointers (gray, or above the unit's clearance)", lambda i: i.pointer is not None)):
        table.add_row(label, *(f"{sum(map(match, feeds[u])):,}" for u in units))
    console.print(table)
    decisions = [d for d in _latest(settings, AUDIT.pattern, lambda d: getattr(d, "decision_id", "registry")).values()
                 if isinstance(d, RoutingDecision)]
    by_record: dict[str, dict[str, RoutingDecision]] = {}
    for decision in decisions:
        by_record.setdefault(decision.record_id, {})[decision.unit_id] = decision
    for rule, what in (("gray.pointer", "a GRAY record"), ("black.withheld", "a BLACK record")):
        example = next(((record_id, per) for record_id, per in sorted(by_record.items())
                        if any(d.rule == rule for d in per.values()) and any(d.form == "FULL" for d in per.values())),
                       None)
        if example is None:
            continue
        record_id, per_unit = example
        shown = [next(u for u, d in sorted(per_unit.items()) if d.form == "FULL"),
                 *[u for u, d in sorted(per_unit.items()) if d.rule == rule][:2]]
        delivered = {item.item_id: item for unit in shown
                     for item in _latest(settings, FEED.name(unit=unit), lambda i: i.item_id).values()}
        view = Table(f"{what}: {record_id[:8]}", *shown)
        view.add_row("in the unit's feed", *(delivered[per_unit[u].decision_id].form
                                             if per_unit[u].decision_id in delivered else "nothing (same as no record)"
                                             for u in shown))
        view.add_row("rule (audit log)", *(per_unit[u].rule for u in shown))
        console.print(view)
    withheld = Counter(d.rule for d in decisions if d.form == "WITHHELD")
    console.print("audit topic: " + ", ".join(f"{n:,} {form.lower()}" for form, n in
                                               sorted(Counter(d.form for d in decisions).items()))
                  + "; withheld by rule: " + ", ".join(f"{rule} {n:,}" for rule, n in withheld.most_common()))
    console.print(f"read a feed as its unit: hub subscribe --task-force {units[0]} --from-beginning")


def _counts(settings, topics: dict[str, str]) -> dict[str, int]:
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


def _show_examples(settings, topics: dict[str, str]) -> None:
    """Decode a few events back from the broker: a seizure with its estimated doses, a lab result, an arrest."""
    wanted = {EventType.SEIZURE, EventType.LAB_RESULT, EventType.ARREST}
    consumer = make_consumer(*topics.values(), settings=settings, group_id=None, consumer_timeout_ms=5000)
    codec = hub_codec(settings)
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

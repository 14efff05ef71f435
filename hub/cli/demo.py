"""``hub demo``: the whole flow on the local broker, end to end (grows with each capability)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import typer
from rich.table import Table

from consumers.runner import StageRunner
from consumers.stages import STAGES
from hub.broker import LocalBroker
from hub.cli import app, console
from hub.kafka import make_consumer
from hub.settings import get_settings
from hub.topics import ensure_topics, hub_topics
from producers.directory import load_agencies
from producers.sample import generate, write_sample
from schemas.codec import Codec
from schemas.models import EventType
from schemas.topics import ALERTS, CANONICAL, INGEST


@app.command("demo")
def demo(count: int = typer.Option(2000, "--count", help="Sample events to generate and publish.")) -> None:
    """Start the local broker if needed, create the topics, generate multi-agency sample traffic, publish each
    agency's file with `hub publish`, and read the events back from the broker."""
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

    console.rule("5. dedup, correlate, deconflict, alert lifecycle (hub run all)")
    ensure_topics(hub_topics(settings.topic_prefix, [], sorted(STAGES)), settings)
    for name in ("dedup", "correlate", "deconflict", "alerts"):
        processed = _catch_up(settings, name)
        console.print(f"  {name}: {processed:,} messages processed")
    _show_canonical(settings)
    _show_alerts(settings)


def _catch_up(settings, name: str) -> int:
    """Run one stage in-process until its inputs are drained (the demo's stand-in for `hub run`)."""
    runner = StageRunner(STAGES[name](), settings, commit_interval_s=0.2)
    with console.status(f"running {name}") as status:
        return runner.run_until_idle(progress=lambda n: status.update(f"running {name}: {n:,} messages"))


def _latest(settings, topic: str, key_of) -> dict:
    """The newest record per key of a derived topic (the current state of each canonical event or alert)."""
    latest: dict = {}
    consumer = make_consumer(settings.topic(topic), settings=settings, group_id=None, consumer_timeout_ms=3000)
    codec = Codec()
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

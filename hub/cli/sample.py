"""``hub sample``: write deterministic multi-agency sample traffic with labelled duplicates and correlations."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table

from hub.cli import app, console
from producers.directory import load_agencies
from producers.sample import generate, write_sample
from schemas.models import EventType

_LABEL_DESCRIPTIONS = {
    "duplicate_groups": "one seizure reported by several agencies",
    "resubmissions": "re-sent records (same agency + source_record_id)",
    "target_correlations": "identifiers in records of 2+ agencies",
    "event_conflicts": "planned operations of 2 agencies, same place and time",
}


@app.command("sample")
def sample(
    count: int = typer.Option(..., "--count", "-n", min=0,
                              help="Total number of events to generate, planted duplicates and correlations included."),
    seed: int = typer.Option(7, "--seed", help="Random seed; the same seed and agency directory give identical files."),
    out_dir: Path = typer.Option(Path("sample-data"), "--out-dir",
                                 help="Directory for the <ORI>.jsonl files and labels.json (created if missing)."),
) -> None:
    """Generate realistic traffic from every agency in deploy/agencies.yaml.

    Writes one JSON Lines file per agency (one event per line) and labels.json:
    the planted cross-agency duplicate seizures, re-submissions, shared targets (phones, vehicles, persons,
    pill presses, organizations, addresses) and conflicting planned operations, for scoring dedup and
    deconfliction. Events start on 2024-10-01 (FY2025) and spread over weeks, so output never depends on
    the clock.
    """
    agencies = load_agencies()
    began = time.monotonic()
    generated = generate(count, seed=seed, agencies=agencies)
    files = write_sample(generated, out_dir)
    elapsed = time.monotonic() - began

    per_agency = Table(title="Events per agency")
    per_agency.add_column("ORI")
    per_agency.add_column("Agency")
    per_agency.add_column("Events", justify="right")
    for ori, events in generated.by_agency().items():
        per_agency.add_row(ori, agencies[ori].name, str(len(events)))
    console.print(per_agency)

    per_type = Table(title="Events per type")
    per_type.add_column("Event type")
    per_type.add_column("Events", justify="right")
    types = Counter(e.event_type for e in generated.events)
    for event_type in EventType:
        per_type.add_row(event_type.value, str(types[event_type]))
    console.print(per_type)

    labels = Table(title="Labels (labels.json)")
    labels.add_column("Label")
    labels.add_column("Groups", justify="right")
    labels.add_column("Events", justify="right")
    labels.add_column("Meaning")
    for name, (groups, events) in generated.labels.counts().items():
        labels.add_row(name, str(groups), str(events), _LABEL_DESCRIPTIONS[name])
    console.print(labels)
    console.print(f"wrote {len(generated.events)} events from {len(files)} agencies to {out_dir} "
                  f"in {elapsed:.1f}s (seed {seed})")

"""``hub archive``: topics to Avro container files and back."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hub.cli import app, console
from hub.exceptions import TopicMissingError
from hub.kafka import make_consumer, make_producer, read_topic
from hub.settings import get_settings
from schemas.archive import ArchivedRecord, read_archive, write_archive


def _existing_topics(settings) -> set[str]:
    consumer = make_consumer(settings=settings, group_id=None)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


@app.command("archive")
def archive(
    target: str = typer.Argument(..., help="The topic to archive (logical name, e.g. audit.chain or "
                                 "ingest.CACBP0100; HUB_TOPIC_PREFIX is added), or 'restore'."),
    source: Optional[Path] = typer.Argument(None, help="With restore: an archive directory or .avro file."),
    to: Optional[Path] = typer.Option(None, "--to", help="Directory for the archive files."),
    since: Optional[datetime] = typer.Option(None, "--from", help="Only records written at or after (ISO 8601)."),
    until: Optional[datetime] = typer.Option(None, "--until", help="Only records written before (ISO 8601)."),
    topic: Optional[str] = typer.Option(None, "--topic", help="With restore: the topic to write to (logical "
                                        "name); default: each record's original topic."),
) -> None:
    """Archive a topic as Avro object container files (one per writer schema, embedded, readable by any Avro
    tool), or `hub archive restore DIR` to put an archive back into a topic with its keys, partitions and
    timestamps."""
    settings = get_settings()
    if target == "restore":
        if source is None:
            raise typer.BadParameter("hub archive restore needs the archive directory or file")
        files = sorted(source.glob("*.avro")) if source.is_dir() else [source]
        existing = _existing_topics(settings)
        producer = make_producer(settings)
        count = 0
        for path in files:
            for record in read_archive(path):
                destination = settings.topic(topic) if topic else record.topic
                if destination not in existing:
                    raise TopicMissingError(f"{path}: cannot restore into {destination}: no such topic",
                                            hint="Create it first (`hub topics init`, or with the cluster's tools).")
                producer.send(destination, key=record.key, value=record.value,
                              partition=None if topic else record.partition, timestamp_ms=record.timestamp_ms)
                count += 1
        producer.flush()
        producer.close()
        console.print(f"restored {count:,} records from {len(files)} file(s)")
        return
    if to is None:
        raise typer.BadParameter("--to DIR is required when archiving")
    low = since.timestamp() * 1000 if since else float("-inf")
    high = until.timestamp() * 1000 if until else float("inf")
    with console.status(f"reading {settings.topic(target)}"):
        records = [ArchivedRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                   for r in read_topic(settings.topic(target), settings) if low <= r.timestamp < high]
    written = write_archive(records, to)
    table = Table("file", "records")
    for path, n in written.items():
        table.add_row(str(path), f"{n:,}")
    console.print(table)

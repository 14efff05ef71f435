"""``hub demo``: the whole flow on the local broker, end to end."""

from __future__ import annotations

import json
import uuid

from hub.broker import LocalBroker
from hub.cli import app, console
from hub.kafka import make_admin, make_consumer, make_producer
from hub.settings import get_settings


@app.command("demo")
def demo() -> None:
    """Start the local broker if needed, publish a few sample events and print them back from the topic."""
    from kafka.admin import NewTopic

    settings = get_settings()
    with console.status("starting Kafka") as status:
        LocalBroker().start(progress=lambda m: status.update(m))
    topic = settings.topic(f"demo.events.{uuid.uuid4().hex[:8]}")
    admin = make_admin()
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    events = [
        {"event_type": "seizure", "agency": "CBP OFO San Ysidro", "drug": "fentanyl", "net_weight_lb": 12.4},
        {"event_type": "arrest", "agency": "HSI San Diego", "subject_role": "driver"},
        {"event_type": "lab_result", "agency": "CBP Forward Operating Lab", "purity": 0.08},
    ]
    producer = make_producer()
    for event in events:
        producer.send(topic, json.dumps(event).encode()).get(timeout=30)
    producer.close()
    console.print(f"published {len(events)} events to {topic}")
    consumer = make_consumer(topic, consumer_timeout_ms=5000, group_id=None)
    for message in consumer:
        console.print(f"  offset {message.offset}: {message.value.decode()}")
    consumer.close()

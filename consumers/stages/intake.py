"""Intake: the trust boundary where an agency's plain report becomes a sealed record of the hub.

Agencies hold no hub key, so they publish in the clear to their own ``ingest.<ORI>`` topic (only their principal
may write it; it is kept a week). The topic is the identity: intake checks each record against the contract (its
bounds included, dates against the broker's timestamp) and against the topic it came on, and writes it sealed under
a new record key to ``events.ingested.<ORI>``: the history dedup and replays read, which a purge makes unreadable by
destroying that key. The key is written to ``hub.keys`` in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from consumers.exceptions import StageError
from consumers.stage import Message, Output, Stage
from consumers.state import State
from producers.publisher import EVENT_ID_HEADER
from schemas.limits import check_times
from schemas.models import CaseEvent
from schemas.topics import INGESTED, dedup_block


class IntakeStage(Stage):
    name = "intake"
    input_pattern = r"ingest\..+"
    outputs = (INGESTED.pattern,)
    retention = timedelta(0)  # stateless
    input_types = (CaseEvent,)
    output_timestamps = "received"

    def event_time(self, message: Message) -> float:
        return message.value.event_time.timestamp()

    def process(self, message: Message, state: State) -> list[Output]:
        event = message.value
        if not isinstance(event, CaseEvent):
            raise StageError(f"an ingest topic carries CaseEvents, not a {type(event).__name__}")
        publisher = message.topic.rsplit(".", 1)[-1]
        if event.agency_ori != publisher:
            raise StageError(f"report {event.event_id} claims agency {event.agency_ori} but was published on "
                             f"{publisher}'s ingest topic, which only {publisher} can write")
        # The broker stamped the record (ingest topics use LogAppendTime): dates are checked against that, so a
        # replay decides the same and a report dated far ahead cannot push the hub's event time forward.
        check_times(event, datetime.fromtimestamp(message.timestamp_ms / 1000, tz=timezone.utc))
        # Keyed by its dedup block, whatever key the publisher chose: every agency's report of one seizure reaches
        # the same partition number, where one dedup instance compares them.
        return [Output(INGESTED.name(ori=publisher), dedup_block(event).encode(), event,
                       headers=[(EVENT_ID_HEADER, event.event_id.encode())])]

"""The runner's error policy, for every stage: a record's fault is dead-lettered and the stage goes on; only the
infrastructure stops a stage. Pure checks of the policy, and every stage fed hostile records on the real broker."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError

from dataclasses import replace

from consumers.error_policy import ErrorPolicy
from consumers.exceptions import StageError, StateError
from consumers.runner import StageRunner, input_regex
from consumers.stages import STAGES
from hub.control import apply_registry
from hub.exceptions import KafkaUnavailableError
from hub.kafka import make_producer
from hub.settings import HubSettings
from hub.topics import ensure_topics, hub_topics
from hub.vault import VaultError
from schemas.codec import Codec
from schemas.exceptions import DecodeError, RecordInvalidError
from schemas.models import AlertAction, AlertActionKind
from tests.conftest import topic_records
from tests.test_routing import UNITS

RECORD_FAULTS = [ValueError("x"), TypeError("x"), AttributeError("x"), OverflowError("year 9999"),
                 RecursionError("deep"), KeyError("x"), ZeroDivisionError("x"), UnicodeDecodeError("utf-8", b"", 0, 1, "x"),
                 StageError("x"), DecodeError("x"), RecordInvalidError("x", [("f", "r")]), AssertionError("x")]
INFRASTRUCTURE = [KafkaError("x"), KafkaTimeoutError("x"), KafkaUnavailableError("x"), OSError("disk full"),
                  sqlite3.OperationalError("locked"), StateError("x"), VaultError("x"), MemoryError()]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_dead_letters_a_records_faults_and_stops_only_on_infrastructure(name):
    policy = STAGES[name]().error_policy
    assert [type(e).__name__ for e in RECORD_FAULTS if policy.action(e) != "dead-letter"] == []
    assert [type(e).__name__ for e in INFRASTRUCTURE if policy.action(e) != "stop"] == []
    assert policy.action(KeyboardInterrupt()) == "stop"


def test_under_stop_an_unexpected_exception_stops_the_stage_but_a_records_known_fault_still_dead_letters():
    """HUB_UNEXPECTED_ERRORS=stop: a bug (an exception no check of the hub raised) stops the stage, so that its
    supervisor restarts it and gives up loudly; a record's known fault is dead-lettered whatever the setting."""
    known = [e for e in RECORD_FAULTS if isinstance(e, StageError | DecodeError | RecordInvalidError)]
    strict = replace(ErrorPolicy(), unexpected="stop")
    unexpected = [e for e in RECORD_FAULTS if not isinstance(e, StageError | DecodeError | RecordInvalidError)]
    assert unexpected and all(ErrorPolicy.is_unexpected(e) for e in unexpected)
    assert [type(e).__name__ for e in unexpected if strict.action(e) != "stop"] == []
    assert [type(e).__name__ for e in known if strict.action(e) != "dead-letter"] == []
    assert [type(e).__name__ for e in INFRASTRUCTURE if strict.action(e) != "stop"] == []
    with pytest.raises(ValueError, match="unexpected_errors\n  Input should be 'dead-letter' or 'stop'"):
        HubSettings(unexpected_errors="ignore")


def test_every_stage_but_the_audit_sealer_names_the_types_it_reads():
    assert {name for name, stage in STAGES.items() if not stage().input_types} == {"seal"}, \
        "the sealer chains whatever is written to the audit topics; every other stage reads known types only"


# Hostile records for one input topic: a tombstone, bytes that are no hub message, a hub message of a type no stage
# reads there (an alert action is valid Avro), and a truncated one.
ACTION = Codec().encode(AlertAction(alert_id="a1", action=AlertActionKind.ACKNOWLEDGE, agency_ori="AZDPS0000",
                                    actor="x", at=datetime(2026, 2, 1, tzinfo=timezone.utc)))
HOSTILE = [None, b"\x00 not avro", ACTION[:-3]]
INPUT_TOPIC = {"intake": "ingest.AZDPS0000", "dedup": "events.ingested.AZDPS0000", "correlate": "events.canonical",
               "deconflict": "correlate.by-key", "alerts": "alerts.raised",
               "seal": "audit.queries"}


def test_each_stage_on_the_broker_dead_letters_hostile_records_and_goes_on(hub_settings):
    ensure_topics(hub_topics(hub_settings.topic_prefix, ["AZDPS0000"], sorted(STAGES), UNITS), hub_settings)
    apply_registry(settings=hub_settings, applied_by="test")
    producer = make_producer(hub_settings)
    for name, topic in INPUT_TOPIC.items():
        assert input_regex(STAGES[name](), hub_settings)  # every stage has an input pattern under the prefix
        wrong_type = [] if name in ("alerts", "seal") else [ACTION]  # alerts reads actions; seal reads any type
        for value in [*HOSTILE, *wrong_type]:
            producer.send(hub_settings.topic(topic), key=b"k", value=value, partition=0).get(timeout=30)
    producer.close()
    for name in INPUT_TOPIC:
        StageRunner(STAGES[name](), hub_settings, commit_interval_s=0.2).run_until_caught_up()  # raises if stopped
    for name, topic in INPUT_TOPIC.items():
        letters = [dict(r.headers) for r in topic_records(hub_settings, hub_settings.topic(f"deadletter.{name}"))]
        from_input = [h for h in letters if h["dlq.source_topic"].decode() == hub_settings.topic(topic)]
        expected = len(HOSTILE) + (0 if name in ("alerts", "seal") else 1)
        assert len(from_input) >= expected, f"{name}: {len(from_input)} of {expected} hostile records dead-lettered"
        assert all(h["dlq.reason"].strip() for h in from_input)

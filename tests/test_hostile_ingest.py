"""No record can stop the hub (issue 11), on the real broker: hostile records produced straight to an agency's ingest
topic are dead-lettered with their reason, the stages go on, and every valid neighbour reaches events.canonical
exactly once; a transaction the broker aborts is processed again, not fatal; and a fuzz suite of generated
records and bytes finds no input that stops a stage.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from kafka.errors import MessageSizeTooLargeError
from prometheus_client import REGISTRY

from consumers.runner import StageRunner
from consumers.stage import Message
from consumers.stages.dedup import DedupStage
from consumers.stages.intake import IntakeStage
from consumers.state import State
from hub.deadletters import dead_letters
from hub.kafka import make_producer
from hub.topics import ensure_topics, hub_topics
from hub.vault import MemoryKeyVault, hub_codec
from producers.publisher import EVENT_ID_HEADER
from schemas.codec import Codec, to_avro_datum
from schemas.models import AlertAction, AlertActionKind, CanonicalEvent
from schemas.topics import CANONICAL, INGEST, ingest_key
from tests.conftest import hub_env, topic_records
from tests.factories import make_event

CBP = {"ori": "CACBP0100", "name": "CBP Office of Field Operations, San Diego", "level": "FEDERAL"}
DPS = {"ori": "AZDPS0000", "name": "Arizona Department of Public Safety", "level": "STATE"}
SAN_YSIDRO = {"port_of_entry": "SAN_YSIDRO", "state": "CA", "county_fips": "06073"}
PLAIN = Codec()


def report(agency: dict[str, str], number: int, **changes: Any):
    """A valid seizure report, each ``number`` its own record (far apart in time: no two match)."""
    return make_event(source_agency=agency, location=SAN_YSIDRO, source_system="RMS",
                      source_record_id=f"{agency['ori']}-{number}", payload__seizure_number=f"SZ-{number}",
                      event_time=datetime(2026, 1, 1 + number % 28, number % 24, tzinfo=timezone.utc),
                      report_time=datetime(2026, 2, 1, tzinfo=timezone.utc), **changes)


def with_datum(event, change) -> bytes:
    """``event`` as Avro after ``change(datum)``: what a client that skips the contract's validation writes."""
    datum = to_avro_datum(event)
    change(datum)
    return PLAIN.encode_datum("gov.taskforce.hub.CaseEvent", datum)


def _record(value: Any) -> dict[str, Any]:
    """A union's record in a datum: the codec names the branch of every union holding a record, ``(name, record)``."""
    return value[1] if isinstance(value, tuple) else value


def _payload(datum: dict[str, Any]) -> dict[str, Any]:
    return _record(datum["payload"])


def _first_weight(datum: dict[str, Any]) -> dict[str, Any]:
    return _record(_payload(datum)["drugs"][0]["net_weight"])


def _setup(settings) -> None:
    ensure_topics(hub_topics(settings.topic_prefix, ["CACBP0100", "AZDPS0000"], ["intake", "dedup"]), settings)


def _produce(settings, ori: str, values: list[bytes | None]) -> list[int]:
    """Write raw values to ``ingest.<ori>`` partition 0 as the agency's client would; returns their offsets."""
    producer = make_producer(settings)
    try:
        topic = INGEST.name(settings.topic_prefix, ori=ori)
        return [producer.send(topic, key=b"county:06073", value=v, partition=0).get(timeout=30).offset
                for v in values]
    finally:
        producer.close()


def _run_stages(settings) -> None:
    """Intake, then dedup, each until caught up: a stage stopped by a record raises here."""
    for stage in (IntakeStage(), DedupStage()):
        StageRunner(stage, settings, commit_interval_s=0.2).run_until_caught_up()


def _dead_letters(settings, stage: str) -> dict[tuple[str, int], str]:
    """(source topic, source offset) -> reason, for every record the stage dead-lettered (as `hub deadletters`
    reads them)."""
    return {(letter.source_topic, letter.source_offset): letter.reason for letter in dead_letters(settings, [stage])}


def _canonical_reports(settings) -> Counter:
    """How many canonical revisions each report's arrival produced: (agency ORI, event id) -> count."""
    codec = hub_codec(settings)
    decisions: Counter = Counter()
    for record in topic_records(settings, CANONICAL.name(settings.topic_prefix)):
        canonical: CanonicalEvent = codec.decode(record.value)
        credit = next(r for r in canonical.reports if r.event_id == canonical.decision.event_id)
        decisions[(credit.agency.ori, canonical.decision.event_id)] += 1
    return decisions


def test_hostile_records_are_dead_lettered_with_their_reason_and_valid_neighbours_flow(hub_settings):
    _setup(hub_settings)
    at = datetime(2026, 2, 1, tzinfo=timezone.utc)
    hostile: dict[str, tuple[bytes | None, str]] = {  # what it is: (its bytes, a word the reason must contain)
        "a null value (tombstone)": (None, "null value"),
        "an empty value": (b"", "DecodeError"),
        "garbage bytes": (b"\x00\xff garbage \x13", "DecodeError"),
        "a year-9999 event time": (with_datum(report(DPS, 50), lambda d: d.update(
            event_time=datetime(9999, 12, 31, tzinfo=timezone.utc))), "event_time"),
        "another hub type (an AlertAction)": (PLAIN.encode(AlertAction(
            alert_id="a1", action=AlertActionKind.ACKNOWLEDGE, agency_ori="AZDPS0000", actor="x", at=at)),
            "AlertAction"),
        "an Infinity weight": (with_datum(report(DPS, 51), lambda d: _first_weight(d).update(value=math.inf)),
                               "value"),
        "a NaN weight": (with_datum(report(DPS, 52), lambda d: _first_weight(d).update(value=math.nan)), "value"),
        "a report over the size bound": (with_datum(report(DPS, 53), lambda d: _payload(d).update(
            operation_name="x" * 200_000)), "bytes"),
        "a record sealed under another vault's key": (Codec(vault=MemoryKeyVault()).encode(report(DPS, 54)),
                                                      "never had"),
        "a report claiming another agency": (PLAIN.encode(report(CBP, 55)), "claims agency CACBP0100"),
    }
    valid = [report(DPS, n) for n in range(1, len(hostile) + 2)]
    cbp_real = report(CBP, 40)
    squatter = report(DPS, 41, event_id=cbp_real.event_id)  # CBP's predictable next id, taken by DPS first
    values: list[bytes | None] = [PLAIN.encode(valid[0])]
    for neighbour, (value, _) in zip(valid[1:], hostile.values()):  # every hostile record between valid ones
        values += [value, PLAIN.encode(neighbour)]
    offsets = _produce(hub_settings, "AZDPS0000", [*values, PLAIN.encode(squatter)])
    _produce(hub_settings, "CACBP0100", [PLAIN.encode(cbp_real)])
    producer = make_producer(hub_settings)
    with pytest.raises(MessageSizeTooLargeError):  # near 1 MiB: refused by the broker itself
        producer.send(INGEST.name(hub_settings.topic_prefix, ori="AZDPS0000"), value=b"\xc3\x01" + b"x" * 900_000,
                      partition=0).get(timeout=30)
    producer.close()

    _run_stages(hub_settings)  # raises if any record stops a stage

    topic = INGEST.name(hub_settings.topic_prefix, ori="AZDPS0000")
    letters = _dead_letters(hub_settings, "intake")
    for (name, (_, expected)), offset in zip(hostile.items(), offsets[1::2]):
        assert (topic, offset) in letters, f"{name} was not dead-lettered"
        assert expected in letters[(topic, offset)], f"{name}: reason {letters[(topic, offset)]!r}"
    assert len(letters) == len(hostile), "only the hostile records are dead-lettered"
    listed = subprocess.run([sys.executable, "-m", "hub", "deadletters", "intake", "dedup"], env=hub_env(hub_settings),
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert f"{len(hostile)} dead-lettered: intake {len(hostile)}" in listed.stdout, listed.stdout[-2000:]
    assert f"{topic}/0/{offsets[2 * len(hostile) - 1]}" in listed.stdout and "claims agency CACBP0100" in listed.stdout
    delivered = _canonical_reports(hub_settings)
    for event in [*valid, squatter]:
        assert delivered[("AZDPS0000", event.event_id)] == 1, f"valid report {event.source_record_id} not delivered once"
    assert delivered[("CACBP0100", cbp_real.event_id)] == 1, "CBP's report was pre-empted by DPS's use of its id"
    assert not _dead_letters(hub_settings, "dedup"), "intake let through a record dedup could not take"


class StallingIntake(IntakeStage):
    """Intake that stalls once, on its second input (the first one's output opened the transaction on the broker),
    for longer than the transaction timeout."""

    def __init__(self) -> None:
        self.seen = 0

    def process(self, message: Message, state: State) -> list:
        self.seen += 1
        if self.seen == 2:
            time.sleep(15)  # transaction timeout 2 s; the coordinator looks for timed-out ones every 10 s
        return super().process(message, state)


class ErrorsSaid:
    """A stage's logger that also keeps what it said at error level."""

    def __init__(self, log: Any) -> None:
        self.log, self.errors = log, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)

    def error(self, message: str, **fields: Any) -> None:
        self.errors.append((message, fields))
        self.log.error(message, **fields)


def test_a_transaction_the_broker_aborted_is_processed_again_not_fatal(hub_settings, monkeypatch):
    _setup(hub_settings)
    events = [report(DPS, n) for n in range(1, 5)]
    _produce(hub_settings, "AZDPS0000", [PLAIN.encode(e) for e in events])
    retried = REGISTRY.get_sample_value("hub_transactions_aborted_total", {"stage": "intake"}) or 0.0
    monkeypatch.setattr("consumers.runner.BLOCKED_REPORT_S", 6)
    # A long commit interval keeps the first report's transaction open through the stall on the second.
    runner = StageRunner(StallingIntake(), hub_settings, commit_interval_s=60, transaction_timeout_ms=2000)
    runner.log = said = ErrorsSaid(runner.log)
    threads_before = set(threading.enumerate())
    runner.run_until_caught_up()
    stalls = [fields for message, fields in said.errors if message == "stage main loop not coming round"]
    assert any("time.sleep(15)" in fields["stack"] for fields in stalls), "the watchdog says where the loop is stuck"
    time.sleep(2)
    assert not [t for t in set(threading.enumerate()) - threads_before if t.name == "intake-watchdog"], \
        "the watchdog ends with the run"
    assert REGISTRY.get_sample_value("hub_transactions_aborted_total", {"stage": "intake"}) == retried + 1
    ingested = [r for r in topic_records(hub_settings, hub_settings.topic("events.ingested.AZDPS0000"))]
    ids = Counter(dict(r.headers)[EVENT_ID_HEADER].decode() for r in ingested)
    assert ids == Counter({e.event_id: 1 for e in events}), "every report sealed exactly once after the retry"
    codec = hub_codec(hub_settings)
    assert sorted(codec.decode(r.value).event_id for r in ingested) == sorted(e.event_id for e in events), \
        "the keys written in the aborted transaction were forgotten, and new ones committed with the records"


# -- the fuzz suite ---------------------------------------------------------------------------------------------
SEED_EVENT = report(DPS, 60)
SEED_BYTES = PLAIN.encode(SEED_EVENT)

mutated_bytes = st.builds(
    lambda cut, flips, tail: bytes(b ^ 0xFF if i in flips else b for i, b in enumerate(SEED_BYTES[:cut])) + tail,
    st.integers(0, len(SEED_BYTES)), st.sets(st.integers(0, len(SEED_BYTES) - 1), max_size=4), st.binary(max_size=64))
wild_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=300))
FIELDS = ["record_version", "source_system", "source_record_id", "event_id"]


def _with_field(field: str, value: Any) -> bytes | None:
    try:
        return with_datum(SEED_EVENT, lambda d: d.update({field: value}))
    except Exception:  # noqa: BLE001 - the value does not even fit the Avro schema: nothing a client could send
        return None


hostile_values = st.one_of(
    st.binary(max_size=512),
    mutated_bytes,
    st.builds(_with_field, st.sampled_from(FIELDS), wild_values),
    st.builds(lambda v: with_datum(SEED_EVENT, lambda d: _first_weight(d).update(value=v)),
              st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda t: with_datum(SEED_EVENT, lambda d: d.update(event_time=t)),
              st.datetimes(timezones=st.just(timezone.utc))),
)


@pytest.mark.slow
@hypothesis_settings(max_examples=4, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(hostile_values, min_size=8, max_size=16))
def test_fuzz_no_generated_record_stops_a_stage_or_a_valid_neighbour(hub_settings, batch):
    prefix_base = hub_settings.topic_prefix
    settings = hub_settings.model_copy(update={"topic_prefix": f"{prefix_base}{abs(hash(tuple(map(repr, batch))))}."})
    _setup(settings)
    neighbours = [report(DPS, 100 + i) for i in range(len(batch))]
    values: list[bytes | None] = []
    for neighbour, value in zip(neighbours, batch):
        values += [PLAIN.encode(neighbour), value]
    offsets = _produce(settings, "AZDPS0000", values)
    _run_stages(settings)  # raises if any record stops a stage

    topic = INGEST.name(settings.topic_prefix, ori="AZDPS0000")
    letters = {**_dead_letters(settings, "intake"), **_dead_letters(settings, "dedup")}
    sealed = {dict(r.headers)[EVENT_ID_HEADER].decode()
              for r in topic_records(settings, settings.topic("events.ingested.AZDPS0000"))}
    for value, offset in zip(values[1::2], offsets[1::2]):
        accepted = value is not None and _decodes_as_valid(value) in sealed
        assert (topic, offset) in letters or accepted, f"hostile record at offset {offset} neither dead-lettered " \
                                                       f"nor validly processed: {value!r:.120}"
        if (topic, offset) in letters:
            assert letters[(topic, offset)].strip(), "a dead letter without a reason"
    delivered = _canonical_reports(settings)
    for neighbour in neighbours:
        assert delivered[("AZDPS0000", neighbour.event_id)] == 1, "a valid neighbour was lost or doubled"


def _decodes_as_valid(value: bytes) -> str | None:
    try:
        return PLAIN.decode(value).event_id
    except Exception:  # noqa: BLE001 - anything that does not decode was not valid
        return None


def test_ingest_topics_are_stamped_by_the_broker_and_bounded():
    configs = INGEST.configs
    assert configs["message.timestamp.type"] == "LogAppendTime"
    assert int(configs["max.message.bytes"]) < 1_000_000
    assert ingest_key(SEED_EVENT) == b"all"

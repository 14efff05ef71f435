"""Publishing: hostile files read line by line (pure), then on the real broker: precise rejects, nothing lost,
exactly once across a broker crash."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from kafka import TopicPartition

from hub.kafka import make_consumer
from hub.topics import ensure_topics
from producers.exceptions import AgencyMismatchError, TopicMissingError
from producers.publisher import EVENT_ID_HEADER, Publisher
from producers.readers import MAX_LINE_BYTES, MAX_PROBLEMS, Accepted, Rejected, read_events
from schemas.exceptions import RecordOutOfBoundsError
from schemas.limits import MAX_REPORT_BYTES
from schemas.models import Agency
from hub.settings import HubSettings
from schemas.topics import INGEST
from tests.conftest import hub_env, topic_records
from tests.factories import CBP_SAN_DIEGO, event_dict, make_event
from hub.vault import hub_codec

HUB = [sys.executable, "-m", "hub"]
AGENCY = "CACBP0100"


def _ingest(settings, ori=AGENCY):
    topic = INGEST.name(settings.topic_prefix, ori=ori)
    ensure_topics([(topic, INGEST)], settings)
    return topic


def _write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def _ids_on(settings, topic):
    return Counter(dict(r.headers)[EVENT_ID_HEADER].decode() for r in topic_records(settings, topic))


# -- hostile files, read without a broker ---------------------------------------------------------------
CBP = Agency(**CBP_SAN_DIEGO)
CSV_HEADER = ("event_type,source_system,source_record_id,record_version,event_time,report_time,"
              "location.port_of_entry,handling.dissemination,handling.tlp,payload.drugs.0.drug_type,"
              "payload.drugs.0.form,payload.drugs.0.pill_count,payload.conveyance")


def _json_line(**changes) -> bytes:
    return json.dumps(event_dict(**changes)).encode()


def _csv_row(record_id: str, pills: str = "5000") -> str:
    return (f"SEIZURE,SEACATS,{record_id},1,2025-10-04T10:00:00Z,2025-10-04T11:00:00Z,OTAY_MESA,WHITE,GREEN,"
            f"FENTANYL,PILLS,{pills},COMMERCIAL_TRUCK")


def _oversized_report() -> bytes:
    """Valid JSON well under MAX_LINE_BYTES whose report is far over MAX_REPORT_BYTES once encoded."""
    identifiers = [{"scheme": "DOCUMENT_NUMBER", "value": f"D{i}-" + "x" * 250} for i in range(20)]
    return _json_line(source_record_id="TOO-BIG", entities=[{"kind": "DOCUMENT", "role": "OTHER",
                                                             "identifiers": identifiers}] * 20)


#: Each hostile line of the issue's table, and the (field, reason) it must be rejected with.
HOSTILE_JSONL: list[tuple[bytes, str, str]] = [
    (_json_line().replace(b"SEACATS", b"SEA\xff\xfeCATS"), "(line)", "not valid UTF-8: byte 0xff at byte"),
    (b"[" * 200_000 + b"]" * 200_000, "(line)", "nested too deeply"),
    (_json_line().replace(b'"Operation Apollo"', b"[" * 500 + b"]" * 500), "payload.operation_name",
     "Input should be a valid string"),
    (_json_line(record_version=1).replace(b'"record_version": 1', b'"record_version": 1' + b"0" * 5000),
     "record_version", "5,001-digit integer is out of range"),
    (_json_line(record_version=10**18), "record_version", "less than or equal to 1000000"),
    (_json_line(report_time="9999-12-31T23:59:59Z"), "report_time", "not a plausible date"),
    (_json_line(report_time="2099-01-01T00:00:00Z", event_time="2099-01-01T00:00:00Z"), "event_time",
     "after now"),
    (_json_line(source_record_id="DUP").replace(b'"record_version": 1', b'"record_version": 1, "record_version": 2'),
     "record_version", "given more than once in one object: ambiguous"),
    (_json_line().replace(b'"state": "CA"', b'"state": "CA", "state": "AZ"'), "location.state", "ambiguous"),
    (_json_line().replace(b"12.4", b"Infinity"), "payload.drugs.0.net_weight.value", "Infinity is not a JSON number"),
    (_json_line().replace(b"12.4", b"NaN"), "payload.drugs.0.net_weight.value", "NaN is not a JSON number"),
    (_json_line().replace(b"12.4", b"1e999"), "payload.drugs.0.net_weight.value", "finite number"),
    (_json_line(source_record_id="R\ud800"), "source_record_id", "unable to parse raw data as a unicode string"),
    (_json_line(source_record_id="R\u001b[2J"), "source_record_id", "control character U+001B"),
    (b'{"description": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}', "(line)", "may be at most 1,048,576"),
]


def _write_lines(path, lines: list[bytes], *, bom: bool = False) -> None:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")


def _read(path, **kwargs) -> tuple[dict[int, str], dict[int, list[tuple[str, str]]]]:
    """(line -> source_record_id of each accepted event, line -> problems of each rejected record)."""
    accepted, rejected = {}, {}
    for item in read_events(str(path), CBP, **kwargs):
        if isinstance(item, Accepted):
            accepted[item.line] = item.event.source_record_id
        else:
            rejected[item.line] = item.problems
            json.loads(item.as_json())  # the rejects file can always hold it
    return accepted, rejected


@pytest.mark.parametrize(("line", "field", "reason"), HOSTILE_JSONL,
                         ids=["utf8", "deep", "deep-in-a-field", "huge-int", "big-int", "year-9999", "future",
                              "duplicate-key", "duplicate-nested-key", "Infinity", "NaN", "1e999", "surrogate",
                              "escape-sequence", "1-MiB-line"])
def test_a_hostile_jsonl_line_is_rejected_with_its_field_and_its_neighbours_are_read(tmp_path, line, field, reason):
    source = tmp_path / "export.jsonl"
    _write_lines(source, [_json_line(source_record_id="A"), line, _json_line(source_record_id="B")], bom=True)
    accepted, rejected = _read(source)
    assert accepted == {1: "A", 3: "B"}
    [problems] = rejected.values()
    assert any(f == field and reason in r for f, r in problems), problems
    assert list(rejected) == [2]


def test_the_last_line_may_be_oversized_without_a_line_break(tmp_path):
    source = tmp_path / "export.jsonl"
    source.write_bytes(_json_line(source_record_id="A") + b"\n" + b"{" * (MAX_LINE_BYTES + 1))
    accepted, rejected = _read(source)
    assert accepted == {1: "A"} and "may be at most" in rejected[2][0][1]


def test_publishing_refuses_a_report_too_large_to_encode_or_dated_ahead(tmp_path):
    offline = HubSettings(runtime_dir=tmp_path, bootstrap_servers="127.0.0.1:1", connect_timeout_s=1)
    with Publisher(AGENCY, offline) as publisher:
        with pytest.raises(RecordOutOfBoundsError) as caught:
            publisher.publish(make_event(entities=json.loads(_oversized_report())["entities"]))
        assert caught.value.problems[0][0] == "(record)" and f"{MAX_REPORT_BYTES:,}" in caught.value.problems[0][1]
        tomorrow = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        with pytest.raises(RecordOutOfBoundsError, match="report_time"):
            publisher.publish(make_event(report_time=tomorrow))
        assert publisher.flush().spooled == 0


def test_a_rejected_line_names_its_field_printably_and_briefly(tmp_path):
    source = tmp_path / "export.jsonl"
    hostile_key = "\x1b]0;pwned\x07[/red]" + "k" * 5000
    _write_lines(source, [json.dumps({**event_dict(), hostile_key: 1}).encode(),
                          json.dumps({**event_dict(), **{f"x{i}": i for i in range(10_000)}}).encode()])
    [first, second] = list(read_events(str(source), CBP))
    [line] = first.lines()
    assert "\x1b" not in line and "\\x1b]0;pwned\\x07" in line and len(line) < 2_500
    assert len(second.problems) == MAX_PROBLEMS + 1 and second.problems[-1][1] == "and 9,980 more problems"


def test_csv_with_a_bom_and_hostile_rows_keeps_every_valid_row(tmp_path):
    source = tmp_path / "rms.csv"
    rows = [CSV_HEADER.encode(), _csv_row("C1").encode(), b"SEIZURE,\xff\xfe,C2", _csv_row("C3").encode(),
            _csv_row('"C4').encode(), _csv_row("C5").encode() + b",extra", _csv_row("C6", pills="inf").encode(),
            _csv_row("C7", pills="1" + "0" * 9000).encode(), _csv_row("C8").encode().replace(b"SEACATS", b"SEA\0"),
            b"x" * (MAX_LINE_BYTES + 1), b"", _csv_row("C9").encode()]
    _write_lines(source, rows, bom=True)
    accepted, rejected = _read(source)
    assert accepted == {2: "C1", 4: "C3", 12: "C9"}
    fields = {line: problems[0][0] for line, problems in rejected.items()}
    assert fields == {3: "(line)", 5: "(line)", 6: "(line)", 7: "payload.drugs.0.pill_count",
                      8: "payload.drugs.0.pill_count", 9: "source_system", 10: "(line)"}
    assert "not valid UTF-8" in rejected[3][0][1] and "quoted cell is not closed" in rejected[5][0][1]
    assert "14 cells, but the header names 13 columns" in rejected[6][0][1]


@pytest.mark.parametrize(("header", "reason"), [
    ("event_type,event_type", "appears more than once"),
    ("location,location.state", "uses 'location' as a object, another column as a value"),
    ("payload.drugs.0.form,payload.drugs.form", "as a object, another column as a list"),
    ("payload.drugs.99999999999.form", "indices go up to 999"),
    ("payload..form", "empty part"),
])
def test_a_csv_header_that_cannot_map_cells_rejects_the_file_at_line_1(tmp_path, header, reason):
    source = tmp_path / "rms.csv"
    source.write_text(f"{header}\n{_csv_row('C1')}\n")
    accepted, rejected = _read(source)
    assert accepted == {} and list(rejected) == [1]
    assert rejected[1][0][0] == "(header)" and reason in rejected[1][0][1]


def test_time_bounds_apply_at_reading_with_the_given_now(tmp_path):
    source = tmp_path / "export.jsonl"
    _write_lines(source, [_json_line(source_record_id="A")])
    assert _read(source, now=datetime(2025, 10, 3, 17, tzinfo=UTC))[0] == {1: "A"}
    [problems] = _read(source, now=datetime(2060, 1, 1, tzinfo=UTC))[1].values()
    assert [f for f, _ in problems] == ["event_time", "report_time"]
    assert "more than 30 years before now" in problems[0][1]
    assert _read(source, now=datetime(2025, 10, 3, 16, tzinfo=UTC) - timedelta(days=2))[1]


_VALID = [_json_line(source_record_id=f"V{i}") for i in range(4)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.one_of(st.sampled_from(range(len(_VALID))), st.binary(max_size=300),
                                 st.text(max_size=200).map(str.encode)), max_size=12),
       bom=st.booleans(), crlf=st.booleans())
def test_arbitrary_bytes_between_valid_lines_never_raise_and_never_lose_one(tmp_path_factory, pieces, bom, crlf):
    lines, expected = [], {}
    for piece in pieces:
        number = len(lines) + sum(line.count(b"\n") for line in lines) + 1
        if isinstance(piece, int):
            expected[number] = f"V{piece}"
            lines.append(_VALID[piece])
        else:
            lines.append(piece)
    source = tmp_path_factory.mktemp("fuzz") / "export.jsonl"
    source.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (b"\r\n" if crlf else b"\n").join(lines))
    accepted, _ = _read(source)
    assert {n: v for n, v in accepted.items() if v.startswith("V")} == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.one_of(st.sampled_from(["C1", "C2", "C3"]), st.binary(max_size=200)), max_size=10))
def test_arbitrary_bytes_between_valid_csv_rows_never_raise_and_never_lose_one(tmp_path_factory, pieces):
    lines, expected = [CSV_HEADER.encode()], {}
    for piece in pieces:
        number = len(lines) + sum(line.count(b"\n") for line in lines) + 1
        if isinstance(piece, str):
            expected[number] = piece
            lines.append(_csv_row(piece).encode())
        else:
            lines.append(piece)
    source = tmp_path_factory.mktemp("fuzz") / "rms.csv"
    source.write_bytes(b"\n".join(lines) + b"\n")
    accepted, _ = _read(source)
    assert accepted == expected


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["event_type", "source_agency", "record_version", "event_time", "location",
                              "handling", "entities", "payload", "extra"]),
       value=_JSON)
def test_any_json_value_in_any_field_is_accepted_or_rejected_but_never_raises(tmp_path_factory, field, value):
    source = tmp_path_factory.mktemp("fuzz") / "export.jsonl"
    _write_lines(source, [json.dumps({**event_dict(), field: value}, allow_nan=True).encode(),
                          _json_line(source_record_id="B")])
    items = list(read_events(str(source), CBP))
    assert len(items) == 2 and isinstance(items[1], Accepted)
    assert all(isinstance(item, (Accepted, Rejected)) for item in items)


def test_bad_records_are_reported_precisely_and_the_rest_published(hub_settings, tmp_path):
    topic = _ingest(hub_settings)
    good = [event_dict(source_record_id=f"R{i}") for i in range(20)]
    bad = {
        3: (event_dict(payload__drugs__0__purity=1.7), "payload.drugs.0.purity"),
        7: ("{this is not json", "(line)"),
        12: (event_dict(source_agency__ori="CAHSI0100"), "source_agency.ori"),
        15: (event_dict(event_time="2025-10-03 14:05"), "event_time"),
    }
    lines = list(good)
    for line_number in sorted(bad):
        lines.insert(line_number - 1, bad[line_number][0])
    source = tmp_path / "export.jsonl"
    _write_jsonl(source, lines)
    rejects = tmp_path / "rejects.jsonl"
    out = subprocess.run([*HUB, "publish", "--agency", AGENCY, str(source), "--rejects", str(rejects)],
                         capture_output=True, text=True, env=hub_env(hub_settings), timeout=120)
    assert out.returncode == 2, out.stderr
    for line_number, (_, field) in bad.items():
        assert f"{source}:{line_number}: {field}:" in out.stderr
    reported = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["file"], r["line"], r["problems"][0]["field"]) for r in reported] == [
        (str(source), n, field) for n, (_, field) in sorted(bad.items())]
    on_broker = _ids_on(hub_settings, topic)
    assert on_broker == Counter(g["event_id"] for g in good)
    decoded = {hub_codec(hub_settings).decode(r.value).source_record_id for r in topic_records(hub_settings, topic)}
    assert decoded == {f"R{i}" for i in range(20)}


def test_hostile_files_lose_no_valid_record_on_the_broker(hub_settings, tmp_path):
    """The issue's table through the real `hub publish`: every bad line rejected as file:line: field: reason,
    every valid record (and only those) on the agency's ingest topic."""
    topic = _ingest(hub_settings)
    jsonl, lines, valid = tmp_path / "export.jsonl", [], {}
    for number, (line, _, _) in enumerate(HOSTILE_JSONL):
        valid[len(lines) + 1] = f"V{number}"
        lines += [_json_line(source_record_id=f"V{number}"), line]
    lines.append(_oversized_report())  # fine as a line; refused when encoded for publishing
    _write_lines(jsonl, lines, bom=True)
    csv_file = tmp_path / "rms.csv"
    _write_lines(csv_file, [CSV_HEADER.encode(), _csv_row("C1").encode(), b"SEIZURE,\xff\xfe,C2",
                            _csv_row("C3").encode(), _csv_row("C4", pills="Infinity").encode()], bom=True)
    rejects = tmp_path / "rejects.jsonl"
    out = subprocess.run([*HUB, "publish", "--agency", AGENCY, str(jsonl), str(csv_file), "--rejects", str(rejects)],
                         capture_output=True, text=True, env=hub_env(hub_settings), timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    expected = [(str(jsonl), 2 * n + 2, field, reason) for n, (_, field, reason) in enumerate(HOSTILE_JSONL)]
    expected += [(str(jsonl), len(lines), "(record)", f"more than the {MAX_REPORT_BYTES:,} a report may be"),
                 (str(csv_file), 3, "(line)", "not valid UTF-8"),
                 (str(csv_file), 5, "payload.drugs.0.pill_count", "valid integer")]
    reported = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["file"], r["line"]) for r in reported] == [(f, n) for f, n, _, _ in expected]
    for report, (_, _, field, reason) in zip(reported, expected):
        assert any(p["field"] == field and reason in p["reason"] for p in report["problems"]), report["problems"]
    for file, number, field, _ in expected[:20]:  # the first 20 rejects are printed
        assert f"{file}:{number}: {field}: " in out.stderr
    published = {hub_codec(hub_settings).decode(r.value).source_record_id for r in topic_records(hub_settings, topic)}
    assert published == {*valid.values(), "C1", "C3"}
    assert sum(_ids_on(hub_settings, topic).values()) == len(valid) + 2


def test_csv_with_dotted_columns_publishes(hub_settings, tmp_path):
    topic = _ingest(hub_settings)
    source = tmp_path / "rms.csv"
    source.write_text(
        "event_type,source_system,source_record_id,record_version,event_time,report_time,location.port_of_entry,"
        "handling.dissemination,handling.tlp,handling.cui_categories.0,payload.drugs.0.drug_type,"
        "payload.drugs.0.form,payload.drugs.0.pill_count,payload.conveyance\n"
        "SEIZURE,SEACATS,C1,1,2025-10-04T10:00:00Z,2025-10-04T11:00:00Z,OTAY_MESA,WHITE,GREEN,SP_SUB,FENTANYL,PILLS,"
        "5000,COMMERCIAL_TRUCK\n")
    out = subprocess.run([*HUB, "publish", "--agency", AGENCY, str(source)], capture_output=True, text=True,
                         env=hub_env(hub_settings), timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    [record] = topic_records(hub_settings, topic)
    event = hub_codec(hub_settings).decode(record.value)
    assert event.payload.drugs[0].pill_count == 5000 and event.source_agency.name.startswith("CBP")
    assert record.key == b"all"  # its dedup block (schemas.topics.dedup_block)


def test_all_or_nothing_publishes_nothing_when_one_record_is_bad(hub_settings, tmp_path):
    topic = _ingest(hub_settings)
    source = tmp_path / "batch.jsonl"
    _write_jsonl(source, [event_dict(), event_dict(location__port_of_entry="NOWHERE"), event_dict()])
    out = subprocess.run([*HUB, "publish", "--agency", AGENCY, "--all-or-nothing", str(source)],
                         capture_output=True, text=True, env=hub_env(hub_settings), timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    assert "nothing was published" in out.stdout
    assert topic_records(hub_settings, topic) == []


def test_publisher_sdk_guards_agency_and_topic(hub_settings):
    with pytest.raises(TopicMissingError, match="hub topics init"):
        Publisher("CAHSI0100", hub_settings)
    _ingest(hub_settings)
    with Publisher(AGENCY, hub_settings) as publisher:
        with pytest.raises(AgencyMismatchError, match="publishes only its own records"):
            publisher.publish(make_event(source_agency__ori="CAHSI0100"))
        publisher.publish(make_event())
        report = publisher.flush()
    assert (report.published, report.spooled) == (1, 0)


def test_unreachable_broker_spools_then_drain_sends_once(hub_settings, kafka):
    topic = _ingest(hub_settings)
    events = [make_event(source_record_id=f"S{i}") for i in range(50)]
    offline = hub_settings.model_copy(update={"bootstrap_servers": "127.0.0.1:1", "connect_timeout_s": 1})
    with Publisher(AGENCY, offline) as publisher:
        assert not publisher.online
        for event in events:
            publisher.publish(event)
        report = publisher.flush()
    assert (report.published, report.spooled) == (0, 50)
    assert topic_records(hub_settings, topic) == []
    with Publisher(AGENCY, hub_settings) as publisher:
        report = publisher.drain()
    assert (report.published, report.spooled) == (50, 0)
    assert _ids_on(hub_settings, topic) == Counter(e.event_id for e in events)


@pytest.mark.slow
def test_broker_killed_mid_publish_then_drain_leaves_every_record_exactly_once(hub_settings, local_kafka, tmp_path):
    topic = _ingest(hub_settings)
    total = 40_000
    source = tmp_path / "big.jsonl"
    _write_jsonl(source, (event_dict(source_record_id=f"K{i}") for i in range(total)))
    expected = Counter(json.loads(line)["event_id"] for line in source.read_text().splitlines())
    env = hub_env(hub_settings)
    publishing = subprocess.Popen([*HUB, "publish", "--agency", AGENCY, str(source), "--delivery-timeout", "5",
                                   "--batch-size", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env, cwd=tmp_path)
    consumer = make_consumer(settings=hub_settings, group_id=None)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    deadline = time.monotonic() + 120
    while sum(consumer.end_offsets(partitions).values()) < total // 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    consumer.close()
    local_kafka.kill_node(1)  # SIGKILL: no controlled shutdown, batches in flight
    try:
        assert not local_kafka.running
        stdout, stderr = publishing.communicate(timeout=300)
    finally:
        local_kafka.restart_nodes([1])  # the rest of the session needs the broker, whatever happened here
    assert publishing.returncode == 3, f"exit {publishing.returncode}\n{stdout}\n{stderr[-3000:]}"
    assert "wait in the spool" in stdout
    drained = subprocess.run([*HUB, "publish", "--agency", AGENCY, "--drain"], capture_output=True, text=True,
                             env=env, timeout=300, cwd=tmp_path)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    on_broker = _ids_on(hub_settings, topic)
    assert sum(on_broker.values()) == total, "nothing lost, nothing doubled"
    assert on_broker == expected


@pytest.mark.slow
def test_hundred_thousand_generated_events_all_reach_the_broker(hub_settings, tmp_path):
    from producers.sample import generate, write_sample

    sample = generate(100_000, seed=3, start=datetime(2024, 1, 1, tzinfo=UTC))  # two years, all before now
    files = write_sample(sample, tmp_path / "sample")
    env = hub_env(hub_settings)
    init = subprocess.run([*HUB, "topics", "init"], capture_output=True, text=True, env=env, timeout=120)
    assert init.returncode == 0, init.stdout + init.stderr
    for ori, path in files.items():
        out = subprocess.run([*HUB, "publish", "--agency", ori, str(path)], capture_output=True, text=True,
                             env=env, timeout=600, cwd=tmp_path)
        assert out.returncode == 0, f"{ori}: {out.stdout}{out.stderr}"
    on_broker: Counter = Counter()
    for ori in files:
        on_broker += _ids_on(hub_settings, INGEST.name(hub_settings.topic_prefix, ori=ori))
    assert sum(on_broker.values()) == 100_000
    assert on_broker == Counter(e.event_id for e in sample.events)

"""The wire contract without a broker: schema/model parity, validation, codec, evolution, interop, keys."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from datetime import date, datetime, timezone

import avro.io
import avro.schema
import pytest
from hypothesis import given, settings, strategies as st

from schemas.compatibility import named_types
from schemas.codec import HEADER_SIZE, MAGIC, Codec, parse_event
from schemas.exceptions import DecodeError, RecordInvalidError, UnknownSchemaError
from schemas.models import ALL_ENUMS, ALL_MODELS, Drug, vin_check_digit_ok
from schemas.store import AVSC_DIR, SchemaStore, default_store
from schemas.topics import dedup_block, ingest_key
from tests.factories import PLANNED_RAID, event_dict, make_event

HUB = [sys.executable, "-m", "hub"]


# -- the models cannot drift from the .avsc files --------------------------------------------------
def test_every_schema_type_has_a_model_with_the_same_fields():
    types = {}
    for top_level in default_store().latest.types.values():
        types.update(named_types(top_level.schema))
    models = {m.avro_name: m for m in ALL_MODELS}
    enums = {f"gov.taskforce.hub.{e.__name__}": e for e in ALL_ENUMS}
    records = {n: t for n, t in types.items() if t["type"] == "record"}
    assert set(records) == set(models), "every Avro record has a model and vice versa"
    for name, record in records.items():
        assert [f["name"] for f in record["fields"]] == list(models[name].model_fields), name
    avro_enums = {n: t for n, t in types.items() if t["type"] == "enum"}
    assert set(avro_enums) == set(enums)
    for name, enum in avro_enums.items():
        assert enum["symbols"] == [s.value for s in enums[name]], name


def test_every_version_folder_has_one_file_per_named_type():
    for version in default_store().versions:
        files = {p.name.removesuffix(".avsc") for p in version.path.glob("*.avsc")}
        defined = {name for t in version.types.values() for name in named_types(t.schema)}
        assert files == defined, version.path


# -- validation that matters to users --------------------------------------------------------------
@pytest.mark.parametrize(("changes", "field", "reason"), [
    ({"source_agency__ori": "CBP"}, "source_agency.ori", "9-character ORI"),
    ({"entities__1__identifiers__0__value": "555-0142"}, "entities.1.identifiers.0", "not a telephone number"),
    ({"entities__0__identifiers__0__value": "1M8GDM9AXKP042789"}, "entities.0.identifiers.0", "check digit"),
    ({"event_time": "2025-10-03T14:05:00"}, "event_time", "timezone"),
    ({"payload__drugs__0__net_weight__value": 0}, "payload.drugs.0.net_weight.value", "greater than 0"),
    ({"payload__drugs__0__purity": 1.2}, "payload.drugs.0.purity", "less than or equal to 1"),
    ({"location__port_of_entry": "TIJUANA"}, "location.port_of_entry", "unknown port of entry"),
    ({"event_id": "not-a-uuid"}, "event_id", "not a UUID"),
    ({"payload__drugs": []}, "payload", "at least one drug"),
])
def test_invalid_records_name_the_field_and_reason(changes, field, reason):
    with pytest.raises(RecordInvalidError) as info:
        parse_event(event_dict(**changes))
    assert any(f == field and reason in r for f, r in info.value.problems), info.value.problems


def _intelligence(**overrides):
    marking = {"criminal_predicate": "Subject supplies fentanyl pills to the Lopez DTO (CI report 2025-118)",
               "sensitivity": "HIGH", "confidence": "PROBABLE", "control_official": "ASAC J. Ortiz",
               "review_by": "2030-10-01"}
    return {**marking, **overrides}


def test_intelligence_record_needs_a_criminal_predicate():
    assert parse_event(event_dict(handling__intelligence=_intelligence())).handling.intelligence is not None
    for bad in ({"criminal_predicate": "  "}, {"criminal_predicate": None}):
        with pytest.raises(RecordInvalidError, match="criminal_predicate"):
            parse_event(event_dict(handling__intelligence=_intelligence(**bad)))


def test_intelligence_review_date_at_most_five_years_ahead():
    with pytest.raises(RecordInvalidError, match="more than 5 years"):
        parse_event(event_dict(handling__intelligence=_intelligence(review_by="2030-10-05")))


def test_planned_operation_needs_coordinates_and_a_time_window():
    assert make_event(PLANNED_RAID).location.has_coordinates
    with pytest.raises(RecordInvalidError, match="latitude"):
        parse_event(event_dict(PLANNED_RAID, location={"state": "CA"}))
    with pytest.raises(RecordInvalidError, match="ends_at must be after starts_at"):
        parse_event(event_dict(PLANNED_RAID, payload__ends_at="2025-10-05T04:00:00Z"))


def test_payload_must_match_event_type():
    with pytest.raises(RecordInvalidError, match="payload"):
        parse_event(event_dict(event_type="ARREST"))


def test_all_problems_of_a_record_are_reported_at_once():
    with pytest.raises(RecordInvalidError) as info:
        parse_event(event_dict(event_time="yesterday", payload__drugs__0__purity=7, location__state="ZZ"))
    fields = {f for f, _ in info.value.problems}
    assert {"event_time", "payload.drugs.0.purity", "location.state"} <= fields


@pytest.mark.parametrize(("vin", "ok"), [("1M8GDM9AXKP042788", True), ("11111111111111111", True),
                                         ("1M8GDM9A1KP042788", False), ("1M8GDM9AXKP04278", False),
                                         ("IM8GDM9AXKP042788", False)])
def test_vin_check_digit(vin, ok):
    assert vin_check_digit_ok(vin) is ok


def test_estimated_doses_are_derived_with_stated_purity():
    kilo = Drug(drug_type="FENTANYL", form="POWDER", net_weight={"value": 1, "unit": "KG"})
    assert kilo.estimated_doses() == pytest.approx(1e6 * 0.10 / 2)  # default powder purity 10%
    assert kilo.estimated_doses(purity=0.05) == pytest.approx(25_000)  # a lab result overrides it
    pills = Drug(drug_type="FENTANYL", form="PILLS", pill_count=5000)
    assert pills.estimated_doses() == 5000
    meth = Drug(drug_type="METHAMPHETAMINE", form="CRYSTAL", net_weight={"value": 10, "unit": "LB"})
    assert meth.estimated_doses() == 0
    assert "estimated_doses" not in default_store().latest.type().schema_json, "doses are never typed in"


# -- codec -----------------------------------------------------------------------------------------
def test_round_trip_is_lossless():
    event = make_event(handling__intelligence=_intelligence())
    data = Codec().encode(event)
    assert data[:2] == MAGIC and data[2:HEADER_SIZE] == default_store().latest.type().fingerprint
    assert Codec().decode(data) == event


@settings(max_examples=60, deadline=None)
@given(weight=st.floats(min_value=0.001, max_value=1e6), purity=st.none() | st.floats(0, 1),
       pills=st.none() | st.integers(1, 10**7), version=st.integers(1, 2),
       when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(timezone.utc)))
def test_round_trip_any_seizure_any_version(weight, purity, pills, version, when):
    event = make_event(payload__drugs__0__net_weight__value=weight, payload__drugs__0__purity=purity,
                       payload__drugs__0__pill_count=pills, event_time=when.isoformat())
    data = Codec(version=version).encode(event)
    assert Codec().decode(data) == event  # the latest reader reads every version
    assert Codec(version=1).decode(Codec().encode(event)) == event  # and v1 reads v2 data (nii_scan defaults)


def test_newer_field_reaches_newer_readers_only():
    event = make_event(payload__nii_scan=True)
    assert Codec().decode(Codec().encode(event)).payload.nii_scan is True
    assert Codec().decode(Codec(version=1).encode(event)).payload.nii_scan is False  # v1 has no such field


def test_decode_rejects_bytes_that_are_not_hub_messages():
    good = Codec().encode(make_event())
    with pytest.raises(DecodeError, match="marker"):
        Codec().decode(b'{"json": true}')
    with pytest.raises(UnknownSchemaError, match="fingerprint"):
        Codec().decode(MAGIC + b"\x00" * 8 + good[HEADER_SIZE:])
    with pytest.raises(DecodeError, match="corrupt"):
        Codec().decode(good[: HEADER_SIZE + 20])


# -- interoperability with the official Apache avro package -----------------------------------------
def test_official_avro_reads_what_the_hub_writes():
    event = make_event(handling__intelligence=_intelligence())
    data = Codec().encode(event)
    writer = avro.schema.parse(default_store().latest.type().schema_json)
    decoded = avro.io.DatumReader(writer).read(avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:])))
    assert decoded["event_id"] == event.event_id
    assert decoded["payload"]["drugs"][0]["net_weight"] == {"value": 12.4, "unit": "LB"}
    assert decoded["handling"]["intelligence"]["review_by"] == date(2030, 10, 1)
    assert decoded["event_time"] == event.event_time


def test_hub_reads_what_official_avro_writes():
    event = make_event()
    writer = avro.schema.parse(default_store().latest.type().schema_json)
    body = io.BytesIO()
    datum = event.model_dump()  # unions' branches not named: the avro package picks them itself
    avro.io.DatumWriter(writer).write(datum, avro.io.BinaryEncoder(body))
    # The framing's fingerprint comes from the hub's store: avro-python's canonical form keeps
    # {"type": "long"} for logical types, so its CRC-64 differs from Java's and fastavro's.
    assert Codec().decode(MAGIC + default_store().latest.type().fingerprint + body.getvalue()) == event


# -- schema evolution check --------------------------------------------------------------------------
def test_schemas_check_passes_on_the_shipped_contract():
    out = subprocess.run([*HUB, "schemas", "check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every version reads all earlier data" in out.stdout


def _add_version(root, type_name, edit):
    """Copy the newest vN to v(N+1) with one type edited; returns N+1."""
    previous = max(int(p.name[1:]) for p in root.iterdir())
    shutil.copytree(root / f"v{previous}", root / f"v{previous + 1}")
    path = root / f"v{previous + 1}" / f"gov.taskforce.hub.{type_name}.avsc"
    schema = json.loads(path.read_text())
    edit(schema)
    path.write_text(json.dumps(schema))
    return previous + 1


def test_schemas_check_catches_a_new_field_without_default(tmp_path):
    root = tmp_path / "avsc"
    shutil.copytree(AVSC_DIR, root)
    new = _add_version(root, "ItemSeizure", lambda s: s["fields"].append({"name": "k9_alert", "type": "boolean"}))
    out = subprocess.run([*HUB, "schemas", "check", "--dir", str(root)], capture_output=True, text=True)
    assert out.returncode == 1
    for old in range(1, new):
        assert f"CaseEvent: v{new} cannot read v{old} data" in out.stderr
    assert "ItemSeizure.k9_alert: new field without a default" in out.stderr


def test_schemas_check_catches_a_removed_enum_symbol(tmp_path):
    root = tmp_path / "avsc"
    shutil.copytree(AVSC_DIR, root)

    def remove_xylazine(schema):
        schema["symbols"].remove("XYLAZINE")
        schema.pop("default")

    new = _add_version(root, "DrugType", remove_xylazine)
    assert [v.version for v in SchemaStore(root).versions] == list(range(1, new + 1))
    out = subprocess.run([*HUB, "schemas", "check", "--dir", str(root)], capture_output=True, text=True)
    assert out.returncode == 1 and "DrugType: symbols XYLAZINE removed and no enum default" in out.stderr


# -- partition keys ----------------------------------------------------------------------------------
def test_every_record_shares_one_dedup_block_whatever_place_or_version():
    places = [{"port_of_entry": "SAN_YSIDRO"}, {"latitude": 32.55, "longitude": -117.03, "state": "CA"},
              {"county_fips": "06073", "state": "CA"}, {"state": "California"}, {"state": "AZ"},
              {"latitude": 41.88, "longitude": -87.63, "description": "the reporting office"}]
    seizures = [make_event(location=place) for place in places]
    arrest = make_event(event_type="ARREST", source_record_id="BK-1", payload={"booking_number": "77"})
    updated = make_event(event_type="ARREST", source_record_id="BK-1", payload={"booking_number": "77"},
                         record_version=2, location={"state": "TX"})
    assert {ingest_key(e) for e in [*seizures, arrest, updated]} == {b"all"}
    assert {dedup_block(e) for e in [*seizures, arrest, updated]} == {"all"}

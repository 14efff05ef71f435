"""The contract's bounds (schemas/limits.py): every value range, and the sizes that make every derived record fit.

The size tests build the biggest records the models allow: every string at its length limit in 4-byte UTF-8
characters (the most bytes per character), every list at its limit, the primary report just under
MAX_REPORT_BYTES; then measure them as the hub writes them (plain, and sealed by the codec with a key vault).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from consumers.state.base import StateWrite
from hub.vault import MemoryKeyVault
from schemas.codec import Codec, parse_event, problems_of, to_avro_datum
from schemas.exceptions import RecordInvalidError, RecordOutOfBoundsError
from schemas.limits import (AVRO_INT_MAX, MAX_ALERT_PARTIES, MAX_CASE_NUMBERS, MAX_CODE_CHARS, MAX_ENTITIES,
                            MAX_IDENTIFIERS, MAX_LABEL_CHARS, MAX_MESSAGE_BYTES, MAX_NAME_CHARS, MAX_RECORD_VERSION,
                            MAX_REPORT_BYTES, MAX_REPORTS_CARRIED, MAX_REPORTS_PER_CANONICAL, MAX_TEXT_CHARS,
                            TimeBounds, check_report_size, check_times)
from schemas.models import (Agency, AlertParty, CanonicalEvent, CaseEvent, ContactInformation, DeconflictionAlert,
                            DedupDecision, FeedItem, RecordPointer, ReportCredit)
from schemas.protection import record_key_ids
from tests.factories import PLANNED_RAID, event_dict, make_event

WIDE = "\U0001d11e"  # MUSICAL SYMBOL G CLEF: four bytes in UTF-8, twelve as a JSON \u escape pair
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(RecordInvalidError) as caught:
        parse_event(data)
    return caught.value.problems


def _fields(data: dict[str, Any]) -> set[str]:
    return {field for field, _ in _problems(data)}


# -- value ranges -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "field"), [
    ({"payload__drugs__0__net_weight__value": float("inf")}, "payload.drugs.0.net_weight.value"),
    ({"payload__drugs__0__net_weight__value": float("nan")}, "payload.drugs.0.net_weight.value"),
    ({"payload__drugs__0__net_weight__value": "Infinity"}, "payload.drugs.0.net_weight.value"),
    ({"payload__drugs__0__net_weight__value": -1.0}, "payload.drugs.0.net_weight.value"),
    ({"payload__drugs__0__net_weight__value": 3e6, "payload__drugs__0__net_weight__unit": "LB"},
     "payload.drugs.0.net_weight"),
    ({"payload__drugs__0__net_weight__value": 1e308}, "payload.drugs.0.net_weight"),
    ({"payload__drugs__0__purity": 1.5}, "payload.drugs.0.purity"),
    ({"payload__drugs__0__pill_count": 10**8 + 1}, "payload.drugs.0.pill_count"),
    ({"payload__drugs__0__pill_count": 10**30}, "payload.drugs.0.pill_count"),
    ({"record_version": MAX_RECORD_VERSION + 1}, "record_version"),
    ({"record_version": 2**63}, "record_version"),
    ({"location__latitude": float("nan"), "location__longitude": 1.0}, "location.latitude"),
    ({"source_record_id": "R" * (MAX_CODE_CHARS + 1)}, "source_record_id"),
    ({"source_record_id": "R1\x00"}, "source_record_id"),
    ({"source_record_id": "R1\x1b[2J"}, "source_record_id"),
    ({"source_record_id": "R\ud800"}, "source_record_id"),  # pydantic's own check: no lone surrogates
    ({"source_agency__name": "N" * (MAX_NAME_CHARS + 1)}, "source_agency.name"),
    ({"location__description": "d" * (MAX_TEXT_CHARS + 1)}, "location.description"),
    ({"entities": [{"kind": "PHONE", "role": "SUBJECT",
                    "identifiers": [{"scheme": "PHONE_E164", "value": "+16195550142"}]}] * (MAX_ENTITIES + 1)},
     "entities"),
    ({"entities__0__identifiers": [{"scheme": "DOCUMENT_NUMBER", "value": "D1"}] * (MAX_IDENTIFIERS + 1)},
     "entities.0.identifiers"),
    ({"payload__drugs": [{"drug_type": "FENTANYL", "form": "PILLS", "pill_count": 1}] * 51}, "payload.drugs"),
    ({"event_time": "9999-12-31T23:59:59Z"}, "event_time"),
    ({"report_time": "9999-12-31T23:59:59-23:00"}, "report_time"),
    ({"event_time": "0001-01-01T00:00:00+23:00"}, "event_time"),
])
def test_each_out_of_range_value_is_rejected_naming_its_field(change, field):
    assert field in _fields(event_dict(**change))


def test_free_text_keeps_its_line_breaks_and_ids_do_not():
    assert make_event(location__description="line one\r\n\tline two").location.description.endswith("two")
    [(field, reason)] = _problems(event_dict(source_system="SEA\nCATS"))
    assert field == "source_system" and "control character U+000A at position 3" in reason


def test_year_9999_is_rejected_everywhere_without_overflow():
    marking = {"criminal_predicate": "21 USC 841", "sensitivity": "HIGH", "confidence": "PROBABLE",
               "control_official": "SAC", "review_by": "9999-12-31"}
    assert "handling.intelligence.review_by" in _fields(event_dict(handling__intelligence=marking))
    late = event_dict(PLANNED_RAID, payload__ends_at="9999-12-31T23:59:59Z")
    assert "payload.ends_at" in _fields(late)
    assert "report_time" in _fields(event_dict(report_time="2199-12-31T23:00:00-05:00"))  # 2200 in UTC, as Avro has it
    near_the_end = make_event(report_time="2199-12-31T23:00:00Z",
                              handling__intelligence={**marking, "review_by": "2199-12-31"})
    assert Codec().decode(Codec().encode(near_the_end)) == near_the_end
    with pytest.raises(RecordOutOfBoundsError, match="report_time"):
        check_times(near_the_end, NOW)


def test_a_planned_operation_may_not_last_for_months():
    long = event_dict(PLANNED_RAID, payload__ends_at="2026-03-05T08:00:00Z")
    [(field, reason)] = _problems(long)
    assert field == "payload" and "more than 90 days" in reason


def test_check_times_bounds_event_and_report_time_around_now():
    check_times(make_event(), datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(RecordOutOfBoundsError) as caught:
        check_times(make_event(event_time="1990-01-01T00:00:00Z", report_time="2027-01-01T00:00:00Z"), NOW)
    assert [f for f, _ in caught.value.problems] == ["event_time", "report_time"]
    assert "more than 30 years before now" in caught.value.problems[0][1]
    assert "more than 24 hour(s) after now" in caught.value.problems[1][1]
    check_times(make_event(report_time=(NOW + timedelta(hours=23)).isoformat(),
                           event_time=(NOW + timedelta(hours=23)).isoformat()), NOW)


def test_a_planned_operation_may_be_registered_months_ahead_but_its_report_may_not():
    ahead = (NOW + timedelta(days=120)).isoformat()
    check_times(make_event(PLANNED_RAID, event_time=ahead, payload__starts_at=ahead,
                           payload__ends_at=(NOW + timedelta(days=120, hours=3)).isoformat()), NOW)
    with pytest.raises(RecordOutOfBoundsError, match="report_time"):
        check_times(make_event(PLANNED_RAID, report_time=ahead), NOW)


def test_time_bounds_are_configurable(monkeypatch):
    monkeypatch.setenv("HUB_MAX_EVENT_AGE_YEARS", "50")
    check_times(make_event(event_time="1990-01-01T00:00:00Z"), NOW, TimeBounds())
    with pytest.raises(ValidationError):
        TimeBounds(max_event_age_years=0)


# -- sizes ----------------------------------------------------------------------------------------------
def _unchecked(report: CaseEvent) -> bytes:
    """The report's Avro, written without the size check that Codec.encode makes."""
    return Codec().encode_datum(CaseEvent.avro_name, to_avro_datum(report))


def _wide(chars: int, tag: str = "") -> str:
    return tag + WIDE * (chars - len(tag))


def _max_contact(tag: str) -> ContactInformation:
    return ContactInformation(name=_wide(MAX_NAME_CHARS, tag), telephone="+123456789012345",
                              email=_wide(MAX_NAME_CHARS - 4, tag) + f"@{WIDE}.{WIDE}")


def _max_agency(number: int) -> Agency:
    return Agency(ori=f"CA{number:07d}", name=_wide(MAX_NAME_CHARS, str(number)), level="FOREIGN_PARTNER",
                  contact=_max_contact(str(number)))


def _max_report() -> CaseEvent:
    """A report with entity identifiers at their longest, topped up with free text to MAX_REPORT_BYTES of Avro."""
    identifier = {"scheme": "DOCUMENT_NUMBER", "value": _wide(MAX_NAME_CHARS), "issuer": _wide(MAX_CODE_CHARS)}
    data = event_dict(source_system=_wide(MAX_CODE_CHARS), source_record_id=_wide(MAX_CODE_CHARS),
                      source_agency=_max_agency(1).model_dump(mode="json"), record_version=MAX_RECORD_VERSION)
    data["entities"] = []

    def size(entities: list[Any], description: str = "") -> int:
        location = {**data["location"], "description": description}
        return len(_unchecked(parse_event({**data, "entities": entities, "location": location})))

    while True:  # one identifier at a time, in entities of MAX_IDENTIFIERS each
        last = data["entities"][-1] if data["entities"] else None
        grown = [*data["entities"][:-1], {**last, "identifiers": [*last["identifiers"], identifier]}] \
            if last and len(last["identifiers"]) < MAX_IDENTIFIERS else \
            [*data["entities"], {"kind": "DOCUMENT", "role": "OTHER", "identifiers": [identifier]}]
        if size(grown) > MAX_REPORT_BYTES - MAX_TEXT_CHARS // 2:
            break
        data["entities"] = grown
    low, high = 0, MAX_TEXT_CHARS  # the longest one-byte description that still fits
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if size(data["entities"], "x" * middle) <= MAX_REPORT_BYTES else (low, middle - 1)
    return parse_event({**data, "location": {**data["location"], "description": "x" * low}})


@pytest.fixture(scope="module")
def max_report() -> CaseEvent:
    report = _max_report()
    size = len(Codec().encode(report))
    assert MAX_REPORT_BYTES - 8 <= size <= MAX_REPORT_BYTES, size
    return report


def _max_credit(number: int) -> ReportCredit:
    return ReportCredit(event_id=_wide(MAX_CODE_CHARS, f"{number}-"), agency=_max_agency(number),
                        source_system=_wide(MAX_CODE_CHARS), source_record_id=_wide(MAX_CODE_CHARS),
                        record_version=MAX_RECORD_VERSION, report_time=NOW, rule="CROSS_AGENCY_MATCH", score=0.5,
                        dissemination="GRAY")


def _max_canonical(primary: CaseEvent) -> CanonicalEvent:
    return CanonicalEvent(
        canonical_id=_wide(MAX_CODE_CHARS), revision=AVRO_INT_MAX, event_type=primary.event_type, primary=primary,
        reports=[_max_credit(n) for n in range(MAX_REPORTS_PER_CANONICAL)],
        decision=DedupDecision(rule="CROSS_AGENCY_MATCH", score=0.99, explanation=_wide(MAX_TEXT_CHARS),
                               event_id=_wide(MAX_CODE_CHARS)))


def _max_alert() -> DeconflictionAlert:
    parties = [AlertParty(agency=_max_agency(n), event_id=_wide(MAX_CODE_CHARS, f"{n}-"),
                          canonical_id=_wide(MAX_CODE_CHARS, f"{n}-"),
                          case_numbers=[_wide(MAX_CODE_CHARS, f"{c}-") for c in range(MAX_CASE_NUMBERS)],
                          contact=_max_contact(str(n)), dissemination="WHITE") for n in range(MAX_ALERT_PARTIES)]
    return DeconflictionAlert(alert_id=_wide(MAX_CODE_CHARS), alert_kind="EVENT", status="ESCALATED", urgent=True,
                              matched=_wide(MAX_LABEL_CHARS), parties=parties, raised_at=NOW, updated_at=NOW,
                              explanation=_wide(MAX_TEXT_CHARS))


def _feed_item(**body: Any) -> FeedItem:
    form = "POINTER" if "pointer" in body else "FULL"
    return FeedItem(item_id=_wide(MAX_LABEL_CHARS), unit_id=_wide(MAX_LABEL_CHARS), form=form,
                    rule=_wide(MAX_LABEL_CHARS), subscription_id=_wide(MAX_LABEL_CHARS), registry_version=AVRO_INT_MAX,
                    routed_at=NOW, **body)


def _vault_for(record: Any) -> MemoryKeyVault:
    vault = MemoryKeyVault()
    for key_id in record_key_ids(record):
        vault.ensure(key_id, date(2031, 1, 1))
    return vault


def _sizes(record: Any) -> tuple[int, int]:
    """(plain, sealed) encoded sizes as the hub writes the record."""
    return len(Codec().encode(record)), len(Codec(vault=_vault_for(record)).encode(record))


def test_the_biggest_canonical_event_fits_one_message(max_report):
    canonical = _max_canonical(max_report)
    assert len(record_key_ids(canonical)) == MAX_REPORTS_PER_CANONICAL + 1 <= MAX_REPORTS_CARRIED
    plain, sealed = _sizes(canonical)
    assert plain > MAX_REPORT_BYTES + MAX_REPORTS_PER_CANONICAL * 4_000, "the builder really is maximal"
    assert sealed < MAX_MESSAGE_BYTES, f"{sealed:,} bytes"


def test_the_biggest_alert_fits_one_message():
    plain, sealed = _sizes(_max_alert())
    assert plain > MAX_ALERT_PARTIES * MAX_CASE_NUMBERS * MAX_CODE_CHARS * 4
    assert sealed < MAX_MESSAGE_BYTES, f"{sealed:,} bytes"


def test_the_biggest_feed_items_fit_one_message(max_report):
    canonical, alert = _max_canonical(max_report), _max_alert()
    pointer = RecordPointer(record_id=_wide(MAX_LABEL_CHARS), record_kind="CANONICAL_EVENT", event_type="SEIZURE",
                            owners=[_max_agency(n) for n in range(MAX_REPORTS_CARRIED)])
    for item in (_feed_item(event=canonical), _feed_item(alert=alert), _feed_item(pointer=pointer)):
        plain, sealed = _sizes(item)
        assert max(plain, sealed) < MAX_MESSAGE_BYTES, f"{max(plain, sealed):,} bytes"


def test_the_biggest_canonical_state_entry_fits_one_changelog_record(max_report):
    """Dedup and correlate keep canonical events in state; the changelog holds each sealed (JSON, base64)."""
    canonical = _max_canonical(max_report)
    write = StateWrite("canonical", str(uuid.uuid4()), canonical.model_dump(mode="json"), 0.0,
                       tuple(record_key_ids(canonical)))
    size = len(write.encode(_vault_for(canonical)))
    assert size < MAX_MESSAGE_BYTES, f"{size:,} bytes"


def test_a_report_over_the_size_limit_is_refused_when_encoded_and_when_decoded(max_report):
    big = max_report.model_copy(update={"location": max_report.location.model_copy(
        update={"description": (max_report.location.description or "") + "x" * 64})})
    with pytest.raises(RecordOutOfBoundsError) as caught:
        Codec().encode(big)
    [(field, reason)] = caught.value.problems
    assert field == "(record)" and f"{MAX_REPORT_BYTES:,}" in reason
    data = _unchecked(big)
    with pytest.raises(RecordOutOfBoundsError):
        Codec().decode(data)
    with pytest.raises(RecordOutOfBoundsError):
        check_report_size(data)
    check_report_size(Codec().encode(max_report))


def test_problems_name_each_field_once_for_many_bounds():
    data = event_dict(record_version=0, payload__drugs__0__net_weight__value=float("inf"), source_system="S" * 1000)
    with pytest.raises(ValidationError) as caught:
        CaseEvent.model_validate(data)
    assert sorted(f for f, _ in problems_of(caught.value)) == [
        "payload.drugs.0.net_weight.value", "record_version", "source_system"]

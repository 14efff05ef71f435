"""The sharing policy as a pure function: each rule on a hand-made record, and properties over many records."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.registry import Registry, TaskForce, load_registry
from consumers.sharing import Decision, Rule, decide, owners, pointer_of, route, told_owners, visible_record
from consumers.stages.dedup import credit_of
from producers.directory import load_agencies
from schemas.models import (
    AlertKind, AlertParty, AlertStatus, CanonicalEvent, CaseEvent, CuiCategory, DeconflictionAlert, DedupDecision,
    DedupRule, DisseminationLevel, TrafficLightProtocol,
)
from schemas.reference import PORTS_OF_ENTRY
from tests.factories import PLANNED_RAID, SEIZURE, make_event

AGENCIES = load_agencies()
REGISTRY = load_registry(agencies=AGENCIES)
UNITS = sorted(REGISTRY.task_forces, key=lambda u: u.unit_id)
CANONICAL_NAMESPACE = uuid.UUID("6f1c7d0e-2b7a-4a53-9a57-3f1f7e0c9b11")
INTELLIGENCE = {"criminal_predicate": "Subject supplies fentanyl pills to a Sinaloa-linked cell (CI report 7)",
                "sensitivity": "HIGH", "confidence": "PROBABLE", "control_official": "Lt. A. Ortiz",
                "review_by": "2027-10-01"}
ARREST_PAYLOAD = {"booking_number": "B-1", "charges": [{"statute": "21 USC 841", "description": "PWID fentanyl",
                                                        "severity": "FELONY"}]}


def agency(ori: str) -> dict[str, Any]:
    return AGENCIES[ori].model_dump(mode="json")


def event(ori: str = "CACHP0000", *, port: str | None = "CALEXICO", handling: dict[str, Any] | None = None,
          **changes: Any) -> CaseEvent:
    """A fentanyl seizure (12.4 lb, Operation Apollo) by ``ori`` at ``port``, WHITE/AMBER/SP_SUB unless changed."""
    location = changes.pop("location", None) or {"port_of_entry": port, "state": PORTS_OF_ENTRY[port].state,
                                                 "county_fips": PORTS_OF_ENTRY[port].county_fips}
    full_handling = {**SEIZURE["handling"], **(handling or {})}
    return make_event(source_agency=agency(ori), location=location, handling=full_handling, **changes)


def canonical(primary: CaseEvent, *others: CaseEvent) -> CanonicalEvent:
    """A canonical event as dedup builds it: the first report is primary, every report is credited."""
    credits = [credit_of(e, DedupRule.NEW_EVENT if i == 0 else DedupRule.CROSS_AGENCY_MATCH, 1.0)
               for i, e in enumerate((primary, *others))]
    last = (primary, *others)[-1]
    return CanonicalEvent(canonical_id=str(uuid.uuid5(CANONICAL_NAMESPACE, primary.event_id)), revision=len(credits),
                          event_type=primary.event_type, primary=primary, reports=credits,
                          decision=DedupDecision(rule=credits[-1].rule, score=1.0, explanation="test",
                                                 event_id=last.event_id))


def record(ori: str = "CACHP0000", **kwargs: Any) -> CanonicalEvent:
    return canonical(event(ori, **kwargs))


def unit(unit_id: str, **changes: Any) -> TaskForce:
    """A shipped unit, optionally changed (and validated again)."""
    return TaskForce.model_validate({**REGISTRY.unit(unit_id).model_dump(mode="json"), **changes})


def outcome(decision: Decision) -> tuple[str, str]:
    return decision.form, str(decision.rule)


# -- ownership -------------------------------------------------------------------------------------
def test_owner_gets_full_whatever_the_handling():
    black = record("CACBP0100", port="SAN_YSIDRO", handling={"dissemination": "BLACK", "tlp": "RED",
                                                             "intelligence": INTELLIGENCE})
    decision = decide(black, REGISTRY.unit("best-san-diego"))
    assert outcome(decision) == ("FULL", "owner.full")
    assert decision.subscription_id == "aor-all" and "CACBP0100" in decision.reason


def test_a_co_reporter_gets_a_white_event_in_full_but_never_another_agencys_black_primary():
    white = event("CACHP0000", port="SAN_YSIDRO")
    joint = canonical(white, event("CA0370000", port="SAN_YSIDRO"))
    assert owners(joint) == {"CACHP0000", "CA0370000"}
    assert outcome(decide(joint, REGISTRY.unit("best-san-ysidro"))) == ("FULL", "co-reporter.full")
    black = canonical(event("CACHP0000", port="SAN_YSIDRO", handling={"dissemination": "BLACK"}),
                      event("CA0370000", port="SAN_YSIDRO"))
    assert outcome(decide(black, REGISTRY.unit("best-san-ysidro"))) == ("WITHHELD", "black.withheld")
    assert outcome(decide(black, REGISTRY.unit("best-imperial-valley"))) == ("FULL", "owner.full")


def test_another_agencys_black_report_is_never_credited_nor_its_revision_sent():
    white = event("CACBP0100", port="SAN_YSIDRO")
    black = event("CACHP0000", port="SAN_YSIDRO", handling={"dissemination": "BLACK"})
    merged_by_black = canonical(white, black)
    san_diego, imperial = REGISTRY.unit("best-san-diego"), REGISTRY.unit("best-imperial-valley")
    assert outcome(decide(merged_by_black, imperial)) == ("FULL", "owner.full")  # CACHP0000 is a member
    later = canonical(white, black, event("CA0370000", port="SAN_YSIDRO"))
    assert outcome(decide(merged_by_black, REGISTRY.unit("best-san-ysidro"))) == ("FULL", "owner.full")
    assert [r.agency.ori for r in visible_record(later, san_diego).reports] == ["CACBP0100", "CA0370000"]
    assert [r.agency.ori for r in visible_record(later, imperial).reports] == ["CACBP0100", "CACHP0000", "CA0370000"]
    tucson = unit("best-tucson", subscriptions=[{"subscription_id": "all", "regions": {"states": ["CA"]}}])
    assert outcome(decide(merged_by_black, tucson)) == ("WITHHELD", "black.withheld")
    assert outcome(decide(later, tucson)) == ("FULL", "white.full")


def test_owner_gets_its_records_even_when_not_subscribed():
    arrest = record("CACBP0100", port="SAN_YSIDRO", event_type="ARREST", payload=ARREST_PAYLOAD)
    decision = decide(arrest, REGISTRY.unit("best-san-ysidro"))
    assert outcome(decision) == ("FULL", "owner.full") and decision.subscription_id is None


# -- relevance -------------------------------------------------------------------------------------
def test_white_record_in_a_subscribed_region_is_full():
    decision = decide(record(), REGISTRY.unit("best-san-diego"))
    assert outcome(decision) == ("FULL", "white.full")
    assert decision.subscription_id == "imperial-fentanyl"


def test_record_wanted_but_elsewhere_is_out_of_region():
    cocaine = record(payload__drugs__0__drug_type="COCAINE")
    decision = decide(cocaine, REGISTRY.unit("best-san-diego"))
    assert outcome(decision) == ("WITHHELD", "out-of-region")
    assert "aor-all" in decision.reason and decision.subscription_id is None


def test_weight_filter_counts_net_kilograms():
    small = record(payload__drugs__0__net_weight={"value": 0.5, "unit": "LB"})
    assert outcome(decide(small, REGISTRY.unit("best-san-diego"))) == ("WITHHELD", "out-of-region")
    big = record(payload__drugs__0__net_weight={"value": 1.2, "unit": "KG"})
    assert outcome(decide(big, REGISTRY.unit("best-san-diego"))) == ("FULL", "white.full")


def test_event_type_not_subscribed():
    arrest = record("CACHP0000", port="SAN_YSIDRO", event_type="ARREST", payload=ARREST_PAYLOAD)
    decision = decide(arrest, REGISTRY.unit("best-san-ysidro"))
    assert outcome(decision) == ("WITHHELD", "not-subscribed") and "port-seizures" in decision.reason


def test_a_drug_filter_never_takes_a_record_without_drugs():
    precursors_only = unit("best-tucson", subscriptions=[REGISTRY.unit("best-tucson").subscriptions[1].model_dump()])
    arrest = record("CACHP0000", port="NOGALES_MARIPOSA", event_type="ARREST", payload=ARREST_PAYLOAD)
    assert decide(arrest, precursors_only).rule is Rule.NOT_SUBSCRIBED
    precursor = record("CACHP0000", port="NOGALES_MARIPOSA", payload__drugs__0__drug_type="PRECURSOR_CHEMICAL")
    assert decide(precursor, precursors_only).subscription_id == "nogales-precursors"


def test_operation_filter_is_case_insensitive_and_reaches_beyond_the_area():
    lotus = record("CACHP0000", port="SAN_YSIDRO", payload__operation_name="OPERATION BLUE LOTUS")
    decision = decide(lotus, REGISTRY.unit("best-nogales"))
    assert outcome(decision) == ("FULL", "white.full") and decision.subscription_id == "operation-blue-lotus"


def test_a_port_implies_its_county():
    at_port = record("CACHP0000", location={"port_of_entry": "CALEXICO"})
    assert decide(at_port, REGISTRY.unit("best-san-diego")).subscription_id == "imperial-fentanyl"


def test_coordinates_fall_in_an_area_polygon():
    raid = canonical(make_event(PLANNED_RAID, source_agency=agency("CACHP0000")))
    decision = decide(raid, REGISTRY.unit("best-san-diego"))
    assert outcome(decision) == ("FULL", "white.full") and decision.subscription_id == "aor-all"
    nuevo_laredo = record("TXUSBP100", location={"latitude": 27.4763, "longitude": -99.5164,
                                                 "description": "Nuevo Laredo, Tamaulipas"},
                          handling={"tlp": "GREEN"})
    assert outcome(decide(nuevo_laredo, REGISTRY.unit("best-laredo"))) == ("FULL", "white.full")
    assert outcome(decide(nuevo_laredo, REGISTRY.unit("best-el-paso"))) == ("WITHHELD", "out-of-region")


# -- handling --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("handling", "expected"), [
    ({"dissemination": "BLACK"}, ("WITHHELD", "black.withheld")),
    ({"dissemination": "GRAY"}, ("POINTER", "gray.pointer")),
    ({"tlp": "RED"}, ("WITHHELD", "tlp.red")),
    ({"tlp": "AMBER_STRICT"}, ("POINTER", "tlp.amber-strict")),
    ({"tlp": "CLEAR", "cui_categories": []}, ("FULL", "white.full")),
    ({"intelligence": INTELLIGENCE}, ("FULL", "white.full")),  # best-san-diego holds 28 CFR 23 need-to-know
    ({"releasable_to": ["US"]}, ("FULL", "white.full")),
    ({"no_foreign": True}, ("FULL", "white.full")),
    ({"dissemination": "GRAY", "tlp": "RED"}, ("WITHHELD", "tlp.red")),
    ({"dissemination": "BLACK", "tlp": "AMBER_STRICT"}, ("WITHHELD", "black.withheld")),
])
def test_handling_rules_for_a_non_owner(handling, expected):
    assert outcome(decide(record(handling=handling), REGISTRY.unit("best-san-diego"))) == expected


def test_intelligence_needs_criminal_intelligence_clearance():
    intel = record("AZ0120000", port="SAN_LUIS", handling={"intelligence": INTELLIGENCE})
    decision = decide(intel, REGISTRY.unit("best-yuma"))
    assert outcome(decision) == ("WITHHELD", "cfr23.need-to-know") and "28 CFR Part 23" in decision.reason
    cleared = unit("best-yuma", clearances={**REGISTRY.unit("best-yuma").clearances.model_dump(mode="json"),
                                            "criminal_intelligence": True})
    assert outcome(decide(intel, cleared)) == ("FULL", "white.full")


def test_cui_outside_the_units_clearance_is_a_pointer():
    investigation = record("CACHP0000", port="SAN_YSIDRO", handling={"cui_categories": ["SP_SUB", "SP_INV"]})
    decision = decide(investigation, REGISTRY.unit("best-san-ysidro"))
    assert outcome(decision) == ("POINTER", "cui.not-cleared") and "SP_INV" in decision.reason


LAREDO_SEIZURE = {"ori": "DCDEA0000", "port": "LAREDO_WORLD_TRADE_BRIDGE"}


@pytest.mark.parametrize(("handling", "expected"), [
    ({"tlp": "GREEN"}, ("FULL", "white.full")),
    ({"tlp": "GREEN", "no_foreign": True}, ("WITHHELD", "no-foreign")),
    ({"tlp": "GREEN", "dissemination": "GRAY", "no_foreign": True}, ("WITHHELD", "no-foreign")),
    ({"tlp": "GREEN", "releasable_to": ["US"]}, ("WITHHELD", "releasable-to")),
    ({"tlp": "GREEN", "releasable_to": ["US", "MX"]}, ("FULL", "white.full")),
    ({"tlp": "GREEN", "releasable_to": ["US", "MXFGR0000"]}, ("FULL", "white.full")),
    ({"tlp": "GREEN", "releasable_to": ["best-laredo"]}, ("FULL", "white.full")),
    ({"tlp": "GREEN", "releasable_to": ["TXHSI0100", "TXCBP0100"]}, ("WITHHELD", "releasable-to")),
    ({"tlp": "AMBER"}, ("POINTER", "tlp.clearance")),
    ({"tlp": "GREEN", "cui_categories": ["SP_CHRI"]}, ("POINTER", "cui.not-cleared")),
])
def test_foreign_partner_unit(handling, expected):
    laredo = REGISTRY.unit("best-laredo")
    assert laredo.clearances.foreign_partner
    assert outcome(decide(record(LAREDO_SEIZURE["ori"], port=LAREDO_SEIZURE["port"], handling=handling),
                          laredo)) == expected


def test_releasable_to_reason_names_who_is_left_out():
    decision = decide(record("DCDEA0000", port="LAREDO_WORLD_TRADE_BRIDGE",
                             handling={"tlp": "GREEN", "releasable_to": ["US"]}), REGISTRY.unit("best-laredo"))
    assert "MXFGR0000 (MX)" in decision.reason


# -- pointers --------------------------------------------------------------------------------------
def test_pointer_reveals_only_the_record_and_whom_to_call():
    gray = record("CACHP0000", handling={"dissemination": "GRAY"})
    pointer = pointer_of(gray)
    assert pointer.record_id == gray.canonical_id and pointer.event_type == "SEIZURE"
    [owner] = pointer.owners
    assert owner.ori == "CACHP0000" and owner.contact.telephone == "+16195550130"
    text = pointer.model_dump_json()
    for secret in ("CALEXICO", "06025", "FENTANYL", "Apollo", "1M8GDM9AXKP042788", "+16195550142", "QUARTER_PANEL"):
        assert secret not in text


# -- deconfliction alerts --------------------------------------------------------------------------
def alert(*oris: str) -> DeconflictionAlert:
    now = datetime(2025, 10, 3, 16, tzinfo=UTC)
    return DeconflictionAlert(
        alert_id=str(uuid.uuid4()), alert_kind=AlertKind.TARGET, status=AlertStatus.OPEN, urgent=False,
        matched="VIN:1M8GDM9AXKP042788",
        parties=[AlertParty(agency=AGENCIES[ori], event_id=str(uuid.uuid4()), canonical_id=str(uuid.uuid4()),
                            case_numbers=[f"CASE-{ori}"]) for ori in oris],
        raised_at=now, updated_at=now, explanation="both records touch the same vehicle")


def test_alerts_reach_parties_in_full_and_subscribers_as_pointers():
    decisions = {d.unit_id: outcome(d) for d in route(alert("CA0370000", "TXDPS0000"), REGISTRY)}
    assert decisions["best-san-diego"] == ("FULL", "alert.party")
    assert decisions["best-laredo"] == ("FULL", "alert.party")
    assert decisions["best-tucson"] == ("POINTER", "alert.pointer")
    assert decisions["best-yuma"] == ("WITHHELD", "not-subscribed")


def test_alert_pointers_never_reach_a_foreign_partner():
    laredo = unit("best-laredo", subscriptions=[{"subscription_id": "alerts", "include_alerts": True}])
    assert outcome(decide(alert("CA0370000", "AZ0120000"), laredo)) == ("WITHHELD", "no-foreign")


def test_alert_pointer_hides_what_matched():
    pointer = pointer_of(alert("CA0370000", "TXDPS0000"))
    assert [owner.ori for owner in pointer.owners] == ["CA0370000", "TXDPS0000"]
    text = pointer.model_dump_json()
    assert "1M8GDM9AXKP042788" not in text and "CASE-" not in text


# -- properties ------------------------------------------------------------------------------------
ORIS = sorted(AGENCIES)
intelligence = st.none() | st.just(INTELLIGENCE)
handlings = st.fixed_dictionaries({
    "dissemination": st.sampled_from(list(DisseminationLevel)),
    "tlp": st.sampled_from(list(TrafficLightProtocol)),
    "cui_categories": st.lists(st.sampled_from(list(CuiCategory)), unique=True, max_size=3),
    "releasable_to": st.sampled_from([[], ["US"], ["US", "MX"], ["best-laredo"], ["CACBP0100"], ["MX"]]),
    "no_foreign": st.booleans(),
    "intelligence": intelligence,
})
locations = st.sampled_from(sorted(PORTS_OF_ENTRY)).map(
    lambda code: {"port_of_entry": code, "state": PORTS_OF_ENTRY[code].state}) | st.sampled_from([
        {"latitude": 32.7157, "longitude": -117.1611, "state": "CA"},
        {"latitude": 27.4763, "longitude": -99.5164},
        {"state": "AZ"}, {"county_fips": "04013"}])
drugs = st.sampled_from(["FENTANYL", "METHAMPHETAMINE", "PRECURSOR_CHEMICAL", "COCAINE"])


def area_locations(task_force: TaskForce) -> st.SearchStrategy[dict[str, Any]]:
    """Places inside the unit's area, so that the handling rules, not relevance, decide most examples."""
    ports = [{"port_of_entry": code, "state": PORTS_OF_ENTRY[code].state}
             for code in sorted(task_force.area.ports_of_entry)]
    counties = [{"county_fips": fips} for fips in sorted(task_force.area.county_fips)]
    return st.sampled_from(ports + counties)


@st.composite
def canonical_events(draw, near: TaskForce | None = None) -> CanonicalEvent:
    """Seizures and arrests with any handling, by any agency, mostly (with ``near``) in that unit's area."""
    outsiders = sorted(set(ORIS) - near.agencies) if near else ORIS
    primary_ori = draw(st.sampled_from(outsiders) | st.sampled_from(ORIS))
    place = area_locations(near) | locations if near else locations
    changes: dict[str, Any] = {"source_agency": agency(primary_ori), "handling": draw(handlings),
                               "location": draw(place), "payload__drugs__0__drug_type": draw(drugs),
                               "payload__operation_name": draw(st.sampled_from(["Operation Apollo",
                                                                                "Operation Blue Lotus", None]))}
    if draw(st.booleans()):
        changes.update(event_type="ARREST", payload=ARREST_PAYLOAD)
    primary = make_event(**changes)
    others = [make_event(source_agency=agency(ori), source_record_id=f"R-{ori}")
              for ori in draw(st.lists(st.sampled_from(ORIS), max_size=2, unique=True)) if ori != primary_ori]
    return canonical(primary, *others)


units = st.sampled_from(UNITS)
unit_and_record = units.flatmap(lambda task_force: st.tuples(canonical_events(task_force), st.just(task_force)))


@settings(max_examples=300, deadline=None)
@given(unit_and_record)
def test_black_is_never_shown_to_a_non_owner(pair):
    event_record, task_force = pair
    owned = event_record.primary.agency_ori in task_force.agencies
    if event_record.primary.handling.dissemination is DisseminationLevel.BLACK and not owned:
        assert decide(event_record, task_force).form == "WITHHELD"


def test_owners_are_told_of_their_records_unless_another_agency_holds_a_black_report_in_them():
    white, other = event("CACBP0100", port="SAN_YSIDRO"), event("CA0370000", port="SAN_YSIDRO",
                                                                   source_record_id="R-2")
    black = event("CA0370000", port="SAN_YSIDRO", source_record_id="R-3", handling={"dissemination": "BLACK"})
    assert told_owners(canonical(white, other)) == ["CA0370000", "CACBP0100"]
    assert told_owners(canonical(white, black)) == ["CA0370000"], "the WHITE owner must not learn of the BLACK one"
    assert told_owners(canonical(black, white)) == ["CA0370000"]
    assert told_owners(alert("CA0370000", "TXDPS0000")) == ["CA0370000", "TXDPS0000"]
    raised = alert("CA0370000", "TXDPS0000")
    hidden = raised.model_copy(update={"parties": [raised.parties[0], raised.parties[1].model_copy(
        update={"dissemination": DisseminationLevel.BLACK})]})
    assert told_owners(hidden) == ["TXDPS0000"], "only the BLACK party hears of a match with its record"


@settings(max_examples=300, deadline=None)
@given(canonical_events())
def test_no_agency_is_told_of_a_record_holding_another_agencys_black_report(event_record):
    told = told_owners(event_record)
    assert set(told) <= owners(event_record)
    black = {r.agency.ori for r in event_record.reports if r.dissemination is DisseminationLevel.BLACK}
    black |= {event_record.primary.agency_ori} if event_record.primary.handling.dissemination == "BLACK" else set()
    assert all(black <= {ori} for ori in told)
    if not black:
        assert set(told) == owners(event_record), "every owner hears of a record with no BLACK report"


@settings(max_examples=300, deadline=None)
@given(unit_and_record)
def test_gray_is_never_full_for_a_non_owner(pair):
    event_record, task_force = pair
    owned = event_record.primary.agency_ori in task_force.agencies
    if event_record.primary.handling.dissemination is DisseminationLevel.GRAY and not owned:
        assert decide(event_record, task_force).form != "FULL"


@settings(max_examples=200, deadline=None)
@given(canonical_events())
def test_owners_always_get_full(event_record):
    for task_force in UNITS:
        decision = decide(event_record, task_force)
        owned = event_record.primary.agency_ori in task_force.agencies
        assert (decision.form == "FULL" and decision.rule is Rule.OWNER) == owned


@settings(max_examples=300, deadline=None)
@given(unit_and_record)
def test_restrictions_hold_for_non_owners(pair):
    event_record, task_force = pair
    handling, decision = event_record.primary.handling, decide(event_record, task_force)
    if event_record.primary.agency_ori in task_force.agencies:
        return
    if handling.no_foreign and task_force.clearances.foreign_partner:
        assert decision.form == "WITHHELD"
    if handling.intelligence is not None and not task_force.clearances.criminal_intelligence:
        assert decision.form == "WITHHELD"
    if handling.tlp is TrafficLightProtocol.RED:
        assert decision.form == "WITHHELD"
    if decision.form == "FULL":
        assert set(handling.cui_categories) <= task_force.clearances.cui_categories
        assert decision.subscription_id is not None or decision.rule is Rule.CO_REPORTER


@settings(max_examples=150, deadline=None)
@given(canonical_events())
def test_route_gives_one_decision_per_unit_in_unit_order(event_record):
    decisions = route(event_record, REGISTRY)
    assert [d.unit_id for d in decisions] == sorted(t.unit_id for t in REGISTRY.task_forces)
    assert decisions == [decide(event_record, t) for t in UNITS]


@settings(max_examples=150, deadline=None)
@given(unit_and_record)
def test_decisions_are_deterministic(pair):
    event_record, task_force = pair
    copy = CanonicalEvent.model_validate(json.loads(event_record.model_dump_json()))
    assert decide(event_record, task_force) == decide(copy, task_force) == decide(event_record, task_force)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(ORIS), min_size=2, max_size=3, unique=True))
def test_alert_parties_always_hear(oris):
    for decision in route(alert(*oris), REGISTRY):
        is_party = bool(set(oris) & REGISTRY.unit(decision.unit_id).agencies)
        assert (decision.form == "FULL") == is_party


def test_route_on_an_empty_registry_is_empty():
    assert route(record(), Registry(version=1)) == []

"""The sharing policy: which form of a record (full, pointer, nothing) each task force receives, and why.

Pure functions over typed records and the registry: no Kafka, no clock, no state, so every routing
decision can be replayed and explained to an auditor. :func:`decide` is total: any valid record and unit
give a :class:`Decision`; the router writes FULL and POINTER decisions to the unit's feed and every
decision, WITHHELD included, to the audit log only (a withheld record must look exactly like no record).

Canonical events, in order (the first rule that applies decides):

1. ``owner.full``: a unit owns the record when one of its agencies made the primary report; owners always
   receive it in full, whatever its handling or their subscriptions.
   ``black.withheld`` also when this revision of the event exists only because another agency's BLACK
   report merged into it (the unit must not learn of that report; earlier revisions carry the rest).
2. ``not-subscribed`` / ``out-of-region``: otherwise the record must match a subscription (a unit one of
   whose agencies made another, non-BLACK report of the event that joined it by matching its content skips this: it
   reported the event; citing a record's number proves nothing, so a citation grants no more than the citer's
   own subscriptions do): its event type
   and filters (a set filter needs the record to carry a matching value: an arrest names no drug, so it
   never matches a ``drug_types`` filter), and its place: the location's port, county or state (a port
   implies its county and state) in the subscription's regions, or when those are empty in the unit's
   area, whose polygons also take coordinates (the location's, else its port's).
3. Withholding marks of the primary report's handling, checked before any that only reduce to a pointer,
   so the strictest applies:
   ``black.withheld`` LEXS BLACK: non-owners see nothing.
   ``no-foreign``: NOFORN and a foreign partner reads the unit's feed.
   ``releasable-to``: the list is non-empty and does not cover everyone reading the unit's feed. Entries
   are ISO 3166-1 alpha-2 country codes (``producers/sample.py`` writes ``US``, as in "REL TO USA"), ORIs,
   or unit ids. The unit is covered when its unit id is listed, or when each of its agencies is listed by
   ORI or by country (US unless ``clearances.foreign_partners`` says otherwise).
   ``cfr23.need-to-know``: a 28 CFR Part 23 intelligence record and the unit lacks ``criminal_intelligence``.
   ``tlp.red``: TLP:RED is for the named recipients only; not even a pointer leaves the owners.
4. Marks that reduce the record to a pointer (who to call, never the content):
   ``tlp.amber-strict``: TLP:AMBER+STRICT keeps the content inside the owning organization.
   ``tlp.clearance``: the TLP is above the unit's ``max_tlp`` (CLEAR < GREEN < AMBER).
   ``cui.not-cleared``: a CUI category the unit is not cleared for; the pointer holds no CUI, so the unit
   can still ask the owner, who decides on a lawful-government-purpose basis.
   ``gray.pointer``: LEXS GRAY.
5. ``co-reporter.full`` for a co-reporting unit, else ``white.full``: nothing above in the way.

Whatever a unit receives in full never credits other agencies' BLACK reports (:func:`visible_record`).

Deconfliction alerts (they carry no location or handling of their own):
``black.withheld`` for every unit that does not own a party's BLACK record (the match must look like no
match); then ``alert.party`` FULL to every unit one of whose agencies is a party (officer safety: parties always hear,
whatever they subscribed to); other units with an ``include_alerts`` subscription get an ``alert.pointer``
(which agencies to call, never what matched), except foreign-partner units (``no-foreign``, since the
records behind an alert may be NOFORN); everyone else ``not-subscribed``. Subscription regions and filters
do not apply to alerts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from consumers.registry import Region, Registry, Subscription, TaskForce
from schemas.models import (
    RecordPointer, SharedRecordKind,
    MG_PER_UNIT, CanonicalEvent, CaseEvent, DeconflictionAlert, DedupRule, DisseminationLevel,
    DrugType, Handling, ItemSeizure, LabResult, Location, PlannedOperation, TrafficLightProtocol,
)
from schemas.reference import PORTS_OF_ENTRY

Form = Literal["FULL", "POINTER", "WITHHELD"]
Shareable = CanonicalEvent | DeconflictionAlert
TLP_ORDER = (TrafficLightProtocol.CLEAR, TrafficLightProtocol.GREEN, TrafficLightProtocol.AMBER,
             TrafficLightProtocol.AMBER_STRICT, TrafficLightProtocol.RED)


class Rule(StrEnum):
    """Stable rule ids: audit queries and dashboards group by them, so never rename one."""

    OWNER = "owner.full"
    CO_REPORTER = "co-reporter.full"
    NOT_SUBSCRIBED = "not-subscribed"
    OUT_OF_REGION = "out-of-region"
    BLACK = "black.withheld"
    NO_FOREIGN = "no-foreign"
    RELEASABLE_TO = "releasable-to"
    CFR23 = "cfr23.need-to-know"
    TLP_RED = "tlp.red"
    TLP_AMBER_STRICT = "tlp.amber-strict"
    TLP_CLEARANCE = "tlp.clearance"
    CUI = "cui.not-cleared"
    GRAY = "gray.pointer"
    WHITE = "white.full"
    ALERT_PARTY = "alert.party"
    ALERT_POINTER = "alert.pointer"


class Decision(BaseModel):
    """What one unit receives of one record, the rule that decided it and a sentence for the audit log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit_id: str
    form: Form
    rule: Rule
    reason: str
    subscription_id: str | None = None


def route(record: Shareable, registry: Registry) -> list[Decision]:
    """One decision per unit of the registry, ordered by unit id."""
    return [decide(record, unit) for unit in sorted(registry.task_forces, key=lambda u: u.unit_id)]


def decide(record: Shareable, unit: TaskForce) -> Decision:
    """What ``unit`` receives of ``record`` (rules in the module docstring); never raises for a valid record."""
    if isinstance(record, DeconflictionAlert):
        return _decide_alert(record, unit)
    return _decide_event(record, unit)


def owners(record: CanonicalEvent) -> frozenset[str]:
    """ORIs of every agency that reported the event: the primary report's and each credited report's."""
    return frozenset(r.agency.ori for r in record.reports) | {record.primary.source_agency.ori}


def told_owners(record: Shareable) -> list[str]:
    """ORIs of the agencies the hub tells about ``record`` on their own topic (``agency.<ORI>``): an alert's parties
    (its state) or an event's owners (its release record), sorted. An agency is told nothing of a record that holds
    another agency's BLACK report: through it, it would learn that the BLACK report exists."""
    if isinstance(record, DeconflictionAlert):
        marks = [(p.agency.ori, p.dissemination) for p in record.parties]
    else:
        marks = [(r.agency.ori, r.dissemination) for r in record.reports]
        marks.append((record.primary.agency_ori, record.primary.handling.dissemination))
    black = {ori for ori, level in marks if level is DisseminationLevel.BLACK}
    return sorted(ori for ori in {ori for ori, _ in marks} if not black - {ori})


def pointer_of(record: Shareable) -> RecordPointer:
    """Everything a pointer reveals: which record, what kind, and whom to call (the owners' agencies and their
    duty desks, never a case agent); never place, people, vehicles or drugs."""
    if isinstance(record, DeconflictionAlert):
        return RecordPointer(record_id=record.alert_id, record_kind=SharedRecordKind.ALERT,
                             alert_kind=record.alert_kind,
                             owners=list({p.agency.ori: p.agency for p in record.parties}.values()))
    return RecordPointer(record_id=record.canonical_id, record_kind=SharedRecordKind.CANONICAL_EVENT,
                         event_type=record.event_type, owners=[record.primary.source_agency])


# -- canonical events ------------------------------------------------------------------------------
def _decide_event(record: CanonicalEvent, unit: TaskForce) -> Decision:
    event = record.primary
    subscription, miss = _relevance(event, unit)
    sid = subscription.subscription_id if subscription else None

    def decision(form: Form, rule: Rule, reason: str) -> Decision:
        return Decision(unit_id=unit.unit_id, form=form, rule=rule, reason=reason, subscription_id=sid)

    if event.agency_ori in unit.agencies:
        return decision("FULL", Rule.OWNER, f"{unit.unit_id} owns the event: member {event.agency_ori} reported it")
    hidden = _hidden_credits(record, unit)
    if record.decision.event_id in hidden:
        return decision("WITHHELD", Rule.BLACK, f"this revision only adds a BLACK report of "
                                                f"{hidden[record.decision.event_id]} to the event")
    co_reporting = sorted(_co_reporters(record) & unit.agencies - set(hidden.values()))
    if miss is not None and not co_reporting:
        return decision("WITHHELD", *miss)
    restriction = _withheld_by(event.handling, unit) or _pointer_by(event.handling, unit)
    if restriction is not None:
        return decision(*restriction)
    if co_reporting:
        return decision("FULL", Rule.CO_REPORTER, f"member {', '.join(co_reporting)} of {unit.unit_id} also reported "
                                                  f"this {event.handling.dissemination} event of {event.agency_ori}")
    return decision("FULL", Rule.WHITE, f"WHITE record of {event.agency_ori} matching subscription {sid}")


def _co_reporters(record: CanonicalEvent) -> set[str]:
    """ORIs whose report matches another of the event in place, time, drugs and quantities, whichever arrived first
    (events before schema v6 mark only the later report, by its rule): anyone can cite a record number, so a
    citation (or an update of a cited report) makes no co-reporter."""
    return {r.agency.ori for r in record.reports if r.content_match or r.rule is DedupRule.CROSS_AGENCY_MATCH}


def _hidden_credits(record: CanonicalEvent, unit: TaskForce) -> dict[str, str]:
    """Event id -> ORI of the BLACK reports of others merged into the event: ``unit`` must not learn of them."""
    return {r.event_id: r.agency.ori for r in record.reports
            if r.dissemination is DisseminationLevel.BLACK and r.agency.ori not in unit.agencies}


def visible_record(record: CanonicalEvent, unit: TaskForce) -> CanonicalEvent:
    """The event as ``unit`` may receive it in full: other agencies' BLACK reports are not credited, so their
    existence stays indistinguishable from no report at all; and no credit carries the entities its report names
    (deconfliction's, not the unit's: only the primary report is shared, under its own handling)."""
    hidden = _hidden_credits(record, unit)
    if not hidden and not any(r.entity_keys for r in record.reports):
        return record
    return record.model_copy(update={"reports": [r.model_copy(update={"entity_keys": []}) for r in record.reports
                                                 if r.event_id not in hidden]})


def _withheld_by(handling: Handling, unit: TaskForce) -> tuple[Form, Rule, str] | None:
    if handling.dissemination is DisseminationLevel.BLACK:
        return "WITHHELD", Rule.BLACK, "BLACK record: agencies outside the owners' units see nothing"
    if handling.no_foreign and unit.clearances.foreign_partner:
        partners = ", ".join(sorted(unit.clearances.foreign_partners))
        return "WITHHELD", Rule.NO_FOREIGN, f"NOFORN record and foreign partner {partners} reads {unit.unit_id}'s feed"
    uncovered = _not_releasable(handling.releasable_to, unit)
    if uncovered:
        return ("WITHHELD", Rule.RELEASABLE_TO,
                f"releasable only to {', '.join(handling.releasable_to)}; not to {', '.join(uncovered)}")
    if handling.intelligence is not None and not unit.clearances.criminal_intelligence:
        return ("WITHHELD", Rule.CFR23, f"28 CFR Part 23 intelligence record and {unit.unit_id} has no "
                                        f"criminal-intelligence need-to-know")
    if handling.tlp is TrafficLightProtocol.RED:
        return "WITHHELD", Rule.TLP_RED, "TLP:RED record: for its named recipients only"
    return None


def _pointer_by(handling: Handling, unit: TaskForce) -> tuple[Form, Rule, str] | None:
    if handling.tlp is TrafficLightProtocol.AMBER_STRICT:
        return "POINTER", Rule.TLP_AMBER_STRICT, "TLP:AMBER+STRICT record: its content stays with the owning agency"
    if TLP_ORDER.index(handling.tlp) > TLP_ORDER.index(unit.clearances.max_tlp):
        return ("POINTER", Rule.TLP_CLEARANCE,
                f"TLP:{handling.tlp} is above {unit.unit_id}'s max_tlp {unit.clearances.max_tlp}")
    missing = sorted(set(handling.cui_categories) - unit.clearances.cui_categories)
    if missing:
        return "POINTER", Rule.CUI, f"CUI {', '.join(missing)} is not among {unit.unit_id}'s CUI clearances"
    if handling.dissemination is DisseminationLevel.GRAY:
        return "POINTER", Rule.GRAY, "GRAY record: others learn only that it exists and whom to contact"
    return None


def _not_releasable(releasable_to: list[str], unit: TaskForce) -> list[str]:
    """The unit's agencies a releasable_to list leaves out (none when the list is empty or names the unit)."""
    entries = {entry.strip().upper() for entry in releasable_to}
    if not entries or unit.unit_id.upper() in entries:
        return []
    return [f"{ori} ({unit.country_of(ori)})" for ori in sorted(unit.agencies)
            if ori not in entries and unit.country_of(ori) not in entries]


def _relevance(event: CaseEvent, unit: TaskForce) -> tuple[Subscription | None, tuple[Rule, str] | None]:
    """The first subscription taking the event, or the reason none does."""
    wanted_elsewhere = []
    for subscription in unit.subscriptions:
        if not _passes_filters(event, subscription):
            continue
        region = subscription.regions
        inside = _in_area(event.location, unit) if region.is_empty else _in_region(event.location, region)
        if inside:
            return subscription, None
        wanted_elsewhere.append(subscription.subscription_id)
    if wanted_elsewhere:
        return None, (Rule.OUT_OF_REGION, f"subscription {', '.join(wanted_elsewhere)} of {unit.unit_id} takes this "
                                          f"{event.event_type} but not at {_place(event.location)}")
    subscribed = ", ".join(s.subscription_id for s in unit.subscriptions) or "none"
    return None, (Rule.NOT_SUBSCRIBED, f"no subscription of {unit.unit_id} ({subscribed}) takes this "
                                       f"{event.event_type} with its drugs, weight and operation")


def _passes_filters(event: CaseEvent, subscription: Subscription) -> bool:
    if subscription.event_types and event.event_type not in subscription.event_types:
        return False
    drugs = _drug_quantities(event)
    if subscription.drug_types:
        drugs = [(drug, kg) for drug, kg in drugs if drug in subscription.drug_types]
        if not drugs:
            return False
    if subscription.min_weight_kg is not None:
        if sum(kg for _, kg in drugs if kg is not None) < subscription.min_weight_kg:
            return False
    if subscription.operation_names:
        payload = event.payload
        name = payload.operation_name if isinstance(payload, ItemSeizure | PlannedOperation) else None
        if name is None or name.casefold() not in {n.casefold() for n in subscription.operation_names}:
            return False
    return True


def _drug_quantities(event: CaseEvent) -> list[tuple[DrugType, float | None]]:
    """(drug, net kilograms or None) the record reports: a seizure's drugs, or a lab result's substance."""
    payload = event.payload
    if isinstance(payload, ItemSeizure):
        return [(d.drug_type, None if d.net_weight is None else d.net_weight.milligrams / MG_PER_UNIT["KG"])
                for d in payload.drugs]
    if isinstance(payload, LabResult):
        kg = None if payload.net_weight is None else payload.net_weight.milligrams / MG_PER_UNIT["KG"]
        return [(payload.drug_type, kg)]
    return []


def _in_region(location: Location, region: Region) -> bool:
    port = PORTS_OF_ENTRY.get(location.port_of_entry or "")
    county = location.county_fips or (port.county_fips if port else None)
    state = location.state or (port.state if port else None)
    return (location.port_of_entry in region.ports_of_entry or county in region.county_fips
            or state in region.states)


def _in_area(location: Location, unit: TaskForce) -> bool:
    if _in_region(location, unit.area):
        return True
    point = _coordinates(location)
    return point is not None and any(_inside(point, polygon) for polygon in unit.area.polygons)


def _coordinates(location: Location) -> tuple[float, float] | None:
    if location.latitude is not None and location.longitude is not None:
        return location.latitude, location.longitude
    port = PORTS_OF_ENTRY.get(location.port_of_entry or "")
    return (port.latitude, port.longitude) if port else None


def _inside(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    """Even-odd ray casting; fine for areas a few hundred km across, where lat/lon are nearly planar."""
    lat, lon = point
    inside = False
    for (lat1, lon1), (lat2, lon2) in zip(polygon, [*polygon[1:], polygon[0]]):
        if (lat1 > lat) != (lat2 > lat) and lon < lon1 + (lat - lat1) * (lon2 - lon1) / (lat2 - lat1):
            inside = not inside
    return inside


def _place(location: Location) -> str:
    parts = [location.port_of_entry, location.county_fips and f"county {location.county_fips}", location.state]
    if location.latitude is not None:
        parts.append(f"{location.latitude:.4f},{location.longitude:.4f}")
    return " / ".join(p for p in parts if p)


# -- deconfliction alerts --------------------------------------------------------------------------
def _decide_alert(alert: DeconflictionAlert, unit: TaskForce) -> Decision:
    alert_subscriptions = [s.subscription_id for s in unit.subscriptions if s.include_alerts]
    sid = alert_subscriptions[0] if alert_subscriptions else None

    def decision(form: Form, rule: Rule, reason: str) -> Decision:
        return Decision(unit_id=unit.unit_id, form=form, rule=rule, reason=reason, subscription_id=sid)

    hidden = sorted(p.agency.ori for p in alert.parties
                    if p.dissemination is DisseminationLevel.BLACK and p.agency.ori not in unit.agencies)
    if hidden:
        return decision("WITHHELD", Rule.BLACK, f"a party's record ({', '.join(hidden)}) is BLACK: to "
                                                f"{unit.unit_id} the match must look like no match")
    parties = sorted({p.agency.ori for p in alert.parties} & unit.agencies)
    if parties:
        return decision("FULL", Rule.ALERT_PARTY, f"{', '.join(parties)} of {unit.unit_id} is a party to "
                                                  f"{alert.alert_kind} alert {alert.alert_id}")
    if sid is None:
        return decision("WITHHELD", Rule.NOT_SUBSCRIBED, f"{unit.unit_id} is no party and takes no alerts of others")
    if unit.clearances.foreign_partner:
        return decision("WITHHELD", Rule.NO_FOREIGN, f"alerts of others may rest on NOFORN records and a foreign "
                                                     f"partner reads {unit.unit_id}'s feed")
    return decision("POINTER", Rule.ALERT_POINTER, f"{unit.unit_id} is no party; subscription {sid} takes "
                                                   f"pointers to others' alerts")

"""Record linkage: whether two agencies' seizure reports describe one seizure, and why.

An analyst decides that from every signal the reports carry: when, where, which drugs and how much, and who
and what each names. So does :func:`compare`: each signal adds a weight (log2 of how much likelier it is between
two reports of one seizure than between reports of two; Fellegi-Sunter's model, with weights set by hand and
tuned on ``hub bench quality``'s labelled exports), and a conflict an analyst would not merge across (two
different drivers, two different vehicles) vetoes the match whatever the rest says. Every comparison returns its
signals, so every decision names what it rested on.

Why hand-written and not Splink, dedupe or recordlinkage: those score batches of records in a dataframe
(DuckDB, pandas) and estimate the weights from the batch; dedup decides one report at a time, inside a Kafka
transaction, against the few candidates its state holds, and must decide the same on a replay. The model is
the same; the code is the twenty lines below, with no dataframe engine in every stage process.

Everything here is pure: no Kafka, no state.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from consumers.normalize import normalize_identifier, record_number_key
from schemas.formats import state_of_county
from schemas.models import CaseEvent, DrugForm, EntityRole, IdentifierScheme, ItemSeizure
from schemas.reference import PORTS_OF_ENTRY
from schemas.topics import distance_km

HOUR = 3600.0
#: A counterfeit fentanyl pill (an "M30") weighs about 0.1 g: pills counted by one agency and weighed by another
#: are compared at this weight.
MG_PER_PILL = 110.0
#: Drugs one agency's report names and another's names otherwise: one family for matching. Counterfeit pills are
#: reported as fentanyl or as an analogue depending on the field test; powder is told apart by the lab.
DRUG_FAMILIES = {"CRACK_COCAINE": "COCAINE"}
PILL_FAMILIES = {"FENTANYL_ANALOGUE": "FENTANYL"}

# The weights (log2 likelihood ratios). A report pair scoring DedupConfig.threshold or more is one seizure.
WEIGHTS: dict[str, float] = {
    "time within 30 min": 3.0, "time within 3 h": 1.5, "time within 8 h (custody time?)": 0.0,
    "time within 24 h": -3.0, "time more than a day apart": -8.0,
    "place within 1 km": 3.0, "place within 5 km": 1.5, "place within 25 km": 0.0,
    "places 25-100 km apart (an office?)": -3.0, "places over 100 km apart": -4.0,
    "same county": 1.0, "other county": -1.0, "same state": 0.0, "other state": -3.0,
    "same main drug": 2.0, "no drug in common": -8.0,
    "quantity within 10%": 3.0, "quantity within 25% (gross vs net?)": 1.5, "quantity within 50%": 0.0,
    "pills counted vs weighed, within 30%": 1.5, "pills counted vs weighed, within 60%": 0.0,
    "quantity differs": -3.0,
    "same person": 6.0, "same VIN": 7.0, "same plate": 5.0, "same phone": 5.0, "same press serial": 6.0,
    "cites the record": 8.0,
}
VETOES = ("different driver", "different vehicle")
#: What only someone who was there knows: a match needs one of these besides the score. Place, time and drug are
#: known to many (a press release, a radio call), and a match makes its reporter a co-reporter, whose units receive
#: the other agencies' record in full.
CORROBORATING = frozenset({"quantity within 10%", "quantity within 25% (gross vs net?)",
                           "pills counted vs weighed, within 30%", "same person", "same VIN", "same plate",
                           "same phone", "same press serial"})


@dataclass(frozen=True)
class Signal:
    name: str
    weight: float
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}{f' ({self.detail})' if self.detail else ''} {self.weight:+g}"


@dataclass(frozen=True)
class Comparison:
    """What two reports have in common and what sets them apart; ``score`` sums the weights."""

    signals: tuple[Signal, ...]
    vetoes: tuple[str, ...] = ()

    @property
    def score(self) -> float:
        return round(sum(s.weight for s in self.signals), 3)

    @property
    def corroborated(self) -> bool:
        """Whether the reports share something only a party to the seizure knows (:data:`CORROBORATING`)."""
        return any(s.name in CORROBORATING for s in self.signals)

    def matches(self, threshold: float) -> bool:
        """One seizure: no veto, a score at the threshold or more, and corroborated."""
        return not self.vetoes and self.score >= threshold and self.corroborated

    def explain(self) -> str:
        vetoed = f"; vetoed: {', '.join(self.vetoes)}" if self.vetoes else ""
        return f"score {self.score:g}: {', '.join(str(s) for s in self.signals)}{vetoed}"


@dataclass(frozen=True)
class Profile:
    """What dedup remembers of one seizure report to compare later reports against (JSON-able, kept in state)."""

    canonical_id: str
    agency: str
    event_id: str
    time: float
    latitude: float | None = None
    longitude: float | None = None
    county: str | None = None
    state: str | None = None
    drugs: dict[str, list[Any]] = field(default_factory=dict)  # family -> [mg estimate, counted in pills]
    persons: list[str] = field(default_factory=list)
    drivers: list[str] = field(default_factory=list)  # the people it names as driver
    subject: list[str] = field(default_factory=list)  # its one subject, when it names exactly one and no driver
    vins: list[str] = field(default_factory=list)
    plates: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    serials: list[str] = field(default_factory=list)

    @staticmethod
    def of(canonical_id: str, event: CaseEvent) -> Profile:
        lat, lon, county, state = _place(event)
        keys: dict[str, set[str]] = {"persons": set(), "drivers": set(), "subject": set(), "vins": set(),
                                     "plates": set(), "phones": set(), "serials": set()}
        people: dict[EntityRole, set[str]] = defaultdict(set)
        for entity in event.entities:
            for identifier in entity.identifiers:
                key = normalize_identifier(identifier.scheme, identifier.value, identifier.issuer)
                bucket = _BUCKETS.get(identifier.scheme)
                if key is None or bucket is None:
                    continue
                keys[bucket].add(key.value)
                if bucket == "persons":
                    people[entity.role].add(key.value)
        # Who the seizure is about: its driver, else its one subject. Two reports naming different drivers (or, where
        # neither names a driver, different lone subjects) are not one seizure; passengers and associates may differ.
        keys["drivers"] = people[EntityRole.DRIVER]
        if not keys["drivers"] and len(people[EntityRole.SUBJECT]) == 1:
            keys["subject"] = people[EntityRole.SUBJECT]
        payload = event.payload
        if isinstance(payload, ItemSeizure):
            for press in payload.pill_presses:
                key = normalize_identifier(IdentifierScheme.PILL_PRESS_SERIAL, press.serial_number or "")
                if key is not None:
                    keys["serials"].add(key.value)
        return Profile(canonical_id=canonical_id, agency=event.agency_ori, event_id=event.event_id,
                       time=event.event_time.timestamp(), latitude=lat, longitude=lon, county=county, state=state,
                       drugs=_drug_quantities(payload) if isinstance(payload, ItemSeizure) else {},
                       **{name: sorted(values) for name, values in keys.items()})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_BUCKETS = {IdentifierScheme.PERSON_NAME_DOB: "persons", IdentifierScheme.VIN: "vins",
            IdentifierScheme.LICENSE_PLATE: "plates", IdentifierScheme.PHONE_E164: "phones",
            IdentifierScheme.PILL_PRESS_SERIAL: "serials"}


def _place(event: CaseEvent) -> tuple[float | None, float | None, str | None, str | None]:
    """Coordinates (a port's, if only a port is named), county and state, each as precise as the report gives."""
    loc = event.location
    port = PORTS_OF_ENTRY.get(loc.port_of_entry or "")
    lat, lon = (loc.latitude, loc.longitude) if loc.has_coordinates else (
        (port.latitude, port.longitude) if port else (None, None))
    county = loc.county_fips or (port.county_fips if port else None)
    state = loc.state or (port.state if port else None) or (state_of_county(county) if county else None)
    return lat, lon, county, state


def _drug_quantities(seizure: ItemSeizure) -> dict[str, list[Any]]:
    """Per drug family, the amount seized in mg (pills at :data:`MG_PER_PILL` where no weight is given)."""
    totals: dict[str, list[Any]] = {}
    for drug in seizure.drugs:
        families = {**DRUG_FAMILIES, **PILL_FAMILIES} if drug.form == DrugForm.PILLS else DRUG_FAMILIES
        family = families.get(drug.drug_type.value, drug.drug_type.value)
        mg, counted = totals.get(family, [0.0, False])
        if drug.net_weight is not None:
            mg += drug.net_weight.milligrams
        else:
            mg, counted = mg + (drug.pill_count or 0) * MG_PER_PILL, True
        totals[family] = [mg, counted]
    return totals


def own_numbers(event: CaseEvent) -> list[str]:
    """The record's own numbers (its record id and seizure number), normalised and scoped by its ORI."""
    numbers = {record_number_key(event.source_system, event.source_record_id, event.agency_ori)}
    seizure_number = getattr(event.payload, "seizure_number", None)
    if seizure_number:
        numbers.add(record_number_key(event.source_system, seizure_number, event.agency_ori))
    return sorted(numbers)


def cited_numbers(event: CaseEvent) -> list[str]:
    """The records ``event`` cites, normalised; a citation without an ORI is looked up by system and number alone."""
    return sorted({record_number_key(r.system, r.number, r.ori) for r in event.record_references})


def _relative_difference(a: float, b: float) -> float:
    return abs(a - b) / max(a, b) if max(a, b) > 0 else 0.0


def _signal(name: str, detail: str = "") -> Signal:
    return Signal(name, WEIGHTS[name], detail)


def compare(a: Profile, b: Profile) -> Comparison:
    """Every signal of whether ``a`` and ``b`` report one seizure (symmetric: compare(a, b) == compare(b, a))."""
    signals = [_time(a, b), *_places(a, b), *_drugs(a, b), *_entities(a, b)]
    vetoes = []
    if (a.drivers and b.drivers and not set(a.drivers) & set(b.drivers)) or (
            a.subject and b.subject and not set(a.subject) & set(b.subject)):
        vetoes.append("different driver")
    vehicles_a, vehicles_b = set(a.vins) | set(a.plates), set(b.vins) | set(b.plates)
    if not vehicles_a & vehicles_b and ((a.vins and b.vins) or _same_plate_issuer(a.plates, b.plates)):
        vetoes.append("different vehicle")
    return Comparison(tuple(s for s in signals if s is not None), tuple(vetoes))


def _same_plate_issuer(plates_a: list[str], plates_b: list[str]) -> bool:
    """Whether both name a plate of one issuer (so differing plates are two vehicles, not one written two ways)."""
    return bool({p.split("/")[0] for p in plates_a} & {p.split("/")[0] for p in plates_b})


def _time(a: Profile, b: Profile) -> Signal:
    hours = abs(a.time - b.time) / HOUR
    detail = f"{hours * 60:.0f} min apart" if hours < 3 else f"{hours:.1f} h apart"
    for limit, name in ((0.5, "time within 30 min"), (3, "time within 3 h"), (8, "time within 8 h (custody time?)"),
                        (24, "time within 24 h")):
        if hours <= limit:
            return _signal(name, detail)
    return _signal("time more than a day apart", detail)


def _places(a: Profile, b: Profile) -> list[Signal]:
    """Where: the points, when both give one (a port counts as its crossing); else the counties; else the states.
    A point far away may be the reporting office rather than the seizure, so distance never vetoes."""
    signals = []
    if a.latitude is not None and b.latitude is not None:
        km = distance_km(a.latitude, a.longitude, b.latitude, b.longitude)  # type: ignore[arg-type]
        name = next((n for limit, n in ((1, "place within 1 km"), (5, "place within 5 km"), (25, "place within 25 km"),
                                        (100, "places 25-100 km apart (an office?)")) if km <= limit),
                    "places over 100 km apart")
        return [_signal(name, f"{km:.1f} km")]  # the points say more than their counties
    if a.county and b.county:
        signals.append(_signal("same county" if a.county == b.county else "other county", f"{a.county}/{b.county}"))
    elif a.state and b.state:
        signals.append(_signal("same state" if a.state == b.state else "other state", f"{a.state}/{b.state}"))
    return signals


def _drugs(a: Profile, b: Profile) -> list[Signal]:
    if not a.drugs or not b.drugs:
        return []
    shared = set(a.drugs) & set(b.drugs)
    if not shared:
        return [_signal("no drug in common", f"{'+'.join(sorted(a.drugs))} vs {'+'.join(sorted(b.drugs))}")]
    main = max(shared, key=lambda family: max(a.drugs[family][0], b.drugs[family][0]))
    signals = [_signal("same main drug", main)] if main == _main(a) == _main(b) else []
    (mg_a, pills_a), (mg_b, pills_b) = a.drugs[main], b.drugs[main]
    difference = _relative_difference(mg_a, mg_b)
    detail = f"{main} {difference:.0%} apart"
    tiers = ((0.10, "quantity within 10%"), (0.25, "quantity within 25% (gross vs net?)"),
             (0.50, "quantity within 50%")) if pills_a == pills_b else (
        (0.30, "pills counted vs weighed, within 30%"), (0.60, "pills counted vs weighed, within 60%"))
    name = next((n for limit, n in tiers if difference <= limit), "quantity differs")
    return [*signals, _signal(name, detail)]


def _main(profile: Profile) -> str:
    return max(profile.drugs, key=lambda family: profile.drugs[family][0])


def _entities(a: Profile, b: Profile) -> list[Signal]:
    signals = []
    for attribute, name in (("persons", "same person"), ("vins", "same VIN"), ("plates", "same plate"),
                            ("phones", "same phone"), ("serials", "same press serial")):
        shared = set(getattr(a, attribute)) & set(getattr(b, attribute))
        if shared:
            signals.append(_signal(name))
    return signals


def citation_signal(number: str) -> Signal:
    return _signal("cites the record", number.split("|", 1)[-1])

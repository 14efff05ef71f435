"""Deterministic multi-agency sample traffic, with planted duplicates and correlations and their labels.

Dedup and deconfliction can only be scored against ground truth, so the generator plants what the hub must
find (one seizure reported by several agencies, re-sent records, the same phone or vehicle in two agencies'
records, two planned operations at one place and time) and writes it down in :class:`SampleLabels`.
Everything else is kept clearly apart, so a sensible rule can reach precision and recall of 1.0:

- seizure reports of one real seizure: same drug, same port or within 0.5 km, event times within 2 h;
  unrelated seizures of the same drug in the same area (places within 10 km) are more than 6 h apart;
- background identifiers (phones, VINs, plates, names, serials, addresses, organizations) are never reused,
  so every identifier shared across agencies is a real correlation, and all of them are labelled;
- planned operations of different agencies conflict only where planted; unrelated ones are more than 2 km
  or 12 h apart.

Same seed, same agencies, same start: same events, ids and labels.
"""

from __future__ import annotations

import gc
import json
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from operator import attrgetter
from pathlib import Path
from typing import Any

from producers.directory import load_agencies
from producers.exceptions import PublishError
from schemas.models import (
    FENTANYL_TYPES,
    MG_PER_UNIT,
    Agency,
    AgencyLevel,
    CaseEvent,
    ChargeSeverity,
    ConcealmentMethod,
    Confidence,
    ConveyanceType,
    CuiCategory,
    DisseminationLevel,
    DrugForm,
    DrugType,
    EntityKind,
    EntityRole,
    EventType,
    Handling,
    IdentifierScheme,
    LaboratoryKind,
    OperationKind,
    Sensitivity,
    TrafficLightProtocol,
    WeightUnit,
    vin_check_digit_ok,
)
from schemas.reference import PORTS_OF_ENTRY, US_STATES
from schemas.topics import distance_km

DEFAULT_START = datetime(2024, 10, 1, tzinfo=UTC)  # first day of FY2025: samples up to 50k events end before 2026
EVENTS_PER_DAY = 250  # hub-wide volume; the time span grows with the count to keep this density
MIN_SPAN = timedelta(weeks=6)

# What gets planted, per requested event.
DUPLICATE_GROUPS_PER_EVENT = 0.0085  # about 5% of seizures end up in a cross-agency duplicate group
RESUBMISSIONS_PER_EVENT = 0.02
CORRELATION_STORIES_PER_EVENT = 0.012  # about 3% of events share a planted identifier with another agency
EVENTS_PER_CONFLICT = 2500

# Separation that keeps unrelated records apart.
AREA_RADIUS_KM = 10.0  # places closer than this share one seizure guard area
INLAND_SCATTER_KM = 3.0  # seizures away from ports happen within this distance of their place
PARTNER_SCATTER_KM = 0.5  # a partner agency's report of a seizure lies within this distance of it
SEIZURE_SLOT_S = 4 * 3600
SEIZURE_SLOT_REACH = 2  # unrelated same-drug seizures in one area are more than 2 slots (8 h) apart
DUPLICATE_SPREAD_S = 3600  # reports of one seizure are within +-1 h of it, so within 2 h of each other
OPERATION_SCATTER_KM = 6.0
OPERATION_CLEARANCE_KM = 2.0
OPERATION_CLEARANCE = timedelta(hours=12)
OPERATION_MAX_LENGTH = timedelta(hours=10)
CONFLICT_DISTANCE_KM = (0.04, 0.25)
PLACEMENT_TRIES = 40

HOUR = 3600
DAY = 24 * HOUR
KM_PER_DEGREE = 111.32
LB_PER_KG = MG_PER_UNIT["KG"] / MG_PER_UNIT["LB"]
PILL_WEIGHT_LB = 0.1 / 453.59237  # a counterfeit pill weighs about 100 mg

SAMPLE_SYSTEM = {"cbp": "SEACATS", "usbp": "SEACATS", "hsi": "ICM", "dea": "DEA-CMS", "state": "RMS",
                 "local": "RMS", "foreign": "FGR-CMS"}
LAB_SYSTEM = "LIMS"


# -- public API ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleLabels:
    """Ground truth for scoring dedup and deconfliction on a generated sample.

    ``duplicate_groups``: SEIZURE event ids describing one real-world seizure, reported by different agencies.
    ``resubmissions``: event ids sharing agency and source_record_id (re-sends, version updates), oldest first.
    ``target_correlations``: every identifier found in records of two or more agencies: scheme, value as
    recorded, issuer (plates; else None), event ids, agencies.
    ``event_conflicts``: pairs of PLANNED_OPERATION events of different agencies within ~300 m whose
    time windows overlap.
    """

    duplicate_groups: list[list[str]]
    resubmissions: list[list[str]]
    target_correlations: list[dict[str, Any]]
    event_conflicts: list[dict[str, Any]]

    def to_json(self) -> str:
        return json.dumps(vars(self), indent=2)  # fields are plain JSON data already; asdict() would deep-copy

    @classmethod
    def from_json(cls, text: str) -> SampleLabels:
        return cls(**json.loads(text))

    def counts(self) -> dict[str, tuple[int, int]]:
        """Label name -> (groups, events in them)."""
        return {
            "duplicate_groups": (len(self.duplicate_groups), sum(map(len, self.duplicate_groups))),
            "resubmissions": (len(self.resubmissions), sum(map(len, self.resubmissions))),
            "target_correlations": (len(self.target_correlations),
                                    len({i for c in self.target_correlations for i in c["event_ids"]})),
            "event_conflicts": (len(self.event_conflicts), 2 * len(self.event_conflicts)),
        }


@dataclass
class SampleSet:
    events: list[CaseEvent]  # in report_time order
    labels: SampleLabels

    def by_agency(self) -> dict[str, list[CaseEvent]]:
        """ORI -> that agency's events (report_time order), ORIs sorted."""
        grouped: dict[str, list[CaseEvent]] = defaultdict(list)
        for event in self.events:
            grouped[event.agency_ori].append(event)
        return dict(sorted(grouped.items()))


def generate(count: int, seed: int = 7, start: datetime | None = None,
             agencies: dict[str, Agency] | None = None) -> SampleSet:
    """Exactly ``count`` events from ``agencies`` (default: the directory), spread over weeks from ``start``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    start = DEFAULT_START if start is None else start
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (e.g. 2025-10-01T00:00:00+00:00)")
    agencies = load_agencies() if agencies is None else agencies
    if not agencies:
        raise PublishError("there are no agencies to generate traffic for",
                           hint="Add agencies to deploy/agencies.yaml.")
    span = max(MIN_SPAN, timedelta(days=count / EVENTS_PER_DAY))
    with _cyclic_gc_paused():
        return _Generator(random.Random(seed), agencies, start, span).run(count)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cycle collector: the generator makes no cycles, and full collections over a heap of
    100k nested models would otherwise take half the run time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def write_sample(sample: SampleSet, out_dir: Path) -> dict[str, Path]:
    """Write ``<ORI>.jsonl`` per publishing agency and ``labels.json``; returns ORI -> file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for ori, events in sample.by_agency().items():
        path = out_dir / f"{ori}.jsonl"
        path.write_text("".join(e.model_dump_json() + "\n" for e in events))  # = model_dump(mode="json")
        written[ori] = path
    (out_dir / "labels.json").write_text(sample.labels.to_json() + "\n")
    return written


# -- places --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Place:
    name: str  # town, for addresses and titles
    kind: str  # port, checkpoint, highway or city
    region: str  # USPS state code, or MX-xxx in Mexico
    county_fips: str | None
    latitude: float
    longitude: float
    label: str  # location description
    port: str | None = None
    traffic: float = 1.0  # relative seizure volume

    @property
    def state(self) -> str | None:
        return None if self.region.startswith("MX") else self.region


# Relative seizure volume of the ports (busiest crossings carry most of the traffic).
_PORT_TRAFFIC = {
    "SAN_YSIDRO": 10, "OTAY_MESA": 8, "TECATE": 1, "CALEXICO": 5, "ANDRADE": 1, "SAN_LUIS": 3, "LUKEVILLE": 1,
    "SASABE": 0.5, "NOGALES_DECONCINI": 5, "NOGALES_MARIPOSA": 5, "NACO": 0.7, "DOUGLAS": 2, "COLUMBUS": 0.7,
    "SANTA_TERESA": 1, "ANTELOPE_WELLS": 0.2, "EL_PASO": 6, "PRESIDIO": 0.7, "DEL_RIO": 1.5, "EAGLE_PASS": 2.5,
    "LAREDO_WORLD_TRADE_BRIDGE": 6, "LAREDO_COLOMBIA_SOLIDARITY": 2, "ROMA": 0.7, "RIO_GRANDE_CITY": 0.8,
    "PHARR": 4, "HIDALGO": 3.5, "PROGRESO": 1, "BROWNSVILLE": 3,
}

_INLAND = (
    _Place("Pine Valley", "checkpoint", "CA", "06073", 32.8260, -116.5290, "I-8 Border Patrol checkpoint, Pine Valley"),
    _Place("San Clemente", "checkpoint", "CA", "06073", 33.3980, -117.5930, "I-5 Border Patrol checkpoint, San Clemente"),
    _Place("Temecula", "checkpoint", "CA", "06065", 33.4290, -117.1230, "I-15 Border Patrol checkpoint, Temecula"),
    _Place("Westmorland", "checkpoint", "CA", "06025", 33.0500, -115.6300, "SR-86 Border Patrol checkpoint, Westmorland"),
    _Place("Ocotillo", "highway", "CA", "06025", 32.7380, -115.9930, "I-8 near Ocotillo"),
    _Place("Blythe", "highway", "CA", "06065", 33.6100, -114.5960, "I-10 near Blythe"),
    _Place("San Diego", "city", "CA", "06073", 32.7157, -117.1611, "San Diego"),
    _Place("Chula Vista", "city", "CA", "06073", 32.6401, -117.0842, "Chula Vista"),
    _Place("El Cajon", "city", "CA", "06073", 32.7948, -116.9625, "El Cajon"),
    _Place("Escondido", "city", "CA", "06073", 33.1192, -117.0864, "Escondido"),
    _Place("Oceanside", "city", "CA", "06073", 33.1959, -117.3795, "Oceanside"),
    _Place("El Centro", "city", "CA", "06025", 32.7920, -115.5630, "El Centro"),
    _Place("Los Angeles", "city", "CA", "06037", 34.0522, -118.2437, "Los Angeles"),
    _Place("Tubac", "checkpoint", "AZ", "04023", 31.6120, -111.0470, "I-19 Border Patrol checkpoint, Tubac"),
    _Place("Three Points", "checkpoint", "AZ", "04019", 32.0730, -111.2890, "SR-86 Border Patrol checkpoint, Three Points"),
    _Place("Casa Grande", "highway", "AZ", "04021", 32.8795, -111.7574, "I-10 near Casa Grande"),
    _Place("Gila Bend", "highway", "AZ", "04013", 32.9478, -112.7168, "I-8 near Gila Bend"),
    _Place("Tucson", "city", "AZ", "04019", 32.2226, -110.9747, "Tucson"),
    _Place("Rio Rico", "city", "AZ", "04023", 31.4710, -110.9770, "Rio Rico"),
    _Place("Phoenix", "city", "AZ", "04013", 33.4484, -112.0740, "Phoenix"),
    _Place("Mesa", "city", "AZ", "04013", 33.4152, -111.8315, "Mesa"),
    _Place("Sells", "city", "AZ", "04019", 31.9120, -111.8810, "Sells, Tohono O'odham Nation"),
    _Place("Yuma", "city", "AZ", "04027", 32.6927, -114.6277, "Yuma"),
    _Place("Deming", "highway", "NM", "35029", 32.2687, -107.7586, "I-10 near Deming"),
    _Place("Las Cruces", "city", "NM", "35013", 32.3199, -106.7637, "Las Cruces"),
    _Place("Sierra Blanca", "checkpoint", "TX", "48229", 31.1746, -105.3572, "I-10 Border Patrol checkpoint, Sierra Blanca"),
    _Place("Laredo North", "checkpoint", "TX", "48479", 27.8600, -99.3800, "I-35 Border Patrol checkpoint, north of Laredo"),
    _Place("Falfurrias", "checkpoint", "TX", "48047", 27.0140, -98.1420, "US-281 Border Patrol checkpoint, Falfurrias"),
    _Place("Sarita", "checkpoint", "TX", "48261", 27.2200, -97.7900, "US-77 Border Patrol checkpoint, Sarita"),
    _Place("Van Horn", "highway", "TX", "48109", 31.0400, -104.8300, "I-10 near Van Horn"),
    _Place("Cotulla", "highway", "TX", "48283", 28.4360, -99.2350, "I-35 near Cotulla"),
    _Place("Zapata", "highway", "TX", "48505", 26.9073, -99.2714, "US-83 near Zapata"),
    _Place("El Paso", "city", "TX", "48141", 31.7619, -106.4850, "El Paso"),
    _Place("Laredo", "city", "TX", "48479", 27.5306, -99.4803, "Laredo"),
    _Place("McAllen", "city", "TX", "48215", 26.2034, -98.2300, "McAllen"),
    _Place("Edinburg", "city", "TX", "48215", 26.3017, -98.1633, "Edinburg"),
    _Place("Harlingen", "city", "TX", "48061", 26.1906, -97.6961, "Harlingen"),
    _Place("San Antonio", "city", "TX", "48029", 29.4241, -98.4936, "San Antonio"),
    _Place("Houston", "city", "TX", "48201", 29.7604, -95.3698, "Houston"),
    _Place("Tijuana", "city", "MX-BCN", None, 32.5149, -117.0382, "Tijuana, Baja California"),
    _Place("Mexicali", "city", "MX-BCN", None, 32.6245, -115.4523, "Mexicali, Baja California"),
    _Place("Nogales", "city", "MX-SON", None, 31.3086, -110.9422, "Nogales, Sonora"),
    _Place("Ciudad Juarez", "city", "MX-CHH", None, 31.6904, -106.4245, "Ciudad Juarez, Chihuahua"),
    _Place("Nuevo Laredo", "city", "MX-TAM", None, 27.4763, -99.5164, "Nuevo Laredo, Tamaulipas"),
    _Place("Reynosa", "city", "MX-TAM", None, 26.0508, -98.2979, "Reynosa, Tamaulipas"),
    _Place("Culiacan", "city", "MX-SIN", None, 24.8091, -107.3940, "Culiacan, Sinaloa"),
)

_PLACES: tuple[_Place, ...] = tuple(
    _Place(p.name.split(" (")[0], "port", p.state, p.county_fips, p.latitude, p.longitude,
           f"{p.name} port of entry", port=p.code, traffic=_PORT_TRAFFIC.get(p.code, 1.0))
    for p in PORTS_OF_ENTRY.values()
) + _INLAND

_MX_NEIGHBOUR = {"CA": "MX-BCN", "AZ": "MX-SON", "NM": "MX-CHH", "TX": "MX-TAM"}
_FIELD_OFFICE_DISTRICT = {"SAN_DIEGO": 25, "TUCSON": 26, "EL_PASO": 24, "LAREDO": 23}


def _move(lat: float, lon: float, km: float, bearing: float) -> tuple[float, float]:
    """The point ``km`` away on ``bearing`` (radians); flat-earth is exact enough below 10 km."""
    return (round(lat + km / KM_PER_DEGREE * math.cos(bearing), 5),
            round(lon + km / (KM_PER_DEGREE * math.cos(math.radians(lat))) * math.sin(bearing), 5))


def _areas(places: tuple[_Place, ...]) -> dict[str, int]:
    """Place label -> guard area: places closer than AREA_RADIUS_KM (transitively) share an area."""
    parent = list(range(len(places)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(places):
        for j in range(i):
            if distance_km(a.latitude, a.longitude, places[j].latitude, places[j].longitude) < AREA_RADIUS_KM:
                parent[root(i)] = root(j)
    return {p.label: root(i) for i, p in enumerate(places)}


def _office_codes(places: tuple[_Place, ...]) -> dict[str, str]:
    """Place label -> 4-digit office code used in SEACATS numbers (district + port, illustrative)."""
    codes: dict[str, str] = {}
    per_district: dict[int, int] = defaultdict(int)
    for place in places:
        district = _FIELD_OFFICE_DISTRICT.get(PORTS_OF_ENTRY[place.port].field_office, 50) if place.port else 50
        per_district[district] += 1
        codes[place.label] = f"{district}{per_district[district]:02d}"
    return codes


_AREA = _areas(_PLACES)
_OFFICE_CODE = _office_codes(_PLACES)


@dataclass(frozen=True)
class _Picker:
    """Weighted choice among places."""

    places: tuple[_Place, ...]
    cum_weights: tuple[float, ...]

    @classmethod
    def of(cls, places: list[_Place]) -> _Picker:
        return cls(tuple(places), tuple(accumulate(p.traffic for p in places)))

    def pick(self, rng: random.Random) -> _Place:
        return rng.choices(self.places, cum_weights=self.cum_weights)[0]


# -- agencies ------------------------------------------------------------------------------------
def _agency_kind(agency: Agency) -> str:
    """cbp, usbp, hsi (any other federal investigators), dea, state, local (incl. tribal) or foreign."""
    name = agency.name.upper()
    if "BORDER PATROL" in name:
        return "usbp"
    if "CBP" in name.split() or "FIELD OPERATIONS" in name:
        return "cbp"
    if "DRUG ENFORCEMENT" in name or "DEA" in name.split():
        return "dea"
    return {AgencyLevel.STATE: "state", AgencyLevel.LOCAL: "local", AgencyLevel.TRIBAL: "local",
            AgencyLevel.FOREIGN_PARTNER: "foreign"}.get(agency.level, "hsi")


_PLACE_KINDS = {"cbp": ("port",), "usbp": ("checkpoint", "highway"), "state": ("highway", "city"),
                "local": ("city",), "hsi": ("city",), "dea": ("city",), "foreign": ("city",)}


class _Roster:
    """Who does what where: each agency's kind, home state, places, and its partners in joint cases."""

    def __init__(self, agencies: dict[str, Agency]) -> None:
        self.agencies = list(agencies.values())
        self.kind = {a.ori: _agency_kind(a) for a in self.agencies}
        self.region = {a.ori: a.ori[:2] if a.ori[:2] in US_STATES else None for a in self.agencies}
        self.by_kind: dict[str, list[Agency]] = defaultdict(list)
        for agency in self.agencies:
            self.by_kind[self.kind[agency.ori]].append(agency)
        claimed: set[str] = set()
        self.places: dict[str, _Picker] = {}
        for agency in self.agencies:
            places = self._places_of(agency, claimed)
            claimed.update(p.label for p in places if p.port)
            self.places[agency.ori] = _Picker.of(places)
        self.port_authorities = [a for a in self.by_kind["cbp"] if self.places[a.ori].places]
        self.port_cum = tuple(accumulate(self.places[a.ori].cum_weights[-1] for a in self.port_authorities))
        self.duplicate_reporters = [(a, p) for a in self.by_kind["cbp"] + self.by_kind["usbp"]
                                    if self.places[a.ori].places and (p := self.partners(a))]

    def _places_of(self, agency: Agency, claimed: set[str]) -> list[_Place]:
        kind, region = self.kind[agency.ori], self.region[agency.ori]
        if kind == "cbp":
            name = agency.name.upper()
            office = next((fo for fo in sorted(_FIELD_OFFICE_DISTRICT) if fo.replace("_", " ") in name), None)
            ports = [p for p in _PLACES if p.port and p.label not in claimed
                     and (PORTS_OF_ENTRY[p.port].field_office == office if office else p.region == region)]
            return ports
        pool = [p for p in _PLACES if p.kind in _PLACE_KINDS[kind] and p.region.startswith("MX") == (kind == "foreign")]
        return [p for p in pool if p.region == region] or pool

    def group(self, *kinds: str) -> list[Agency]:
        return [a for a in self.agencies if self.kind[a.ori] in kinds]

    def partner(self, agency: Agency, kind: str) -> Agency | None:
        """The agency of ``kind`` working the same state (any HSI office when none is local)."""
        candidates = self.by_kind[kind]
        local = [a for a in candidates if self.region[a.ori] == self.region[agency.ori]]
        if local:
            return local[0]
        return candidates[0] if candidates and kind == "hsi" else None

    def partners(self, agency: Agency) -> list[Agency]:
        return [p for kind in ("hsi", "state") if (p := self.partner(agency, kind))]


# -- reference tables ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _DrugProfile:
    drug_type: DrugType
    form: DrugForm
    share: float
    median: float  # pounds; pills for DrugForm.PILLS
    spread: float  # sigma of the log-normal amount
    purity: tuple[float, float]  # beta(a, b) of lab purity


_DRUGS = (
    _DrugProfile(DrugType.FENTANYL, DrugForm.POWDER, 0.12, 4.5, 1.1, (2.2, 28)),
    _DrugProfile(DrugType.FENTANYL, DrugForm.PILLS, 0.17, 6000, 1.3, (2, 90)),
    _DrugProfile(DrugType.FENTANYL_ANALOGUE, DrugForm.POWDER, 0.01, 2.0, 1.0, (2, 30)),
    _DrugProfile(DrugType.NITAZENE, DrugForm.PILLS, 0.005, 500, 1.0, (2, 40)),
    _DrugProfile(DrugType.XYLAZINE, DrugForm.POWDER, 0.01, 3.0, 1.0, (8, 4)),
    _DrugProfile(DrugType.METHAMPHETAMINE, DrugForm.CRYSTAL, 0.22, 45, 1.0, (40, 3)),
    _DrugProfile(DrugType.METHAMPHETAMINE, DrugForm.LIQUID, 0.03, 80, 0.8, (30, 5)),
    _DrugProfile(DrugType.COCAINE, DrugForm.POWDER, 0.14, 25, 1.0, (12, 4)),
    _DrugProfile(DrugType.HEROIN, DrugForm.PASTE, 0.04, 5, 0.9, (5, 6)),
    _DrugProfile(DrugType.MARIJUANA, DrugForm.PLANT, 0.12, 60, 1.1, (3, 15)),
    _DrugProfile(DrugType.KETAMINE, DrugForm.POWDER, 0.01, 10, 1.0, (15, 3)),
    _DrugProfile(DrugType.PRECURSOR_CHEMICAL, DrugForm.LIQUID, 0.03, 400, 0.9, (20, 3)),
    _DrugProfile(DrugType.OTHER, DrugForm.PILLS, 0.05, 2000, 1.2, (2, 3)),
)
_DRUG_CUM = tuple(accumulate(p.share for p in _DRUGS))
_LAB_TESTED = FENTANYL_TYPES | {DrugType.NITAZENE, DrugType.XYLAZINE}
# Amount scale of a seizure by who makes it (local patrol stops find ounces, ports find loads).
_SEIZURE_SCALE = {"cbp": 1.0, "usbp": 1.0, "state": 1.2, "local": 0.03, "hsi": 1.0, "dea": 0.5, "foreign": 3.0}
_WEIGHT_UNIT = {"cbp": WeightUnit.LB, "usbp": WeightUnit.LB, "hsi": WeightUnit.KG, "dea": WeightUnit.KG,
                "foreign": WeightUnit.KG, "state": WeightUnit.LB, "local": WeightUnit.LB}

_C = ConveyanceType
_PORT_CONVEYANCES = ((_C.PASSENGER_VEHICLE, 0.60), (_C.COMMERCIAL_TRUCK, 0.18), (_C.PEDESTRIAN, 0.13),
                     (_C.BUS, 0.03), (_C.RAIL, 0.02), (_C.EXPRESS_CONSIGNMENT, 0.04))
_ROAD_CONVEYANCES = ((_C.PASSENGER_VEHICLE, 0.72), (_C.COMMERCIAL_TRUCK, 0.22), (_C.BUS, 0.06))
_CITY_CONVEYANCES = ((_C.PASSENGER_VEHICLE, 0.55), (_C.PEDESTRIAN, 0.30), (_C.MAIL, 0.15))
_VEHICLES = frozenset({_C.PASSENGER_VEHICLE, _C.COMMERCIAL_TRUCK})
_M = ConcealmentMethod
_CONCEALMENT = {
    _C.PASSENGER_VEHICLE: (_M.NON_FACTORY_COMPARTMENT, _M.QUARTER_PANEL, _M.FIREWALL, _M.ROOF, _M.BUMPER,
                           _M.SPARE_TIRE, _M.GAS_TANK),
    _C.COMMERCIAL_TRUCK: (_M.TRAILER_BEAMS, _M.COMMINGLED_WITH_CARGO, _M.NON_FACTORY_COMPARTMENT),
    _C.PEDESTRIAN: (_M.BODY_CARRY, _M.LUGGAGE),
    _C.BUS: (_M.LUGGAGE, _M.NON_FACTORY_COMPARTMENT),
    _C.RAIL: (_M.COMMINGLED_WITH_CARGO, _M.OTHER),
    _C.MAIL: (_M.PARCEL,),
    _C.EXPRESS_CONSIGNMENT: (_M.PARCEL,),
}
_PRODUCE = ("limes", "tomatoes", "cucumbers", "avocados", "watermelons", "bell peppers", "strawberries")

_SURNAMES_ES = ("GARCIA", "LOPEZ", "MARTINEZ", "HERNANDEZ", "GONZALEZ", "RODRIGUEZ", "PEREZ", "SANCHEZ",
                "RAMIREZ", "TORRES", "FLORES", "RIVERA", "GOMEZ", "DIAZ", "REYES", "MORALES", "CRUZ", "ORTIZ",
                "GUTIERREZ", "CHAVEZ", "RAMOS", "RUIZ", "MENDOZA", "ALVAREZ", "CASTILLO", "JIMENEZ", "MORENO",
                "ROMERO", "HERRERA", "MEDINA", "AGUILAR", "VARGAS", "GUZMAN", "SALAZAR", "ESPINOZA",
                "VALENZUELA", "ACOSTA", "NAVARRO", "SOTO", "DELGADO")
_SURNAMES_EN = ("SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "MILLER", "DAVIS", "WILSON", "ANDERSON",
                "THOMAS", "TAYLOR", "MOORE", "JACKSON", "WHITE", "HARRIS", "MARTIN", "THOMPSON", "YOUNG",
                "ALLEN", "KING", "WRIGHT", "SCOTT", "GREEN", "BAKER", "ADAMS", "NELSON", "HILL", "CAMPBELL")
_GIVEN_ES = ("JUAN", "JOSE", "LUIS", "CARLOS", "JESUS", "MIGUEL", "JORGE", "FRANCISCO", "ALEJANDRO", "ANTONIO",
             "MARIA", "GUADALUPE", "ANA", "ROSA", "DANIEL", "RICARDO", "FERNANDO", "EDUARDO", "SERGIO", "MARTHA",
             "LAURA", "ADRIANA", "VICTOR", "RAUL", "HECTOR", "ARTURO", "OSCAR", "JAVIER", "ALMA", "YESENIA")
_GIVEN_EN = ("MICHAEL", "JAMES", "ROBERT", "JENNIFER", "JESSICA", "CHRISTOPHER", "BRANDON", "ASHLEY", "KEVIN",
             "TYLER", "AMANDA", "JOSHUA", "MEGAN", "RYAN", "STEPHANIE", "JUSTIN", "NICOLE", "AARON", "KAYLA")
_AREA_CODES = {"CA": ("619", "858", "760", "442"), "AZ": ("520", "602", "480", "928"), "NM": ("575", "505"),
               "TX": ("956", "915", "210", "361", "830", "713"), "MX-BCN": ("664", "686"), "MX-SON": ("631", "662"),
               "MX-CHH": ("656", "614"), "MX-TAM": ("867", "899"), "MX-SIN": ("667", "669")}
_STREETS = ("CALLE DEL SOL", "W VALENCIA RD", "E 10TH ST", "AVENIDA REVOLUCION", "N MESA ST", "S 23RD ST",
            "PALM AVE", "OLIVE DR", "CALLE OBREGON", "RIO GRANDE BLVD", "W NOGALES ST", "E ELIZABETH ST",
            "OCEAN VIEW BLVD", "CORONADO AVE", "N 10TH ST", "S BROADWAY", "CALLE JUAREZ", "MISSION RD")
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
_VIN_YEARS = "DEFGHJKLMNPRS"  # model years 2013-2025
_MAKES = (("1FT", "Ford F-series"), ("1GC", "Chevrolet Silverado"), ("3GC", "Chevrolet Silverado"),
          ("1N6", "Nissan Frontier"), ("3N1", "Nissan Sentra"), ("1HG", "Honda Accord"), ("5TD", "Toyota Sienna"),
          ("2T1", "Toyota Corolla"), ("1C6", "Ram 1500"), ("5NP", "Hyundai Elantra"), ("1FA", "Ford Fusion"),
          ("3AK", "Freightliner Cascadia"), ("1XK", "Kenworth T680"))
_PLATE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_DIGITS = "0123456789"
_PRESS_MODELS = ("TDP-5", "TDP-0", "ZP-9", "ZP-17", "THDP-3", "DHP-18")
_ORG_SUFFIXES = ("DTO", "ORGANIZATION", "NETWORK", "CELL")
_CARTELS = ("Sinaloa Cartel", "Sinaloa Cartel", "Cartel de Jalisco Nueva Generacion", "Gulf Cartel")
_CODENAMES = (("DESERT", "SILVER", "IRON", "NIGHT", "RIVER", "COPPER", "FALCON", "MESA", "CANYON", "COBALT"),
              ("STORM", "HAWK", "GATE", "LANTERN", "ANVIL", "SPUR", "HARVEST", "RIDGE", "TIDE", "EMBER"))
_TITLES = {"cbp": "CBPO", "usbp": "BPA", "hsi": "SA", "dea": "SA", "state": "Det.", "local": "Det.",
           "foreign": "Agente"}
_PREDICATES = (
    "Confidential source reporting, corroborated by surveillance: subject coordinates fentanyl pill deliveries.",
    "Toll analysis links the subject's phone to a seized load.",
    "Subject identified as consignee of pill press shipments.",
    "Two controlled purchases of methamphetamine from the subject.",
    "Financial analysis: structured cash deposits traced to drug proceeds.",
)
_DISPOSITIONS = ("Closed - defendants convicted", "Closed - prosecution declined", "Closed - referred to state",
                 "Closed - merged into OCDETF investigation", "Closed - insufficient evidence")
_FEDERAL_CHARGES = (
    ("21 U.S.C. 952, 960", "Importation of a controlled substance", ChargeSeverity.FELONY),
    ("21 U.S.C. 841(a)(1)", "Possession with intent to distribute a controlled substance", ChargeSeverity.FELONY),
    ("21 U.S.C. 846", "Conspiracy to distribute a controlled substance", ChargeSeverity.FELONY),
    ("21 U.S.C. 963", "Conspiracy to import a controlled substance", ChargeSeverity.FELONY),
    ("18 U.S.C. 1956(h)", "Money laundering conspiracy", ChargeSeverity.FELONY),
    ("18 U.S.C. 924(c)", "Possession of a firearm in furtherance of drug trafficking", ChargeSeverity.FELONY),
    ("21 U.S.C. 843(a)(6)", "Possession of equipment to manufacture a controlled substance", ChargeSeverity.FELONY),
)
_STATE_CHARGES = {
    "CA": (("Cal. Health & Safety Code 11352", "Transportation of a controlled substance for sale",
            ChargeSeverity.FELONY),
           ("Cal. Health & Safety Code 11351", "Possession for sale of a controlled substance", ChargeSeverity.FELONY),
           ("Cal. Health & Safety Code 11379", "Transportation of methamphetamine for sale", ChargeSeverity.FELONY),
           ("Cal. Health & Safety Code 11350", "Possession of a controlled substance", ChargeSeverity.MISDEMEANOR)),
    "AZ": (("A.R.S. 13-3408", "Transportation of narcotic drugs for sale", ChargeSeverity.FELONY),
           ("A.R.S. 13-3407", "Transportation of dangerous drugs for sale", ChargeSeverity.FELONY),
           ("A.R.S. 13-3415", "Possession of drug paraphernalia", ChargeSeverity.FELONY)),
    "NM": (("NMSA 30-31-20", "Trafficking controlled substances", ChargeSeverity.FELONY),
           ("NMSA 30-31-23", "Possession of a controlled substance", ChargeSeverity.MISDEMEANOR)),
    "TX": (("Tex. Health & Safety Code 481.112", "Manufacture or delivery of a controlled substance, PG 1",
            ChargeSeverity.FELONY),
           ("Tex. Health & Safety Code 481.115", "Possession of a controlled substance, PG 1", ChargeSeverity.FELONY),
           ("Tex. Health & Safety Code 481.121", "Possession of marijuana", ChargeSeverity.MISDEMEANOR)),
}
_TRIBAL_CHARGES = (("Tribal criminal code", "Possession of a controlled substance", ChargeSeverity.MISDEMEANOR),
                   ("18 U.S.C. 1153 referral", "Drug trafficking in Indian country", ChargeSeverity.FELONY))
_MX_CHARGES = (("CPF art. 194", "Delito contra la salud: transporte de narcoticos", ChargeSeverity.FELONY),
               ("CPF art. 195", "Delito contra la salud: posesion con fines de comercio", ChargeSeverity.FELONY))
_FEDERAL_COURTS = {"CA": (("U.S. District Court, S.D. Cal.", "3"),), "AZ": (("U.S. District Court, D. Ariz.", "4"),),
                   "NM": (("U.S. District Court, D.N.M.", "2"),),
                   "TX": (("U.S. District Court, S.D. Tex.", "5"), ("U.S. District Court, W.D. Tex.", "3"))}
_STATE_LABS = {"CA": "California DOJ Bureau of Forensic Services", "AZ": "Arizona DPS Crime Laboratory",
               "NM": "New Mexico DPS Forensic Laboratory", "TX": "Texas DPS Crime Laboratory"}
_DEA_LABS = ("DEA Southwest Laboratory", "DEA South Central Laboratory")
_DEA_FILE_PREFIXES = ("M3", "R1", "W2", "X4")
_FIELD_METHODS = ("FTIR", "Raman spectroscopy", "GC-MS")  # what a Forward Operating Laboratory runs on site
_LAB_METHODS = ("GC-MS", "GC-MS and FTIR", "LC-MS")

_K = EntityKind
_R = EntityRole
_SEIZURE_ROLES = {_K.PERSON: _R.DRIVER, _K.VEHICLE: _R.CONVEYANCE, _K.PHONE: _R.SEIZED_ITEM,
                  _K.PILL_PRESS: _R.SEIZED_ITEM, _K.ADDRESS: _R.LOCATION_OF_INTEREST, _K.ORGANIZATION: _R.ASSOCIATE}
_ARREST_ROLES = {**_SEIZURE_ROLES, _K.PERSON: _R.SUBJECT}
_CASE_ROLES = {_K.PERSON: _R.TARGET, _K.VEHICLE: _R.TARGET, _K.PHONE: _R.TARGET, _K.PILL_PRESS: _R.TARGET,
               _K.ADDRESS: _R.LOCATION_OF_INTEREST, _K.ORGANIZATION: _R.TARGET}
_SHARED_KINDS = (_K.PHONE, _K.VEHICLE, _K.PERSON, _K.PILL_PRESS, _K.ORGANIZATION, _K.ADDRESS)
_SHARED_CUM = tuple(accumulate((0.25, 0.22, 0.25, 0.10, 0.08, 0.10)))

Entity = dict[str, Any]  # an EntityReference without its role, as model_validate reads it
Haul = list[tuple[_DrugProfile, float]]  # (drug, pounds or pill count)


def _fiscal_year(when: datetime) -> int:
    return when.year + (when.month >= 10)


def _weighted(rng: random.Random, pairs: tuple[tuple[Any, float], ...]) -> Any:
    return rng.choices([v for v, _ in pairs], weights=[w for _, w in pairs])[0]


def _draw(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _role_of(entity: Entity, roles: dict[EntityKind, EntityRole]) -> Entity:
    return {**entity, "role": roles[entity["kind"]]}


def _plate_only(vehicle: Entity) -> Entity:
    """The vehicle as seen by a plate reader or a patrol stop: the plate without the VIN."""
    plates = [i for i in vehicle["identifiers"] if i["scheme"] is IdentifierScheme.LICENSE_PLATE]
    return {**vehicle, "identifiers": plates}


def _reference(event: CaseEvent) -> dict[str, str]:
    return {"system": event.source_system, "number": event.source_record_id, "ori": event.agency_ori}


# -- generation ----------------------------------------------------------------------------------
@dataclass
class _Seizure:
    """One real-world seizure; each agency that reports it publishes its own view of it."""

    place: _Place
    latitude: float
    longitude: float
    when: datetime
    haul: Haul
    conveyance: ConveyanceType
    concealment: list[ConcealmentMethod]
    nii_scan: bool
    operation_name: str | None
    cast: list[Entity]
    presses: list[dict[str, Any]]

    @property
    def by_vehicle(self) -> bool:
        return self.conveyance in _VEHICLES


@dataclass
class _Story:
    """Events of one real-world happening, primary record first, follow-ups after what they cite."""

    events: list[CaseEvent]
    duplicates: list[CaseEvent] = field(default_factory=list)
    conflict: tuple[CaseEvent, CaseEvent] | None = None


class _Generator:
    """Builds one sample: stories of related events, plus the guards that keep unrelated events apart."""

    def __init__(self, rng: random.Random, agencies: dict[str, Agency], start: datetime, span: timedelta) -> None:
        self.rng = rng
        self.roster = _Roster(agencies)
        self.start = start
        self.span_s = max(1, int(span.total_seconds()))
        self.events: list[CaseEvent] = []
        self.duplicate_groups: list[list[str]] = []
        self.resubmissions: list[list[str]] = []
        self.conflicts: list[dict[str, Any]] = []
        self.taken: set[tuple[IdentifierScheme, str]] = set()
        self.seizure_slots: set[tuple[int, DrugType, int]] = set()
        self.operations: dict[tuple[int, int], list[tuple[float, float, datetime, datetime]]] = defaultdict(list)
        self.serials: dict[tuple[str, ...], int] = defaultdict(int)
        self.handlings: dict[tuple[Any, ...], Handling] = {}
        self.background = [(story, weight) for story, weight, available in (
            (self._port_story, 0.30, self.roster.port_authorities),
            (self._border_patrol_story, 0.05, self.roster.by_kind["usbp"]),
            (self._interdiction_story, 0.09, self.roster.by_kind["state"]),
            (self._local_story, 0.15, self.roster.by_kind["local"]),
            (self._investigation_story, 0.13, self.roster.group("hsi", "dea", "state")),
            (self._dea_story, 0.04, self.roster.by_kind["dea"]),
            (self._operation_story, 0.10, self.roster.group("hsi", "dea", "state", "local")),
            (self._foreign_story, 0.03, self.roster.by_kind["foreign"]),
        ) if available]

    # -- the run ---------------------------------------------------------------------------------
    def run(self, count: int) -> SampleSet:
        resubmissions = round(count * RESUBMISSIONS_PER_EVENT)
        planted: list[Callable[[], _Story | None]] = (
            [self._duplicate_story] * round(count * DUPLICATE_GROUPS_PER_EVENT)
            + [self._correlation_story] * round(count * CORRELATION_STORIES_PER_EVENT)
            + [self._conflict_story] * (0 if count < 40 else max(2, count // EVENTS_PER_CONFLICT)))
        self.rng.shuffle(planted)
        budget = count - resubmissions
        for story in planted:
            if budget - len(self.events) >= 2 and (built := story()):
                self._take(built, budget)
        self._fill(budget)
        self._resubmit(count - len(self.events))
        self._fill(count)
        self.events.sort(key=attrgetter("report_time"))
        labels = SampleLabels(self.duplicate_groups, self.resubmissions, self._correlations(), self.conflicts)
        return SampleSet(self.events, labels)

    def _take(self, story: _Story, limit: int) -> None:
        """Keep the story's first events up to ``limit`` and label what survived whole."""
        kept = story.events[: limit - len(self.events)]
        self.events.extend(kept)
        ids = {e.event_id for e in kept}
        group = [e.event_id for e in story.duplicates if e.event_id in ids]
        if len(group) >= 2:
            self.duplicate_groups.append(group)
        if story.conflict and all(e.event_id in ids for e in story.conflict):
            self.conflicts.append({"event_ids": [e.event_id for e in story.conflict],
                                   "agencies": [e.agency_ori for e in story.conflict]})

    def _fill(self, limit: int) -> None:
        stories = [s for s, _ in self.background]
        cum = tuple(accumulate(w for _, w in self.background))
        failures = 0
        while len(self.events) < limit:
            story = self.rng.choices(stories, cum_weights=cum)[0]()
            if story is None or not story.events:
                failures += 1
                if failures > 1000:
                    raise RuntimeError("cannot place more sample events without breaking the planted separations")
                continue
            self._take(story, limit)

    def _resubmit(self, copies: int) -> None:
        """Re-send some records: identical, or as version+1 with a corrected field."""
        in_groups = {i for group in self.duplicate_groups for i in group}
        eligible = [e for e in self.events
                    if e.event_type is not EventType.PLANNED_OPERATION and e.event_id not in in_groups]
        for original in self.rng.sample(eligible, len(eligible)):
            if copies <= 0:
                break
            chain = [original]
            for _ in range(min(copies, 2 if self.rng.random() < 0.2 else 1)):
                chain.append(self._resend(chain[-1], corrected=self.rng.random() < 0.5))
            copies -= len(chain) - 1
            self.events.extend(chain[1:])
            self.resubmissions.append([e.event_id for e in chain])

    def _resend(self, previous: CaseEvent, corrected: bool) -> CaseEvent:
        data = previous.model_dump()
        data["event_id"] = self._uuid()
        data["report_time"] = self._after(previous.report_time, 600, 3 * DAY)
        if corrected:
            data["record_version"] += 1
            self._correct(previous, data["payload"])
        return CaseEvent.model_validate(data)

    def _correct(self, previous: CaseEvent, payload: dict[str, Any]) -> None:
        rng = self.rng
        match previous.event_type:
            case EventType.SEIZURE if payload["drugs"]:
                drug = payload["drugs"][0]
                if weight := drug["net_weight"]:
                    weight["value"] = max(0.01, round(weight["value"] * rng.uniform(0.95, 1.05), 2))
                else:
                    drug["pill_count"] = max(1, round(drug["pill_count"] * rng.uniform(0.95, 1.05)))
            case EventType.SEIZURE:
                payload["nii_scan"] = not payload["nii_scan"]
            case EventType.ARREST:
                charged = {c["statute"] for c in payload["charges"]}
                added = [c for c in self._charges(previous.source_agency, 3) if c["statute"] not in charged]
                payload["charges"].extend(added[:1])
            case EventType.CASE_OPENED | EventType.CASE_UPDATED | EventType.CASE_CLOSED:
                payload["lead_investigator"] = self._contact(previous.source_agency)
            case EventType.INDICTMENT:
                payload["defendant_count"] += rng.randint(1, 3)  # superseding indictment
            case EventType.LAB_RESULT:
                payload["purity"] = round(min(1.0, payload["purity"] * rng.uniform(0.9, 1.1)), 3)
                payload["method"] = "GC-MS (confirmatory)"

    def _correlations(self) -> list[dict[str, Any]]:
        """Every identifier found in records of two or more agencies, in order of first report."""
        seen: dict[tuple[IdentifierScheme, str], list[CaseEvent]] = defaultdict(list)
        issuers: dict[tuple[IdentifierScheme, str], str | None] = {}
        for event in self.events:
            found = {(i.scheme, i.value): i.issuer for entity in event.entities for i in entity.identifiers}
            for key in sorted(found):
                seen[key].append(event)
                issuers[key] = found[key]
        correlations = []
        for (scheme, value), events in seen.items():
            agencies = sorted({e.agency_ori for e in events})
            if len(agencies) >= 2:
                correlations.append({"scheme": scheme.value, "value": value, "issuer": issuers[scheme, value],
                                     "event_ids": [e.event_id for e in events], "agencies": agencies})
        return correlations

    # -- planted stories -------------------------------------------------------------------------
    def _duplicate_story(self) -> _Story | None:
        """One seizure reported by the seizing agency and by its HSI and/or state partners."""
        if not self.roster.duplicate_reporters:
            return None
        agency, partners = self.rng.choice(self.roster.duplicate_reporters)
        seizure = self._new_seizure(agency, drugs_required=True)
        if seizure is None:
            return None
        hsi = next((p for p in partners if self.roster.kind[p.ori] == "hsi"), None)
        primary = self._seizure_report(agency, seizure, turned_over_to=hsi, offset_s=self._spread())
        if len(partners) > 1 and self.rng.random() < 0.5:
            reporters = partners
        else:
            reporters = [self.rng.choice(partners)]
        members = [primary] + [self._partner_report(p, seizure, primary) for p in reporters]
        follow_ups = []
        if self.roster.kind[agency.ori] == "cbp" and seizure.haul[0][0].drug_type in _LAB_TESTED:
            follow_ups.append(self._lab(agency, primary, seizure, LaboratoryKind.FORWARD_OPERATING))
        if hsi in reporters and self.rng.random() < 0.5:
            follow_ups.append(self._turnover_arrest(hsi, primary, seizure))
        return _Story(members + follow_ups, duplicates=members)

    def _partner_report(self, partner: Agency, seizure: _Seizure, primary: CaseEvent) -> CaseEvent:
        """A partner's own record of a seizure it took part in: its units, its clock, often citing SEACATS."""
        from_hsi = self.roster.kind[partner.ori] == "hsi"
        shown = {_K.PERSON, _K.VEHICLE, _K.PHONE} if from_hsi else {_K.PERSON, _K.VEHICLE}
        cast = [e for e in seizure.cast if e["kind"] in shown]
        if not from_hsi:
            cast = [_plate_only(e) if e["kind"] is _K.VEHICLE and self.rng.random() < 0.5 else e for e in cast]
        lat, lon = _move(seizure.latitude, seizure.longitude, self.rng.uniform(0, PARTNER_SCATTER_KM),
                         self.rng.uniform(0, 2 * math.pi))
        location = self._location(seizure.place, lat, lon, with_port=from_hsi or self.rng.random() < 0.5,
                                  description=f"Assist at {seizure.place.label}")
        cites = [_reference(primary)] if self.rng.random() < (0.8 if from_hsi else 0.5) else []
        return self._seizure_report(partner, seizure, offset_s=self._spread(), cast=cast, location=location,
                                    references=cites, factor=self.rng.uniform(0.96, 1.04),
                                    delay=(2 * HOUR, 3 * DAY))

    def _correlation_story(self) -> _Story | None:
        """The same phone, vehicle, person, press, organization or address in records of 2-3 agencies."""
        agencies = self.roster.agencies
        if len(agencies) < 2:
            return None
        kind = self.rng.choices(_SHARED_KINDS, cum_weights=_SHARED_CUM)[0]
        parties = self.rng.sample(agencies, 3 if len(agencies) >= 3 and self.rng.random() < 0.25 else 2)
        entity = self._entity(kind, self.roster.places[parties[0].ori].pick(self.rng))
        when = self._when()
        events = []
        for index, agency in enumerate(parties):
            shown = _plate_only(entity) if kind is _K.VEHICLE and index and self.rng.random() < 0.5 else entity
            if event := self._carrier(agency, when, shown):
                events.append(event)
            when = self._after(when, DAY, 45 * DAY)
        return _Story(events)

    def _carrier(self, agency: Agency, when: datetime, shared: Entity) -> CaseEvent | None:
        """A record of ``agency``'s usual kind that mentions ``shared``."""
        kind = self.roster.kind[agency.ori]
        if kind in ("cbp", "usbp"):
            seizure = self._new_seizure(agency, near=when, shared=[shared])
            return seizure and self._seizure_report(agency, seizure)
        if kind in ("hsi", "dea"):
            place = self.roster.places[agency.ori].pick(self.rng)
            cast = [shared] if shared["kind"] is _K.PERSON else [shared, self._entity(_K.PERSON, place)]
            case_number = self._case_number(agency, when)
            intelligence = self._intelligence(when) if self.rng.random() < 0.4 else None
            handling = self._handling(agency, (CuiCategory.SP_INV,), intelligence)
            return self._case(EventType.CASE_OPENED, agency, case_number, self._case_title(cast, place), when,
                              place, cast, handling)
        return self._arrest_at(agency, when, [shared])

    def _conflict_story(self) -> _Story | None:
        """Two agencies plan operations within ~250 m with overlapping windows."""
        operators = self.roster.group("hsi", "dea", "state", "local")
        if len(operators) < 2:
            return None
        first = self.rng.choice(operators)
        others = [a for a in operators if a.ori != first.ori]
        nearby = [a for a in others if self.roster.region[a.ori] in (self.roster.region[first.ori], None)]
        second = self.rng.choice(nearby or others)
        spot = self._clear_spot(first)
        if spot is None:
            return None
        planned = self._operation(first, spot)
        place, lat, lon, _ = spot
        window = planned.payload.ends_at - planned.payload.starts_at
        lat, lon = _move(lat, lon, self.rng.uniform(*CONFLICT_DISTANCE_KM), self.rng.uniform(0, 2 * math.pi))
        starts = planned.payload.starts_at + timedelta(
            seconds=self.rng.randint(-HOUR, int(window.total_seconds()) - HOUR // 2))
        rival = self._operation(second, (place, lat, lon, starts))
        return _Story([planned, rival], conflict=(planned, rival))

    # -- background stories ----------------------------------------------------------------------
    def _port_story(self) -> _Story | None:
        """CBP seizure at a port; fentanyl goes to a Forward Operating Lab; some subjects go to HSI."""
        agency = self.rng.choices(self.roster.port_authorities, cum_weights=self.roster.port_cum)[0]
        seizure = self._new_seizure(agency)
        if seizure is None:
            return None
        has_subject = any(e["kind"] is _K.PERSON for e in seizure.cast)
        hsi = self.roster.partner(agency, "hsi") if has_subject and self.rng.random() < 0.4 else None
        report = self._seizure_report(agency, seizure, turned_over_to=hsi)
        events = [report]
        tested = seizure.haul and seizure.haul[0][0].drug_type in _LAB_TESTED
        if seizure.haul and self.rng.random() < (0.6 if tested else 0.1):
            events.append(self._lab(agency, report, seizure, LaboratoryKind.FORWARD_OPERATING))
        if hsi:
            events.append(self._turnover_arrest(hsi, report, seizure))
            if self.rng.random() < 0.35:
                events.append(self._turnover_case(hsi, report, seizure))
            state = self.roster.partner(agency, "state")
            if state and self.rng.random() < 0.3:
                events.append(self._booking(state, report, seizure))
        return _Story(events)

    def _border_patrol_story(self) -> _Story | None:
        agency = self.rng.choice(self.roster.by_kind["usbp"])
        seizure = self._new_seizure(agency)
        if seizure is None:
            return None
        hsi = self.roster.partner(agency, "hsi")
        hsi = hsi if hsi and any(e["kind"] is _K.PERSON for e in seizure.cast) and self.rng.random() < 0.3 else None
        report = self._seizure_report(agency, seizure, turned_over_to=hsi)
        return _Story([report] + ([self._turnover_arrest(hsi, report, seizure)] if hsi else []))

    def _interdiction_story(self) -> _Story | None:
        """State highway interdiction: seizure, arrest of the driver, sometimes a state lab result."""
        agency = self.rng.choice(self.roster.by_kind["state"])
        seizure = self._new_seizure(agency)
        if seizure is None:
            return None
        report = self._seizure_report(agency, seizure)
        events = [report]
        if any(e["kind"] is _K.PERSON for e in seizure.cast) and self.rng.random() < 0.8:
            events.append(self._local_arrest(agency, report, seizure))
        if seizure.haul and self.rng.random() < 0.2:
            events.append(self._lab(agency, report, seizure, LaboratoryKind.STATE_LAB))
        return _Story(events)

    def _local_story(self) -> _Story | None:
        """Sheriff or tribal police: an arrest, often with a small seizure in the same incident."""
        agency = self.rng.choice(self.roster.by_kind["local"])
        if self.rng.random() < 0.5:
            return _Story([self._arrest_at(agency, self._when(), [])])
        seizure = self._new_seizure(agency)
        if seizure is None:
            return None
        report = self._seizure_report(agency, seizure)
        if any(e["kind"] is _K.PERSON for e in seizure.cast):
            return _Story([report, self._local_arrest(agency, report, seizure)])
        return _Story([report])

    def _dea_story(self) -> _Story | None:
        """DEA buy-bust: seizure, arrest, DEA laboratory result days later."""
        agency = self.rng.choice(self.roster.by_kind["dea"])
        seizure = self._new_seizure(agency)
        if seizure is None:
            return None
        report = self._seizure_report(agency, seizure)
        events = [report]
        if any(e["kind"] is _K.PERSON for e in seizure.cast):
            events.append(self._local_arrest(agency, report, seizure))
        if seizure.haul and self.rng.random() < 0.6:
            events.append(self._lab(agency, report, seizure, LaboratoryKind.DEA_LAB))
        return _Story(events)

    def _foreign_story(self) -> _Story | None:
        agency = self.rng.choice(self.roster.by_kind["foreign"])
        seizure = self._new_seizure(agency)
        if seizure is None:
            return None
        report = self._seizure_report(agency, seizure)
        if any(e["kind"] is _K.PERSON for e in seizure.cast) and self.rng.random() < 0.5:
            return _Story([report, self._local_arrest(agency, report, seizure)])
        return _Story([report])

    def _operation_story(self) -> _Story | None:
        agency = self.rng.choice(self.roster.group("hsi", "dea", "state", "local"))
        spot = self._clear_spot(agency)
        return spot and _Story([self._operation(agency, spot)])

    def _investigation_story(self) -> _Story:
        """A case from opening through updates, maybe an indictment, maybe closing."""
        rng = self.rng
        agency = rng.choice(self.roster.group("hsi", "dea", "state"))
        federal = self.roster.kind[agency.ori] != "state"
        place = self.roster.places[agency.ori].pick(rng)
        when = self._when()
        case_number = self._case_number(agency, when)
        cast = [self._entity(_K.PERSON, place) for _ in range(rng.randint(1, 3))]
        for kind, chance in ((_K.PHONE, 0.6), (_K.ORGANIZATION, 0.35 if federal else 0.1), (_K.ADDRESS, 0.4),
                             (_K.VEHICLE, 0.2)):
            if rng.random() < chance:
                cast.append(self._entity(kind, place))
        intelligence = self._intelligence(when) if federal and rng.random() < 0.2 else None
        handling = self._handling(agency, (CuiCategory.SP_INV,), intelligence)
        title = self._case_title(cast, place)
        events = [self._case(EventType.CASE_OPENED, agency, case_number, title, when, place, cast, handling)]
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            when = self._after(when, 5 * DAY, 40 * DAY)
            if rng.random() < 0.4:
                cast = cast + [self._entity(rng.choice((_K.PHONE, _K.PERSON, _K.VEHICLE)), place)]
            events.append(self._case(EventType.CASE_UPDATED, agency, case_number, title, when, place, cast, handling))
        if federal and rng.random() < 0.25:
            when = self._after(when, 20 * DAY, 120 * DAY)
            events.append(self._indictment(agency, case_number, when, place, cast, handling))
        if rng.random() < 0.4:
            when = self._after(when, 30 * DAY, 200 * DAY)
            events.append(self._case(EventType.CASE_CLOSED, agency, case_number, title, when, place, cast, handling,
                                     disposition=rng.choice(_DISPOSITIONS)))
        return _Story(events)

    # -- seizures --------------------------------------------------------------------------------
    def _new_seizure(self, agency: Agency, *, near: datetime | None = None, shared: Sequence[Entity] = (),
                     drugs_required: bool = False) -> _Seizure | None:
        """A seizure by ``agency`` at one of its places, in a slot no unrelated same-drug seizure is near."""
        rng, kind = self.rng, self.roster.kind[agency.ori]
        picker = self.roster.places[agency.ori]
        shared_press = any(e["kind"] is _K.PILL_PRESS for e in shared)
        with_presses = shared_press or rng.random() < 0.03
        for attempt in range(PLACEMENT_TRIES):
            place = picker.pick(rng)
            when = near + timedelta(hours=6 * attempt) if near else self._when()
            haul = [] if with_presses and not drugs_required and rng.random() < 0.3 else self._haul(kind)
            if self._claim_seizure(place, haul, when):
                break
        else:
            return None
        lat, lon = place.latitude, place.longitude
        if not place.port:
            lat, lon = self._scatter(place, INLAND_SCATTER_KM)
        conveyance = self._conveyance(place, needs_vehicle=any(e["kind"] is _K.VEHICLE for e in shared))
        methods = _CONCEALMENT[conveyance]
        concealment = rng.sample(methods, 2 if len(methods) > 2 and rng.random() < 0.2 else 1)
        cast = self._seizure_cast(place, conveyance, shared)
        if with_presses and not shared_press:
            cast += [self._entity(_K.PILL_PRESS, place) for _ in range(rng.choice((1, 1, 2, 3)))]
        presses = [{"serial_number": e["identifiers"][0]["value"], "model": e["display_name"].split()[0]}
                   for e in cast if e["kind"] is _K.PILL_PRESS]
        if with_presses and rng.random() < 0.25:
            presses.append({"model": rng.choice(_PRESS_MODELS)})  # serial number ground off
        fentanyl = any(p.drug_type in FENTANYL_TYPES for p, _ in haul)
        operation = None
        if place.port and fentanyl and rng.random() < 0.45:
            apollo = PORTS_OF_ENTRY[place.port].field_office in ("SAN_DIEGO", "TUCSON") and rng.random() < 0.55
            operation = "Operation Apollo" if apollo else "Operation Blue Lotus"
        nii = conveyance in (_C.COMMERCIAL_TRUCK, _C.RAIL) and rng.random() < 0.6 or (
            bool(place.port) and conveyance is _C.PASSENGER_VEHICLE and rng.random() < 0.25)
        return _Seizure(place, lat, lon, when, haul, conveyance, concealment, nii, operation, cast, presses)

    def _claim_seizure(self, place: _Place, haul: Haul, when: datetime) -> bool:
        area, slot = _AREA[place.label], int((when - self.start).total_seconds() // SEIZURE_SLOT_S)
        drugs = [p.drug_type for p, _ in haul]
        reach = range(slot - SEIZURE_SLOT_REACH, slot + SEIZURE_SLOT_REACH + 1)
        if any((area, drug, s) in self.seizure_slots for drug in drugs for s in reach):
            return False
        self.seizure_slots.update((area, drug, slot) for drug in drugs)
        return True

    def _haul(self, kind: str) -> Haul:
        rng = self.rng
        profiles = [rng.choices(_DRUGS, cum_weights=_DRUG_CUM)[0]]
        if rng.random() < 0.08:
            second = rng.choices(_DRUGS, cum_weights=_DRUG_CUM)[0]
            if second.drug_type is not profiles[0].drug_type:
                profiles.append(second)
        haul = []
        for profile in profiles:
            amount = profile.median * _SEIZURE_SCALE[kind] * math.exp(profile.spread * rng.gauss(0, 1))
            pills = profile.form is DrugForm.PILLS
            haul.append((profile, max(5, round(amount)) if pills else round(min(max(amount, 0.05), 20_000), 2)))
        return haul

    def _conveyance(self, place: _Place, needs_vehicle: bool) -> ConveyanceType:
        if needs_vehicle:
            return _C.PASSENGER_VEHICLE
        table = {"port": _PORT_CONVEYANCES, "city": _CITY_CONVEYANCES}.get(place.kind, _ROAD_CONVEYANCES)
        return _weighted(self.rng, table)

    def _seizure_cast(self, place: _Place, conveyance: ConveyanceType, shared: Sequence[Entity]) -> list[Entity]:
        wanted = [_K.ADDRESS] if conveyance in (_C.MAIL, _C.EXPRESS_CONSIGNMENT) else [_K.PERSON]
        if conveyance in _VEHICLES:
            wanted.append(_K.VEHICLE)
        if _K.PERSON in wanted and self.rng.random() < 0.5:
            wanted.append(_K.PHONE)
        have = {e["kind"] for e in shared}
        return list(shared) + [self._entity(kind, place) for kind in wanted if kind not in have]

    def _seizure_report(self, agency: Agency, seizure: _Seizure, *, offset_s: int = 0, cast: list[Entity] | None = None,
                        location: dict[str, Any] | None = None, references: Sequence[dict[str, str]] = (),
                        turned_over_to: Agency | None = None, factor: float = 1.0,
                        delay: tuple[int, int] = (20 * 60, 8 * HOUR)) -> CaseEvent:
        """``agency``'s record of ``seizure``; the seizing agency of a port or checkpoint files it in SEACATS."""
        rng, kind = self.rng, self.roster.kind[agency.ori]
        when = seizure.when + timedelta(seconds=offset_s)
        seacats = kind in ("cbp", "usbp")
        number = self._seacats_number(seizure.place, when) if seacats else self._number(agency, "SZ", when)
        cast = seizure.cast if cast is None else cast
        roles = _SEIZURE_ROLES if seizure.by_vehicle else _ARREST_ROLES
        if location is None:
            description = seizure.place.label
            if _M.COMMINGLED_WITH_CARGO in seizure.concealment:
                description += f", commingled with a load of {rng.choice(_PRODUCE)}"
            location = self._location(seizure.place, seizure.latitude, seizure.longitude, description=description)
        payload = {
            "seizure_number": number, "drugs": self._drugs(seizure.haul, kind, factor),
            "pill_presses": seizure.presses, "conveyance": seizure.conveyance, "concealment": seizure.concealment,
            "operation_name": seizure.operation_name, "nii_scan": seizure.nii_scan,
            "turned_over_to": turned_over_to.ori if turned_over_to else None,
        }
        cui = (CuiCategory.SP_SUB,) if rng.random() < 0.7 else (CuiCategory.SP_SUB, CuiCategory.SP_INV)
        return self._event(EventType.SEIZURE, agency, number, when, self._after(when, *delay), location, payload,
                           entities=[_role_of(e, roles) for e in cast], references=references,
                           handling=self._handling(agency, cui))

    def _drugs(self, haul: Haul, kind: str, factor: float) -> list[dict[str, Any]]:
        """The haul in this agency's units; ``factor`` models a partner's own weighing."""
        drugs = []
        for profile, amount in haul:
            drug: dict[str, Any] = {"drug_type": profile.drug_type, "form": profile.form}
            if profile.form is DrugForm.PILLS:
                drug["pill_count"] = max(1, round(amount * factor))
                if self.rng.random() < 0.5:
                    drug["net_weight"] = self._weight(amount * PILL_WEIGHT_LB * factor, kind)
            else:
                drug["net_weight"] = self._weight(amount * factor, kind)
            drugs.append(drug)
        return drugs

    @staticmethod
    def _weight(pounds: float, kind: str) -> dict[str, Any]:
        unit = _WEIGHT_UNIT[kind]
        if unit is WeightUnit.LB and pounds < 1 and kind in ("state", "local"):
            unit = WeightUnit.G
        value = pounds * MG_PER_UNIT["LB"] / MG_PER_UNIT[unit]
        return {"value": max(0.01, round(value, 1 if unit is WeightUnit.G else 2)), "unit": unit}

    def _lab(self, agency: Agency, seizure_event: CaseEvent, seizure: _Seizure, kind: LaboratoryKind) -> CaseEvent:
        """A laboratory result on the seizure's first drug, reported after the seizure itself."""
        rng = self.rng
        profile, amount = seizure.haul[0]
        quick = kind is LaboratoryKind.FORWARD_OPERATING
        tested = self._after(seizure_event.event_time, 2 * HOUR, 3 * DAY) if quick else \
            self._after(seizure_event.event_time, 3 * DAY, 30 * DAY)
        tested = max(tested, self._after(seizure_event.report_time, 300, HOUR))
        if quick:
            laboratory = f"CBP Forward Operating Laboratory, {seizure.place.name}"
        elif kind is LaboratoryKind.DEA_LAB:
            laboratory = rng.choice(_DEA_LABS)
        else:
            laboratory = _STATE_LABS.get(seizure.place.region, "State crime laboratory")
        pounds = amount * PILL_WEIGHT_LB if profile.form is DrugForm.PILLS else amount
        payload = {
            "laboratory": laboratory, "laboratory_kind": kind, "seizure_number": seizure_event.payload.seizure_number,
            "seizure_event_id": seizure_event.event_id, "drug_type": profile.drug_type,
            "purity": round(rng.betavariate(*profile.purity), 3),
            "net_weight": {"value": max(0.01, round(pounds / LB_PER_KG * rng.uniform(0.97, 1.0), 3)), "unit": "KG"}
            if rng.random() < 0.5 else None,
            "method": rng.choice(_FIELD_METHODS if quick else _LAB_METHODS),
        }
        number = self._number(agency, "LAB", tested)
        return self._event(EventType.LAB_RESULT, agency, number, tested, self._after(tested, 600, 6 * HOUR),
                           seizure_event.location, payload, references=[_reference(seizure_event)],
                           handling=self._handling(agency, (CuiCategory.SP_SUB,)), system=LAB_SYSTEM)

    # -- arrests, cases, indictments, operations -------------------------------------------------
    def _turnover_arrest(self, hsi: Agency, seizure_event: CaseEvent, seizure: _Seizure) -> CaseEvent:
        """HSI takes the subject of a CBP or Border Patrol seizure and cites its seizure number."""
        when = self._after(seizure_event.event_time, HOUR, 6 * HOUR)
        cast = [e for e in seizure.cast if e["kind"] in (_K.PERSON, _K.PHONE)]
        payload = {"charges": self._charges(hsi, self.rng.randint(1, 2)),
                   "related_seizure_number": seizure_event.payload.seizure_number}
        return self._arrest(hsi, when, seizure_event.location, cast, payload, [_reference(seizure_event)])

    def _booking(self, state: Agency, seizure_event: CaseEvent, seizure: _Seizure) -> CaseEvent:
        """A state partner books the subject of a CBP seizure on state charges."""
        when = self._after(seizure_event.event_time, 2 * HOUR, 8 * HOUR)
        cast = [e for e in seizure.cast if e["kind"] is _K.PERSON]
        payload = {"booking_number": self._number(state, "BK", when), "charges": self._charges(state, 1),
                   "related_seizure_number": seizure_event.payload.seizure_number}
        return self._arrest(state, when, seizure_event.location, cast, payload, [_reference(seizure_event)])

    def _local_arrest(self, agency: Agency, seizure_event: CaseEvent, seizure: _Seizure) -> CaseEvent:
        """The arresting agency's own arrest of the subject of its seizure."""
        when = self._after(seizure_event.event_time, 600, 2 * HOUR)
        cast = [e for e in seizure.cast if e["kind"] in (_K.PERSON, _K.PHONE, _K.VEHICLE)]
        payload = {"booking_number": self._number(agency, "BK", when),
                   "charges": self._charges(agency, self.rng.randint(1, 2)),
                   "related_seizure_number": seizure_event.payload.seizure_number}
        return self._arrest(agency, when, seizure_event.location, cast, payload)

    def _arrest_at(self, agency: Agency, when: datetime, shared: Sequence[Entity]) -> CaseEvent:
        """A stand-alone arrest (patrol stop, warrant service) at one of the agency's places."""
        rng = self.rng
        place = self.roster.places[agency.ori].pick(rng)
        lat, lon = self._scatter(place, INLAND_SCATTER_KM)
        have = {e["kind"] for e in shared}
        wanted = [_K.PERSON] + [k for k, chance in ((_K.VEHICLE, 0.4), (_K.PHONE, 0.4)) if rng.random() < chance]
        cast = list(shared) + [self._entity(k, place) for k in wanted if k not in have]
        payload = {"booking_number": self._number(agency, "BK", when),
                   "charges": self._charges(agency, rng.randint(1, 2))}
        return self._arrest(agency, when, self._location(place, lat, lon), cast, payload)

    def _arrest(self, agency: Agency, when: datetime, location: Any, cast: list[Entity], payload: dict[str, Any],
                references: Sequence[dict[str, str]] = ()) -> CaseEvent:
        cui = (CuiCategory.SP_INV, CuiCategory.SP_CHRI) if self.rng.random() < 0.3 else (CuiCategory.SP_INV,)
        return self._event(EventType.ARREST, agency, self._number(agency, "ARR", when), when,
                           self._after(when, HOUR, DAY), location, payload,
                           entities=[_role_of(e, _ARREST_ROLES) for e in cast], references=references,
                           handling=self._handling(agency, cui))

    def _turnover_case(self, hsi: Agency, seizure_event: CaseEvent, seizure: _Seizure) -> CaseEvent:
        when = self._after(seizure_event.event_time, DAY, 10 * DAY)
        case_number = self._case_number(hsi, when)
        drug = seizure.haul[0][0].drug_type.value.lower().replace("_", " ") if seizure.haul else "pill press"
        title = f"Importation of {drug} through {seizure.place.label}"
        cast = [e for e in seizure.cast if e["kind"] in (_K.PERSON, _K.PHONE, _K.VEHICLE)]
        return self._case(EventType.CASE_OPENED, hsi, case_number, title, when, seizure.place, cast,
                          self._handling(hsi, (CuiCategory.SP_INV,)), references=[_reference(seizure_event)],
                          location=seizure_event.location)

    def _case(self, event_type: EventType, agency: Agency, case_number: str, title: str, when: datetime,
              place: _Place, cast: list[Entity], handling: Handling | dict[str, Any], *,
              disposition: str | None = None, references: Sequence[dict[str, str]] = (),
              location: Any = None) -> CaseEvent:
        """One report on a case: each report is its own record (case number + report sequence)."""
        record = f"{case_number}-{self._serial(agency.ori, case_number):03d}"
        payload = {"case_number": case_number, "title": title, "lead_investigator": self._contact(agency),
                   "disposition": disposition}
        if location is None:
            location = self._location(place, place.latitude, place.longitude)
        return self._event(event_type, agency, record, when, self._after(when, HOUR, 3 * DAY), location, payload,
                           entities=[_role_of(e, _CASE_ROLES) for e in cast], references=references,
                           handling=handling)

    def _indictment(self, agency: Agency, case_number: str, when: datetime, place: _Place, cast: list[Entity],
                    handling: Handling | dict[str, Any]) -> CaseEvent:
        """A grand-jury indictment; a few are large cartel-linked networks (dozens of defendants)."""
        rng = self.rng
        persons = [e for e in cast if e["kind"] is _K.PERSON]
        network = rng.random() < 0.05
        defendants = rng.randint(20, 60) if network else max(len(persons), rng.randint(1, 12))
        named = persons + [self._entity(_K.PERSON, place) for _ in range(min(defendants, 10) - len(persons))]
        others = [e for e in cast if e["kind"] is _K.ORGANIZATION]
        court, division = rng.choice(_FEDERAL_COURTS.get(place.state or "", _FEDERAL_COURTS["TX"]))
        payload = {
            "case_number": case_number, "court": court,
            "docket_number": f"{division}:{when:%y}-cr-{self._serial('docket', court):05d}",
            "filed_on": when.date(), "defendant_count": defendants,
            "charges": self._charges(agency, rng.randint(2, 4)),
            "organization": "Sinaloa Cartel" if network else rng.choice((None, None) + _CARTELS),
        }
        return self._event(EventType.INDICTMENT, agency, self._number(agency, "IND", when), when,
                           self._after(when, HOUR, 2 * DAY), self._location(place, place.latitude, place.longitude),
                           payload, entities=[_role_of(e, _ARREST_ROLES) for e in named + others], handling=handling)

    def _clear_spot(self, agency: Agency) -> tuple[_Place, float, float, datetime] | None:
        """Place, point and start of an operation clear of every planned one (for the longest window)."""
        for _ in range(PLACEMENT_TRIES):
            place = self.roster.places[agency.ori].pick(self.rng)
            lat, lon = self._scatter(place, OPERATION_SCATTER_KM)
            starts = self._when()
            if self._operation_clear(lat, lon, starts, starts + OPERATION_MAX_LENGTH):
                return place, lat, lon, starts
        return None

    def _operation(self, agency: Agency, spot: tuple[_Place, float, float, datetime]) -> CaseEvent:
        """A planned operation at ``spot``, registered so later operations keep clear of it."""
        rng = self.rng
        place, lat, lon, starts = spot
        kind = _weighted(rng, ((OperationKind.SEARCH_WARRANT, 0.25), (OperationKind.CONTROLLED_BUY, 0.2),
                               (OperationKind.SURVEILLANCE, 0.25), (OperationKind.RAID, 0.1),
                               (OperationKind.BUY_BUST, 0.1), (OperationKind.UNDERCOVER_MEETING, 0.1)))
        longest = OPERATION_MAX_LENGTH if kind is OperationKind.SURVEILLANCE else OPERATION_MAX_LENGTH * 0.6
        ends = starts + timedelta(seconds=rng.randint(2 * HOUR, int(longest.total_seconds())))
        self.operations[(int(lat // 0.05), int(lon // 0.05))].append((lat, lon, starts, ends))
        cast = [self._entity(k, place) for k, chance in ((_K.PERSON, 0.7), (_K.ADDRESS, 0.7), (_K.VEHICLE, 0.25))
                if rng.random() < chance]
        reported = starts - timedelta(seconds=rng.randint(2 * HOUR, 5 * DAY))
        intelligence = None
        if self.roster.kind[agency.ori] in ("hsi", "dea") and rng.random() < 0.15:
            intelligence = self._intelligence(reported)
        payload = {
            "operation_kind": kind,
            "operation_name": f"Operation {rng.choice(_CODENAMES[0]).title()} {rng.choice(_CODENAMES[1]).title()}"
            if rng.random() < 0.4 else None,
            "starts_at": starts, "ends_at": ends,
            "radius_m": round(rng.uniform(300, 1500) if kind is OperationKind.SURVEILLANCE else rng.uniform(100, 300)),
            "case_number": self._case_number(agency, starts) if rng.random() < 0.6 else None,
            "on_scene_contact": self._contact(agency),
        }
        location = self._location(place, lat, lon, with_port=False,
                                  description=f"{kind.value.replace('_', ' ').title()} near {place.label}")
        return self._event(EventType.PLANNED_OPERATION, agency, self._number(agency, "OP", starts), starts, reported,
                           location, payload, entities=[_role_of(e, _CASE_ROLES) for e in cast],
                           handling=self._handling(agency, (CuiCategory.SP_INV,), intelligence))

    def _operation_clear(self, lat: float, lon: float, starts: datetime, ends: datetime) -> bool:
        row, col = int(lat // 0.05), int(lon // 0.05)
        for cell in ((row + dr, col + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)):
            for other_lat, other_lon, other_start, other_end in self.operations.get(cell, ()):
                if (starts < other_end + OPERATION_CLEARANCE and other_start < ends + OPERATION_CLEARANCE
                        and distance_km(lat, lon, other_lat, other_lon) < OPERATION_CLEARANCE_KM):
                    return False
        return True

    # -- entities --------------------------------------------------------------------------------
    def _entity(self, kind: EntityKind, place: _Place) -> Entity:
        """A new real-world entity near ``place`` whose identifiers no other entity has."""
        make = {_K.PERSON: self._person, _K.VEHICLE: self._vehicle, _K.PHONE: self._phone,
                _K.ADDRESS: self._address, _K.ORGANIZATION: self._organization, _K.PILL_PRESS: self._pill_press}
        return make[kind](place)

    def _fresh(self, scheme: IdentifierScheme, make: Callable[[], str]) -> str:
        for _ in range(100):
            value = make()
            if (scheme, value) not in self.taken:
                self.taken.add((scheme, value))
                return value
        raise RuntimeError(f"ran out of distinct {scheme.value} values")

    def _person(self, place: _Place) -> Entity:
        rng = self.rng
        spanish = place.region.startswith("MX") or rng.random() < 0.7

        def make() -> str:
            family = f"{rng.choice(_SURNAMES_ES)} {rng.choice(_SURNAMES_ES)}" if spanish else rng.choice(_SURNAMES_EN)
            born = datetime(1960, 1, 1) + timedelta(days=rng.randrange(47 * 365))
            return f"{family}, {rng.choice(_GIVEN_ES if spanish else _GIVEN_EN)}|{born:%Y-%m-%d}"

        value = self._fresh(IdentifierScheme.PERSON_NAME_DOB, make)
        family, given = value.split("|")[0].split(", ")
        return {"kind": _K.PERSON, "identifiers": [{"scheme": IdentifierScheme.PERSON_NAME_DOB, "value": value}],
                "display_name": f"{given} {family}".title()}

    def _phone(self, place: _Place) -> Entity:
        rng = self.rng
        region = place.region if place.region in _AREA_CODES else "TX"
        mexican = region.startswith("MX") or rng.random() < 0.2
        if mexican and not region.startswith("MX"):
            region = _MX_NEIGHBOUR.get(region, "MX-TAM")

        def make() -> str:
            area = rng.choice(_AREA_CODES[region])
            if mexican:
                return f"+52{area}{rng.randrange(10**7):07d}"
            return f"+1{area}{rng.randint(2, 9)}{rng.randrange(100):02d}{rng.randrange(10**4):04d}"

        value = self._fresh(IdentifierScheme.PHONE_E164, make)
        return {"kind": _K.PHONE, "identifiers": [{"scheme": IdentifierScheme.PHONE_E164, "value": value}],
                "display_name": "cell phone"}

    def _vehicle(self, place: _Place) -> Entity:
        rng = self.rng
        wmi, model = rng.choice(_MAKES)
        year = rng.randrange(len(_VIN_YEARS))

        def make_vin() -> str:
            body = (wmi + _draw(rng, _VIN_CHARS, 5) + "0" + _VIN_YEARS[year] + _draw(rng, _VIN_CHARS, 1)
                    + _draw(rng, _DIGITS, 6))
            return next(v for v in (body[:8] + c + body[9:] for c in "0123456789X") if vin_check_digit_ok(v))

        foreign_plate = place.region.startswith("MX") or (place.port is not None and rng.random() < 0.55)
        issuer = place.region if not foreign_plate else _MX_NEIGHBOUR.get(place.region, place.region)

        def make_plate() -> str:
            if issuer == "CA":
                return _draw(rng, _DIGITS, 1) + _draw(rng, _PLATE_LETTERS, 3) + _draw(rng, _DIGITS, 3)
            if issuer.startswith("MX"):
                return _draw(rng, _PLATE_LETTERS, 3) + _draw(rng, _DIGITS, 3) + _draw(rng, _PLATE_LETTERS, 1)
            return _draw(rng, _PLATE_LETTERS, 3) + _draw(rng, _DIGITS, 3 if issuer == "NM" else 4)

        vin = self._fresh(IdentifierScheme.VIN, make_vin)
        plate = self._fresh(IdentifierScheme.LICENSE_PLATE, make_plate)
        return {"kind": _K.VEHICLE, "display_name": f"{2013 + year} {model}", "identifiers": [
            {"scheme": IdentifierScheme.VIN, "value": vin},
            {"scheme": IdentifierScheme.LICENSE_PLATE, "value": plate, "issuer": issuer}]}

    def _address(self, place: _Place) -> Entity:
        rng = self.rng
        value = self._fresh(IdentifierScheme.STREET_ADDRESS, lambda: (
            f"{rng.randint(100, 19999)} {rng.choice(_STREETS)}, {place.name.upper()}, {place.region}"))
        return {"kind": _K.ADDRESS, "identifiers": [{"scheme": IdentifierScheme.STREET_ADDRESS, "value": value}],
                "display_name": "residence"}

    def _organization(self, place: _Place) -> Entity:
        """A trafficking cell: a unique name, an alias when one is free, and its cartel affiliation."""
        rng = self.rng
        scheme = IdentifierScheme.ORGANIZATION_NAME
        name = self._fresh(scheme, lambda: (
            f"{rng.choice(_SURNAMES_ES)} {rng.choice(_SURNAMES_ES)} {rng.choice(_ORG_SUFFIXES)}"))
        identifiers = [{"scheme": scheme, "value": name}]
        alias = f"LOS {name.split()[0]} DE {place.name.upper()}"
        if (scheme, alias) not in self.taken:
            self.taken.add((scheme, alias))
            identifiers.append({"scheme": scheme, "value": alias})
        cartel = rng.choice(_CARTELS + (None,))
        return {"kind": _K.ORGANIZATION, "identifiers": identifiers,
                "display_name": f"{name.title()} ({cartel}-linked)" if cartel else name.title()}

    def _pill_press(self, place: _Place) -> Entity:
        rng = self.rng
        model = rng.choice(_PRESS_MODELS)
        serial = self._fresh(IdentifierScheme.PILL_PRESS_SERIAL,
                             lambda: f"{model.replace('-', '')}-{rng.randint(2018, 2025)}{rng.randrange(10**6):06d}")
        return {"kind": _K.PILL_PRESS, "display_name": f"{model} tablet press",
                "identifiers": [{"scheme": IdentifierScheme.PILL_PRESS_SERIAL, "value": serial}]}

    # -- envelope pieces -------------------------------------------------------------------------
    def _event(self, event_type: EventType, agency: Agency, record_id: str, when: datetime, reported: datetime,
               location: Any, payload: dict[str, Any], *, handling: Handling | dict[str, Any],
               entities: Sequence[Entity] = (), references: Sequence[dict[str, str]] = (),
               system: str | None = None) -> CaseEvent:
        return CaseEvent.model_validate({
            "event_id": self._uuid(), "event_type": event_type, "source_agency": agency,
            "source_system": system or SAMPLE_SYSTEM[self.roster.kind[agency.ori]], "source_record_id": record_id,
            "record_version": 1, "event_time": when, "report_time": reported, "location": location,
            "handling": handling, "entities": list(entities), "record_references": list(references),
            "payload": payload,
        })

    def _handling(self, agency: Agency, cui: tuple[CuiCategory, ...],
                  intelligence: dict[str, Any] | None = None) -> Handling | dict[str, Any]:
        """Mostly WHITE, some GRAY, a few BLACK; AMBER or GREEN; shared instances where nothing is unique."""
        rng = self.rng
        roll = rng.random()
        level = (DisseminationLevel.WHITE if roll < 0.80 else
                 DisseminationLevel.GRAY if roll < 0.96 else DisseminationLevel.BLACK)
        tlp = TrafficLightProtocol.AMBER if intelligence or rng.random() < 0.6 else TrafficLightProtocol.GREEN
        foreign = self.roster.kind[agency.ori] == "foreign"
        no_foreign = agency.level is AgencyLevel.FEDERAL and rng.random() < 0.15
        releasable = ("US",) if level is DisseminationLevel.WHITE and tlp is TrafficLightProtocol.AMBER \
            and rng.random() < 0.1 else ()
        key = (level, tlp, () if foreign else cui, no_foreign, releasable)
        if intelligence:
            return {"dissemination": level, "tlp": tlp, "cui_categories": list(key[2]), "no_foreign": no_foreign,
                    "releasable_to": list(releasable), "intelligence": intelligence}
        if key not in self.handlings:
            self.handlings[key] = Handling(dissemination=level, tlp=tlp, cui_categories=list(key[2]),
                                           no_foreign=no_foreign, releasable_to=list(releasable))
        return self.handlings[key]

    def _intelligence(self, reported: datetime) -> dict[str, Any]:
        """28 CFR Part 23 marking: documented predicate, review within five years of reporting."""
        rng = self.rng
        return {"criminal_predicate": rng.choice(_PREDICATES), "sensitivity": rng.choice(list(Sensitivity)),
                "confidence": rng.choice(list(Confidence)),
                "control_official": f"Intelligence Unit Supervisor {rng.choice(_GIVEN_EN).title()} "
                                    f"{rng.choice(_SURNAMES_EN).title()}",
                "review_by": (reported + timedelta(days=rng.randint(365, 5 * 365))).date()}

    def _contact(self, agency: Agency) -> dict[str, Any]:
        rng = self.rng
        given, surname = rng.choice(_GIVEN_ES + _GIVEN_EN).title(), rng.choice(_SURNAMES_ES + _SURNAMES_EN).title()
        desk = agency.contact.telephone if agency.contact and agency.contact.telephone else "+12025550100"
        domain = agency.contact.email.split("@")[1] if agency.contact and agency.contact.email else "example.gov"
        return {"name": f"{_TITLES[self.roster.kind[agency.ori]]} {given} {surname}",
                "telephone": f"{desk[:-4]}{rng.randint(100, 199):04d}",
                "email": f"{given[0].lower()}.{surname.lower()}@{domain}"}

    def _charges(self, agency: Agency, n: int) -> list[dict[str, Any]]:
        kind = self.roster.kind[agency.ori]
        if agency.level is AgencyLevel.TRIBAL:
            table = _TRIBAL_CHARGES
        elif kind == "foreign":
            table = _MX_CHARGES
        elif kind in ("state", "local"):
            table = _STATE_CHARGES.get(self.roster.region[agency.ori] or "", _STATE_CHARGES["TX"])
        else:
            table = _FEDERAL_CHARGES
        picked = self.rng.sample(table, min(n, len(table)))
        return [{"statute": s, "description": d, "severity": v} for s, d, v in picked]

    def _case_title(self, cast: list[Entity], place: _Place) -> str:
        organization = next((e for e in cast if e["kind"] is _K.ORGANIZATION), None)
        if organization:
            return f"{organization['display_name']} trafficking network"
        activity = self.rng.choice(("Fentanyl pill distribution", "Methamphetamine distribution",
                                    "Cross-border smuggling cell", "Drug proceeds laundering"))
        return f"{activity}, {place.name}"

    def _location(self, place: _Place, lat: float, lon: float, *, with_port: bool = True,
                  description: str | None = None) -> dict[str, Any]:
        return {"port_of_entry": place.port if with_port else None, "state": place.state,
                "county_fips": place.county_fips, "latitude": lat, "longitude": lon,
                "description": description or place.label}

    def _scatter(self, place: _Place, max_km: float) -> tuple[float, float]:
        """A point uniformly within ``max_km`` of the place."""
        return _move(place.latitude, place.longitude, max_km * math.sqrt(self.rng.random()),
                     self.rng.uniform(0, 2 * math.pi))

    # -- numbers, ids, time ----------------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _serial(self, *key: str) -> int:
        self.serials[key] += 1
        return self.serials[key]

    def _number(self, agency: Agency, tag: str, when: datetime) -> str:
        return f"{tag}{when:%y}-{self._serial(agency.ori, tag):06d}"

    def _seacats_number(self, place: _Place, when: datetime) -> str:
        """FPF-style seizure number: fiscal year, 4-digit office code, sequence (illustrative codes)."""
        year, office = _fiscal_year(when), _OFFICE_CODE[place.label]
        return f"{year}{office}{self._serial('SEACATS', office, str(year)):06d}"

    def _case_number(self, agency: Agency, when: datetime) -> str:
        kind = self.roster.kind[agency.ori]
        serial = self._serial(agency.ori, "case")
        if kind == "hsi":
            words = agency.name.upper().replace("HSI", "").split() or [agency.ori[2:4]]
            office = "".join(w[0] for w in words)[:2] if len(words) > 1 else words[0][:2]
            return f"{office}02PR{when:%y}{office}{serial:04d}"
        if kind == "dea":
            return f"{self.rng.choice(_DEA_FILE_PREFIXES)}-{when:%y}-{serial:04d}"
        if kind == "foreign":
            return f"FED/{agency.ori[:2]}/{serial:07d}/{when.year}"
        return f"{agency.ori[2:5]}{when:%y}-{serial:06d}"

    def _when(self) -> datetime:
        return self.start + timedelta(seconds=self.rng.randrange(self.span_s))

    def _after(self, when: datetime, low_s: int, high_s: int) -> datetime:
        return when + timedelta(seconds=self.rng.randint(low_s, high_s))

    def _spread(self) -> int:
        return self.rng.randint(-DUPLICATE_SPREAD_S, DUPLICATE_SPREAD_S)

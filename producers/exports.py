"""Labelled agency exports: what agency systems really send, with the truth of which reports are one event.

This is the second, independent generator the record-linkage benchmark (``hub bench quality``) scores the hub
on. It shares nothing with :mod:`producers.sample` but the agency directory and the ports: its events are plain
dicts as an agency's system exports them (phones with punctuation, US dates, state names, dashed record numbers,
system-name variants, gross weights, pills counted by one agency and weighed by another, custody times hours after
the seizure, places given as a port, a geocode, a county, a state or the reporting office), and it plants the hard
negatives an analyst worries about: two seizures minutes and metres apart with different drivers and vehicles, a
follow-on seizure that cites the first, and look-alike identifiers (a phone one digit off, a name with another
birth date, a plate from another state).

Every event belongs to one real-world *incident*; the labels say which, which incidents share an entity (a TARGET
alert is due between their agencies), which only look alike (an alert would be false), and which planned
operations conflict (an EVENT alert is due).
"""

from __future__ import annotations

import copy
import math
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from producers.directory import load_agencies
from schemas.models import Agency, vin_check_digit_ok
from schemas.reference import PORTS_OF_ENTRY, PortOfEntry

KM_PER_DEGREE = 111.0
ACCENTS = str.maketrans({"a": "á", "e": "é", "i": "í", "o": "ó"})
LOCAL_OFFSETS = {"CA": -8, "AZ": -7, "NM": -7, "TX": -6}  # standard time
PILL_MG = 110.0  # a counterfeit M30 weighs about 0.1 g
STATE_NAMES = {"CA": "California", "AZ": "Arizona", "NM": "New Mexico", "TX": "Texas"}
AREA_CODES = {"CA": ("619", "760", "858"), "AZ": ("520", "928"), "NM": ("575", "505"), "TX": ("956", "915", "210")}
# Where each agency's office is: reports that give no place of their own give the office's.
OFFICES = {
    "CACBP0100": (32.7157, -117.1611, "CA"), "CAHSI0100": (32.7157, -117.1611, "CA"),
    "CA0370000": (32.7940, -116.9625, "CA"), "CACHP0000": (32.7920, -115.5630, "CA"),
    "AZCBP0100": (32.2226, -110.9747, "AZ"), "AZHSI0100": (31.3404, -110.9343, "AZ"),
    "AZDPS0000": (33.4484, -112.0740, "AZ"), "AZ0120000": (31.3557, -110.9384, "AZ"),
    "AZTON0000": (31.9543, -111.8929, "AZ"), "TXCBP0100": (27.5306, -99.4803, "TX"),
    "TXHSI0100": (27.5306, -99.4803, "TX"), "TXDPS0000": (27.5064, -99.5075, "TX"),
    "TXCBP0200": (31.7619, -106.4850, "TX"), "TXUSBP100": (26.1906, -98.1767, "TX"),
    "DCDEA0000": (31.7619, -106.4850, "TX"), "MXFGR0000": (32.5149, -117.0382, "CA"),
}
# Who works a port's seizures, by state: the seizing agency files it in SEACATS, partners in their own systems.
SEIZING = {"CA": "CACBP0100", "AZ": "AZCBP0100", "NM": "TXCBP0200", "TX": "TXCBP0100"}
PARTNERS = {"CA": ("CAHSI0100", "CA0370000", "CACHP0000", "MXFGR0000"),
            "AZ": ("AZHSI0100", "AZDPS0000", "AZ0120000", "AZTON0000"),
            "NM": ("DCDEA0000", "TXDPS0000"),
            "TX": ("TXHSI0100", "TXDPS0000", "TXUSBP100", "DCDEA0000")}
SYSTEMS = {"CBP": "SEACATS", "HSI": "ICM", "DEA": "DEA-CMS", "USB": "E3", "FGR": "SIIE"}
SEACATS_SPELLINGS = ("SEACATS", "Seacats", "CBP SEACATS", "seacats")
SURNAMES = ("GARCIA", "MARTINEZ", "HERNANDEZ", "LOPEZ", "GONZALEZ", "RODRIGUEZ", "PEREZ", "SANCHEZ", "RAMIREZ",
            "TORRES", "FLORES", "RIVERA", "GOMEZ", "DIAZ", "REYES", "MORALES", "CRUZ", "ORTIZ", "GUTIERREZ", "CHAVEZ",
            "RAMOS", "RUIZ", "ALVAREZ", "MENDOZA", "CASTILLO", "JIMENEZ", "MORENO", "ROMERO", "HERRERA", "MEDINA",
            "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "MILLER", "DAVIS", "WILSON", "ANDERSON", "TAYLOR")
GIVEN = ("JUAN", "JOSE", "LUIS", "CARLOS", "JESUS", "MIGUEL", "JORGE", "ANTONIO", "MARIA", "ANA", "ROSA", "LAURA",
         "DANIEL", "DAVID", "MICHAEL", "JAMES", "ROBERT", "JENNIFER", "JESSICA", "ASHLEY", "BRANDON", "KEVIN")
STREETS = ("Main St", "Zaragoza Ave", "Convent Ave", "Calle del Norte", "Mesa St", "Alameda Ave", "Mines Rd",
           "Palm Ave", "Imperial Ave", "Grand Ave", "Morley Ave", "International Blvd")
TOWNS = {"CA": ("San Diego", "92154"), "AZ": ("Nogales", "85621"), "NM": ("Santa Teresa", "88008"),
         "TX": ("Laredo", "78040")}
DRUGS = (("FENTANYL", "PILLS", 0.30), ("FENTANYL", "POWDER", 0.20), ("METHAMPHETAMINE", "CRYSTAL", 0.25),
         ("COCAINE", "POWDER", 0.15), ("HEROIN", "PASTE", 0.10))


@dataclass
class ExportLabels:
    """The truth about an export set."""

    incident_of: dict[str, str] = field(default_factory=dict)  # event id -> real-world incident
    record_of: dict[str, str] = field(default_factory=dict)  # event id -> "ORI|system|record id"
    citing: set[frozenset[str]] = field(default_factory=set)  # record pairs where one cites the other
    related: set[frozenset[str]] = field(default_factory=set)  # incident pairs linked but distinct (follow-ons)
    shared_entities: set[frozenset[str]] = field(default_factory=set)  # incident pairs a TARGET alert is due for
    lookalikes: set[frozenset[str]] = field(default_factory=set)  # incident pairs whose identifiers only look alike
    conflicts: set[frozenset[str]] = field(default_factory=set)  # planned-operation pairs an EVENT alert is due for
    operations: set[str] = field(default_factory=set)  # incidents that are planned operations


@dataclass
class ExportSet:
    records: list[dict[str, Any]]  # in report-time order, as agencies send them
    labels: ExportLabels


@dataclass
class _Person:
    surname: str
    given: str
    middle: str
    born: datetime

    def written(self, rng: random.Random) -> str:
        """As one agency's system writes the name and birth date."""
        name = f"{self.surname}, {self.given}" + (f" {self.middle}" if rng.random() < 0.4 else "")
        name = name.title() if rng.random() < 0.5 else name
        if rng.random() < 0.3:
            name = name.translate(ACCENTS)  # "García", as a Spanish-language system writes it
        born = self.born.strftime("%m/%d/%Y") if rng.random() < 0.4 else self.born.strftime("%Y-%m-%d")
        return f"{name}|{born}"


@dataclass
class _Vehicle:
    vin: str
    plate: str
    state: str


@dataclass
class _Incident:
    """A real-world seizure: what happened, before any agency writes it down."""

    incident_id: str
    port: PortOfEntry
    latitude: float
    longitude: float
    at_port: bool
    when: datetime
    drugs: list[tuple[str, str, float]]  # type, form, mg (pills: mg of the pills)
    driver: _Person
    vehicle: _Vehicle
    phone: str
    presses: list[str] = field(default_factory=list)
    phone_named: bool = False  # some agency's report of it wrote the phone down


def _phone_written(e164: str, rng: random.Random) -> str:
    """A US number as agency systems export it."""
    area, exchange, line = e164[2:5], e164[5:8], e164[8:]
    return rng.choice((f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}",
                       f"+1 {area} {exchange} {line}", f"{area}{exchange}{line}", e164, f"1-{area}-{exchange}-{line}"))


def _local(when: datetime, state: str, rng: random.Random) -> str:
    """A time as an agency's system writes it: UTC, or the local time with its offset."""
    if rng.random() < 0.5:
        return when.isoformat()
    return when.astimezone(timezone(timedelta(hours=LOCAL_OFFSETS[state]))).isoformat()


def _address_written(number: int, street: str, state: str, rng: random.Random) -> str:
    town, zip_code = TOWNS[state]
    state_text = STATE_NAMES[state].upper() if rng.random() < 0.3 else state
    tail = f" {zip_code}" if rng.random() < 0.6 else ""
    return f"{number} {street}, {town}, {state_text}{tail}"


def _offset(lat: float, lon: float, km: float, rng: random.Random) -> tuple[float, float]:
    bearing = rng.uniform(0, 2 * math.pi)
    return (lat + km * math.cos(bearing) / KM_PER_DEGREE,
            lon + km * math.sin(bearing) / (KM_PER_DEGREE * math.cos(math.radians(lat))))


class _Generator:
    def __init__(self, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.start = start
        self.agencies: dict[str, Agency] = load_agencies()
        self.records: list[dict[str, Any]] = []
        self.labels = ExportLabels()
        self.numbers = 0
        self.used_phones: set[str] = set()
        self.used_people: set[tuple[str, str, str]] = set()

    # -- identities ----------------------------------------------------------------------------
    def _serial(self) -> int:
        self.numbers += 1
        return self.numbers

    def phone(self, state: str) -> str:
        while True:
            number = f"+1{self.rng.choice(AREA_CODES[state])}555{self.rng.randrange(2000, 9999):04d}"
            if number not in self.used_phones:
                self.used_phones.add(number)
                return number

    def person(self) -> _Person:
        rng = self.rng
        while True:
            born = datetime(1960, 1, 1) + timedelta(days=rng.randrange(0, 40 * 365))
            person = _Person(rng.choice(SURNAMES), rng.choice(GIVEN), rng.choice(GIVEN), born)
            if (person.surname, person.given, born.isoformat()) not in self.used_people:
                self.used_people.add((person.surname, person.given, born.isoformat()))
                return person

    def vehicle(self, state: str) -> _Vehicle:
        rng = self.rng
        alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
        while True:
            body = [rng.choice(alphabet) for _ in range(17)]
            for check in "0123456789X":
                body[8] = check
                if vin_check_digit_ok("".join(body)):
                    plate = f"{rng.randrange(1, 9)}{''.join(rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ') for _ in range(3))}" \
                            f"{rng.randrange(100, 999)}"
                    return _Vehicle("".join(body), plate, state)

    # -- incidents -----------------------------------------------------------------------------
    def incident(self, when: datetime, near: _Incident | None = None) -> _Incident:
        rng = self.rng
        if near is None:
            port = rng.choice(list(PORTS_OF_ENTRY.values()))
            at_port = rng.random() < 0.6
            lat, lon = (port.latitude, port.longitude) if at_port else _offset(port.latitude, port.longitude,
                                                                               rng.uniform(4, 25), rng)
        else:
            port, at_port = near.port, near.at_port
            lat, lon = _offset(near.latitude, near.longitude, rng.uniform(0.1, 0.9), rng)
        drug_type, form, _ = rng.choices(DRUGS, weights=[d[2] for d in DRUGS])[0]
        mg = (rng.randrange(500, 20_000) * PILL_MG if form == "PILLS" else rng.uniform(0.5, 60) * 453_592.37)
        drugs = [(drug_type, form, mg)]
        if rng.random() < 0.25:
            drugs.append(("METHAMPHETAMINE" if drug_type != "METHAMPHETAMINE" else "COCAINE", "POWDER",
                          rng.uniform(0.05, 0.2) * mg))
        if near is not None:
            drugs = [(t, f, m * rng.uniform(0.97, 1.03)) for t, f, m in near.drugs]
        state = port.state
        incident = _Incident(f"S{self._serial()}", port, lat, lon, at_port, when, drugs, self.person(),
                             self.vehicle(state), self.phone(state))
        if drug_type == "FENTANYL" and form == "PILLS" and rng.random() < 0.2:
            incident.presses = [f"{rng.choice('ABCDKT')}{rng.randrange(1000, 99999)}"]
        return incident

    # -- how one agency writes an incident down ------------------------------------------------
    def seizure_report(self, incident: _Incident, ori: str, *, seizing: bool, cite: dict[str, Any] | None,
                       names_everyone: bool = False) -> dict[str, Any]:
        rng = self.rng
        agency = self.agencies[ori]
        system = "SEACATS" if seizing else SYSTEMS.get(ori[2:5], "RMS")
        record_id = (f"{incident.when.year}{incident.port.county_fips[-3:]}{self._serial():07d}" if seizing
                     else f"{ori[2:5]}-{incident.when.year}-{self._serial():05d}")
        event_time = incident.when + timedelta(minutes=rng.uniform(-12, 12))
        if not seizing and rng.random() < 0.2:
            event_time = incident.when + timedelta(hours=rng.uniform(1.5, 7))  # custody time, not seizure time
        location = self.place(incident, ori, seizing)
        drugs = self.drugs(incident, seizing)
        entities = self.entities(incident, required=seizing or names_everyone)
        payload: dict[str, Any] = {"drugs": drugs, "conveyance": "PASSENGER_VEHICLE",
                                   "concealment": [rng.choice(("QUARTER_PANEL", "GAS_TANK", "SPARE_TIRE", "BUMPER"))]}
        if seizing:
            payload["seizure_number"] = record_id
        if incident.presses:
            payload["pill_presses"] = [{"serial_number": rng.choice(("S/N ", "SN:", "", "Serial # ")) + s}
                                       for s in incident.presses]
        return {
            "event_id": str(uuid.uuid4()), "event_type": "SEIZURE", "source_agency": agency.model_dump(mode="json"),
            "source_system": system, "source_record_id": record_id, "record_version": 1,
            "event_time": _local(event_time, incident.port.state, rng),
            "report_time": (max(event_time, incident.when) + timedelta(hours=rng.uniform(1, 30))).isoformat(),
            "location": location, "handling": {"dissemination": "WHITE", "tlp": "AMBER", "cui_categories": ["SP_SUB"]},
            "entities": entities, "record_references": [cite] if cite else [], "payload": payload,
        }

    def place(self, incident: _Incident, ori: str, seizing: bool) -> dict[str, Any]:
        rng = self.rng
        port = incident.port
        if seizing:
            if incident.at_port:
                return {"port_of_entry": port.code, "state": port.state}
            return {"latitude": round(incident.latitude, 5), "longitude": round(incident.longitude, 5),
                    "state": port.state, "county_fips": port.county_fips}
        choice = rng.random()
        if choice < 0.35:
            km = rng.uniform(2, 3) if rng.random() < 0.3 else rng.uniform(0, 0.4)
            lat, lon = _offset(incident.latitude, incident.longitude, km, rng)
            return {"latitude": round(lat, 5), "longitude": round(lon, 5),
                    "state": rng.choice((port.state, STATE_NAMES[port.state]))}
        if choice < 0.6:
            return {"county_fips": port.county_fips, "state": port.state}
        if choice < 0.8:
            return {"state": rng.choice((port.state, STATE_NAMES[port.state], STATE_NAMES[port.state].upper()))}
        if choice < 0.9 and incident.at_port:
            return {"port_of_entry": port.code}
        lat, lon, state = OFFICES[ori]
        return {"latitude": lat, "longitude": lon, "state": state, "description": "reporting office"}

    def drugs(self, incident: _Incident, seizing: bool) -> list[dict[str, Any]]:
        rng = self.rng
        written = []
        for index, (drug_type, form, mg) in enumerate(incident.drugs):
            if index > 0 and not seizing and rng.random() < 0.5:
                continue  # a second drug only the seizing agency listed
            if drug_type == "FENTANYL" and form == "PILLS" and not seizing and rng.random() < 0.25:
                drug_type = "FENTANYL_ANALOGUE"
            if not seizing and rng.random() < 0.25:
                mg *= rng.uniform(1.11, 1.20)  # gross weight, packaging included
            drug: dict[str, Any] = {"drug_type": drug_type, "form": form}
            if form == "PILLS" and (seizing or rng.random() < 0.5):
                drug["pill_count"] = max(1, round(mg / PILL_MG * rng.uniform(0.99, 1.01)))
            else:
                unit = rng.choice(("LB", "KG", "G")) if mg > 200_000 else rng.choice(("G", "KG"))
                factor = {"LB": 453_592.37, "KG": 1e6, "G": 1e3}[unit]
                drug["net_weight"] = {"value": round(mg / factor, 2 if unit != "G" else 0) or 0.01, "unit": unit}
            written.append(drug)
        return written

    def entities(self, incident: _Incident, required: bool) -> list[dict[str, Any]]:
        rng = self.rng
        entities = []
        if required or rng.random() < 0.75:
            role = "DRIVER" if required or rng.random() < 0.7 else "SUBJECT"
            entities.append({"kind": "PERSON", "role": role, "display_name": incident.driver.given.title(),
                             "identifiers": [{"scheme": "PERSON_NAME_DOB", "value": incident.driver.written(rng)}]})
        if required or rng.random() < 0.7:
            v = incident.vehicle
            identifiers = [{"scheme": "LICENSE_PLATE", "value": v.plate,
                            "issuer": rng.choice((v.state, STATE_NAMES[v.state]))}]
            if rng.random() < 0.6:
                identifiers.append({"scheme": "VIN", "value": v.vin})
            entities.append({"kind": "VEHICLE", "role": "CONVEYANCE", "identifiers": identifiers})
        if rng.random() < 0.5:
            incident.phone_named = True
            entities.append({"kind": "PHONE", "role": "SUBJECT",
                             "identifiers": [{"scheme": "PHONE_E164", "value": _phone_written(incident.phone, rng)}]})
        return entities

    def citation(self, seizing_report: dict[str, Any]) -> dict[str, Any]:
        """A partner's citation of the SEACATS record, as people type it."""
        rng = self.rng
        number = seizing_report["source_record_id"]
        if rng.random() < 0.4:
            number = "-".join(number[i:i + 4] for i in range(0, len(number), 4))
        cite = {"system": rng.choice(SEACATS_SPELLINGS), "number": number}
        if rng.random() < 0.6:
            cite["ori"] = seizing_report["source_agency"]["ori"]
        return cite

    # -- scenarios -----------------------------------------------------------------------------
    def emit(self, record: dict[str, Any], incident_id: str) -> dict[str, Any]:
        self.records.append(record)
        self.labels.incident_of[record["event_id"]] = incident_id
        self.labels.record_of[record["event_id"]] = (f"{record['source_agency']['ori']}|{record['source_system']}|"
                                                     f"{record['source_record_id']}")
        return record

    def seizure(self, when: datetime, near: _Incident | None = None,
                partners: tuple[str, ...] | None = None) -> tuple[_Incident, list[dict[str, Any]]]:
        """One seizure and every agency's report of it (and some updates)."""
        rng = self.rng
        incident = self.incident(when, near)
        state = incident.port.state
        if partners is None:
            partners = tuple(rng.sample(PARTNERS[state], k=min(len(PARTNERS[state]), rng.choice((0, 1, 1, 2, 2, 3)))))
        first = self.emit(self.seizure_report(incident, SEIZING[state], seizing=True, cite=None),
                          incident.incident_id)
        reports = [first]
        for ori in partners:
            cite = self.citation(first) if rng.random() < 0.6 else None
            report = self.emit(self.seizure_report(incident, ori, seizing=False, cite=cite,
                                                   names_everyone=near is not None), incident.incident_id)
            if cite:
                self.labels.citing.add(frozenset({self.labels.record_of[first["event_id"]],
                                                  self.labels.record_of[report["event_id"]]}))
            reports.append(report)
        for report in list(reports):
            if rng.random() < 0.15:
                reports.append(self.emit(self.update(report, incident), incident.incident_id))
        return incident, reports

    def update(self, report: dict[str, Any], incident: _Incident) -> dict[str, Any]:
        """Version 2 of a record: a geocode added, or the weight corrected."""
        rng = self.rng
        updated = copy.deepcopy(report)
        updated["event_id"] = str(uuid.uuid4())
        updated["record_version"] = 2
        updated["report_time"] = (datetime.fromisoformat(report["report_time"])
                                  + timedelta(hours=rng.uniform(2, 48))).isoformat()
        if "latitude" not in updated["location"]:
            lat, lon = _offset(incident.latitude, incident.longitude, rng.uniform(0, 0.3), rng)
            updated["location"] = {**updated["location"], "latitude": round(lat, 5), "longitude": round(lon, 5)}
        else:
            for drug in updated["payload"]["drugs"]:
                if "net_weight" in drug:
                    drug["net_weight"]["value"] = round(drug["net_weight"]["value"] * rng.uniform(0.98, 1.02), 2)
        return updated

    def follow_on(self, incident: _Incident, seizing_report: dict[str, Any]) -> None:
        """A controlled delivery a day later, 17 km on, other drugs: HSI cites the port seizure. Related, not the same."""
        rng = self.rng
        state = incident.port.state
        later = self.incident(incident.when + timedelta(hours=rng.uniform(20, 30)))
        later.port, later.at_port = incident.port, False
        later.latitude, later.longitude = _offset(incident.latitude, incident.longitude, rng.uniform(12, 20), rng)
        later.drugs = [("METHAMPHETAMINE" if incident.drugs[0][0] != "METHAMPHETAMINE" else "COCAINE", "CRYSTAL",
                        rng.uniform(2, 20) * 453_592.37)]
        ori = PARTNERS[state][0]
        report = self.seizure_report(later, ori, seizing=False, cite=self.citation(seizing_report), names_everyone=True)
        report["location"] = {"latitude": round(later.latitude, 5), "longitude": round(later.longitude, 5),
                              "state": state}
        self.emit(report, later.incident_id)
        self.labels.related.add(frozenset({incident.incident_id, later.incident_id}))
        self.labels.citing.add(frozenset({self.labels.record_of[seizing_report["event_id"]],
                                          self.labels.record_of[report["event_id"]]}))

    def arrest(self, when: datetime, ori: str, person: _Person, phone: str | None, incident_id: str,
               address: tuple[int, str, str] | None = None) -> dict[str, Any]:
        rng = self.rng
        entities = [{"kind": "PERSON", "role": "SUBJECT",
                     "identifiers": [{"scheme": "PERSON_NAME_DOB", "value": person.written(rng)}]}]
        if phone:
            entities.append({"kind": "PHONE", "role": "SUBJECT",
                             "identifiers": [{"scheme": "PHONE_E164", "value": _phone_written(phone, rng)}]})
        if address:
            entities.append({"kind": "ADDRESS", "role": "LOCATION_OF_INTEREST",
                             "identifiers": [{"scheme": "STREET_ADDRESS", "value": _address_written(*address, rng)}]})
        lat, lon, state = OFFICES[ori]
        record = {
            "event_id": str(uuid.uuid4()), "event_type": "ARREST", "source_agency": self.agencies[ori].model_dump(
                mode="json"), "source_system": SYSTEMS.get(ori[2:5], "RMS"),
            "source_record_id": f"BK-{when.year}-{self._serial():06d}", "record_version": 1,
            "event_time": when.isoformat(), "report_time": (when + timedelta(hours=rng.uniform(1, 12))).isoformat(),
            "location": {"latitude": lat, "longitude": lon, "state": rng.choice((state, STATE_NAMES.get(state, state)))},
            "handling": {"dissemination": "WHITE", "tlp": "AMBER", "cui_categories": ["SP_CHRI"]},
            "entities": entities, "record_references": [],
            "payload": {"booking_number": f"{self._serial():08d}", "charges": [
                {"statute": "21 USC 841", "description": "possession with intent to distribute", "severity": "FELONY"}]},
        }
        return self.emit(record, incident_id)

    def press_seizure(self, when: datetime, ori: str, serial: str, incident_id: str) -> dict[str, Any]:
        """A pill press found in a search, reported by a partner with the serial written its own way."""
        lat, lon, state = OFFICES[ori]
        record = {
            "event_id": str(uuid.uuid4()), "event_type": "SEIZURE",
            "source_agency": self.agencies[ori].model_dump(mode="json"), "source_system": SYSTEMS.get(ori[2:5], "RMS"),
            "source_record_id": f"{ori[2:5]}-P-{self._serial():05d}", "record_version": 1,
            "event_time": when.isoformat(), "report_time": (when + timedelta(hours=3)).isoformat(),
            "location": {"latitude": lat, "longitude": lon, "state": state},
            "handling": {"dissemination": "WHITE", "tlp": "AMBER", "cui_categories": ["SP_SUB"]},
            "entities": [], "record_references": [],
            "payload": {"pill_presses": [{"serial_number": self.rng.choice(("S/N ", "s/n: ", "SN-", "")) + serial,
                                          "manufacturer": "TDP"}], "conveyance": "OTHER"},
        }
        return self.emit(record, incident_id)

    def operations(self, when: datetime) -> None:
        """Two agencies' planned operations: conflicting (close, overlapping) or a near miss."""
        rng = self.rng
        port = rng.choice(list(PORTS_OF_ENTRY.values()))
        state = port.state
        base_lat, base_lon = _offset(port.latitude, port.longitude, rng.uniform(3, 30), rng)
        kind = rng.random()
        metres = rng.uniform(20, 400) if kind < 0.6 else rng.uniform(700, 1500)
        overlap = kind < 0.6 or kind > 0.8
        start = when + timedelta(days=rng.uniform(1, 5))
        other_start = start + (timedelta(hours=rng.uniform(-1, 1.5)) if overlap else timedelta(hours=rng.uniform(5, 9)))
        oris = rng.sample([SEIZING[state], *PARTNERS[state]], 2)
        ids = []
        for ori, lat_lon, starts in ((oris[0], (base_lat, base_lon), start),
                                     (oris[1], _offset(base_lat, base_lon, metres / 1000, rng), other_start)):
            incident_id = f"OP{self._serial()}"
            ids.append(incident_id)
            self.labels.operations.add(incident_id)
            contact = self.agencies[ori].contact
            record = {
                "event_id": str(uuid.uuid4()), "event_type": "PLANNED_OPERATION",
                "source_agency": self.agencies[ori].model_dump(mode="json"),
                "source_system": SYSTEMS.get(ori[2:5], "RMS"), "source_record_id": f"OPS-{self._serial():06d}",
                "record_version": 1, "event_time": starts.isoformat(),
                "report_time": (starts - timedelta(hours=rng.uniform(12, 48))).isoformat(),
                "location": {"latitude": round(lat_lon[0], 6), "longitude": round(lat_lon[1], 6), "state": state},
                "handling": {"dissemination": "WHITE", "tlp": "AMBER", "cui_categories": ["SP_INV"]},
                "payload": {"operation_kind": rng.choice(("RAID", "SEARCH_WARRANT", "CONTROLLED_BUY")),
                            "starts_at": starts.isoformat(), "ends_at": (starts + timedelta(hours=3)).isoformat(),
                            "on_scene_contact": {"name": contact.name if contact else "Duty officer",
                                                 "telephone": contact.telephone if contact else None}},
            }
            self.emit(record, incident_id)
        if metres <= 500 and overlap:
            self.labels.conflicts.add(frozenset(ids))


def generate_exports(incidents: int = 600, seed: int = 2024, start: datetime | None = None) -> ExportSet:
    """About ``incidents`` real-world incidents (roughly 2,000 records at the default), labelled."""
    gen = _Generator(seed, start or datetime(2026, 3, 1, tzinfo=UTC))
    rng = gen.rng
    when = gen.start
    for _ in range(incidents):
        when += timedelta(minutes=rng.expovariate(1 / 90))
        roll = rng.random()
        if roll < 0.55:
            incident, reports = gen.seizure(when)
            if rng.random() < 0.08:
                gen.follow_on(incident, reports[0])
            if rng.random() < 0.25:
                _shared_entity(gen, incident, when)
        elif roll < 0.67:
            first, _ = gen.seizure(when)
            gen.seizure(when + timedelta(minutes=rng.uniform(5, 30)), near=first,
                        partners=(rng.choice(PARTNERS[first.port.state]),))
        elif roll < 0.82:
            gen.operations(when)
        else:
            _lookalike(gen, when)
    gen.records.sort(key=lambda r: r["report_time"])
    return ExportSet(gen.records, gen.labels)


def _shared_entity(gen: _Generator, incident: _Incident, when: datetime) -> None:
    """Another agency's later record names the seizure's driver, phone or press: a TARGET alert is due."""
    rng = gen.rng
    state = incident.port.state
    involved = {gen.labels.record_of[e].split("|")[0] for e, i in gen.labels.incident_of.items()
                if i == incident.incident_id}
    others = [ori for ori in (*PARTNERS[state], SEIZING[state]) if ori not in involved and ori in OFFICES]
    if not others:
        return
    ori = rng.choice(others)
    later = when + timedelta(days=rng.uniform(2, 40))
    linked = f"L{gen._serial()}"
    if incident.presses and rng.random() < 0.6:
        gen.press_seizure(later, ori, incident.presses[0], linked)
    elif rng.random() < 0.5 or not incident.phone_named:
        gen.arrest(later, ori, incident.driver, None, linked)
    else:
        gen.arrest(later, ori, gen.person(), incident.phone, linked)
    gen.labels.shared_entities.add(frozenset({incident.incident_id, linked}))


def _lookalike(gen: _Generator, when: datetime) -> None:
    """Two agencies' arrests whose identifiers only look alike: one digit off, another birth date, another state."""
    rng = gen.rng
    state = rng.choice(("CA", "AZ", "TX"))
    a, b = rng.sample([SEIZING[state], *PARTNERS[state]], 2)
    person = gen.person()
    phone = gen.phone(state)
    street = (rng.randrange(100, 9999), rng.choice(STREETS), state)
    kind = rng.random()
    twin = _Person(person.surname, person.given, person.middle, person.born)
    other_phone = None
    if kind < 0.4:
        twin.born = person.born + timedelta(days=rng.choice((1, 31, 365, 3650)))
    else:
        other_phone = phone
        while other_phone in gen.used_phones:  # one digit off, and no one else's number
            digit = rng.randrange(9, 12)
            other_phone = phone[:digit] + str((int(phone[digit]) + rng.randrange(1, 10)) % 10) + phone[digit + 1:]
        gen.used_phones.add(other_phone)
        twin = gen.person()
    first, second = f"LA{gen._serial()}", f"LB{gen._serial()}"
    gen.arrest(when, a, person, phone if other_phone else None, first, street)
    other_street = (street[0] + rng.choice((2, 10, 100)), street[1], street[2])
    gen.arrest(when + timedelta(days=rng.uniform(1, 20)), b, twin, other_phone, second, other_street)
    gen.labels.lookalikes.add(frozenset({first, second}))
    if rng.random() < 0.3:
        v = gen.vehicle(state)
        other = "NM" if state != "NM" else "AZ"
        for ori, plate_state, incident_id in ((a, state, first), (b, other, second)):
            gen.records[-1 if incident_id == second else -2]["entities"].append(
                {"kind": "VEHICLE", "role": "CONVEYANCE",
                 "identifiers": [{"scheme": "LICENSE_PLATE", "value": v.plate, "issuer": plate_state}]})


"""Typed models of the wire contract, one per named Avro type in ``avsc/`` (a test keeps them in step).

The ``.avsc`` files define the wire format; these models add the validation that matters to the people
using the hub (ORI format, E.164 phones, VIN check digits, timezone-aware times, 28 CFR Part 23 rules) and
the derived values that must never be typed in (estimated doses).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.limits import (AVRO_INT_MAX, AVRO_LONG_MAX, EARLIEST_DATE, LATEST_DATE, MAX_ALERT_PARTIES,
                            MAX_CASE_NUMBERS, MAX_CHARGES, MAX_CODE_CHARS, MAX_CODES, MAX_COUNT, MAX_DEFENDANTS,
                            MAX_DETAIL_CHARS, MAX_DOCUMENT_CHARS, MAX_DRUGS, MAX_ENTITIES, MAX_ENTITY_KEY_CHARS,
                            MAX_HUB_LIST_ITEMS, MAX_IDENTIFIERS, MAX_KEYS_PER_CREDIT, MAX_LABEL_CHARS,
                            MAX_MESSAGE_BYTES, MAX_NAME_CHARS,
                            MAX_OPERATION_DURATION, MAX_PILL_PRESSES, MAX_RECORD_REFERENCES, MAX_RECORD_VERSION,
                            MAX_RELEASABLE_TO, MAX_REPORTS_CARRIED, MAX_REPORTS_PER_CANONICAL, MAX_TEXT_CHARS,
                            MAX_WEIGHT_MG)
from schemas.formats import e164, iso_date, usps_state
from schemas.reference import PORTS_OF_ENTRY, US_STATES

NAMESPACE = "gov.taskforce.hub"

ORI_PATTERN = re.compile(r"^[A-Z]{2}[A-Z0-9]{7}$")
E164_PATTERN = re.compile(r"^\+[1-9]\d{7,14}$")
# 28 CFR 23.20(h): intelligence is reviewed, validated or purged within five years.
MAX_RETENTION = timedelta(days=5 * 365 + 1)
# DEA: 2 mg of fentanyl is a potentially deadly dose.
LETHAL_DOSE_MG = 2.0
# Southwest-border fentanyl powder is mostly at or below 10% purity; used when no lab result exists.
DEFAULT_FENTANYL_POWDER_PURITY = 0.10
FENTANYL_TYPES = frozenset({"FENTANYL", "FENTANYL_ANALOGUE"})
MG_PER_UNIT = {"MG": 1.0, "G": 1e3, "KG": 1e6, "OZ": 28_349.523125, "LB": 453_592.37}

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

# -- bounded values (schemas.limits) ---------------------------------------------------------------------
# Control characters have no place in what an agency writes (they would also reach analysts' terminals); free
# text may hold tabs and line breaks. (Lone surrogates, which no encoding takes, pydantic refuses in any string.)
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _clean(pattern: re.Pattern[str]) -> AfterValidator:
    def check(value: str) -> str:
        found = pattern.search(value)
        if found is not None:
            raise ValueError(f"holds a control character U+{ord(found.group()):04X} at position {found.start()}: "
                             f"remove it")
        return value

    return AfterValidator(check)


#: Identifiers, numbers and codes an agency writes (one line).
Code = Annotated[str, Field(max_length=MAX_CODE_CHARS), _clean(_NOT_ONE_LINE)]
#: Names (one line).
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS), _clean(_NOT_ONE_LINE)]
#: An entity key as ``consumers.normalize`` writes it ("PHONE_E164:+16195550142"): printable ASCII.
EntityKeyText = Annotated[str, Field(max_length=MAX_ENTITY_KEY_CHARS, pattern=r"^[A-Z0-9_]+:[ -~]+$")]
#: Free text an agency writes.
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS), _clean(_NOT_TEXT)]
# What the hub itself writes may quote anything (a dead letter's reason, a state key), so it is only bounded.
Label = Annotated[str, Field(max_length=MAX_LABEL_CHARS)]
Explanation = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Detail = Annotated[str, Field(max_length=MAX_DETAIL_CHARS)]
Count = Annotated[int, Field(gt=0, le=MAX_COUNT)]
AvroInt = Annotated[int, Field(ge=0, le=AVRO_INT_MAX)]
RecordVersion = Annotated[int, Field(ge=1, le=MAX_RECORD_VERSION)]


def _implausible(value: date) -> ValueError:
    return ValueError(f"{value.isoformat()} is not a plausible date: the contract takes dates from "
                      f"{EARLIEST_DATE.isoformat()} to before {LATEST_DATE.isoformat()}")


def _plausible_date(value: date) -> date:
    if not EARLIEST_DATE <= value < LATEST_DATE:
        raise _implausible(value)
    return value


def _plausible_time(value: datetime) -> datetime:
    # Checked in UTC, as Avro holds it; the year first, since converting year 9999 (or 1) would itself overflow.
    if not (EARLIEST_DATE.year <= value.year <= LATEST_DATE.year
            and EARLIEST_DATE <= value.astimezone(UTC).date() < LATEST_DATE):
        raise _implausible(value)
    return value


#: A timezone-aware time in the contract's calendar range (``schemas.limits.EARLIEST_DATE``/``LATEST_DATE``).
Timestamp = Annotated[AwareDatetime, AfterValidator(_plausible_time)]
Day = Annotated[date, AfterValidator(_plausible_date)]


class AvroModel(BaseModel):
    """A model mirroring one Avro record; ``avro_name`` is the record's full name. No float may be NaN or infinite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    avro_name: ClassVar[str]
    #: Fields holding a union of several records, whose branch the codec must name when writing.
    record_unions: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.avro_name = f"{NAMESPACE}.{cls.__name__}"


# -- enums (symbols must equal the .avsc symbols) ---------------------------------------------------
class EventType(StrEnum):
    SEIZURE = "SEIZURE"
    ARREST = "ARREST"
    CASE_OPENED = "CASE_OPENED"
    CASE_UPDATED = "CASE_UPDATED"
    CASE_CLOSED = "CASE_CLOSED"
    INDICTMENT = "INDICTMENT"
    LAB_RESULT = "LAB_RESULT"
    PLANNED_OPERATION = "PLANNED_OPERATION"


class AgencyLevel(StrEnum):
    FEDERAL = "FEDERAL"
    STATE = "STATE"
    LOCAL = "LOCAL"
    TRIBAL = "TRIBAL"
    FOREIGN_PARTNER = "FOREIGN_PARTNER"


class DisseminationLevel(StrEnum):
    WHITE = "WHITE"
    GRAY = "GRAY"
    BLACK = "BLACK"


class TrafficLightProtocol(StrEnum):
    CLEAR = "CLEAR"
    GREEN = "GREEN"
    AMBER = "AMBER"
    AMBER_STRICT = "AMBER_STRICT"
    RED = "RED"


class CuiCategory(StrEnum):
    SP_INV = "SP_INV"
    SP_SUB = "SP_SUB"
    SP_CHRI = "SP_CHRI"
    LES = "LES"


class Sensitivity(StrEnum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class Confidence(StrEnum):
    UNCONFIRMED = "UNCONFIRMED"
    PROBABLE = "PROBABLE"
    CONFIRMED = "CONFIRMED"


class EntityKind(StrEnum):
    PERSON = "PERSON"
    VEHICLE = "VEHICLE"
    PHONE = "PHONE"
    ADDRESS = "ADDRESS"
    ORGANIZATION = "ORGANIZATION"
    PILL_PRESS = "PILL_PRESS"
    WEAPON = "WEAPON"
    DOCUMENT = "DOCUMENT"
    FINANCIAL_ACCOUNT = "FINANCIAL_ACCOUNT"


class EntityRole(StrEnum):
    SUBJECT = "SUBJECT"
    DRIVER = "DRIVER"
    PASSENGER = "PASSENGER"
    OWNER = "OWNER"
    ASSOCIATE = "ASSOCIATE"
    VICTIM = "VICTIM"
    WITNESS = "WITNESS"
    TARGET = "TARGET"
    SEIZED_ITEM = "SEIZED_ITEM"
    CONVEYANCE = "CONVEYANCE"
    LOCATION_OF_INTEREST = "LOCATION_OF_INTEREST"
    SUPPLIER = "SUPPLIER"
    OTHER = "OTHER"


class IdentifierScheme(StrEnum):
    PHONE_E164 = "PHONE_E164"
    VIN = "VIN"
    LICENSE_PLATE = "LICENSE_PLATE"
    PERSON_NAME_DOB = "PERSON_NAME_DOB"
    FBI_NUMBER = "FBI_NUMBER"
    PASSPORT = "PASSPORT"
    STREET_ADDRESS = "STREET_ADDRESS"
    ORGANIZATION_NAME = "ORGANIZATION_NAME"
    PILL_PRESS_SERIAL = "PILL_PRESS_SERIAL"
    FIREARM_SERIAL = "FIREARM_SERIAL"
    DOCUMENT_NUMBER = "DOCUMENT_NUMBER"
    ACCOUNT_NUMBER = "ACCOUNT_NUMBER"
    IMEI = "IMEI"


class DrugType(StrEnum):
    FENTANYL = "FENTANYL"
    FENTANYL_ANALOGUE = "FENTANYL_ANALOGUE"
    NITAZENE = "NITAZENE"
    XYLAZINE = "XYLAZINE"
    METHAMPHETAMINE = "METHAMPHETAMINE"
    COCAINE = "COCAINE"
    CRACK_COCAINE = "CRACK_COCAINE"
    HEROIN = "HEROIN"
    MARIJUANA = "MARIJUANA"
    KETAMINE = "KETAMINE"
    MDMA = "MDMA"
    KHAT = "KHAT"
    PRECURSOR_CHEMICAL = "PRECURSOR_CHEMICAL"
    OTHER = "OTHER"


class DrugForm(StrEnum):
    POWDER = "POWDER"
    PILLS = "PILLS"
    LIQUID = "LIQUID"
    PLANT = "PLANT"
    CRYSTAL = "CRYSTAL"
    PASTE = "PASTE"
    OTHER = "OTHER"


class WeightUnit(StrEnum):
    MG = "MG"
    G = "G"
    KG = "KG"
    OZ = "OZ"
    LB = "LB"


class ConveyanceType(StrEnum):
    PASSENGER_VEHICLE = "PASSENGER_VEHICLE"
    COMMERCIAL_TRUCK = "COMMERCIAL_TRUCK"
    PEDESTRIAN = "PEDESTRIAN"
    BUS = "BUS"
    RAIL = "RAIL"
    MAIL = "MAIL"
    EXPRESS_CONSIGNMENT = "EXPRESS_CONSIGNMENT"
    VESSEL = "VESSEL"
    AIRCRAFT = "AIRCRAFT"
    OTHER = "OTHER"


class ConcealmentMethod(StrEnum):
    NON_FACTORY_COMPARTMENT = "NON_FACTORY_COMPARTMENT"
    QUARTER_PANEL = "QUARTER_PANEL"
    FIREWALL = "FIREWALL"
    ROOF = "ROOF"
    BUMPER = "BUMPER"
    SPARE_TIRE = "SPARE_TIRE"
    GAS_TANK = "GAS_TANK"
    TRAILER_BEAMS = "TRAILER_BEAMS"
    COMMINGLED_WITH_CARGO = "COMMINGLED_WITH_CARGO"
    BODY_CARRY = "BODY_CARRY"
    LUGGAGE = "LUGGAGE"
    PARCEL = "PARCEL"
    OTHER = "OTHER"


class ChargeSeverity(StrEnum):
    FELONY = "FELONY"
    MISDEMEANOR = "MISDEMEANOR"


class LaboratoryKind(StrEnum):
    FORWARD_OPERATING = "FORWARD_OPERATING"
    FIELD_TEST = "FIELD_TEST"
    REGIONAL = "REGIONAL"
    DEA_LAB = "DEA_LAB"
    STATE_LAB = "STATE_LAB"


class OperationKind(StrEnum):
    RAID = "RAID"
    CONTROLLED_BUY = "CONTROLLED_BUY"
    SURVEILLANCE = "SURVEILLANCE"
    SEARCH_WARRANT = "SEARCH_WARRANT"
    BUY_BUST = "BUY_BUST"
    UNDERCOVER_MEETING = "UNDERCOVER_MEETING"


# -- identifier checks ---------------------------------------------------------------------------
_VIN_VALUES = {**{str(d): d for d in range(10)},
               **dict(zip("ABCDEFGH", range(1, 9))), **dict(zip("JKLMN", range(1, 6))), "P": 7, "R": 9,
               **dict(zip("STUVWXYZ", range(2, 10)))}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check_digit_ok(vin: str) -> bool:
    """ISO 3779 / 49 CFR 565 check digit (position 9) of a 17-character VIN."""
    if len(vin) != 17 or any(c not in _VIN_VALUES for c in vin):
        return False
    remainder = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS)) % 11
    return vin[8] == ("X" if remainder == 10 else str(remainder))


def _require_uuid(value: str) -> str:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a UUID") from None
    return value


def _as_e164(value: str) -> str:
    """A phone number in E.164, however the agency punctuated it (the stored form passes through unparsed)."""
    if E164_PATTERN.match(value) and not value.startswith("+521"):
        return value
    return e164(value)


# -- records -------------------------------------------------------------------------------------
class ContactInformation(AvroModel):
    name: Name = Field(min_length=1)
    telephone: Code | None = None
    email: Name | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

    @field_validator("telephone")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        return value if value is None else _as_e164(value)


class Agency(AvroModel):
    ori: Code
    name: Name = Field(min_length=1)
    level: AgencyLevel
    contact: ContactInformation | None = None

    @field_validator("ori")
    @classmethod
    def _ori_format(cls, value: str) -> str:
        if not ORI_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a 9-character ORI (two-letter state code + 7 letters/digits, e.g. CA0371100)")
        return value


class Location(AvroModel):
    port_of_entry: Code | None = None
    state: Code | None = None
    county_fips: Code | None = Field(None, pattern=r"^\d{5}$")
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    description: Text | None = None

    @field_validator("port_of_entry")
    @classmethod
    def _known_port(cls, value: str | None) -> str | None:
        if value is not None and value not in PORTS_OF_ENTRY:
            raise ValueError(f"unknown port of entry {value!r}; known: {', '.join(sorted(PORTS_OF_ENTRY))}")
        return value

    @field_validator("state")
    @classmethod
    def _known_state(cls, value: str | None) -> str | None:
        if value is None or value in US_STATES:
            return value
        code = usps_state(value)
        if code is None:
            raise ValueError(f"{value!r} is neither a USPS state code nor the name of a state or territory")
        return code

    @model_validator(mode="after")
    def _says_where(self) -> Location:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude come together")
        if not (self.port_of_entry or self.state or self.county_fips or self.latitude is not None):
            raise ValueError("a location needs a port of entry, a state, a county or coordinates")
        return self

    @property
    def has_coordinates(self) -> bool:
        return self.latitude is not None and self.longitude is not None


class IntelligenceMarking(AvroModel):
    criminal_predicate: Text
    sensitivity: Sensitivity
    confidence: Confidence
    control_official: Name = Field(min_length=1)
    review_by: Day

    @field_validator("criminal_predicate")
    @classmethod
    def _predicate_documented(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("28 CFR 23.20(a): an intelligence record needs a documented criminal predicate")
        return value


class Handling(AvroModel):
    dissemination: DisseminationLevel
    tlp: TrafficLightProtocol
    cui_categories: list[CuiCategory] = Field([], max_length=MAX_CODES)
    releasable_to: list[Code] = Field([], max_length=MAX_RELEASABLE_TO)
    no_foreign: bool = False
    intelligence: IntelligenceMarking | None = None


class EntityIdentifier(AvroModel):
    """One identifier. Phones are stored in E.164, birth dates in ISO 8601 and US plate issuers as USPS codes,
    however the agency wrote them; what it wrote is kept beside (``original_value``, ``original_issuer``)."""

    scheme: IdentifierScheme
    value: Name = Field(min_length=1)
    issuer: Code | None = None
    original_value: Name | None = None  # v8
    original_issuer: Code | None = None  # v8

    @model_validator(mode="before")
    @classmethod
    def _stored_form(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("value"), str):
            return data
        value, issuer = data["value"], data.get("issuer")
        scheme = data.get("scheme")
        if scheme == IdentifierScheme.PHONE_E164:
            value = _as_e164(value)
        elif scheme == IdentifierScheme.PERSON_NAME_DOB:
            name, separator, born = value.rpartition("|")
            if separator and "/" in born:
                value = f"{name}|{iso_date(born)}"
        elif scheme == IdentifierScheme.LICENSE_PLATE and isinstance(issuer, str):
            issuer = usps_state(issuer) or issuer
        changes = {}
        if value != data["value"]:
            changes |= {"value": value, "original_value": data.get("original_value") or data["value"]}
        if issuer != data.get("issuer"):
            changes |= {"issuer": issuer, "original_issuer": data.get("original_issuer") or data["issuer"]}
        return {**data, **changes} if changes else data

    @model_validator(mode="after")
    def _valid_for_scheme(self) -> EntityIdentifier:
        if self.scheme == IdentifierScheme.VIN and not vin_check_digit_ok(self.value.upper()):
            raise ValueError(f"VIN {self.value!r} fails the check digit (17 characters, no I/O/Q, position 9)")
        elif self.scheme == IdentifierScheme.LICENSE_PLATE and not self.issuer:
            raise ValueError("a license plate needs its issuing state in 'issuer'")
        return self


class EntityReference(AvroModel):
    kind: EntityKind
    role: EntityRole
    identifiers: list[EntityIdentifier] = Field(min_length=1, max_length=MAX_IDENTIFIERS)
    display_name: Name | None = None


class RecordReference(AvroModel):
    system: Code = Field(min_length=1)
    number: Code = Field(min_length=1)
    ori: Code | None = None


class Weight(AvroModel):
    value: float = Field(gt=0)
    unit: WeightUnit

    @model_validator(mode="after")
    def _plausible_weight(self) -> Weight:
        if self.milligrams > MAX_WEIGHT_MG:
            raise ValueError(f"{self.value:g} {self.unit} is more than {MAX_WEIGHT_MG / 1e9:,.0f} tonnes, more than "
                             f"any seizure on record: check the value and its unit")
        return self

    @property
    def milligrams(self) -> float:
        return self.value * MG_PER_UNIT[self.unit]


class Drug(AvroModel):
    drug_type: DrugType
    form: DrugForm
    net_weight: Weight | None = None
    pill_count: Count | None = None
    purity: Fraction | None = None

    @model_validator(mode="after")
    def _has_quantity(self) -> Drug:
        if self.net_weight is None and self.pill_count is None:
            raise ValueError("a drug needs a net weight or a pill count")
        return self

    def estimated_doses(self, purity: float | None = None) -> float:
        """Potentially lethal fentanyl doses: net mg x purity / 2 mg (0 for other drugs).

        Purity: the argument (a lab result), else the record's own, else the stated default for powder.
        Pills without a weight count as one dose each.
        """
        if self.drug_type not in FENTANYL_TYPES:
            return 0.0
        if self.net_weight is None:
            return float(self.pill_count or 0)
        chosen = purity if purity is not None else self.purity
        chosen = DEFAULT_FENTANYL_POWDER_PURITY if chosen is None else chosen
        return self.net_weight.milligrams * chosen / LETHAL_DOSE_MG


class PillPress(AvroModel):
    serial_number: Code | None = None
    manufacturer: Name | None = None
    model: Name | None = None


class ItemSeizure(AvroModel):
    seizure_number: Code | None = None
    drugs: list[Drug] = Field([], max_length=MAX_DRUGS)
    pill_presses: list[PillPress] = Field([], max_length=MAX_PILL_PRESSES)
    conveyance: ConveyanceType
    concealment: list[ConcealmentMethod] = Field([], max_length=MAX_CODES)
    operation_name: Name | None = None
    turned_over_to: Name | None = None
    nii_scan: bool = False

    @model_validator(mode="after")
    def _seized_something(self) -> ItemSeizure:
        if not self.drugs and not self.pill_presses:
            raise ValueError("a seizure needs at least one drug or pill press")
        return self

    def estimated_doses(self, purity: float | None = None) -> float:
        return sum(d.estimated_doses(purity) for d in self.drugs)


class Charge(AvroModel):
    statute: Name = Field(min_length=1)
    description: Text = Field(min_length=1)
    severity: ChargeSeverity


class Arrest(AvroModel):
    booking_number: Code | None = None
    charges: list[Charge] = Field([], max_length=MAX_CHARGES)
    related_seizure_number: Code | None = None


class Case(AvroModel):
    case_number: Code = Field(min_length=1)
    title: Name = Field(min_length=1)
    lead_investigator: ContactInformation | None = None
    disposition: Text | None = None


class Indictment(AvroModel):
    case_number: Code = Field(min_length=1)
    court: Name = Field(min_length=1)
    docket_number: Code = Field(min_length=1)
    filed_on: Day
    defendant_count: int = Field(gt=0, le=MAX_DEFENDANTS)
    charges: list[Charge] = Field([], max_length=MAX_CHARGES)
    organization: Name | None = None


class LabResult(AvroModel):
    laboratory: Name = Field(min_length=1)
    laboratory_kind: LaboratoryKind
    seizure_number: Code | None = None
    seizure_event_id: Code | None = None
    drug_type: DrugType
    purity: Fraction
    net_weight: Weight | None = None
    method: Name = Field(min_length=1)


class PlannedOperation(AvroModel):
    operation_kind: OperationKind
    operation_name: Name | None = None
    starts_at: Timestamp
    ends_at: Timestamp
    radius_m: float = Field(250.0, gt=0, le=50_000)
    case_number: Code | None = None
    on_scene_contact: ContactInformation

    @model_validator(mode="after")
    def _ends_after_start(self) -> PlannedOperation:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.ends_at - self.starts_at > MAX_OPERATION_DURATION:
            raise ValueError(f"the operation lasts more than {MAX_OPERATION_DURATION.days} days (ends_at - starts_at): "
                             f"register a long operation in phases")
        return self


Payload = ItemSeizure | Arrest | Case | Indictment | LabResult | PlannedOperation

PAYLOAD_FOR_EVENT: dict[EventType, type[AvroModel]] = {
    EventType.SEIZURE: ItemSeizure,
    EventType.ARREST: Arrest,
    EventType.CASE_OPENED: Case,
    EventType.CASE_UPDATED: Case,
    EventType.CASE_CLOSED: Case,
    EventType.INDICTMENT: Indictment,
    EventType.LAB_RESULT: LabResult,
    EventType.PLANNED_OPERATION: PlannedOperation,
}


class CaseEvent(AvroModel):
    """The envelope of every published event."""

    record_unions: ClassVar[tuple[str, ...]] = ("payload",)

    event_id: Code
    event_type: EventType
    source_agency: Agency
    source_system: Code = Field(min_length=1)
    source_record_id: Code = Field(min_length=1)
    record_version: RecordVersion
    event_time: Timestamp
    report_time: Timestamp
    location: Location
    handling: Handling
    entities: list[EntityReference] = Field([], max_length=MAX_ENTITIES)
    record_references: list[RecordReference] = Field([], max_length=MAX_RECORD_REFERENCES)
    payload: Payload

    @field_validator("event_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return _require_uuid(value)

    @field_validator("payload", mode="wrap")
    @classmethod
    def _payload_as_its_type(cls, value: Any, handler: Any, info: Any) -> Any:
        """Parse the payload as the record its event type names (no guessing between similar shapes)."""
        payload_cls = PAYLOAD_FOR_EVENT.get(info.data.get("event_type"))  # type: ignore[arg-type]
        if payload_cls is None or not isinstance(value, dict):
            return handler(value)
        return payload_cls.model_validate(value)

    @model_validator(mode="after")
    def _contract_rules(self) -> CaseEvent:
        expected = PAYLOAD_FOR_EVENT[self.event_type]
        if not isinstance(self.payload, expected):
            raise ValueError(f"event_type {self.event_type} needs a {expected.__name__} payload, "
                             f"not {type(self.payload).__name__}")
        marking = self.handling.intelligence
        if marking is not None and marking.review_by > (self.report_time + MAX_RETENTION).date():
            raise ValueError(f"handling.intelligence.review_by {marking.review_by} is more than 5 years after "
                             f"report_time (28 CFR 23.20(h))")
        if self.event_type == EventType.PLANNED_OPERATION and not self.location.has_coordinates:
            raise ValueError("a planned operation needs location.latitude and location.longitude (deconfliction)")
        return self

    @property
    def agency_ori(self) -> str:
        return self.source_agency.ori


# -- what the hub derives: canonical events and deconfliction alerts ----------------------------------
class DedupRule(StrEnum):
    NEW_EVENT = "NEW_EVENT"
    EXACT_DUPLICATE = "EXACT_DUPLICATE"
    RESUBMISSION_DUPLICATE = "RESUBMISSION_DUPLICATE"
    RESUBMISSION_UPDATE = "RESUBMISSION_UPDATE"
    CROSS_REFERENCE = "CROSS_REFERENCE"
    CROSS_AGENCY_MATCH = "CROSS_AGENCY_MATCH"


class DedupDecision(AvroModel):
    rule: DedupRule
    score: Fraction
    explanation: Explanation
    event_id: Code


class ReportCredit(AvroModel):
    event_id: Code
    agency: Agency
    source_system: Code
    source_record_id: Code
    record_version: RecordVersion
    report_time: Timestamp
    rule: DedupRule
    score: Fraction
    dissemination: DisseminationLevel = DisseminationLevel.WHITE
    content_match: bool = False  # v6: matches another report of the event by content (a co-reporter)
    entity_keys: list[EntityKeyText] = Field([], max_length=MAX_KEYS_PER_CREDIT)  # v8: what the report names


class CanonicalEvent(AvroModel):
    """One real-world event; the highest revision per ``canonical_id`` is the current one, unless it names the id the
    event goes on under (``superseded_by``)."""

    canonical_id: Code
    revision: int = Field(ge=1, le=AVRO_INT_MAX)
    event_type: EventType
    primary: CaseEvent
    reports: list[ReportCredit] = Field(min_length=1, max_length=MAX_REPORTS_PER_CANONICAL)
    decision: DedupDecision
    superseded_by: Code | None = None  # v6: the event goes on under this id (its primary changed); this one ends
    related: list[Code] = Field([], max_length=MAX_RECORD_REFERENCES)  # v8: linked by a citation, but not the same

    @property
    def agencies(self) -> list[str]:
        return sorted({r.agency.ori for r in self.reports})


class AlertKind(StrEnum):
    TARGET = "TARGET"
    EVENT = "EVENT"


class AlertStatus(StrEnum):
    OPEN = "OPEN"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"
    ESCALATED = "ESCALATED"


class AlertParty(AvroModel):
    agency: Agency
    event_id: Code
    canonical_id: Code
    case_numbers: list[Code] = Field([], max_length=MAX_CASE_NUMBERS)
    contact: ContactInformation | None = None
    dissemination: DisseminationLevel = DisseminationLevel.WHITE


class DeconflictionAlert(AvroModel):
    alert_id: Code
    alert_kind: AlertKind
    status: AlertStatus
    urgent: bool
    matched: Label
    parties: list[AlertParty] = Field(min_length=2, max_length=MAX_ALERT_PARTIES)
    raised_at: Timestamp
    updated_at: Timestamp
    explanation: Explanation


class AlertActionKind(StrEnum):
    ACKNOWLEDGE = "ACKNOWLEDGE"
    RESOLVE = "RESOLVE"


class AlertAction(AvroModel):
    alert_id: Code
    action: AlertActionKind
    agency_ori: Code
    actor: Name = Field(min_length=1)
    at: Timestamp
    note: Text | None = None


class ClockTick(AvroModel):
    """The hub's wall clock as an input (v9): time that is logged, so a replay sees it too."""

    at: Timestamp
    source: Name = Field(min_length=1)


# -- routing to task forces (v4) --------------------------------------------------------------------
class ShareForm(StrEnum):
    FULL = "FULL"
    POINTER = "POINTER"
    WITHHELD = "WITHHELD"


class SharedRecordKind(StrEnum):
    CANONICAL_EVENT = "CANONICAL_EVENT"
    ALERT = "ALERT"


class RecordPointer(AvroModel):
    """That a record exists and whom to ask: never its place, entities or drugs (LEXS gray)."""

    record_id: Label
    record_kind: SharedRecordKind
    event_type: EventType | None = None
    alert_kind: AlertKind | None = None
    owners: list[Agency] = Field([], max_length=MAX_REPORTS_CARRIED)


class FeedItem(AvroModel):
    item_id: Label
    unit_id: Label
    form: ShareForm
    rule: Label
    subscription_id: Label | None = None
    registry_version: AvroInt
    routed_at: Timestamp
    event: CanonicalEvent | None = None
    alert: DeconflictionAlert | None = None
    pointer: RecordPointer | None = None

    @model_validator(mode="after")
    def _one_body(self) -> FeedItem:
        bodies = [b for b in (self.event, self.alert, self.pointer) if b is not None]
        if len(bodies) != 1 or (self.form == ShareForm.POINTER) != (self.pointer is not None) \
                or self.form == ShareForm.WITHHELD:
            raise ValueError("a feed item holds exactly one of event, alert (FULL) or pointer (POINTER)")
        return self


class RoutingDecision(AvroModel):
    decision_id: Label
    record_id: Label
    record_kind: SharedRecordKind
    revision: Label
    event_ids: list[Code] = Field([], max_length=MAX_REPORTS_CARRIED)
    owner_oris: list[Code] = Field([], max_length=MAX_REPORTS_CARRIED)
    unit_id: Label
    principal: Label
    form: ShareForm
    rule: Label
    reason: Detail
    subscription_id: Label | None = None
    registry_version: AvroInt
    decided_at: Timestamp
    component: Label


class UnitDecision(AvroModel):
    """One task force's part of :class:`RoutingDecisions`."""

    decision_id: Label
    unit_id: Label
    principal: Label
    form: ShareForm
    rule: Label
    reason: Detail
    subscription_id: Label | None = None


class RoutingDecisions(AvroModel):
    """Every task force's decision about one record revision in one audit record: the router writes, and the seal
    stage chains, one record per input rather than one per unit."""

    record_id: Label
    record_kind: SharedRecordKind
    revision: Label
    event_ids: list[Code] = Field([], max_length=MAX_REPORTS_CARRIED)
    owner_oris: list[Code] = Field([], max_length=MAX_REPORTS_CARRIED)
    registry_version: AvroInt
    decided_at: Timestamp
    component: Label
    decisions: list[UnitDecision] = Field([], max_length=MAX_HUB_LIST_ITEMS)

    def per_unit(self) -> list[RoutingDecision]:
        """One :class:`RoutingDecision` per unit, as the audit log held them before schema v7."""
        shared = self.model_dump(exclude={"decisions"})
        return [RoutingDecision.model_construct(**shared, **unit.model_dump()) for unit in self.decisions]


def routing_decisions(audited: AvroModel) -> list[RoutingDecision]:
    """The per-unit dissemination decisions an audit record holds, whichever schema version wrote it ([] for
    other audit records)."""
    if isinstance(audited, RoutingDecisions):
        return audited.per_unit()
    return [audited] if isinstance(audited, RoutingDecision) else []


class RegistryRevision(AvroModel):
    version: int = Field(ge=1, le=AVRO_INT_MAX)
    document: str = Field(max_length=MAX_DOCUMENT_CHARS)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    applied_by: Label = Field(min_length=1)
    applied_at: Timestamp
    changes: list[Detail] = Field([], max_length=MAX_HUB_LIST_ITEMS)


class AuditSeal(AvroModel):
    partition: AvroInt
    sequence: int = Field(ge=1, le=AVRO_LONG_MAX)
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    recorded_at: Timestamp
    record: bytes = Field(max_length=MAX_MESSAGE_BYTES)


# -- retention and the CJIS audit trail (v5) ---------------------------------------------------------
class ProtectedRecord(AvroModel):
    """A record sealed under its reports' record keys: destroying one key purges every copy on the log."""

    key_ids: list[Label] = Field(min_length=1, max_length=MAX_REPORTS_CARRIED)
    review_by: Day
    inner_type: Label = Field(min_length=1)
    algorithm: Label = Field(min_length=1)
    nonce: bytes = Field(max_length=64)
    ciphertext: bytes = Field(max_length=MAX_MESSAGE_BYTES)

    @field_validator("key_ids")
    @classmethod
    def _sorted_and_distinct(cls, value: list[str]) -> list[str]:
        """The key ids are authenticated data and fix the key derivation order, so they have one spelling."""
        if value != sorted(set(value)):
            raise ValueError("key_ids must be sorted and distinct")
        return value


class AuditEventType(StrEnum):
    ALERT_STATUS_CHANGED = "ALERT_STATUS_CHANGED"
    RECORD_REJECTED = "RECORD_REJECTED"
    ACCESS_CHANGED = "ACCESS_CHANGED"
    RECORD_PURGED = "RECORD_PURGED"
    REVIEW_EXTENDED = "REVIEW_EXTENDED"
    AUDIT_QUERIED = "AUDIT_QUERIED"
    REPLAY_RUN = "REPLAY_RUN"
    OTHER = "OTHER"


class AuditOutcome(StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DENIED = "DENIED"


class AuditEvent(AvroModel):
    """One audited action with the CJIS fields: what, when, where, who and the outcome."""

    audit_id: Code
    recorded_at: Timestamp
    component: Label = Field(min_length=1)
    event_type: AuditEventType
    principal: Label = Field(min_length=1)
    outcome: AuditOutcome
    subject_ids: list[Label] = Field([], max_length=MAX_HUB_LIST_ITEMS)
    detail: Detail

    @field_validator("audit_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return _require_uuid(value)


ALL_MODELS: tuple[type[AvroModel], ...] = (
    ContactInformation, Agency, Location, IntelligenceMarking, Handling, EntityIdentifier, EntityReference,
    RecordReference, Weight, Drug, PillPress, ItemSeizure, Charge, Arrest, Case, Indictment, LabResult,
    PlannedOperation, CaseEvent, DedupDecision, ReportCredit, CanonicalEvent, AlertParty, DeconflictionAlert,
    AlertAction, RecordPointer, FeedItem, RoutingDecision, UnitDecision, RoutingDecisions, RegistryRevision, AuditSeal,
    ProtectedRecord, AuditEvent, ClockTick,
)
ALL_ENUMS: tuple[type[StrEnum], ...] = (
    EventType, AgencyLevel, DisseminationLevel, TrafficLightProtocol, CuiCategory, Sensitivity, Confidence,
    EntityKind, EntityRole, IdentifierScheme, DrugType, DrugForm, WeightUnit, ConveyanceType, ConcealmentMethod,
    ChargeSeverity, LaboratoryKind, OperationKind, DedupRule, AlertKind, AlertStatus, AlertActionKind, ShareForm,
    SharedRecordKind, AuditEventType, AuditOutcome,
)
MODELS_BY_NAME: dict[str, type[AvroModel]] = {m.avro_name: m for m in ALL_MODELS}

"""Typed models of the wire contract, one per named Avro type in ``avsc/`` (a test keeps them in step).

The ``.avsc`` files define the wire format; these models add the validation that matters to the people
using the hub (ORI format, E.164 phones, VIN check digits, timezone-aware times, 28 CFR Part 23 rules) and
the derived values that must never be typed in (estimated doses).
"""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

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


class AvroModel(BaseModel):
    """A model mirroring one Avro record; ``avro_name`` is the record's full name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
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


def _require_e164(value: str) -> str:
    if not E164_PATTERN.match(value):
        raise ValueError(f"{value!r} is not an E.164 telephone number (+ country code and digits, e.g. +16195550142)")
    return value


# -- records -------------------------------------------------------------------------------------
class ContactInformation(AvroModel):
    name: str = Field(min_length=1)
    telephone: str | None = None
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

    @field_validator("telephone")
    @classmethod
    def _e164(cls, value: str | None) -> str | None:
        return value if value is None else _require_e164(value)


class Agency(AvroModel):
    ori: str
    name: str = Field(min_length=1)
    level: AgencyLevel
    contact: ContactInformation | None = None

    @field_validator("ori")
    @classmethod
    def _ori_format(cls, value: str) -> str:
        if not ORI_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a 9-character ORI (two-letter state code + 7 letters/digits, e.g. CA0371100)")
        return value


class Location(AvroModel):
    port_of_entry: str | None = None
    state: str | None = None
    county_fips: str | None = Field(None, pattern=r"^\d{5}$")
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    description: str | None = None

    @field_validator("port_of_entry")
    @classmethod
    def _known_port(cls, value: str | None) -> str | None:
        if value is not None and value not in PORTS_OF_ENTRY:
            raise ValueError(f"unknown port of entry {value!r}; known: {', '.join(sorted(PORTS_OF_ENTRY))}")
        return value

    @field_validator("state")
    @classmethod
    def _known_state(cls, value: str | None) -> str | None:
        if value is not None and value not in US_STATES:
            raise ValueError(f"{value!r} is not a USPS state code")
        return value

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
    criminal_predicate: str
    sensitivity: Sensitivity
    confidence: Confidence
    control_official: str = Field(min_length=1)
    review_by: date

    @field_validator("criminal_predicate")
    @classmethod
    def _predicate_documented(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("28 CFR 23.20(a): an intelligence record needs a documented criminal predicate")
        return value


class Handling(AvroModel):
    dissemination: DisseminationLevel
    tlp: TrafficLightProtocol
    cui_categories: list[CuiCategory] = []
    releasable_to: list[str] = []
    no_foreign: bool = False
    intelligence: IntelligenceMarking | None = None


class EntityIdentifier(AvroModel):
    scheme: IdentifierScheme
    value: str = Field(min_length=1)
    issuer: str | None = None

    @model_validator(mode="after")
    def _valid_for_scheme(self) -> EntityIdentifier:
        if self.scheme == IdentifierScheme.PHONE_E164:
            _require_e164(self.value)
        elif self.scheme == IdentifierScheme.VIN and not vin_check_digit_ok(self.value.upper()):
            raise ValueError(f"VIN {self.value!r} fails the check digit (17 characters, no I/O/Q, position 9)")
        elif self.scheme == IdentifierScheme.LICENSE_PLATE and not self.issuer:
            raise ValueError("a license plate needs its issuing state in 'issuer'")
        return self


class EntityReference(AvroModel):
    kind: EntityKind
    role: EntityRole
    identifiers: list[EntityIdentifier] = Field(min_length=1)
    display_name: str | None = None


class RecordReference(AvroModel):
    system: str = Field(min_length=1)
    number: str = Field(min_length=1)
    ori: str | None = None


class Weight(AvroModel):
    value: float = Field(gt=0)
    unit: WeightUnit

    @property
    def milligrams(self) -> float:
        return self.value * MG_PER_UNIT[self.unit]


class Drug(AvroModel):
    drug_type: DrugType
    form: DrugForm
    net_weight: Weight | None = None
    pill_count: int | None = Field(None, gt=0)
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
    serial_number: str | None = None
    manufacturer: str | None = None
    model: str | None = None


class ItemSeizure(AvroModel):
    seizure_number: str | None = None
    drugs: list[Drug] = []
    pill_presses: list[PillPress] = []
    conveyance: ConveyanceType
    concealment: list[ConcealmentMethod] = []
    operation_name: str | None = None
    turned_over_to: str | None = None
    nii_scan: bool = False

    @model_validator(mode="after")
    def _seized_something(self) -> ItemSeizure:
        if not self.drugs and not self.pill_presses:
            raise ValueError("a seizure needs at least one drug or pill press")
        return self

    def estimated_doses(self, purity: float | None = None) -> float:
        return sum(d.estimated_doses(purity) for d in self.drugs)


class Charge(AvroModel):
    statute: str = Field(min_length=1)
    description: str = Field(min_length=1)
    severity: ChargeSeverity


class Arrest(AvroModel):
    booking_number: str | None = None
    charges: list[Charge] = []
    related_seizure_number: str | None = None


class Case(AvroModel):
    case_number: str = Field(min_length=1)
    title: str = Field(min_length=1)
    lead_investigator: ContactInformation | None = None
    disposition: str | None = None


class Indictment(AvroModel):
    case_number: str = Field(min_length=1)
    court: str = Field(min_length=1)
    docket_number: str = Field(min_length=1)
    filed_on: date
    defendant_count: int = Field(gt=0)
    charges: list[Charge] = []
    organization: str | None = None


class LabResult(AvroModel):
    laboratory: str = Field(min_length=1)
    laboratory_kind: LaboratoryKind
    seizure_number: str | None = None
    seizure_event_id: str | None = None
    drug_type: DrugType
    purity: Fraction
    net_weight: Weight | None = None
    method: str = Field(min_length=1)


class PlannedOperation(AvroModel):
    operation_kind: OperationKind
    operation_name: str | None = None
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    radius_m: float = Field(250.0, gt=0, le=50_000)
    case_number: str | None = None
    on_scene_contact: ContactInformation

    @model_validator(mode="after")
    def _ends_after_start(self) -> PlannedOperation:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
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

    event_id: str
    event_type: EventType
    source_agency: Agency
    source_system: str = Field(min_length=1)
    source_record_id: str = Field(min_length=1)
    record_version: int = Field(ge=1)
    event_time: AwareDatetime
    report_time: AwareDatetime
    location: Location
    handling: Handling
    entities: list[EntityReference] = []
    record_references: list[RecordReference] = []
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
    explanation: str
    event_id: str


class ReportCredit(AvroModel):
    event_id: str
    agency: Agency
    source_system: str
    source_record_id: str
    record_version: int
    report_time: AwareDatetime
    rule: DedupRule
    score: Fraction
    dissemination: DisseminationLevel = DisseminationLevel.WHITE


class CanonicalEvent(AvroModel):
    """One real-world event; the highest revision per ``canonical_id`` is the current one."""

    canonical_id: str
    revision: int = Field(ge=1)
    event_type: EventType
    primary: CaseEvent
    reports: list[ReportCredit] = Field(min_length=1)
    decision: DedupDecision

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
    event_id: str
    canonical_id: str
    case_numbers: list[str] = []
    contact: ContactInformation | None = None
    dissemination: DisseminationLevel = DisseminationLevel.WHITE


class DeconflictionAlert(AvroModel):
    alert_id: str
    alert_kind: AlertKind
    status: AlertStatus
    urgent: bool
    matched: str
    parties: list[AlertParty] = Field(min_length=2)
    raised_at: AwareDatetime
    updated_at: AwareDatetime
    explanation: str


class AlertActionKind(StrEnum):
    ACKNOWLEDGE = "ACKNOWLEDGE"
    RESOLVE = "RESOLVE"


class AlertAction(AvroModel):
    alert_id: str
    action: AlertActionKind
    agency_ori: str
    actor: str = Field(min_length=1)
    at: AwareDatetime
    note: str | None = None


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

    record_id: str
    record_kind: SharedRecordKind
    event_type: EventType | None = None
    alert_kind: AlertKind | None = None
    owners: list[Agency] = []


class FeedItem(AvroModel):
    item_id: str
    unit_id: str
    form: ShareForm
    rule: str
    subscription_id: str | None = None
    registry_version: int
    routed_at: AwareDatetime
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
    decision_id: str
    record_id: str
    record_kind: SharedRecordKind
    revision: str
    event_ids: list[str] = []
    owner_oris: list[str] = []
    unit_id: str
    principal: str
    form: ShareForm
    rule: str
    reason: str
    subscription_id: str | None = None
    registry_version: int
    decided_at: AwareDatetime
    component: str


class RegistryRevision(AvroModel):
    version: int = Field(ge=1)
    document: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    applied_by: str = Field(min_length=1)
    applied_at: AwareDatetime
    changes: list[str] = []


class AuditSeal(AvroModel):
    partition: int = Field(ge=0)
    sequence: int = Field(ge=1)
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    recorded_at: AwareDatetime
    record: bytes


# -- retention and the CJIS audit trail (v5) ---------------------------------------------------------
class ProtectedRecord(AvroModel):
    """A record sealed under its reports' record keys: destroying one key purges every copy on the log."""

    key_ids: list[str] = Field(min_length=1)
    review_by: date
    inner_type: str = Field(min_length=1)
    algorithm: str = Field(min_length=1)
    nonce: bytes
    ciphertext: bytes

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

    audit_id: str
    recorded_at: AwareDatetime
    component: str = Field(min_length=1)
    event_type: AuditEventType
    principal: str = Field(min_length=1)
    outcome: AuditOutcome
    subject_ids: list[str] = []
    detail: str

    @field_validator("audit_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return _require_uuid(value)


ALL_MODELS: tuple[type[AvroModel], ...] = (
    ContactInformation, Agency, Location, IntelligenceMarking, Handling, EntityIdentifier, EntityReference,
    RecordReference, Weight, Drug, PillPress, ItemSeizure, Charge, Arrest, Case, Indictment, LabResult,
    PlannedOperation, CaseEvent, DedupDecision, ReportCredit, CanonicalEvent, AlertParty, DeconflictionAlert,
    AlertAction, RecordPointer, FeedItem, RoutingDecision, RegistryRevision, AuditSeal, ProtectedRecord, AuditEvent,
)
ALL_ENUMS: tuple[type[StrEnum], ...] = (
    EventType, AgencyLevel, DisseminationLevel, TrafficLightProtocol, CuiCategory, Sensitivity, Confidence,
    EntityKind, EntityRole, IdentifierScheme, DrugType, DrugForm, WeightUnit, ConveyanceType, ConcealmentMethod,
    ChargeSeverity, LaboratoryKind, OperationKind, DedupRule, AlertKind, AlertStatus, AlertActionKind, ShareForm,
    SharedRecordKind, AuditEventType, AuditOutcome,
)
MODELS_BY_NAME: dict[str, type[AvroModel]] = {m.avro_name: m for m in ALL_MODELS}

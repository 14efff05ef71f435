"""The task-force registry (``deploy/taskforces.yaml``): BEST units, their areas, clearances and subscriptions.

The registry says who may receive what; ``consumers/sharing.py`` applies it to each record. There is no
per-unit LEXS dissemination clearance: WHITE/GRAY/BLACK are the owner's instruction to *every* non-owner,
so what differs between units is their CUI categories, the highest TLP they accept in full, whether a
foreign partner reads their feed, and whether they hold 28 CFR Part 23 need-to-know for intelligence.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
    model_serializer, model_validator,
)

from consumers.exceptions import RegistryError, UnknownTaskForceError
from hub.settings import REPO_ROOT
from schemas.codec import problems_of
from schemas.models import (
    ORI_PATTERN, Agency, AgencyLevel, ContactInformation, CuiCategory, DrugType, EventType, TrafficLightProtocol,
)
from schemas.reference import PORTS_OF_ENTRY, US_STATES

DEFAULT_REGISTRY = REPO_ROOT / "deploy" / "taskforces.yaml"
UNIT_ID_PATTERN = r"^best-[a-z0-9-]+$"
HOME_COUNTRY = "US"
# AMBER+STRICT and RED never leave the owning agencies' units, so a unit cannot be cleared above AMBER.
RECEIVABLE_TLP = (TrafficLightProtocol.CLEAR, TrafficLightProtocol.GREEN, TrafficLightProtocol.AMBER)


def _ori(value: str) -> str:
    if not ORI_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a 9-character ORI (two letters + 7 letters/digits, e.g. CA0370000)")
    return value


def _country(value: str) -> str:
    if len(value) != 2 or not value.isascii() or not value.isalpha() or not value.isupper():
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. MX)")
    return value


Ori = Annotated[str, AfterValidator(_ori)]
CountryCode = Annotated[str, AfterValidator(_country)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Polygon = Annotated[list[tuple[Latitude, Longitude]], Field(min_length=3)]


class RegistryModel(BaseModel):
    """Registry entries are typed by hand: unknown keys are typos, and loaded entries never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _sets_sorted(self, handler: Any) -> Any:
        """Sets serialise sorted, so one registry always has one JSON document (and one hash) in every process."""
        data = handler(self)
        for name, value in self:
            if isinstance(value, frozenset | set) and isinstance(data, dict) and name in data:
                data[name] = sorted(data[name], key=str)
        return data


class Region(RegistryModel):
    """Places named by state, county (5-digit FIPS) or port of entry; a location in any of them is inside."""

    states: frozenset[str] = frozenset()
    county_fips: frozenset[Annotated[str, Field(pattern=r"^\d{5}$")]] = frozenset()
    ports_of_entry: frozenset[str] = frozenset()

    @field_validator("states")
    @classmethod
    def _known_states(cls, values: frozenset[str]) -> frozenset[str]:
        unknown = sorted(values - US_STATES)
        if unknown:
            raise ValueError(f"unknown state {', '.join(unknown)} (use USPS codes such as CA, AZ, NM, TX)")
        return values

    @field_validator("ports_of_entry")
    @classmethod
    def _known_ports(cls, values: frozenset[str]) -> frozenset[str]:
        unknown = sorted(values - PORTS_OF_ENTRY.keys())
        if unknown:
            raise ValueError(f"unknown port of entry {', '.join(unknown)}; known: {', '.join(sorted(PORTS_OF_ENTRY))}")
        return values

    @property
    def is_empty(self) -> bool:
        return not (self.states or self.county_fips or self.ports_of_entry)


class AreaOfResponsibility(Region):
    """A unit's area; polygons (lat, lon vertices) cover places no state/county/port names, e.g. across the border."""

    polygons: list[Polygon] = []

    @model_validator(mode="after")
    def _covers_something(self) -> AreaOfResponsibility:
        if self.is_empty and not self.polygons:
            raise ValueError("an area of responsibility needs states, county_fips, ports_of_entry or polygons")
        return self


class Clearances(RegistryModel):
    """What a unit may receive in full from records it does not own."""

    cui_categories: frozenset[CuiCategory] = Field(
        frozenset(), description="CUI categories the unit may hold; records marked with others arrive as pointers.")
    max_tlp: TrafficLightProtocol = Field(
        TrafficLightProtocol.AMBER, description="Highest TLP received in full; above it, a pointer.")
    criminal_intelligence: bool = Field(
        False, description="28 CFR 23.20(e) need-to-know and right-to-know for criminal intelligence records.")
    foreign_partners: dict[Ori, CountryCode] = Field(
        {}, description="Member agencies outside the US (ORI -> country); any makes the unit a foreign partner.")

    @field_validator("max_tlp")
    @classmethod
    def _receivable(cls, value: TrafficLightProtocol) -> TrafficLightProtocol:
        if value not in RECEIVABLE_TLP:
            raise ValueError(f"{value} records never reach units that do not own them; use AMBER at most")
        return value

    @field_validator("foreign_partners")
    @classmethod
    def _abroad(cls, values: dict[str, str]) -> dict[str, str]:
        home = sorted(ori for ori, country in values.items() if country == HOME_COUNTRY)
        if home:
            raise ValueError(f"{', '.join(home)}: a foreign partner's country cannot be {HOME_COUNTRY}")
        return values

    @property
    def foreign_partner(self) -> bool:
        """Whether someone outside the US reads the unit's feed (NOFORN records must not reach it)."""
        return bool(self.foreign_partners)


class Subscription(RegistryModel):
    """Which records a unit wants; every filter that is set must hold (empty lists mean no restriction)."""

    subscription_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    event_types: frozenset[EventType] = Field(frozenset(), description="Empty: every event type.")
    regions: Region = Field(Region(), description="Empty: the unit's area of responsibility; may reach beyond it.")
    drug_types: frozenset[DrugType] = Field(frozenset(), description="Only records naming one of these drugs.")
    min_weight_kg: float | None = Field(None, gt=0, description="Only records with at least this net weight.")
    operation_names: list[str] = Field([], description="Only records of these operations (case-insensitive).")
    include_alerts: bool = Field(False, description="Also receive pointers to deconfliction alerts of others.")


class TaskForce(RegistryModel):
    """One BEST unit: its member agencies, area, clearances, contacts and subscriptions."""

    unit_id: str = Field(pattern=UNIT_ID_PATTERN)
    name: str = Field(min_length=1)
    lead_ori: Ori
    member_oris: list[Ori] = Field(description="Member agencies; the lead agency is a member even when not listed.")
    area: AreaOfResponsibility
    clearances: Clearances = Clearances()
    points_of_contact: list[ContactInformation] = Field(min_length=1)
    subscriptions: list[Subscription] = []

    @field_validator("member_oris")
    @classmethod
    def _listed_once(cls, values: list[str]) -> list[str]:
        repeated = sorted({ori for ori in values if values.count(ori) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once")
        return values

    @field_validator("points_of_contact")
    @classmethod
    def _reachable(cls, contacts: list[ContactInformation]) -> list[ContactInformation]:
        unreachable = [c.name for c in contacts if not (c.telephone and c.email)]
        if unreachable:
            raise ValueError(f"{', '.join(unreachable)}: a point of contact needs a telephone and an email")
        return contacts

    @model_validator(mode="after")
    def _consistent(self) -> TaskForce:
        strangers = sorted(set(self.clearances.foreign_partners) - self.agencies)
        if strangers:
            raise ValueError(f"clearances.foreign_partners names {', '.join(strangers)}, not a member of the unit")
        ids = [s.subscription_id for s in self.subscriptions]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"subscriptions: subscription_id {', '.join(repeated)} used more than once")
        return self

    @property
    def agencies(self) -> frozenset[str]:
        """Every agency reading the unit's feed: the lead and the members."""
        return frozenset(self.member_oris) | {self.lead_ori}

    def country_of(self, ori: str) -> str:
        return self.clearances.foreign_partners.get(ori, HOME_COUNTRY)


class Registry(RegistryModel):
    """All units; validated against the agency directory when one is passed as context ``{"agencies": ...}``."""

    version: int = Field(ge=1)
    task_forces: list[TaskForce] = []

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Registry:
        ids = [t.unit_id for t in self.task_forces]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"unit_id {', '.join(repeated)} is used by more than one task force")
        agencies = (info.context or {}).get("agencies")
        if agencies is not None:
            problems = [p for unit in self.task_forces for p in _directory_problems(unit, agencies)]
            if problems:
                raise ValueError("; ".join(problems))
        return self

    def unit(self, unit_id: str) -> TaskForce:
        for task_force in self.task_forces:
            if task_force.unit_id == unit_id:
                return task_force
        known = ", ".join(sorted(t.unit_id for t in self.task_forces)) or "none"
        raise UnknownTaskForceError(f"no task force {unit_id!r} in registry version {self.version} (known: {known})")

    def units_of_agency(self, ori: str) -> list[TaskForce]:
        """Every unit the agency leads or belongs to, by unit id (an agency may sit on several units)."""
        return sorted((t for t in self.task_forces if ori in t.agencies), key=lambda t: t.unit_id)

    def diff(self, other: Registry) -> list[str]:
        """What changes from this registry to ``other``, one line per change, for the audit log."""
        changes = [f"version: {self.version} -> {other.version}"] if self.version != other.version else []
        return changes + _keyed_changes({t.unit_id: t for t in self.task_forces},
                                        {t.unit_id: t for t in other.task_forces},
                                        "{key}", lambda t: f" ({t.name})",
                                        lambda old, new: [f": {line}" for line in _unit_changes(old, new)])


def _keyed_changes(before: Mapping[str, Any], after: Mapping[str, Any], label: str, about: Any,
                   compare: Any) -> list[str]:
    """Removed, added and changed entries of two keyed collections, one line each, in key order."""
    lines = []
    for key in sorted(before.keys() | after.keys()):
        head = label.format(key=key)
        if key not in after:
            lines.append(f"{head}: removed{about(before[key])}")
        elif key not in before:
            lines.append(f"{head}: added{about(after[key])}")
        else:
            lines += [f"{head}{line}" for line in compare(before[key], after[key])]
    return lines


def _directory_problems(unit: TaskForce, agencies: Mapping[str, Agency]) -> list[str]:
    problems = [f"unit {unit.unit_id}: {field}: {ori} is not in the agency directory"
                for field, oris in (("lead_ori", [unit.lead_ori]), ("member_oris", unit.member_oris),
                                    ("clearances.foreign_partners", sorted(unit.clearances.foreign_partners)))
                for ori in oris if ori not in agencies]
    for ori in sorted(unit.agencies & agencies.keys()):
        foreign = agencies[ori].level is AgencyLevel.FOREIGN_PARTNER
        if foreign and ori not in unit.clearances.foreign_partners:
            problems.append(f"unit {unit.unit_id}: clearances.foreign_partners: {ori} is a foreign partner agency; "
                            f"list it with its country")
        elif not foreign and ori in unit.clearances.foreign_partners:
            problems.append(f"unit {unit.unit_id}: clearances.foreign_partners: {ori} is a "
                            f"{agencies[ori].level} agency, not a foreign partner")
    return problems


def _unit_changes(before: TaskForce, after: TaskForce) -> list[str]:
    """Field changes of one unit, subscriptions matched by id (a reordering is not a change)."""
    lines = _changes(_flatten(before.model_dump(mode="json", exclude={"subscriptions"})),
                     _flatten(after.model_dump(mode="json", exclude={"subscriptions"})))
    return lines + _keyed_changes(
        {s.subscription_id: s for s in before.subscriptions}, {s.subscription_id: s for s in after.subscriptions},
        "subscriptions[{key}]", lambda _: "",
        lambda old, new: [f".{line}" for line in _changes(_flatten(old.model_dump(mode="json")),
                                                          _flatten(new.model_dump(mode="json")))])


def _flatten(document: dict[str, Any]) -> dict[str, Any]:
    """Dotted path -> value; lists of names (ORIs, ports, categories) become sets, since their order means nothing."""
    flat: dict[str, Any] = {}

    def walk(path: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{path}.{key}" if path else str(key), item)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            flat[path] = frozenset(value)
        else:
            flat[path] = value

    walk("", document)
    return flat


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    lines = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if isinstance(old, frozenset) or isinstance(new, frozenset):
            old_set, new_set = old or frozenset(), new or frozenset()
            parts = ([f"added {', '.join(sorted(new_set - old_set))}"] if new_set - old_set else []) + \
                    ([f"removed {', '.join(sorted(old_set - new_set))}"] if old_set - new_set else [])
            if parts:
                lines.append(f"{path}: {'; '.join(parts)}")
        elif old != new:
            lines.append(f"{path}: {old!r} -> {new!r}")
    return lines


def load_registry(path: Path = DEFAULT_REGISTRY, *, agencies: Mapping[str, Agency] | None = None) -> Registry:
    """Read and validate the registry; with ``agencies`` (producers.directory.load_agencies()) ORIs are checked too."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"cannot read the task-force registry {path}: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("task_forces", []), list):
        raise RegistryError(f"{path}: expected a mapping with 'version' and a 'task_forces' list")
    units = []
    for index, entry in enumerate(document.get("task_forces") or []):
        name = entry.get("unit_id") if isinstance(entry, dict) else None
        try:
            units.append(TaskForce.model_validate(entry))
        except ValidationError as exc:
            raise RegistryError(f"{path}: task force {name or f'#{index + 1}'} is invalid: {_problems(exc)}") from None
    try:
        return Registry.model_validate({"version": document.get("version"), "task_forces": units},
                                       context={"agencies": agencies})
    except ValidationError as exc:
        raise RegistryError(f"{path}: {_problems(exc)}") from None


def _problems(error: ValidationError) -> str:
    """pydantic's problems as "field: why", without its "Value error, " prefix or a placeholder for the whole entry."""
    return "; ".join(reason.removeprefix("Value error, ") if field == "(record)"
                     else f"{field}: {reason.removeprefix('Value error, ')}" for field, reason in problems_of(error))

"""Deconfliction in two small stages.

``correlate`` re-keys each canonical event by every entity any of its reports names (normalised identifiers)
and, for a planned operation, by its map cell and the eight around it, so the records to compare meet in one
partition. ``deconflict`` keeps, per key, who touched it, and raises an alert naming the match and both
parties' points of contact when two agencies meet there: target deconfliction for shared entities, and
urgent event deconfliction for operations close in place with overlapping time windows.

Deconflict's state keys hash the entity key or map cell (``State.hashed``), so its changelog and local store
name no phone number, VIN or person; an alert names the match from the input record's key, not from state.
Entries holding a report's data name its reports, and go when one is purged.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consumers.linkage import cited_numbers, own_numbers
from consumers.normalize import entity_keys, record_number_key
from consumers.stage import Message, Output, Stage, StageConfig
from consumers.state import State
from schemas.models import (
    AlertKind, AlertParty, AlertStatus, CanonicalEvent, CaseEvent, DeconflictionAlert, EventType, PlannedOperation,
)
from schemas.protection import record_key_ids
from schemas.topics import ALERTS_RAISED, CORRELATION_KEYS, distance_km

ALERT_NAMESPACE = uuid.UUID("7c7f6a0e-3f7a-4b8e-a1c4-2d6f5b9e0c11")
CELL_DEGREES = 0.05  # about 5 km: operations closer than that are always in neighbouring cells


class DeconflictConfig(StageConfig):
    """Deconfliction distances and how long records stay indexed (HUB_DECONFLICT_*)."""

    model_config = SettingsConfigDict(env_prefix="HUB_DECONFLICT_")

    operation_distance_m: float = Field(500.0, gt=0, le=5000,
                                        description="Operations whose places are closer than this conflict.")
    retention_days: int = Field(730, gt=0, description="Event-time days a record or operation stays indexed "
                                "(case follow-ups arrive years after the seizure, interleaved with new events).")


def cell_of(latitude: float, longitude: float) -> tuple[int, int]:
    return math.floor(latitude / CELL_DEGREES), math.floor(longitude / CELL_DEGREES)


def _cell_key(cell: tuple[int, int]) -> str:
    return f"cell:{cell[0]}:{cell[1]}"


class CorrelateStage(Stage):
    """Stateless fan-out: one output per entity key any report of the event names (and per nearby cell for
    operations), for every revision (the deconflict stage ignores what it has seen)."""

    name = "correlate"
    input_pattern = r"events\.canonical"
    outputs = (CORRELATION_KEYS.pattern,)
    input_types = (CanonicalEvent,)

    def event_time(self, message: Message) -> float:
        return message.value.primary.event_time.timestamp()

    def process(self, message: Message, state: State) -> list[Output]:
        canonical: CanonicalEvent = message.value
        if canonical.superseded_by is not None:
            return []  # the event goes on under its new id, whose revision carries the same reports
        keys = sorted({str(k) for k in entity_keys(canonical.primary)} | {k for r in canonical.reports
                                                                           for k in r.entity_keys})
        location = canonical.primary.location
        if canonical.event_type == EventType.PLANNED_OPERATION and location.has_coordinates:
            home = cell_of(location.latitude, location.longitude)  # type: ignore[arg-type]
            keys += [_cell_key((home[0] + dy, home[1] + dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        return [Output(CORRELATION_KEYS.pattern, key.encode(), canonical) for key in keys]


class DeconflictStage(Stage):
    name = "deconflict"
    # Its input interleaves every dedup partition, so event time arrives far less ordered than on ingest.
    grace = timedelta(days=90)
    input_pattern = r"correlate\.by-key"
    outputs = (ALERTS_RAISED.pattern,)
    input_types = (CanonicalEvent,)

    def __init__(self, config: DeconflictConfig | None = None) -> None:
        self.config = config or DeconflictConfig.from_env()
        self.retention = timedelta(days=self.config.retention_days)

    def event_time(self, message: Message) -> float:
        return message.value.primary.event_time.timestamp()

    def process(self, message: Message, state: State) -> list[Output]:
        canonical: CanonicalEvent = message.value
        key = message.key.decode() if message.key else ""
        if key.startswith("cell:"):
            return self._operations(key, canonical, state)
        return self._targets(key, canonical, state)

    # -- target deconfliction --------------------------------------------------------------------
    def _targets(self, key: str, canonical: CanonicalEvent, state: State) -> list[Output]:
        """Each agency whose report of ``canonical`` names the entity meets every other agency that named it in
        another event, except agencies that reported this event too (they already share the record)."""
        primary = canonical.primary
        expires = primary.event_time + self.retention
        reports = record_key_ids(canonical)
        entity = state.hashed(key)  # the identifier itself never reaches the changelog
        outputs = []
        for reporter in _reporters(key, canonical):
            for _, seen in state.scan("touch", f"{entity}|"):
                if seen["canonical_id"] == canonical.canonical_id or seen["agency"] in canonical.agencies:
                    continue
                pair = "|".join(sorted([seen["agency"], reporter]))
                if state.get("alerted", f"{entity}|{pair}") is not None:
                    continue  # these two agencies already know about this target
                stored = state.get("canonical", seen["canonical_id"])
                if stored is None:
                    continue  # purged (its touch went with it unless the entity left the record in a later revision)
                earlier = CanonicalEvent.model_validate(stored)
                if reporter in earlier.agencies:
                    continue  # one seizure, kept apart from a BLACK report's event that credits this one (see dedup)
                if cites(canonical, earlier) or cites(earlier, canonical):
                    continue  # one cites the other's record (an HSI arrest citing the SEACATS seizure): they share it
                alert = self._alert(AlertKind.TARGET, key, (earlier, seen["agency"]), (canonical, reporter),
                                    urgent=False, explanation=f"{seen['agency']} and {reporter} records both touch "
                                                              f"{key}")
                state.put("alerted", f"{entity}|{pair}", True, expires, reports=record_key_ids(alert.value))
                outputs.append(alert)
            state.put("touch", f"{entity}|{canonical.canonical_id}|{reporter}",
                      {"canonical_id": canonical.canonical_id, "agency": reporter}, expires, reports=reports)
        state.put("canonical", canonical.canonical_id, canonical.model_dump(mode="json"), expires, reports=reports)
        return outputs

    # -- event deconfliction ---------------------------------------------------------------------
    def _operations(self, key: str, canonical: CanonicalEvent, state: State) -> list[Output]:
        primary = canonical.primary
        operation: PlannedOperation = primary.payload  # type: ignore[assignment]
        expires = operation.ends_at + self.retention
        cell = state.hashed(key)  # where an operation is planned stays off the changelog too
        outputs = []
        for _, stored in state.scan("operation", f"{cell}|"):
            other = CanonicalEvent.model_validate(stored)
            if other.canonical_id == canonical.canonical_id or other.primary.agency_ori == primary.agency_ori:
                continue
            pair = "|".join(sorted([other.canonical_id, canonical.canonical_id]))
            conflict = operations_conflict(primary, other.primary, self.config.operation_distance_m)
            if conflict and state.get("alerted", pair) is None:
                alert = self._alert(AlertKind.EVENT, f"{primary.location.latitude:.5f},"
                                    f"{primary.location.longitude:.5f}", (other, other.primary.agency_ori),
                                    (canonical, primary.agency_ori), urgent=True, explanation=conflict)
                state.put("alerted", pair, True, expires, reports=record_key_ids(alert.value))
                outputs.append(alert)
        home = _cell_key(cell_of(primary.location.latitude, primary.location.longitude))  # type: ignore[arg-type]
        if key == home:
            state.put("operation", f"{cell}|{canonical.canonical_id}", canonical.model_dump(mode="json"), expires,
                      reports=record_key_ids(canonical))
        return outputs

    @staticmethod
    def _alert(kind: AlertKind, matched: str, earlier: tuple[CanonicalEvent, str], later: tuple[CanonicalEvent, str],
               *, urgent: bool, explanation: str) -> Output:
        """An alert between two (event, agency that reported it) parties."""
        (first, first_ori), (second, second_ori) = earlier, later
        name = f"{kind}|{matched}|{first.canonical_id}|{second.canonical_id}"
        if first_ori != first.primary.agency_ori or second_ori != second.primary.agency_ori:
            name += f"|{first_ori}|{second_ori}"  # several agencies' reports of one event may meet the same target
        alert_id = str(uuid.uuid5(ALERT_NAMESPACE, name))
        now = second.primary.report_time
        alert = DeconflictionAlert(
            alert_id=alert_id, alert_kind=kind, status=AlertStatus.OPEN, urgent=urgent, matched=matched,
            parties=[_party(first, first_ori), _party(second, second_ori)], raised_at=now, updated_at=now,
            explanation=explanation)
        return Output(ALERTS_RAISED.pattern, alert_id.encode(), alert)


def cites(citing: CanonicalEvent, cited: CanonicalEvent) -> bool:
    """Whether ``citing``'s primary report cites a record of ``cited`` (an HSI arrest citing the SEACATS seizure),
    however the number is written, with or without the owning ORI; an arrest's related seizure number, which names
    no system, is compared by number alone. Decided by the records themselves, so by no order of arrival."""
    owned = {*own_numbers(cited.primary),
             *(record_number_key(r.source_system, r.source_record_id, r.agency.ori) for r in cited.reports)}
    by_system = {number.split("|", 1)[1] for number in owned}  # "SYSTEM|NUMBER", whoever owns it
    if any(number.split("|", 1)[1] in by_system for number in cited_numbers(citing.primary)):
        return True
    related = getattr(citing.primary.payload, "related_seizure_number", None)
    return bool(related) and record_number_key("", related).rsplit("|", 1)[1] in {n.rsplit("|", 1)[1] for n in owned}


def _reporters(key: str, canonical: CanonicalEvent) -> list[str]:
    """ORIs of the agencies whose report of ``canonical`` names ``key`` (the primary's first)."""
    primary = canonical.primary
    named = [primary.agency_ori] if key in {str(k) for k in entity_keys(primary)} else []
    named += [r.agency.ori for r in canonical.reports if key in r.entity_keys and r.agency.ori not in named]
    return named


def _party(canonical: CanonicalEvent, ori: str) -> AlertParty:
    """The party ``ori`` is in an alert about ``canonical``: the primary report's agency, contact and case numbers,
    or another reporting agency's credit and its directory contact."""
    primary = canonical.primary
    if ori != primary.agency_ori:
        credit = next(r for r in canonical.reports if r.agency.ori == ori)
        return AlertParty(agency=credit.agency, event_id=credit.event_id, canonical_id=canonical.canonical_id,
                          contact=credit.agency.contact, dissemination=credit.dissemination)
    contact = getattr(primary.payload, "on_scene_contact", None) or primary.source_agency.contact
    cases = sorted({getattr(primary.payload, "case_number", None) or "", *(r.number for r in primary.record_references)}
                   - {""})
    return AlertParty(agency=primary.source_agency, event_id=primary.event_id, canonical_id=canonical.canonical_id,
                      case_numbers=cases, contact=contact, dissemination=primary.handling.dissemination)


def operations_conflict(a: CaseEvent, b: CaseEvent, distance_m: float) -> str | None:
    """Why two planned operations conflict (close in place, overlapping in time), or None."""
    op_a, op_b = a.payload, b.payload
    assert isinstance(op_a, PlannedOperation) and isinstance(op_b, PlannedOperation)
    if op_a.starts_at >= op_b.ends_at or op_b.starts_at >= op_a.ends_at:
        return None
    metres = 1000 * distance_km(a.location.latitude, a.location.longitude,  # type: ignore[arg-type]
                                b.location.latitude, b.location.longitude)  # type: ignore[arg-type]
    if metres > distance_m:
        return None
    overlap = min(op_a.ends_at, op_b.ends_at) - max(op_a.starts_at, op_b.starts_at)
    return (f"{op_a.operation_kind} by {a.agency_ori} and {op_b.operation_kind} by {b.agency_ori} "
            f"{metres:.0f} m apart, overlapping {overlap.total_seconds() / 3600:.1f} h")

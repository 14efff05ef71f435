"""Dedup: one canonical event per real-world event, crediting every agency that reported it.

Rules, in order (each decision is explained in the canonical event it produces):
1. exact: an event id seen before counts once (no output);
2. re-submission: the same agency, system and record id is a duplicate at the same or a lower
   version (no output) and an update at a higher one (a new revision);
3. cross-reference: a seizure citing another record's number (e.g. the SEACATS seizure number in an
   HSI report), or cited by one, joins that record's canonical event;
4. cross-agency match: a seizure by another agency with the same drug, close in place and time to any
   report of a canonical event and with quantities within tolerance joins the best-scoring one above the
   threshold;
5. otherwise it is a new canonical event.
Candidates are looked up in the partition's state only: the ingest key (location area) puts every
report of one seizure in the same partition, and intake keeps that partition number in ``events.ingested.<ORI>``.
State holding a report's data names the report (sealed under its key on the changelog, dropped when it is
purged), and record numbers in state keys are hashed (``State.hashed``); "event seen" flags stay plain.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consumers.stage import Message, Output, Stage, StageConfig
from consumers.state import State
from schemas.models import (
    CanonicalEvent, CaseEvent, DedupDecision, DedupRule, DisseminationLevel, EventType, ItemSeizure, ReportCredit,
)
from schemas.limits import MAX_REPORTS_PER_CANONICAL
from schemas.protection import record_key_ids
from schemas.reference import PORTS_OF_ENTRY
from schemas.topics import CANONICAL, distance_km

CANONICAL_NAMESPACE = uuid.UUID("0b0d3c52-5e41-4d7e-9d0e-51b1f0f6a7c4")
HOUR = 3600.0


class DedupConfig(StageConfig):
    """Thresholds of the cross-agency rule (HUB_DEDUP_*)."""

    model_config = SettingsConfigDict(env_prefix="HUB_DEDUP_")

    max_hours_apart: float = Field(3.0, gt=0, description="Reports further apart in event time never match.")
    max_km_apart: float = Field(2.0, gt=0, description="Reports further apart in place never match.")
    quantity_tolerance: float = Field(0.10, gt=0, lt=1, description="Relative difference allowed in weight or pills.")
    threshold: float = Field(0.55, gt=0, le=1, description="Minimum score for a cross-agency match.")
    retention_days: int = Field(30, gt=0, description="Event-time days a report stays matchable.")


@dataclass(frozen=True)
class Candidate:
    """What dedup remembers of one report of a canonical seizure to compare later reports against."""

    canonical_id: str
    agencies: tuple[str, ...]
    time: float
    latitude: float | None
    longitude: float | None
    port: str | None
    quantities: dict[str, tuple[float | None, int | None]]  # drug type -> (mg, pills)
    event_id: str | None = None  # None in state written before content matches were marked

    @staticmethod
    def of(canonical_id: str, agencies: list[str], event: CaseEvent) -> Candidate:
        lat, lon = _coordinates(event)
        return Candidate(canonical_id, tuple(agencies), event.event_time.timestamp(), lat, lon,
                         event.location.port_of_entry, _quantities(event.payload), event.event_id)


def _coordinates(event: CaseEvent) -> tuple[float | None, float | None]:
    loc = event.location
    if loc.has_coordinates:
        return loc.latitude, loc.longitude
    if loc.port_of_entry:
        port = PORTS_OF_ENTRY[loc.port_of_entry]
        return port.latitude, port.longitude
    return None, None


def _quantities(seizure: ItemSeizure) -> dict[str, tuple[float | None, int | None]]:
    totals: dict[str, tuple[float | None, int | None]] = {}
    for drug in seizure.drugs:
        mg, pills = totals.get(drug.drug_type, (None, None))
        if drug.net_weight is not None:
            mg = (mg or 0.0) + drug.net_weight.milligrams
        if drug.pill_count is not None:
            pills = (pills or 0) + drug.pill_count
        totals[drug.drug_type] = (mg, pills)
    return totals


def _relative_difference(a: float, b: float) -> float:
    return abs(a - b) / max(a, b) if max(a, b) > 0 else 0.0


def match_score(candidate: Candidate, event: CaseEvent, config: DedupConfig) -> tuple[float, str] | None:
    """Score in [0, 1] that ``event`` reports the same seizure as ``candidate``, with the reasons; None if not."""
    if event.agency_ori in candidate.agencies:
        return None
    hours = abs(event.event_time.timestamp() - candidate.time) / HOUR
    if hours > config.max_hours_apart:
        return None
    lat, lon = _coordinates(event)
    if candidate.port and candidate.port == event.location.port_of_entry:
        km, place = 0.0, f"same port ({candidate.port})"
    elif lat is not None and candidate.latitude is not None:
        km = distance_km(lat, lon, candidate.latitude, candidate.longitude)  # type: ignore[arg-type]
        place = f"{km:.2f} km apart"
    else:
        return None
    if km > config.max_km_apart:
        return None
    quantities = _quantities(event.payload)
    if set(quantities) != set(candidate.quantities):
        return None
    differences = []
    for drug, (mg, pills) in quantities.items():
        their_mg, their_pills = candidate.quantities[drug]
        if mg is not None and their_mg is not None:
            differences.append(_relative_difference(mg, their_mg))
        elif pills is not None and their_pills is not None:
            differences.append(_relative_difference(pills, their_pills))
    if not differences or max(differences) > config.quantity_tolerance:
        return None
    worst = max(differences)
    score = (0.4 * (1 - worst / config.quantity_tolerance) + 0.3 * (1 - hours / config.max_hours_apart)
             + 0.3 * (1 - km / config.max_km_apart))
    reasons = (f"{place}, {hours * 60:.0f} min apart, same drugs ({', '.join(sorted(quantities))}), "
               f"quantities within {worst:.1%}")
    return round(score, 4), reasons


#: (rule, score, explanation, the canonical event joined, the ORI of the report matched)
Match = tuple[DedupRule, float, str, CanonicalEvent, str]


class DedupStage(Stage):
    name = "dedup"
    input_pattern = r"events\.ingested\..+"
    outputs = (CANONICAL.pattern,)
    input_types = (CaseEvent,)

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig.from_env()
        self.retention = timedelta(days=self.config.retention_days)

    def event_time(self, message: Message) -> float:
        return message.value.event_time.timestamp()

    def process(self, message: Message, state: State) -> list[Output]:
        event: CaseEvent = message.value
        expires = event.event_time + self.retention
        report = record_key_ids(event)  # the event id within the publisher's ORI: no agency can pre-empt another's
        if state.get("event", report[0]) is not None:
            return []  # rule 1: exact duplicate
        state.put("event", report[0], True, expires)  # holds no report data: plain
        record_key = state.hashed(f"{event.agency_ori}|{event.source_system}|{event.source_record_id}")
        seen = state.get("record", record_key)
        if seen is not None:
            return self._resubmission(event, seen, record_key, state, expires)
        outputs: list[Output] = []
        own_id = str(uuid.uuid5(CANONICAL_NAMESPACE, report[0]))
        match, content_matches = self._find_match(event, state)
        if match is None:
            canonical = _new_event(own_id, event)
        else:
            rule, score, explanation, previous, matched_ori = match
            decision = DedupDecision(rule=rule, score=score, explanation=explanation, event_id=event.event_id)
            joined = _credited(previous, credit_of(event, rule, score), decision, content_matches)
            black_report = event.handling.dissemination is DisseminationLevel.BLACK
            if not black_report and not _black_match(previous, matched_ori):
                canonical = joined
                if primacy(event) < primacy(previous.primary):  # the event goes on, named after its new primary
                    outputs.append(self._supersede(previous, own_id, decision, state))
                    canonical = joined.model_copy(update={"canonical_id": own_id, "revision": 1, "primary": event})
                    expires = self._expiry_of(canonical)
                outputs += self._credit_black_twins(canonical, event, decision, state, expires)
            else:
                # A match between a BLACK report and another agency's is recorded only in events the BLACK report's
                # owners alone receive; the other agency's units receive exactly what they would had nothing
                # matched (no oracle). Reports joining the non-BLACK side later are credited to the BLACK side too.
                if _black_match(previous, matched_ori):
                    self._store_canonical(joined, state, expires)
                    outputs.append(Output(CANONICAL.pattern, joined.canonical_id.encode(), joined))
                if black_report:  # an event of its own crediting every report matched; theirs is left as it was
                    canonical = joined.model_copy(update={"canonical_id": own_id, "revision": 1, "primary": event})
                    self._add_black_twin(previous.canonical_id, own_id, state, expires, report)
                else:  # an event of its own, as if nothing had matched
                    canonical = _new_event(own_id, event)
                    self._add_black_twin(own_id, joined.canonical_id, state, expires, report)
        state.put("record", record_key, {"version": event.record_version, "canonical_id": canonical.canonical_id},
                  expires, reports=report)
        self._remember(canonical, event, state, expires)
        return [*outputs, Output(CANONICAL.pattern, canonical.canonical_id.encode(), canonical)]

    # -- rules -----------------------------------------------------------------------------------
    def _resubmission(self, event: CaseEvent, seen: dict[str, Any], record_key: str, state: State,
                      expires: Any) -> list[Output]:
        if event.record_version <= seen["version"]:
            return []  # rule 2: the same or an older version again
        previous = self._canonical(seen["canonical_id"], state)
        if previous is None:
            return []  # expired from state: nothing left to update
        same_record = (event.agency_ori, event.source_system, event.source_record_id)
        reports = [credit_of(event, DedupRule.RESUBMISSION_UPDATE, 1.0)
                   if (r.agency.ori, r.source_system, r.source_record_id) == same_record else r
                   for r in previous.reports]
        primary = previous.primary
        if (primary.agency_ori, primary.source_system, primary.source_record_id) == same_record:
            primary = event
        canonical = previous.model_copy(update={
            "revision": previous.revision + 1, "primary": primary, "reports": reports,
            "decision": DedupDecision(rule=DedupRule.RESUBMISSION_UPDATE, score=1.0, event_id=event.event_id,
                                      explanation=f"version {event.record_version} replaces {seen['version']}")})
        state.put("record", record_key, {**seen, "version": event.record_version}, expires,
                  reports=record_key_ids(event))
        self._remember(canonical, event, state, expires)
        return [Output(CANONICAL.pattern, canonical.canonical_id.encode(), canonical)]

    def _find_match(self, event: CaseEvent, state: State) -> tuple[Match | None, set[tuple[str, str | None]]]:
        """The rule, score, explanation and canonical event ``event`` joins, and the ORI of the report it matched;
        and every report (canonical id, event id) of any event that ``event`` matches by content.

        Matches through no BLACK report come first (citations, then the best content match), so that which events
        form does not depend on whether a BLACK report of the seizure arrived before the others or after them."""
        if event.event_type != EventType.SEIZURE:
            return None, set()
        matches = []
        for number in _numbers_cited(event) + _own_numbers(event):
            canonical_id = state.get("ref", state.hashed(number))
            previous = self._canonical(canonical_id, state) if canonical_id else None
            if _joinable(previous, event):
                ori, system, record = number.split("|", 2)
                matches.append((DedupRule.CROSS_REFERENCE, 1.0, f"{ori}'s {system} record {record} links the reports",
                                previous, ori))
        scored_matches = []
        content_matches = set()
        for bucket in _buckets(event.event_time.timestamp(), self.config.max_hours_apart):
            for _, summary in state.scan("candidate", f"{bucket}|"):
                scored = match_score(Candidate(**summary), event, self.config)
                if not scored or scored[0] < self.config.threshold:
                    continue
                previous = self._canonical(summary["canonical_id"], state)
                if _joinable(previous, event):
                    scored_matches.append((DedupRule.CROSS_AGENCY_MATCH, *scored, previous, summary["agencies"][0]))
                    content_matches.add((previous.canonical_id, summary.get("event_id")))
        # The best score wins; among equal scores, the first found (scan order is the state's key order).
        matches += sorted(scored_matches, key=lambda m: -m[1])
        best = next((m for m in matches if not _black_match(m[3], m[4])), matches[0] if matches else None)
        return best, content_matches

    def _credit_black_twins(self, canonical: CanonicalEvent, event: CaseEvent, decision: DedupDecision, state: State,
                            expires: Any) -> list[Output]:
        """A report joining an event kept apart from BLACK owners' events of the same seizure is credited there too."""
        outputs = []
        for twin_id in state.get("black-twins", canonical.canonical_id) or []:
            twin = self._canonical(twin_id, state)
            if not _joinable(twin, event):
                continue
            credited = _credited(twin, credit_of(event, decision.rule, decision.score), decision)
            self._store_canonical(credited, state, expires)
            outputs.append(Output(CANONICAL.pattern, credited.canonical_id.encode(), credited))
        return outputs

    def _supersede(self, previous: CanonicalEvent, new_id: str, decision: DedupDecision, state: State) -> Output:
        """The last revision of ``previous``: a report ranking before its primary (:func:`primacy`) joined, and the
        event goes on under that report's id, so the id depends on the reports and not on their arrival order. The ended
        revision stays in state as the pointer that references to the old id follow."""
        ended = previous.model_copy(update={
            "revision": previous.revision + 1, "superseded_by": new_id,
            "decision": decision.model_copy(update={"explanation": f"{decision.explanation}; report "
                                                                   f"{decision.event_id} ranks before the primary and is "
                                                                   f"primary now: the event goes on as {new_id}"})})
        expires = self._expiry_of(previous)
        self._store_canonical(ended, state, expires)
        twins = state.get("black-twins", previous.canonical_id)
        if twins:
            state.put("black-twins", new_id, twins, expires, reports=record_key_ids(previous))
        return Output(CANONICAL.pattern, ended.canonical_id.encode(), ended)

    def _expiry_of(self, canonical: CanonicalEvent) -> datetime:
        """When state about ``canonical`` may go: after its latest report could still be matched or updated."""
        return max([canonical.primary.event_time, *(r.report_time for r in canonical.reports)]) + self.retention

    @staticmethod
    def _add_black_twin(canonical_id: str, twin_id: str, state: State, expires: Any, reports: list[str]) -> None:
        twins = state.get("black-twins", canonical_id) or []
        if twin_id not in twins:
            state.put("black-twins", canonical_id, [*twins, twin_id], expires, reports=reports)

    # -- state -----------------------------------------------------------------------------------
    @staticmethod
    def _canonical(canonical_id: str, state: State) -> CanonicalEvent | None:
        """The current revision of the event, following the ids it went on under (each move credits one more
        report, so the chain is bounded)."""
        for _ in range(MAX_REPORTS_PER_CANONICAL + 1):
            stored = state.get("canonical", canonical_id)
            if stored is None:
                return None
            canonical = CanonicalEvent.model_validate(stored)
            if canonical.superseded_by is None:
                return canonical
            canonical_id = canonical.superseded_by
        return None

    @staticmethod
    def _store_canonical(canonical: CanonicalEvent, state: State, expires: Any) -> None:
        state.put("canonical", canonical.canonical_id, canonical.model_dump(mode="json"), expires,
                  reports=record_key_ids(canonical))

    def _remember(self, canonical: CanonicalEvent, event: CaseEvent, state: State, expires: Any) -> None:
        """Keep the canonical event, and the report's numbers and summary to match later reports against."""
        self._store_canonical(canonical, state, expires)
        if event.event_type != EventType.SEIZURE:
            return
        for number in _numbers_cited(event) + _own_numbers(event):
            state.put("ref", state.hashed(number), canonical.canonical_id, expires, reports=record_key_ids(event))
        # Every report is a candidate, not just the first: a third report may be close to the second
        # but not to the first, and the outcome must not depend on which arrived first.
        bucket = _buckets(event.event_time.timestamp(), 0)[0]
        summary = Candidate.of(canonical.canonical_id, [event.agency_ori], event)
        report = record_key_ids(event)
        state.put("candidate", f"{bucket}|{canonical.canonical_id}|{report[0]}", summary.__dict__, expires,
                  reports=report)


def _joinable(canonical: CanonicalEvent | None, event: CaseEvent) -> bool:
    """Whether ``event`` may be credited to ``canonical``: another agency's, with room for one more credit (the bound
    that keeps every canonical event, and the feed items carrying it, under the message limit)."""
    return canonical is not None and event.agency_ori not in canonical.agencies \
        and len(canonical.reports) < MAX_REPORTS_PER_CANONICAL


def _new_event(canonical_id: str, event: CaseEvent) -> CanonicalEvent:
    return CanonicalEvent(canonical_id=canonical_id, revision=1, event_type=event.event_type, primary=event,
                          reports=[credit_of(event, DedupRule.NEW_EVENT, 1.0)],
                          decision=DedupDecision(rule=DedupRule.NEW_EVENT, score=1.0, event_id=event.event_id,
                                                 explanation="first report of this event"))


def _credited(canonical: CanonicalEvent, credit: ReportCredit, decision: DedupDecision,
              content_matches: Collection[tuple[str, str | None]] = ()) -> CanonicalEvent:
    """The next revision of ``canonical``, crediting one more report. Content matching is symmetric, so the new
    report and each report of the event it matches by content are marked (``content_match``), whichever came
    first: who counts as a co-reporter does not depend on arrival order."""
    matched = {event_id for canonical_id, event_id in content_matches if canonical_id == canonical.canonical_id}
    reports = [r.model_copy(update={"content_match": True}) if r.event_id in matched else r for r in canonical.reports]
    if matched:
        credit = credit.model_copy(update={"content_match": True})
    return canonical.model_copy(update={"revision": canonical.revision + 1, "reports": [*reports, credit],
                                        "decision": decision})


def primacy(report: CaseEvent) -> tuple[bool, float, str, str, str]:
    """Which report of a merged event is primary (its place, handling and details are what units receive, and the
    event is named after it): a report citing no other record before one that does (a citing report is a
    follow-up: citing a number must not take over another agency's seizure), then the earliest in event time,
    then by ORI, system and record id. A function of each report alone, never of which arrived first, so the
    same reports give the same primary whatever the order. An update of the primary record keeps it primary
    (dedup keeps only the primary's whole report)."""
    return (bool(_numbers_cited(report)), report.event_time.timestamp(), report.agency_ori, report.source_system,
            report.source_record_id)


def _black_match(previous: CanonicalEvent, matched_ori: str) -> bool:
    """Whether joining ``previous`` would tell the reporter of a BLACK report: its primary is BLACK, or the report
    matched (by citation or by content) is."""
    return previous.primary.handling.dissemination is DisseminationLevel.BLACK or any(
        r.dissemination is DisseminationLevel.BLACK for r in previous.reports if r.agency.ori == matched_ori)


def credit_of(event: CaseEvent, rule: DedupRule, score: float) -> ReportCredit:
    """How a canonical event credits one report (and remembers its LEXS level for the router)."""
    return ReportCredit(event_id=event.event_id, agency=event.source_agency, source_system=event.source_system,
                        source_record_id=event.source_record_id, record_version=event.record_version,
                        report_time=event.report_time, rule=rule, score=score,
                        dissemination=event.handling.dissemination)


def _own_numbers(event: CaseEvent) -> list[str]:
    """The record's own numbers, scoped by agency: systems such as RMS are shared by many agencies."""
    prefix = f"{event.agency_ori}|{event.source_system}"
    numbers = [f"{prefix}|{event.source_record_id}"]
    seizure_number = getattr(event.payload, "seizure_number", None)
    if seizure_number:
        numbers.append(f"{prefix}|{seizure_number}")
    return numbers


def _numbers_cited(event: CaseEvent) -> list[str]:
    """Records the event cites; a citation without the owning agency's ORI is too ambiguous to merge on."""
    return [f"{r.ori}|{r.system}|{r.number}" for r in event.record_references if r.ori]


def _buckets(timestamp: float, reach_hours: float) -> list[int]:
    """Hour buckets within ``reach_hours`` of ``timestamp`` (its own first)."""
    own = int(timestamp // HOUR)
    reach = math.ceil(reach_hours)
    return [own] + [b for b in range(own - reach, own + reach + 1) if b != own]

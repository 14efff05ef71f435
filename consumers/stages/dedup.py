"""Dedup: one canonical event per real-world event, crediting every agency that reported it.

Rules, in order (each decision is explained in the canonical event it produces):
1. exact: an event id seen before counts once (no output);
2. re-submission: the same agency, system and record id is a duplicate at the same or a lower
   version (no output) and an update at a higher one (a new revision);
3. cross-reference: a seizure citing another record's number (e.g. the SEACATS seizure number in an
   HSI report), or cited by one, joins that record's canonical event, unless the rest of the two reports
   contradicts it (a different driver or vehicle, no drug in common, a day apart): then it is a related event
   (``CanonicalEvent.related``), such as a controlled delivery that follows a port seizure;
4. cross-agency match: a seizure by another agency that :func:`consumers.linkage.compare` scores at the
   threshold or more against a report of a canonical event, with no veto, joins the best-scoring one;
5. otherwise it is a new canonical event.
Candidates are looked up in the partition's state only. Every record is in one partition, whatever place it names
(:func:`schemas.topics.dedup_block`), so no precision of place (port, county, state, office) can keep two reports of
one seizure apart, and every version of a record meets the first.
State holding a report's data names the report (sealed under its key on the changelog, dropped when it is
purged), and record numbers in state keys are hashed (``State.hashed``); "event seen" flags stay plain.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from consumers.exceptions import UpdateTooLateError
from consumers.linkage import Comparison, Profile, cited_numbers, citation_signal, compare, own_numbers
from consumers.normalize import entity_keys
from consumers.stage import Message, Output, Stage, StageConfig
from consumers.state import State
from schemas.models import (
    CanonicalEvent, CaseEvent, DedupDecision, DedupRule, DisseminationLevel, EventType, ReportCredit,
)
from schemas.limits import (MAX_ENTITY_KEY_CHARS, MAX_KEYS_PER_CREDIT, MAX_RECORD_REFERENCES,
                            MAX_REPORTS_PER_CANONICAL, MAX_TEXT_CHARS)
from schemas.protection import record_key_ids
from schemas.topics import CANONICAL

CANONICAL_NAMESPACE = uuid.UUID("0b0d3c52-5e41-4d7e-9d0e-51b1f0f6a7c4")
HOUR = 3600.0


class DedupConfig(StageConfig):
    """How sure dedup must be (HUB_DEDUP_*); the weights of each signal are :data:`consumers.linkage.WEIGHTS`."""

    model_config = SettingsConfigDict(env_prefix="HUB_DEDUP_")

    max_hours_apart: float = Field(8.0, gt=0, description="Reports further apart in event time are compared only "
                                   "when one cites the other (custody times run hours after the seizure).")
    threshold: float = Field(6.0, gt=0, description="Minimum score (sum of log2 weights) for a cross-agency match.")
    citation_floor: float = Field(-2.0, description="A citation merges unless the rest of the two reports scores "
                                  "below this, or a veto applies: then the events are only related.")
    retention_days: int = Field(30, gt=0, description="Event-time days a report stays matchable.")
    memory_days: int = Field(1826, gt=0, description="Event-time days dedup remembers each report's id and version "
                             "(a few bytes each), so that an agency re-sending old records (an export replayed, a "
                             "system re-synced) repeats nothing: five years, 28 CFR 23's review period.")


def probability(score: float) -> float:
    """The score (a log2 likelihood ratio) as the probability a canonical event's decision records."""
    return round(1 / (1 + 2 ** -max(min(score, 60.0), -60.0)), 4)


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
        self.memory = timedelta(days=self.config.memory_days)

    def event_time(self, message: Message) -> float:
        return message.value.event_time.timestamp()

    def process(self, message: Message, state: State) -> list[Output]:
        event: CaseEvent = message.value
        expires = event.event_time + self.retention
        remembered = event.event_time + self.memory  # which reports and versions were seen: kept far longer
        report = record_key_ids(event)  # the event id within the publisher's ORI: no agency can pre-empt another's
        if state.get("event", report[0]) is not None:
            return []  # rule 1: exact duplicate
        state.put("event", report[0], True, remembered)  # holds no report data: plain
        record_key = state.hashed(f"{event.agency_ori}|{event.source_system}|{event.source_record_id}")
        seen = state.get("record", record_key)
        if seen is not None:
            return self._resubmission(event, seen, record_key, state, remembered)
        outputs: list[Output] = []
        own_id = str(uuid.uuid5(CANONICAL_NAMESPACE, report[0]))
        # What dedup compares the report on, read once: normalising its identifiers is the costly part.
        profile = Profile.of("", event) if event.event_type == EventType.SEIZURE else None
        match, content_matches, related, closest = self._find_match(event, profile, state)
        if match is None:
            canonical = _new_event(own_id, event, closest)
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
        if related - {canonical.canonical_id} - set(canonical.related):
            canonical = canonical.model_copy(update={
                "related": sorted(set(canonical.related) | related - {canonical.canonical_id})[:MAX_RECORD_REFERENCES]})
        state.put("record", record_key, {"version": event.record_version, "canonical_id": canonical.canonical_id},
                  remembered, reports=report)
        self._remember(canonical, event, state, expires, profile)
        return [*outputs, Output(CANONICAL.pattern, canonical.canonical_id.encode(), canonical)]

    # -- rules -----------------------------------------------------------------------------------
    def _resubmission(self, event: CaseEvent, seen: dict[str, Any], record_key: str, state: State,
                      remembered: Any) -> list[Output]:
        if event.record_version <= seen["version"]:
            return []  # rule 2: the same or an older version again
        previous = self._canonical(seen["canonical_id"], state)
        if previous is None:
            raise UpdateTooLateError(
                f"version {event.record_version} of {event.agency_ori}'s {event.source_system} record "
                f"{event.source_record_id} updates event {seen['canonical_id']}, which left dedup's state "
                f"{self.config.retention_days} days of event time after {event.event_time:%Y-%m-%d}: not applied")
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
        state.put("record", record_key, {**seen, "version": event.record_version}, remembered,
                  reports=record_key_ids(event))
        self._remember(canonical, event, state, event.event_time + self.retention)
        return [Output(CANONICAL.pattern, canonical.canonical_id.encode(), canonical)]

    def _find_match(self, event: CaseEvent, profile: Profile | None, state: State
                    ) -> tuple[Match | None, set[tuple[str, str | None]], set[str], str]:
        """The rule, score, explanation and canonical event ``event`` joins, and the ORI of the report it matched;
        every report (canonical id, event id) of any event that ``event`` matches by content; the events it cites
        but is not (related); and, when it joins nothing, why the closest candidate was not it.

        Matches through no BLACK report come first (citations, then the best content match), so that which events
        form does not depend on whether a BLACK report of the seizure arrived before the others or after them."""
        if profile is None:
            return None, set(), set(), ""
        scanned: dict[str, list[Profile]] = defaultdict(list)
        seen: set[str] = set()
        for bucket in _buckets(event.event_time.timestamp(), self.config.max_hours_apart):
            for family in _families(profile):  # reports with no drug in common never match by content
                for _, stored in state.scan("profile", f"{bucket}|{family}|"):
                    if stored["agency"] != event.agency_ori and stored["event_id"] not in seen:
                        seen.add(stored["event_id"])
                        scanned[stored["canonical_id"]].append(Profile(**stored))
        cited: dict[str, str] = {}
        for namespace, number in _number_lookups(event):
            canonical_id = state.get(namespace, state.hashed(number))
            if canonical_id:
                cited.setdefault(canonical_id, number)
        matches, scored_matches, related = [], [], set()
        content_matches: set[tuple[str, str | None]] = set()
        closest: tuple[float, str] | None = None
        for canonical_id in [*cited, *(c for c in scanned if c not in cited)]:
            previous = self._canonical(canonical_id, state)
            if not _joinable(previous, event):
                continue
            assert previous is not None
            profiles = scanned.get(canonical_id) or [Profile.of(previous.canonical_id, previous.primary)]
            comparisons = [(p, compare(profile, p)) for p in profiles]
            best_profile, best = max(comparisons, key=lambda c: c[1].score)
            vetoes = sorted({v for _, c in comparisons for v in c.vetoes})
            matched_ori = best_profile.agency
            content_matches |= {(previous.canonical_id, p.event_id) for p, c in comparisons
                                if c.matches(self.config.threshold)}
            if canonical_id in cited:
                number = cited[canonical_id]
                if vetoes or best.score < self.config.citation_floor:
                    related.add(previous.canonical_id)
                    continue
                ori, system, record = number.split("|", 2)
                signals = Comparison((citation_signal(number), *best.signals))
                whose = f"{ori}'s" if ori != "*" else "the (ORI-less) cited"
                matches.append((DedupRule.CROSS_REFERENCE, probability(signals.score),
                                f"{whose} {system} record {record} links the reports; {signals.explain()}", previous,
                                ori if ori != "*" else matched_ori))
                continue
            if vetoes or not best.matches(self.config.threshold):
                if closest is None or best.score > closest[0]:
                    closest = (best.score, f"closest candidate {previous.canonical_id}: "
                                           f"{Comparison(best.signals, tuple(vetoes)).explain()}")
                continue
            scored_matches.append((DedupRule.CROSS_AGENCY_MATCH, probability(best.score), best.explain(), previous,
                                   matched_ori, best.score))
        # The best score wins; among equal scores, the first found (scan order is the state's key order).
        matches += [m[:5] for m in sorted(scored_matches, key=lambda m: -m[5])]
        best_match = next((m for m in matches if not _black_match(m[3], m[4])), matches[0] if matches else None)
        return best_match, content_matches, related, closest[1] if closest else ""

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

    def _remember(self, canonical: CanonicalEvent, event: CaseEvent, state: State, expires: Any,
                  profile: Profile | None = None) -> None:
        """Keep the canonical event, and the report's numbers and profile (``profile``, if already read) to match
        later reports against."""
        self._store_canonical(canonical, state, expires)
        if event.event_type != EventType.SEIZURE:
            return
        report = record_key_ids(event)
        for number in own_numbers(event):
            state.put("ref", state.hashed(number), canonical.canonical_id, expires, reports=report)
            state.put("ref-owned", state.hashed(_unscoped(number)), canonical.canonical_id, expires, reports=report)
        for number in cited_numbers(event):  # a number it cites leads here, unless it already leads elsewhere
            namespace = "ref-cited" if number.startswith("*|") else "ref"
            if state.get(namespace, state.hashed(number)) in (None, canonical.canonical_id):
                state.put(namespace, state.hashed(number), canonical.canonical_id, expires, reports=report)
        # Every report is a candidate, not just the first: a third report may be close to the second
        # but not to the first, and the outcome must not depend on which arrived first.
        bucket = _buckets(event.event_time.timestamp(), 0)[0]
        profile = replace(profile or Profile.of("", event), canonical_id=canonical.canonical_id)
        for family in _families(profile):  # indexed by hour and drug family: what a later report's scan reads
            state.put("profile", f"{bucket}|{family}|{canonical.canonical_id}|{report[0]}", profile.as_dict(), expires,
                      reports=report)


def _joinable(canonical: CanonicalEvent | None, event: CaseEvent) -> bool:
    """Whether ``event`` may be credited to ``canonical``: another agency's, with room for one more credit (the bound
    that keeps every canonical event, and the feed items carrying it, under the message limit)."""
    return canonical is not None and event.agency_ori not in canonical.agencies \
        and len(canonical.reports) < MAX_REPORTS_PER_CANONICAL


def _new_event(canonical_id: str, event: CaseEvent, closest: str = "") -> CanonicalEvent:
    explanation = f"first report of this event; {closest}" if closest else "first report of this event"
    return CanonicalEvent(canonical_id=canonical_id, revision=1, event_type=event.event_type, primary=event,
                          reports=[credit_of(event, DedupRule.NEW_EVENT, 1.0)],
                          decision=DedupDecision(rule=DedupRule.NEW_EVENT, score=1.0, event_id=event.event_id,
                                                 explanation=explanation[:MAX_TEXT_CHARS]))


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
    return (bool(report.record_references), report.event_time.timestamp(), report.agency_ori, report.source_system,
            report.source_record_id)


def _black_match(previous: CanonicalEvent, matched_ori: str) -> bool:
    """Whether joining ``previous`` would tell the reporter of a BLACK report: its primary is BLACK, or the report
    matched (by citation or by content) is."""
    return previous.primary.handling.dissemination is DisseminationLevel.BLACK or any(
        r.dissemination is DisseminationLevel.BLACK for r in previous.reports if r.agency.ori == matched_ori)


def credit_of(event: CaseEvent, rule: DedupRule, score: float) -> ReportCredit:
    """How a canonical event credits one report (and remembers its LEXS level for the router, and the entities it
    names for deconfliction: the canonical event carries only the primary report whole)."""
    keys = [str(key) for key in entity_keys(event) if len(str(key)) <= MAX_ENTITY_KEY_CHARS]
    return ReportCredit(event_id=event.event_id, agency=event.source_agency, source_system=event.source_system,
                        source_record_id=event.source_record_id, record_version=event.record_version,
                        report_time=event.report_time, rule=rule, score=score,
                        dissemination=event.handling.dissemination, entity_keys=keys[:MAX_KEYS_PER_CREDIT])


def _families(profile: Profile) -> list[str]:
    """The drug families a report's profile is indexed under ("-" for a seizure of presses alone)."""
    return sorted(profile.drugs) or ["-"]


def _unscoped(number: str) -> str:
    """A record number without its ORI ("*|SEACATS|2026..."): what a citation without one looks up."""
    return "*|" + number.split("|", 1)[1]


def _number_lookups(event: CaseEvent) -> list[tuple[str, str]]:
    """Where to look up the events ``event``'s numbers lead to. ``ref`` holds numbers with their ORI (a record's own,
    or a citation naming its owner); ``ref-owned`` a record's own number without it, which only a citation without an
    ORI may find (two agencies' RMS records can share a number); ``ref-cited`` such a citation, which the cited
    record's own number finds when it arrives later."""
    lookups = []
    for number in cited_numbers(event):
        lookups += [("ref-owned", number), ("ref-cited", number)] if number.startswith("*|") else [("ref", number)]
    for number in own_numbers(event):
        lookups += [("ref", number), ("ref-cited", _unscoped(number))]
    return lookups


def _buckets(timestamp: float, reach_hours: float) -> list[int]:
    """Hour buckets within ``reach_hours`` of ``timestamp`` (its own first)."""
    own = int(timestamp // HOUR)
    reach = math.ceil(reach_hours)
    return [own] + [b for b in range(own - reach, own + reach + 1) if b != own]

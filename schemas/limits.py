"""Bounds of the contract: what no record may exceed, so every record the hub derives still fits one message.

The models (``schemas.models``) enforce the static bounds (lengths, counts, ranges, calendar years) on every
validation, so a record outside them is rejected at publish and dead-lettered at ingest with the field named.
Two bounds need more than the record: :func:`check_times` needs "now", and :func:`check_report_size` needs the
encoded bytes (the codec applies it to every report it encodes or decodes).

The sizes are chosen together: a report is at most ``MAX_REPORT_BYTES``; a canonical event carries one report
in full and at most ``MAX_REPORTS_PER_CANONICAL`` credits; an alert at most ``MAX_ALERT_PARTIES`` parties; so
the biggest canonical event, alert and feed item, sealed or not, stay under ``MAX_MESSAGE_BYTES``
(``tests/test_limits.py`` builds them and measures).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.exceptions import ConfigError
from schemas.exceptions import RecordOutOfBoundsError

if TYPE_CHECKING:
    from schemas.models import CaseEvent

# -- message sizes -----------------------------------------------------------------------------------
#: Every record the hub writes (canonical events, alerts, feed items, dead letters, state changes) stays under
#: this many bytes, below the producer's request limit and the broker's message limit (1 MiB each by default).
MAX_MESSAGE_BYTES = 1_000_000
#: One report (a ``CaseEvent``) as Avro: generous for any real seizure or case record (a typical one is under
#: 1 KiB), small enough that a canonical event carrying it and many credits still fits one message.
MAX_REPORT_BYTES = 64 * 1024
#: Reports credited by one canonical event (dedup credits each agency once): far above the handful of agencies
#: of a joint operation. Dedup must stop crediting at this many; the model refuses more.
MAX_REPORTS_PER_CANONICAL = 64
#: Parties of one deconfliction alert (correlation raises alerts between two).
MAX_ALERT_PARTIES = 8
#: Reports any one record carries (and record keys it is sealed under): a canonical event's credits and its
#: primary, or an alert's parties.
MAX_REPORTS_CARRIED = max(MAX_REPORTS_PER_CANONICAL + 1, MAX_ALERT_PARTIES)

# -- strings (in characters) ----------------------------------------------------------------------------
#: Identifiers, record and case numbers, systems, codes.
MAX_CODE_CHARS = 128
#: Names of people, agencies, laboratories, courts, operations; e-mail addresses (254 by RFC 5321).
MAX_NAME_CHARS = 256
#: Free text an agency writes (descriptions, predicates, dispositions, notes) and the hub's explanations.
MAX_TEXT_CHARS = 4096
#: What the hub writes about records: ids it makes, topic/partition/offset references, rule names, principals.
MAX_LABEL_CHARS = 1024
#: Audit details and routing reasons the hub writes (they may quote a rejected record's problems).
MAX_DETAIL_CHARS = 65_536
#: The task-force registry document as applied (a few KiB for the twenty BEST units).
MAX_DOCUMENT_CHARS = 262_144

# -- lists (items) ------------------------------------------------------------------------------------
MAX_ENTITIES = 100
MAX_IDENTIFIERS = 20  # per entity
MAX_RECORD_REFERENCES = 50
#: Entity keys a report credit carries for deconfliction (``ReportCredit.entity_keys``): plain ASCII, as
#: ``consumers.normalize`` writes them, so 64 credits of 32 keys add at most 256 KiB to a canonical event.
MAX_KEYS_PER_CREDIT = 32
MAX_ENTITY_KEY_CHARS = 128
MAX_CASE_NUMBERS = MAX_RECORD_REFERENCES + 1  # an alert party's: the record's own case number and those it cites
MAX_DRUGS = 50
MAX_PILL_PRESSES = 100
MAX_CHARGES = 100
MAX_CODES = 20  # CUI categories, concealment methods (each list holds distinct enum symbols)
MAX_RELEASABLE_TO = 100
MAX_HUB_LIST_ITEMS = 1024  # lists the hub writes: audit subjects, registry changes

# -- numbers -------------------------------------------------------------------------------------------
#: A report's version: a record updated every minute for two years stays below it.
MAX_RECORD_VERSION = 1_000_000
#: Pills, or any other count of items in one record.
MAX_COUNT = 100_000_000
#: Defendants in one indictment (the largest real ones name a few hundred).
MAX_DEFENDANTS = 10_000
#: 1,000 tonnes, in milligrams, in whatever unit a weight is given: above the largest seizures on record (134 t
#: of marijuana, Tijuana 2010), below any misplaced unit or exponent that would skew totals and dose estimates.
MAX_WEIGHT_MG = 1e12
#: Avro ``int`` fields (revisions, versions, partitions) and ``long`` ones (sequence numbers).
AVRO_INT_MAX = 2**31 - 1
AVRO_LONG_MAX = 2**63 - 1

# -- times ---------------------------------------------------------------------------------------------
#: Every time and date in the contract lies in [EARLIEST_DATE, LATEST_DATE): plausible for any record, and far
#: enough from datetime's limits (years 1 and 9999) that adding retention periods can never overflow.
EARLIEST_DATE = date(1900, 1, 1)
LATEST_DATE = date(2200, 1, 1)
#: A planned operation (deconfliction window) lasts at most this long.
MAX_OPERATION_DURATION = timedelta(days=90)
#: How many years before now an event or report may be dated (HUB_MAX_EVENT_AGE_YEARS overrides it).
MAX_EVENT_AGE_YEARS = 30
#: How far after now a report or event may be dated: clock skew between an agency's system and the hub.
MAX_CLOCK_SKEW = timedelta(days=1)
#: How far ahead a planned operation may be registered (its event time is when it starts).
MAX_PLANNING_AHEAD = timedelta(days=366)


class TimeBounds(BaseSettings):
    """The "now"-relative bounds of :func:`check_times`; a deployment overrides them with ``HUB_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore", frozen=True)

    max_event_age_years: int = Field(MAX_EVENT_AGE_YEARS, ge=1, le=100,
                                     description="Years before now an event or report time may lie.")
    max_clock_skew_hours: float = Field(MAX_CLOCK_SKEW.total_seconds() / 3600, ge=0, le=7 * 24,
                                        description="Hours after now a report or event time may lie.")

    @property
    def max_age(self) -> timedelta:
        return timedelta(days=round(365.2425 * self.max_event_age_years))

    @property
    def max_skew(self) -> timedelta:
        return timedelta(hours=self.max_clock_skew_hours)


@lru_cache(maxsize=1)
def time_bounds() -> TimeBounds:
    """The process-wide time bounds, read once from the environment."""
    try:
        return TimeBounds()
    except ValidationError as exc:
        problems = "; ".join(f"HUB_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid time bounds: {problems}") from None


def check_times(event: CaseEvent, now: datetime, bounds: TimeBounds | None = None) -> None:
    """Raise :class:`RecordOutOfBoundsError` naming ``event_time`` and/or ``report_time`` when either lies more than
    the configured years before ``now`` (timezone-aware) or after it by more than the clock skew (a planned
    operation's event time, when it starts, may lie up to ``MAX_PLANNING_AHEAD`` ahead).

    ``now`` is explicit so that a stage can pass a record's broker timestamp and stay deterministic on replay."""
    from schemas.models import EventType  # models import this module's constants

    bounds = bounds or time_bounds()
    oldest = now - bounds.max_age
    ahead = {"event_time": MAX_PLANNING_AHEAD if event.event_type == EventType.PLANNED_OPERATION else bounds.max_skew,
             "report_time": bounds.max_skew}
    problems = []
    for field, allowed_ahead in ahead.items():
        value: datetime = getattr(event, field)
        if value < oldest:
            problems.append((field, f"{value.isoformat()} is more than {bounds.max_event_age_years} years before now "
                                    f"({now.isoformat(timespec='seconds')}); the hub takes records of the last "
                                    f"{bounds.max_event_age_years} years (HUB_MAX_EVENT_AGE_YEARS)"))
        elif value > now + allowed_ahead:
            problems.append((field, f"{value.isoformat()} is more than {_span(allowed_ahead)} after now "
                                    f"({now.isoformat(timespec='seconds')}): check the date, the time zone and "
                                    f"the sending system's clock"))
    if problems:
        raise RecordOutOfBoundsError("event out of bounds: " + "; ".join(f"{f}: {r}" for f, r in problems), problems)


def check_report_size(encoded: bytes) -> None:
    """Raise :class:`RecordOutOfBoundsError` when one encoded report exceeds ``MAX_REPORT_BYTES``."""
    if len(encoded) > MAX_REPORT_BYTES:
        reason = (f"the encoded report is {len(encoded):,} bytes, more than the {MAX_REPORT_BYTES:,} a report may be "
                  f"(MAX_REPORT_BYTES): shorten its free text, or split its entities over several records")
        raise RecordOutOfBoundsError(f"report too large: {reason}", [("(record)", reason)])


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} hour(s)" if hours < 48 else f"{delta.days} days"

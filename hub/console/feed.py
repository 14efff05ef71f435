"""A task force's feed as the console shows it: one row per item, filters, and the figures behind the charts.

Rows are built from :class:`FeedItem` only, so they reveal exactly what the sharing rules let the unit see: a
pointer has no place, drugs or weights, only whom to call. Pure functions, tested without a broker;
:class:`LiveFeed` is the one place that reads Kafka, through the subscriber SDK and the signed-in principal's login.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from consumers.subscriber import PurgeNotice, Subscriber
from hub.settings import HubSettings
from schemas.models import ContactInformation, DeconflictionAlert, FeedItem, ItemSeizure, PlannedOperation

MG_PER_KG = 1_000_000


@dataclass(frozen=True)
class FeedRow:
    """What one feed item tells its unit, flattened for tables, filters, charts and the map."""

    item_id: str
    form: str
    rule: str
    kind: str  # SEIZURE, PLANNED_OPERATION, ..., ALERT EVENT, or a pointer's record kind
    when: datetime  # the event's time, the alert's raising, or the routing of a pointer
    agencies: tuple[str, ...]
    contacts: tuple[str, ...] = ()  # whom to call: a pointer's owners, an alert's parties, an operation's contact
    port: str = ""
    place: str = ""
    drugs: tuple[str, ...] = ()
    weight_kg: float = 0.0
    pills: int = 0
    doses: float = 0.0
    latitude: float | None = None
    longitude: float | None = None
    summary: str = ""

    @property
    def month(self) -> str:
        return self.when.strftime("%Y-%m")


def _contact(who: str, contact: ContactInformation | None) -> str:
    if contact is None:
        return who
    reach = ", ".join(filter(None, [contact.telephone, contact.email]))
    return f"{who}: {contact.name}" + (f" ({reach})" if reach else "")


def row_of(item: FeedItem) -> FeedRow:
    """The row of one feed item."""
    common = {"item_id": item.item_id, "form": str(item.form), "rule": item.rule}
    if item.pointer is not None:
        pointer = item.pointer
        return FeedRow(**common, kind=str(pointer.event_type or pointer.alert_kind or pointer.record_kind),
                       when=item.routed_at, agencies=tuple(o.ori for o in pointer.owners),
                       contacts=tuple(_contact(f"{o.name} ({o.ori})", o.contact) for o in pointer.owners),
                       summary="a record exists: call its owner")
    if item.alert is not None:
        alert = item.alert
        return FeedRow(**common, kind=f"ALERT {alert.alert_kind}", when=alert.raised_at,
                       agencies=tuple(p.agency.ori for p in alert.parties),
                       contacts=tuple(_contact(f"{p.agency.name} ({p.agency.ori})", p.contact) for p in alert.parties),
                       summary=f"{alert.status}{' URGENT' if alert.urgent else ''}: {alert.explanation}")
    event = item.event
    assert event is not None  # a FeedItem holds exactly one body
    primary, location = event.primary, event.primary.location
    payload = primary.payload
    drugs: tuple[str, ...] = ()
    weight_mg = doses = 0.0
    pills = 0
    contacts: tuple[str, ...] = ()
    if isinstance(payload, ItemSeizure):
        drugs = tuple(dict.fromkeys(str(d.drug_type) for d in payload.drugs))
        weight_mg = sum(d.net_weight.milligrams for d in payload.drugs if d.net_weight is not None)
        pills = sum(d.pill_count or 0 for d in payload.drugs)
        doses = payload.estimated_doses()
    elif isinstance(payload, PlannedOperation):
        contacts = (_contact(f"on scene ({primary.source_agency.ori})", payload.on_scene_contact),)
    summary = (f"goes on as {event.superseded_by}" if event.superseded_by else event.decision.explanation)
    return FeedRow(**common, kind=str(event.event_type), when=primary.event_time, agencies=tuple(event.agencies),
                   contacts=contacts, port=location.port_of_entry or "",
                   place=location.port_of_entry or location.county_fips or location.state or "",
                   drugs=drugs, weight_kg=weight_mg / MG_PER_KG, pills=pills, doses=doses,
                   latitude=location.latitude, longitude=location.longitude, summary=summary)


@dataclass(frozen=True)
class Filters:
    """What an analyst narrows the feed to; empty fields match everything."""

    kind: str = ""
    drug: str = ""
    port: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, row: FeedRow) -> bool:
        return ((not self.kind or row.kind == self.kind) and (not self.drug or self.drug in row.drugs)
                and (not self.port or row.port == self.port)
                and (self.since is None or row.when >= self.since) and (self.until is None or row.when < self.until))


@dataclass
class FeedView:
    """A unit's feed, read as its principal: one row per record (its latest revision) newest first, the alerts it
    holds in full, and the purge notices it must act on."""

    unit_id: str
    rows: list[FeedRow] = field(default_factory=list)
    notices: list[PurgeNotice] = field(default_factory=list)
    alerts: list[DeconflictionAlert] = field(default_factory=list)
    #: Items and tombstones read: the live pages reload when it moves (a new revision replaces a row, adding none).
    revisions: int = 0

    def filtered(self, filters: Filters) -> list[FeedRow]:
        return [row for row in self.rows if filters.matches(row)]

    def choices(self) -> dict[str, list[str]]:
        """The values each filter can take in this feed."""
        return {"kind": sorted({r.kind for r in self.rows}), "drug": sorted({d for r in self.rows for d in r.drugs}),
                "port": sorted({r.port for r in self.rows if r.port})}


class LiveFeed:
    """A unit's feed kept in memory for one signed-in user and brought up to date on each look: the first read takes
    the whole feed, later ones only what arrived since. It reads outside the unit's consumer group, so the console
    never moves the position the unit's own subscribers carry on from."""

    def __init__(self, settings: HubSettings, unit_id: str) -> None:
        self.unit_id = unit_id
        self._subscriber = Subscriber(unit_id, settings, start="beginning", commit=False)
        self._items: dict[str, FeedItem] = {}
        self._revisions = 0
        self._lock = threading.Lock()  # the server's threads may serve one user's page and poll at once

    def view(self) -> FeedView:
        """The feed as it stands now: latest revision per record, a purged record gone (its notice kept)."""
        with self._lock:
            for item in self._subscriber.items(idle_s=0):
                self._items[record_id_of(item)] = item
                self._revisions += 1
            notices = list(self._subscriber.notices)
            for notice in notices:
                self._items.pop(notice.record_id, None)
            items = list(self._items.values())
        rows = sorted((row_of(item) for item in items), key=lambda r: r.when, reverse=True)
        return FeedView(self.unit_id, rows, notices, [item.alert for item in items if item.alert is not None],
                        self._revisions + len(notices))

    def close(self) -> None:
        self._subscriber.close()


def read_feed(settings: HubSettings, unit_id: str) -> FeedView:
    """The whole feed of ``unit_id``, read once with ``settings``' login (the broker refuses any other unit's)."""
    live = LiveFeed(settings, unit_id)
    try:
        return live.view()
    finally:
        live.close()


def record_id_of(item: FeedItem) -> str:
    """The record a feed item delivers a revision of (the feed's record key): a canonical event, alert or pointer."""
    if item.event is not None:
        return item.event.canonical_id
    return item.alert.alert_id if item.alert is not None else item.pointer.record_id


def weight_by_port_month(rows: list[FeedRow]) -> dict[str, dict[str, float]]:
    """Seized kilograms by port, then by month (seizures that name a port)."""
    table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        if row.kind == "SEIZURE" and row.port:
            table[row.port][row.month] += row.weight_kg
    return {port: dict(sorted(months.items())) for port, months in sorted(table.items())}


def doses_by_port(rows: list[FeedRow]) -> dict[str, float]:
    """Potentially lethal fentanyl doses seized, by port."""
    doses: dict[str, float] = defaultdict(float)
    for row in rows:
        if row.kind == "SEIZURE" and row.port:
            doses[row.port] += row.doses
    return dict(sorted(doses.items()))


def drug_mix(rows: list[FeedRow]) -> dict[str, int]:
    """How many seizures name each drug."""
    mix: dict[str, int] = defaultdict(int)
    for row in rows:
        for drug in row.drugs:
            mix[drug] += 1
    return dict(sorted(mix.items(), key=lambda kv: (-kv[1], kv[0])))


"""Small valid events for tests, built as plain dicts (the shape agencies send) and validated by the contract."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from schemas.codec import parse_event
from schemas.models import CaseEvent
from schemas.protection import record_key_ids

CBP_SAN_DIEGO = {"ori": "CACBP0100", "name": "CBP Office of Field Operations, San Diego Field Office",
                 "level": "FEDERAL"}

SEIZURE: dict[str, Any] = {
    "event_type": "SEIZURE",
    "source_agency": CBP_SAN_DIEGO,
    "source_system": "SEACATS",
    "source_record_id": "2026250400000101",
    "record_version": 1,
    "event_time": "2025-10-03T14:05:00Z",
    "report_time": "2025-10-03T16:00:00Z",
    "location": {"port_of_entry": "SAN_YSIDRO", "state": "CA", "county_fips": "06073"},
    "handling": {"dissemination": "WHITE", "tlp": "AMBER", "cui_categories": ["SP_SUB"]},
    "entities": [
        {"kind": "VEHICLE", "role": "CONVEYANCE",
         "identifiers": [{"scheme": "VIN", "value": "1M8GDM9AXKP042788"},
                         {"scheme": "LICENSE_PLATE", "value": "8ABC123", "issuer": "CA"}]},
        {"kind": "PHONE", "role": "SUBJECT", "identifiers": [{"scheme": "PHONE_E164", "value": "+16195550142"}]},
    ],
    "payload": {
        "seizure_number": "2026250400000101",
        "drugs": [{"drug_type": "FENTANYL", "form": "POWDER", "net_weight": {"value": 12.4, "unit": "LB"}}],
        "conveyance": "PASSENGER_VEHICLE",
        "concealment": ["QUARTER_PANEL"],
        "operation_name": "Operation Apollo",
    },
}

PLANNED_RAID: dict[str, Any] = {
    **SEIZURE,
    "event_type": "PLANNED_OPERATION",
    "source_record_id": "OP-1",
    "location": {"latitude": 32.7157, "longitude": -117.1611, "state": "CA"},
    "payload": {"operation_kind": "RAID", "starts_at": "2025-10-05T05:00:00Z", "ends_at": "2025-10-05T08:00:00Z",
                "on_scene_contact": {"name": "SA Rivera", "telephone": "+16195550199"}},
}


def event_dict(base: dict[str, Any] = SEIZURE, **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with a fresh event id and dotted-path ``changes`` (``payload__purity`` style)."""
    data = copy.deepcopy(base)
    data["event_id"] = str(uuid.uuid4())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


def make_event(base: dict[str, Any] = SEIZURE, **changes: Any) -> CaseEvent:
    return parse_event(event_dict(base, **changes))


def key_id(event: CaseEvent) -> str:
    """The id of the record key ``event`` is sealed under (its event id within its agency's ORI)."""
    return record_key_ids(event)[0]

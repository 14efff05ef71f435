"""The topic is the identity: what an agency writes to its own ingest topic can never forge, pre-empt or reveal
another agency's records (issue 11's trust table, one test per row), as pure functions over typed events.

The same rows on the real broker, through intake and dedup, are in ``tests/test_hostile_ingest.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from consumers.exceptions import StageError
from consumers.stage import Message
from consumers.stages.dedup import DedupStage
from consumers.stages.intake import IntakeStage
from consumers.state import MemoryPartitionStore, State
from schemas.models import CanonicalEvent, DedupRule, FeedItem
from tests.factories import make_event
from tests.test_dedup import PartitionedRun
from tests.test_routing import REGISTRY, routed

CBP = {"ori": "CACBP0100", "name": "CBP Office of Field Operations, San Diego", "level": "FEDERAL"}
AZDPS = {"ori": "AZDPS0000", "name": "Arizona Department of Public Safety", "level": "STATE"}
SAN_YSIDRO = {"port_of_entry": "SAN_YSIDRO", "state": "CA", "county_fips": "06073"}
CBP_SEIZURE_NUMBER = "2026250400000101"


def intake(event, topic_ori: str) -> list:
    """What the intake stage makes of ``event`` read from ``ingest.<topic_ori>``."""
    stamped = int(event.report_time.timestamp() * 1000)  # the broker's LogAppendTime, as the report arrives
    return IntakeStage().process(Message(f"ingest.{topic_ori}", 0, 0, b"k", event, stamped),
                                 State(MemoryPartitionStore()))


def cbp_seizure(**changes: Any):
    return make_event(source_agency=CBP, location=SAN_YSIDRO, source_system="SEACATS",
                      source_record_id="SEACATS-7731", payload__seizure_number=CBP_SEIZURE_NUMBER, **changes)


def dps_report(**changes: Any):
    """Arizona DPS's own seizure at San Ysidro (outside its units' areas; in the partition of CBP's records there:
    dedup only compares reports of one location area)."""
    return make_event(source_agency=AZDPS, location=SAN_YSIDRO, source_system="DPS-RMS", source_record_id="DPS-0042",
                      payload__seizure_number="DPS-SZ-0042", **changes)


def citing(number: str) -> dict[str, Any]:
    return {"record_references": [{"ori": CBP["ori"], "system": "SEACATS", "number": number}]}


def feed_of(unit_id: str, canonicals: list[CanonicalEvent]) -> list[FeedItem]:
    """Every item the router puts on ``unit_id``'s feed for these canonical events, in order."""
    return [o.value for c in canonicals for o in routed(c) if isinstance(o.value, FeedItem)
            and o.value.unit_id == unit_id]


def test_a_report_claiming_another_agency_is_refused_at_intake():
    forged = cbp_seizure()
    with pytest.raises(StageError, match="claims agency CACBP0100 but was published on AZDPS0000's ingest topic"):
        intake(forged, "AZDPS0000")
    [accepted] = intake(forged, "CACBP0100")
    assert accepted.topic == "events.ingested.CACBP0100" and accepted.value == forged


def test_a_version_2_of_another_agencys_record_is_the_publishers_own_record():
    run = PartitionedRun(DedupStage())
    [original] = run.feed(cbp_seizure())
    # DPS reuses CBP's system and record id and a higher version: intake only lets it in as DPS's own.
    overwrite = make_event(source_agency=AZDPS, location=SAN_YSIDRO, source_system="SEACATS",
                           source_record_id="SEACATS-7731", record_version=2, payload__operation_name="Forged")
    assert intake(overwrite, "AZDPS0000")
    outputs = run.feed(overwrite)
    assert all(o.decision.rule != DedupRule.RESUBMISSION_UPDATE for o in outputs)
    cbp_event = run.current(original.canonical_id)
    assert all(o.primary == original.primary for o in run.outputs if o.primary.agency_ori == "CACBP0100"), \
        "CBP's record keeps CBP's content"
    assert [(r.agency.ori, r.record_version) for r in cbp_event.reports if r.agency.ori == "CACBP0100"] == \
        [("CACBP0100", 1)]


def test_citing_a_black_record_changes_nothing_the_citer_receives_of_its_own_report():
    report = dps_report(**citing(CBP_SEIZURE_NUMBER))
    with_black = PartitionedRun(DedupStage())
    with_black.feed(cbp_seizure(handling={**cbp_seizure().handling.model_dump(mode="json"), "dissemination": "BLACK"}))
    with_black.outputs.clear()
    with_black.feed(report)
    without = PartitionedRun(DedupStage())
    without.feed(report)  # the same report where the number it cites belongs to nothing
    tucson = [u.unit_id for u in REGISTRY.task_forces if "AZDPS0000" in u.agencies]
    assert tucson, "the registry must have a unit of AZDPS0000"
    for unit_id in tucson:
        items = feed_of(unit_id, with_black.outputs)
        assert items == feed_of(unit_id, without.outputs) and items, f"{unit_id} can tell the BLACK record exists"
        assert items[0].event.primary == report and items[0].rule == "owner.full"
    san_diego = feed_of("best-san-diego", with_black.outputs)
    assert ("owner.full", ["AZDPS0000", "CACBP0100"]) in \
        [(i.rule, sorted(r.agency.ori for r in i.event.reports)) for i in san_diego], \
        "the BLACK record's owners learn of the match"


def test_an_event_id_of_another_agency_cannot_pre_empt_its_report():
    real = cbp_seizure()
    squatter = dps_report(event_id=real.event_id)  # CBP's next id is predictable; DPS publishes under it first
    run = PartitionedRun(DedupStage())
    run.feed(squatter)
    [canonical] = run.feed(real)  # not dropped as an exact duplicate
    assert (canonical.decision.event_id, canonical.reports[-1].agency.ori) == (real.event_id, "CACBP0100")


def test_citing_a_white_record_outside_the_citers_area_grants_no_co_reporter_copy():
    run = PartitionedRun(DedupStage())
    run.feed(cbp_seizure())
    # Its own seizure (another quantity, no vehicle or phone of CBP's): only the citation links it. A report that also
    # matched CBP's in what only someone there knows (its quantity, its people and vehicle) would make DPS a
    # co-reporter, citation or not; place, time and drug alone are not enough.
    own_seizure = {"payload__drugs__0__net_weight": {"value": 20, "unit": "LB"}, "entities": []}
    [merged] = run.feed(dps_report(**citing(CBP_SEIZURE_NUMBER), **own_seizure))
    assert "AZDPS0000" in merged.agencies, "the citation still joins the reports: it counts once"
    for unit in (u for u in REGISTRY.task_forces if "AZDPS0000" in u.agencies and "CACBP0100" not in u.agencies):
        rules = [item.rule for item in feed_of(unit.unit_id, [merged])]
        assert "co-reporter.full" not in rules, f"{unit.unit_id} got CBP's record for citing its number"
        assert rules == [item.rule for item in feed_of(unit.unit_id, [run.latest[merged.canonical_id]
                                                                     .model_copy(update={"reports": merged.reports[:1]})])]

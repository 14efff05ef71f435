"""The task-force registry: the shipped file loads, lookups work, changes are described, bad files say what is wrong."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.exceptions import RegistryError, UnknownTaskForceError
from consumers.registry import DEFAULT_REGISTRY, Registry, TaskForce, load_registry
from producers.directory import load_agencies
from schemas.models import AgencyLevel

AGENCIES = load_agencies()
SHIPPED = yaml.safe_load(DEFAULT_REGISTRY.read_text())


def test_shipped_registry_loads_against_the_agency_directory():
    registry = load_registry(agencies=AGENCIES)
    ids = {t.unit_id for t in registry.task_forces}
    assert {"best-san-diego", "best-imperial-valley", "best-san-ysidro", "best-yuma", "best-tucson", "best-nogales",
            "best-phoenix", "best-el-paso", "best-laredo", "best-rio-grande-valley"} <= ids
    assert {t.clearances.criminal_intelligence for t in registry.task_forces} == {True, False}
    for task_force in registry.task_forces:
        assert 1 <= len(task_force.subscriptions) <= 2, task_force.unit_id
        assert all(c.email.endswith("example.gov") for c in task_force.points_of_contact)
        for ori in task_force.agencies:
            foreign = AGENCIES[ori].level is AgencyLevel.FOREIGN_PARTNER
            assert foreign == (ori in task_force.clearances.foreign_partners)
    assert [t.unit_id for t in registry.task_forces if t.clearances.foreign_partner] == ["best-laredo"]
    assert "illustrative" in DEFAULT_REGISTRY.read_text().splitlines()[1]


def test_lookup_by_unit_and_by_agency():
    registry = load_registry()
    assert registry.unit("best-laredo").lead_ori == "TXHSI0100"
    assert [t.unit_id for t in registry.units_of_agency("CACBP0100")] == [
        "best-imperial-valley", "best-san-diego", "best-san-ysidro"]
    assert "CAHSI0100" in registry.unit("best-san-ysidro").agencies, "the lead is a member"
    assert registry.units_of_agency("NY0000000") == []
    with pytest.raises(UnknownTaskForceError) as error:
        registry.unit("best-casa-grande")
    assert "best-casa-grande" in str(error.value) and "best-laredo" in str(error.value)
    assert "deploy/taskforces.yaml" in str(error.value), "the hint says where units are defined"


# -- clear errors ----------------------------------------------------------------------------------
def write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "taskforces.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def broken(unit_index: int, **changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(SHIPPED)
    document["task_forces"][unit_index].update(changes)
    return document


def laredo_index() -> int:
    return next(i for i, t in enumerate(SHIPPED["task_forces"]) if t["unit_id"] == "best-laredo")


@pytest.mark.parametrize(("changes", "expected"), [
    ({"area": {"ports_of_entry": ["SAN_YSIDRO", "TIJUANA"]}}, ["area.ports_of_entry", "TIJUANA", "SAN_YSIDRO"]),
    ({"area": {"states": ["CA", "BC"]}}, ["area.states", "BC"]),
    ({"area": {"county_fips": [6073]}}, ["area.county_fips"]),
    ({"area": {}}, ["area", "needs states"]),
    ({"area": {"polygons": [[[32.5, -117.0], [32.6, -117.0]]]}}, ["area.polygons.0", "at least 3"]),
    ({"lead_ori": "HSI-SD"}, ["lead_ori", "'HSI-SD' is not a 9-character ORI"]),
    ({"member_oris": ["CACBP0100", "CACBP0100"]}, ["member_oris", "CACBP0100 listed more than once"]),
    ({"points_of_contact": [{"name": "Desk", "telephone": "555-0100", "email": "d@hsi.example.gov"}]},
     ["points_of_contact.0.telephone", "not a telephone number"]),
    ({"points_of_contact": [{"name": "Desk", "email": "d@hsi.example.gov"}]}, ["Desk", "needs a telephone"]),
    ({"clearances": {"max_tlp": "RED"}}, ["clearances.max_tlp", "AMBER at most"]),
    ({"clearances": {"cui_categories": ["SECRET"]}}, ["clearances.cui_categories"]),
    ({"clearances": {"foreign_partners": {"AZ0120000": "MX"}}}, ["foreign_partners", "AZ0120000", "not a member"]),
    ({"subscriptions": [{"subscription_id": "a", "event_types": ["RAID"]}]}, ["subscriptions.0.event_types"]),
    ({"subscriptions": [{"subscription_id": "a"}, {"subscription_id": "a"}]}, ["subscription_id a used more"]),
    ({"subscriptions": [{"subscription_id": "a", "min_weight_kg": 0}]}, ["subscriptions.0.min_weight_kg"]),
    ({"subscriptions": [{"subscription_id": "a", "regions": {"ports_of_entry": ["NOGALES"]}}]},
     ["subscriptions.0.regions.ports_of_entry", "NOGALES"]),
    ({"clearence": {}}, ["clearence", "Extra inputs"]),
    ({"unit_id": "laredo"}, ["unit_id", "best-"]),
])
def test_a_bad_unit_is_named_with_its_field(tmp_path, changes, expected):
    path = write(tmp_path, broken(laredo_index(), **changes))
    with pytest.raises(RegistryError) as error:
        load_registry(path)
    message = str(error.value)
    assert str(path) in message
    assert ("task force laredo" if changes.get("unit_id") else "task force best-laredo") in message
    for fragment in expected:
        assert fragment in message, message
    assert "->" in message, "every error says what to do next"


def test_unknown_oris_are_found_when_a_directory_is_given(tmp_path):
    document = broken(laredo_index(), member_oris=["TXCBP0100", "MXFGR0000", "TX9990000"])
    path = write(tmp_path, document)
    load_registry(path)  # well-formed: only the directory knows the ORI is unknown
    with pytest.raises(RegistryError) as error:
        load_registry(path, agencies=AGENCIES)
    assert "unit best-laredo: member_oris: TX9990000 is not in the agency directory" in str(error.value)


def test_a_foreign_agency_must_be_declared_a_foreign_partner(tmp_path):
    laredo = SHIPPED["task_forces"][laredo_index()]
    path = write(tmp_path, broken(laredo_index(), clearances={**laredo["clearances"], "foreign_partners": {}}))
    with pytest.raises(RegistryError) as error:
        load_registry(path, agencies=AGENCIES)
    assert "unit best-laredo: clearances.foreign_partners: MXFGR0000 is a foreign partner agency" in str(error.value)
    path = write(tmp_path, broken(laredo_index(), clearances={**laredo["clearances"],
                                                              "foreign_partners": {"TXDPS0000": "MX"}}))
    with pytest.raises(RegistryError) as error:
        load_registry(path, agencies=AGENCIES)
    assert "TXDPS0000 is a STATE agency, not a foreign partner" in str(error.value)


def test_duplicate_unit_ids_are_rejected_but_shared_members_are_fine(tmp_path):
    document = copy.deepcopy(SHIPPED)
    document["task_forces"].append({**document["task_forces"][0], "name": "Another San Diego"})
    with pytest.raises(RegistryError) as error:
        load_registry(write(tmp_path, document))
    assert "unit_id best-san-diego is used by more than one task force" in str(error.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("version: 1\ntask_forces: [unit_id: best-x\n", "cannot read the task-force registry"),
    ("- just a list\n", "expected a mapping"),
    ("version: 0\ntask_forces: []\n", "version"),
    ("task_forces: [42]\n", "task force #1 is invalid"),
])
def test_unreadable_or_malformed_files(tmp_path, text, expected):
    path = tmp_path / "taskforces.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as error:
        load_registry(path)
    assert expected in str(error.value) and str(path) in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(RegistryError, match="cannot read the task-force registry"):
        load_registry(tmp_path / "nowhere.yaml")


# -- diff --------------------------------------------------------------------------------------------
def test_diff_lists_every_change_for_the_audit_log():
    before = load_registry()
    document = before.model_dump(mode="json")
    document["version"] = 2
    document["task_forces"] = [t for t in document["task_forces"] if t["unit_id"] != "best-phoenix"]
    yuma = next(t for t in document["task_forces"] if t["unit_id"] == "best-yuma")
    yuma["member_oris"] = [*yuma["member_oris"], "AZ0120000"]
    yuma["clearances"]["max_tlp"] = "GREEN"
    yuma["subscriptions"][0]["event_types"] = ["SEIZURE"]
    yuma["subscriptions"].append({"subscription_id": "alerts", "include_alerts": True})
    laredo = next(t for t in document["task_forces"] if t["unit_id"] == "best-laredo")
    laredo["clearances"]["foreign_partners"] = {}
    laredo["member_oris"].remove("MXFGR0000")
    document["task_forces"].append({**yuma, "unit_id": "best-casa-grande", "name": "BEST Casa Grande"})
    after = Registry.model_validate(document)

    assert before.diff(after) == [
        "version: 1 -> 2",
        "best-casa-grande: added (BEST Casa Grande)",
        "best-laredo: clearances.foreign_partners.MXFGR0000: 'MX' -> None",
        "best-laredo: member_oris: removed MXFGR0000",
        "best-phoenix: removed (BEST Phoenix)",
        "best-yuma: clearances.max_tlp: 'AMBER' -> 'GREEN'",
        "best-yuma: member_oris: added AZ0120000",
        "best-yuma: subscriptions[alerts]: added",
        "best-yuma: subscriptions[aor-all].event_types: added SEIZURE",
    ]
    assert after.diff(before)[0] == "version: 2 -> 1"


def test_diff_of_an_equal_registry_is_empty_and_ignores_order():
    registry = load_registry()
    document = registry.model_dump(mode="json")
    document["task_forces"].reverse()
    for task_force in document["task_forces"]:
        task_force["member_oris"].reverse()
        task_force["subscriptions"].reverse()
    assert registry.diff(Registry.model_validate(document)) == []
    assert registry.diff(registry) == []


def test_task_force_is_frozen():
    task_force = load_registry().unit("best-yuma")
    with pytest.raises(Exception):
        task_force.name = "renamed"  # type: ignore[misc]
    assert isinstance(task_force, TaskForce)

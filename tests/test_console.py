"""The analysts' console: rows, filters and figures as pure functions, then sign-in and pages on a SCRAM broker with
ACLs, and a real headless Chromium signing in as a task force."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaError

from consumers.exceptions import FeedMissingError
from consumers.registry import load_registry
from consumers.runner import StageRunner
from consumers.stages import STAGES
from consumers.stages.intake import IntakeStage
from hub.access import agency_principal, apply_access, auditor_principal, credentials_for, task_force_principal
from hub.console import basemap, create_app
from hub.console.feed import Filters, FeedRow, doses_by_port, drug_mix, read_feed, row_of, weight_by_port_month
from hub.control import apply_registry
from hub.topics import ensure_topics, hub_topics
from producers.publisher import Publisher
from producers.sample import generate
from schemas.topics import AUDIT_QUERIES, FEED
from tests.conftest import running_local_broker, topic_records

PREFIX = "console."
AUDITOR = "oig"
ROOT = Path(__file__).resolve().parents[1]


# -- pure: rows, filters, figures, the base map --------------------------------------------------------------------
def _row(**fields: Any) -> FeedRow:
    defaults = {"item_id": "i", "form": "FULL", "rule": "r", "kind": "SEIZURE",
                "when": datetime(2025, 3, 4, tzinfo=timezone.utc), "agencies": ("CACBP0100",)}
    return FeedRow(**(defaults | fields))


def test_filters_and_figures_count_only_what_they_should():
    rows = [_row(item_id="a", port="2504", drugs=("FENTANYL",), weight_kg=2.0, doses=800_000.0),
            _row(item_id="b", port="2504", drugs=("METHAMPHETAMINE", "FENTANYL"), weight_kg=10.0,
                 when=datetime(2025, 4, 1, tzinfo=timezone.utc)),
            _row(item_id="c", port="2604", drugs=("COCAINE",), weight_kg=1.5),
            _row(item_id="d", kind="PLANNED_OPERATION"),
            _row(item_id="e", form="POINTER", kind="SEIZURE")]
    assert [r.item_id for r in rows if Filters(drug="FENTANYL").matches(r)] == ["a", "b"]
    assert [r.item_id for r in rows if Filters(port="2604").matches(r)] == ["c"]
    assert [r.item_id for r in rows if Filters(kind="PLANNED_OPERATION").matches(r)] == ["d"]
    april = Filters(since=datetime(2025, 4, 1, tzinfo=timezone.utc), until=datetime(2025, 5, 1, tzinfo=timezone.utc))
    assert [r.item_id for r in rows if april.matches(r)] == ["b"]
    assert weight_by_port_month(rows) == {"2504": {"2025-03": 2.0, "2025-04": 10.0}, "2604": {"2025-03": 1.5}}
    assert doses_by_port(rows) == {"2504": 800_000.0, "2604": 0.0}
    assert drug_mix(rows) == {"FENTANYL": 2, "COCAINE": 1, "METHAMPHETAMINE": 1}


def test_the_base_map_places_border_crossings_inside_their_state():
    """The outlines ship with the project; San Ysidro falls in California's box and El Paso in Texas'."""
    shapes = basemap.outlines()
    assert set(shapes) == {"California", "Arizona", "New Mexico", "Texas", "Mexico"}

    def box(name: str) -> tuple[float, float, float, float]:
        points = [tuple(map(float, p.split(","))) for ring in shapes[name]
                  for p in ring.strip("M Z").replace("L", "").split()]
        xs, ys = [x for x, _ in points], [y for _, y in points]
        return min(xs), min(ys), max(xs), max(ys)

    for name, (lon, lat) in {"California": (-117.03, 32.56), "Texas": (-106.45, 31.77)}.items():
        x, y = basemap.project(lon, lat)
        west, north, east, south = box(name)
        assert west <= x <= east and north <= y <= south, name
    assert 0 <= basemap.project(-110.94, 31.33)[0] <= basemap.WIDTH  # Nogales, on the map


# -- on a SCRAM broker: what each login may read -------------------------------------------------------------------
class Cluster:
    """A SCRAM broker with the hub's ACLs, a sample published by its agencies and routed to the feeds."""

    def __init__(self, admin, units: list[str]) -> None:
        self.admin, self.units = admin, units

    def login(self, principal: str):
        return self.admin.model_copy(update=credentials_for(principal, self.admin))

    def feed_ids(self, unit: str) -> set[str]:
        codec_settings = self.login("hub")
        from hub.vault import hub_codec

        codec = hub_codec(codec_settings)
        return {codec.decode(r.value).item_id for r in topic_records(codec_settings, FEED.name(PREFIX, unit=unit))
                if r.value is not None}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    runtime = tmp_path_factory.mktemp("console-runtime")
    sample = generate(400, seed=5)
    agencies = sorted({e.agency_ori for e in sample.events})
    units = sorted(u.unit_id for u in load_registry().task_forces)
    with running_local_broker("console-broker", runtime, auth="scram") as broker:
        admin = broker.client_settings().model_copy(update={"topic_prefix": PREFIX, "runtime_dir": runtime,
                                                            "connect_timeout_s": 5.0})
        apply_access(admin, PREFIX, agencies, units, auditors=[AUDITOR])
        ensure_topics(hub_topics(PREFIX, agencies, sorted(STAGES), units), admin)
        found = Cluster(admin, units)
        hub = found.login("hub")
        apply_registry(settings=hub, applied_by="test")
        for ori in agencies:
            with Publisher(ori, found.login(agency_principal(ori))) as publisher:
                for event in (e for e in sample.events if e.agency_ori == ori):
                    publisher.publish(event)
                publisher.flush()
        StageRunner(IntakeStage(), hub, commit_interval_s=0.2).run_until_caught_up()
        StageRunner(STAGES["dedup"](), hub, commit_interval_s=0.2).run_until_caught_up()  # routes to the feeds
        StageRunner(STAGES["seal"](), hub, commit_interval_s=0.2).run_until_caught_up()  # chains the decisions
        yield found


@pytest.mark.kafka
def test_sign_in_is_the_brokers_and_a_unit_sees_exactly_its_own_feed(cluster):
    unit, other = cluster.units[0], cluster.units[1]
    client = create_app(cluster.admin.model_copy(update={"sasl_username": None, "sasl_password": None})).test_client()
    assert client.get("/feed").status_code == 302, "signed out: sent to sign in"
    wrong = client.post("/signin", data={"principal": task_force_principal(unit), "password": "not-it"})
    assert wrong.status_code == 401 and b"the broker refused that principal and password" in wrong.data
    agency = cluster.login(agency_principal("CACBP0100"))
    refused = client.post("/signin", data={"principal": agency.sasl_username, "password": agency.sasl_password})
    assert refused.status_code == 401 and b"serves task forces" in refused.data
    login = cluster.login(task_force_principal(unit))
    assert client.post("/signin", data={"principal": login.sasl_username,
                                        "password": login.sasl_password}).status_code == 302
    page = client.get("/feed").get_data(as_text=True)
    mine, theirs = cluster.feed_ids(unit), cluster.feed_ids(other)
    assert mine and theirs - mine, "both units got items, some only the other's"
    shown = {line.split('data-item="', 1)[1].split('"', 1)[0] for line in page.splitlines() if 'data-item="' in line}
    assert shown == mine, "every item of the unit's feed, and nothing else"
    assert client.get("/feed/count").get_json() == {"count": len(mine)}
    assert client.get("/map").status_code == 200
    with pytest.raises((KafkaError, FeedMissingError)):  # this login cannot even see another unit's feed topic
        read_feed(login, other)
    assert client.post("/signout").status_code == 302 and client.get("/feed").status_code == 302


@pytest.mark.kafka
def test_rows_reveal_no_more_than_the_items_they_come_from(cluster):
    """A pointer names whom to call and nothing of the record (LEXS gray); a BLACK record never reaches a unit none
    of whose members owns it, so no row shows one."""
    from hub.vault import hub_codec

    hub = cluster.login("hub")
    codec = hub_codec(hub)
    seen = {"pointer": 0, "event": 0}
    for unit in cluster.units:
        members = {ori for u in load_registry().task_forces if u.unit_id == unit
                   for ori in (u.lead_ori, *u.member_oris)}
        for record in topic_records(hub, FEED.name(PREFIX, unit=unit)):
            item = codec.decode(record.value)
            row = row_of(item)
            if item.pointer is not None:
                seen["pointer"] += 1
                assert (row.place, row.drugs, row.weight_kg, row.latitude) == ("", (), 0.0, None) and row.contacts
            if item.event is not None:
                seen["event"] += 1
                if item.event.primary.handling.dissemination == "BLACK":
                    assert members & set(item.event.agencies), f"{unit} got a BLACK record none of its members owns"
    assert seen["pointer"] and seen["event"], seen


def _signed_in(cluster, principal: str):
    client = create_app(cluster.admin.model_copy(update={"sasl_username": None, "sasl_password": None})).test_client()
    login = cluster.login(principal)
    answer = client.post("/signin", data={"principal": login.sasl_username, "password": login.sasl_password})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


@pytest.mark.kafka
def test_an_auditor_sees_the_chain_who_saw_and_releases_and_each_query_is_audited(cluster):
    from hub.vault import hub_codec

    auditor = _signed_in(cluster, auditor_principal(AUDITOR))
    assert auditor.get("/feed").status_code == 403, "an auditor reads no feed"
    unit = cluster.units[0]
    hub = cluster.login("hub")
    codec = hub_codec(hub)
    event = next(item.event for r in topic_records(hub, FEED.name(PREFIX, unit=unit))
                 for item in [codec.decode(r.value)] if item.event is not None)
    owner = event.primary.agency_ori
    page = auditor.get(f"/audit?record={event.canonical_id}&agency={owner}").get_data(as_text=True)
    assert "every chain intact" in page
    who_saw = page.split('id="who-saw"', 1)[1].split("</table>", 1)[0]
    assert f"<td>{unit}</td>" in who_saw, "the unit whose feed holds the record is named"
    assert "release(s) of " + owner in page and f"<td>{unit}</td>" in page.split('id="releases"', 1)[1]
    queries = [codec.decode(r.value) for r in topic_records(hub, AUDIT_QUERIES.name(PREFIX))]
    asked = [(q.principal, q.detail) for q in queries if q.component == "hub console"]
    assert (auditor_principal(AUDITOR), f"who-saw {event.canonical_id}") in asked
    assert {principal for principal, _ in asked} == {auditor_principal(AUDITOR)}
    analyst = _signed_in(cluster, task_force_principal(unit))
    assert analyst.get("/audit").status_code == 403, "a task force reads no audit log"


# -- a real browser ------------------------------------------------------------------------------------------------
def _chromium() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        reason = "Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("HUB_REQUIRE_TOOLS") == "1":
            pytest.fail(reason + "; HUB_REQUIRE_TOOLS=1 demands them")
        pytest.skip(reason)
    return browser, driver


@pytest.fixture
def served(cluster) -> Iterator[str]:
    from waitress.server import create_server

    server = create_server(create_app(cluster.admin.model_copy(update={"sasl_username": None,
                                                                       "sasl_password": None})),
                           host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()


@pytest.mark.kafka
def test_a_task_force_then_an_auditor_sign_in_with_chromium_and_see_their_pages(cluster, served, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    shots = Path(os.environ.get("HUB_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    unit = cluster.units[0]
    login = cluster.login(task_force_principal(unit))
    try:
        driver.get(f"{served}/feed")
        driver.find_element(By.ID, "principal-input").send_keys(login.sasl_username)
        driver.find_element(By.ID, "password-input").send_keys(login.sasl_password)
        driver.find_element(By.ID, "signin-button").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/feed"))
        assert driver.find_element(By.ID, "principal").text == login.sasl_username
        rows = driver.find_elements(By.CSS_SELECTOR, "#feed tbody tr[data-item]")
        assert {r.get_attribute("data-item") for r in rows} == cluster.feed_ids(unit)
        driver.save_screenshot(str(shots / "console-feed.png"))
        Select(driver.find_element(By.ID, "filter-kind")).select_by_visible_text("SEIZURE")
        driver.find_element(By.CSS_SELECTOR, "#filters button").click()
        WebDriverWait(driver, 30).until(lambda d: "kind=SEIZURE" in d.current_url)
        kinds = {r.find_elements(By.TAG_NAME, "td")[2].text
                 for r in driver.find_elements(By.CSS_SELECTOR, "#feed tbody tr[data-item]")}
        assert kinds == {"SEIZURE"}
        driver.find_element(By.ID, "nav-map").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/map"))
        assert driver.find_elements(By.CSS_SELECTOR, "#map .outline path")
        assert driver.find_elements(By.CSS_SELECTOR, "#map circle.event"), "the unit's seizures are on the map"
        assert driver.find_elements(By.CSS_SELECTOR, "#mix rect")
        driver.save_screenshot(str(shots / "console-map.png"))
        driver.find_element(By.CSS_SELECTOR, ".signout button").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/signin"))
        auditor = cluster.login(auditor_principal(AUDITOR))
        driver.find_element(By.ID, "principal-input").send_keys(auditor.sasl_username)
        driver.find_element(By.ID, "password-input").send_keys(auditor.sasl_password)
        driver.find_element(By.ID, "signin-button").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/audit"))
        assert "every chain intact" in driver.find_element(By.ID, "chain-state").text
        assert not driver.find_elements(By.ID, "nav-feed"), "an auditor is offered no feed"
        driver.save_screenshot(str(shots / "console-audit.png"))
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], f"errors in the page's console: {errors}"
    finally:
        driver.quit()

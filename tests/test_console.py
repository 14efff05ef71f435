"""The analysts' console: rows, filters and figures as pure functions, then sign-in and pages on a SCRAM broker with
ACLs, and a real headless Chromium signing in as a task force, an agency that acknowledges an alert, and an auditor."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from kafka import TopicPartition
from kafka.errors import KafkaError

from consumers.exceptions import FeedMissingError
from consumers.registry import load_registry
from consumers.runner import StageRunner
from consumers.stages import STAGES
from consumers.stages.intake import IntakeStage
from hub.access import agency_principal, apply_access, auditor_principal, credentials_for, task_force_principal
from hub import audit_queries
from hub.alerts import read_agency_feed
from hub.auditing import audit_event, write_audit
from hub.checkpoints import public_key_path, publish_checkpoint, write_checkpoint
from hub.console import basemap, create_app
from hub.console.feed import Filters, FeedRow, doses_by_port, drug_mix, read_feed, row_of, weight_by_port_month
from hub.control import apply_registry
from hub.kafka import make_consumer
from hub.topics import ensure_topics, hub_topics
from producers.publisher import Publisher
from producers.sample import generate
from schemas.codec import Codec
from schemas.models import AuditEventType, DeconflictionAlert, FeedItem
from schemas.topics import AGENCY_FEED, ALERTS, AUDIT, AUDIT_CHAIN, AUDIT_QUERIES, FEED
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
        self.agencies: list[str] = []

    def party_with_open_alerts(self) -> str:
        """An agency that has been told of open alerts (the sample plants shared phones, vehicles and raids)."""
        return max(self.agencies, key=lambda ori: list(self.agency_alerts(ori).values()).count("OPEN"))

    def login(self, principal: str):
        return self.admin.model_copy(update=credentials_for(principal, self.admin))

    def feed_items(self, unit: str) -> dict[str, FeedItem]:
        """The items the unit's feed holds now, by item id: each record's latest revision."""
        hub = self.login("hub")
        latest = {r.key: r.value for r in topic_records(hub, FEED.name(PREFIX, unit=unit))}
        return {item.item_id: item for item in (Codec().decode(v) for v in latest.values() if v is not None)}

    def feed_ids(self, unit: str) -> set[str]:
        return set(self.feed_items(unit))

    def agency_alerts(self, ori: str) -> dict[str, str]:
        """Alert id -> status, as the hub wrote them to the agency's own topic."""
        hub = self.login("hub")
        latest = {r.key: r.value for r in topic_records(hub, AGENCY_FEED.name(PREFIX, ori=ori))}
        alerts = (Codec().decode(value) for value in latest.values() if value is not None)
        return {a.alert_id: str(a.status) for a in alerts if isinstance(a, DeconflictionAlert)}

    def run_alerts_stage(self) -> None:
        """Apply the actions written since (the alerts stage, with routing fused in, as `hub run alerts`)."""
        StageRunner(STAGES["alerts"](), self.login("hub"), commit_interval_s=0.2).run_until_caught_up()


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
        for stage in ("dedup", "correlate", "deconflict", "alerts", "seal"):  # dedup and alerts route, seal chains
            StageRunner(STAGES[stage](), hub, commit_interval_s=0.2).run_until_caught_up()
        found.agencies = agencies
        yield found


@pytest.mark.kafka
def test_sign_in_is_the_brokers_and_a_unit_sees_exactly_its_own_feed(cluster):
    unit, other = cluster.units[0], cluster.units[1]
    client = create_app(cluster.admin.model_copy(update={"sasl_username": None, "sasl_password": None})).test_client()
    assert client.get("/feed").status_code == 302, "signed out: sent to sign in"
    wrong = client.post("/signin", data={"principal": task_force_principal(unit), "password": "not-it"})
    assert wrong.status_code == 401 and b"the broker refused that principal and password" in wrong.data
    admin = cluster.admin
    refused = client.post("/signin", data={"principal": admin.sasl_username, "password": admin.sasl_password})
    assert refused.status_code == 401 and b"serves task forces" in refused.data, "the console serves no operator"
    login = cluster.login(task_force_principal(unit))
    assert client.post("/signin", data={"principal": login.sasl_username,
                                        "password": login.sasl_password}).status_code == 302
    page = client.get("/feed").get_data(as_text=True)
    mine, theirs = cluster.feed_ids(unit), cluster.feed_ids(other)
    assert mine and theirs - mine, "both units got items, some only the other's"
    shown = {line.split('data-item="', 1)[1].split('"', 1)[0] for line in page.splitlines() if 'data-item="' in line}
    assert shown == mine, "every item of the unit's feed, and nothing else"
    assert client.get("/feed/count").get_json()["count"] >= len(mine), "every revision read counts"
    assert client.get("/map").status_code == 200
    with pytest.raises((KafkaError, FeedMissingError)):  # this login cannot even see another unit's feed topic
        read_feed(login, other)
    group = make_consumer(settings=login, group_id=FEED.name(PREFIX, unit=unit))
    try:  # the console read outside the unit's group: its own subscribers carry on from where they were
        assert all(group.committed(TopicPartition(FEED.name(PREFIX, unit=unit), p)) is None for p in range(3))
    finally:
        group.close()
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


def _signed_in(cluster, principal: str, checkpoint_key: Path | None = None):
    client = create_app(cluster.admin.model_copy(update={"sasl_username": None, "sasl_password": None}),
                        checkpoint_key).test_client()
    login = cluster.login(principal)
    answer = client.post("/signin", data={"principal": login.sasl_username, "password": login.sasl_password})
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return client


@pytest.mark.kafka
def test_an_auditor_sees_the_chain_who_saw_and_releases_and_each_query_is_audited(cluster, tmp_path):
    from hub.vault import hub_codec

    hub = cluster.login("hub").model_copy(update={"runtime_dir": tmp_path})  # the hub's signing key lives here
    assert _signed_in(cluster, auditor_principal(AUDITOR)).get("/audit").get_data(as_text=True).count(
        "None published yet") == 1
    heads = [r.last for r in audit_queries.verify_chains(hub, "test").reports if r.last is not None]
    publish_checkpoint(write_checkpoint(heads, AUDIT_CHAIN.name(PREFIX), hub), hub)
    write_audit([audit_event("hub replay", AuditEventType.REPLAY_RUN, "hub", "replayed 400 ingest records; "
                             "0 differences from the audit log")], hub)
    StageRunner(STAGES["seal"](), hub, commit_interval_s=0.2).run_until_caught_up()
    auditor = _signed_in(cluster, auditor_principal(AUDITOR), public_key_path(hub))
    state = auditor.get("/audit").get_data(as_text=True).split('id="checkpoint-state"', 1)[1].split("</p>", 1)[0]
    assert f"heads of {len(heads)} chain(s)" in state and "signature verified with the hub's public key" in state
    replays = auditor.get("/audit").get_data(as_text=True).split('id="replays"', 1)[1].split("</table>", 1)[0]
    assert "replayed 400 ingest records; 0 differences" in replays and "<td>SUCCESS</td>" in replays
    other_key = tmp_path / "other.pub"
    other_key.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM,
                                                                                 PublicFormat.SubjectPublicKeyInfo))
    forged = _signed_in(cluster, auditor_principal(AUDITOR), other_key).get("/audit").get_data(as_text=True)
    assert "does not verify" in forged.split('id="checkpoint-state"', 1)[1].split("</p>", 1)[0]
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
    assert {(auditor_principal(AUDITOR), look) for look in ("verify", "replays", f"who-saw {event.canonical_id}",
                                                         f"releases --agency {owner}")} <= set(asked)
    assert {principal for principal, _ in asked} == {auditor_principal(AUDITOR)}
    analyst = _signed_in(cluster, task_force_principal(unit))
    assert analyst.get("/audit").status_code == 403, "a task force reads no audit log"
    view = audit_queries.auditor_view(hub, "test", event.canonical_id, owner)  # the page's one read of the chain
    assert view.who_saw and view.who_saw == audit_queries.who_saw(hub, event.canonical_id, "test", withheld=True)
    assert view.releases and view.releases == audit_queries.releases(hub, owner, "test")
    assert view.check.records == audit_queries.verify_chains(hub, "test").records


@pytest.mark.kafka
def test_an_agency_sees_its_alerts_and_releases_only_and_acknowledges_as_itself(cluster):
    from hub.vault import hub_codec

    ori = cluster.party_with_open_alerts()
    told = cluster.agency_alerts(ori)
    assert "OPEN" in told.values(), told
    agency = _signed_in(cluster, agency_principal(ori))
    assert agency.get("/").headers["Location"].endswith("/alerts")
    page = agency.get("/alerts").get_data(as_text=True)
    shown = {line.split('data-alert="', 1)[1].split('"', 1)[0] for line in page.splitlines() if 'data-alert="' in line}
    assert shown == set(told), "every alert the agency is a party to, and nothing else"
    everyone = hub_codec(cluster.login("hub"))
    for value in (r.value for r in topic_records(cluster.login("hub"), ALERTS.name(PREFIX))):
        alert = everyone.decode(value)
        if alert.alert_id in told:
            assert ori in {p.agency.ori for p in alert.parties}
    for path in ("/feed", "/map", "/audit"):
        assert agency.get(path).status_code == 403, f"an agency is refused {path}"
    other = next(o for o in cluster.agencies if o != ori and cluster.agency_alerts(o))
    refused = read_agency_feed(cluster.login(agency_principal(ori)), other)  # the broker shows it no such topic
    assert (refused.alerts, refused.releases) == ({}, []), "another agency's topic reads as nothing to this login"

    releases = agency.get("/releases").get_data(as_text=True)
    released = read_agency_feed(cluster.login(agency_principal(ori)), ori).releases
    assert released and all(ori in r.owner_oris for r in released)
    assert f'data-record="{released[0].record_id}"' in releases
    one = agency.get(f"/releases?record={released[0].record_id}").get_data(as_text=True)
    assert {line.split('data-unit="', 1)[1].split('"', 1)[0] for line in one.splitlines() if 'data-unit="' in line} \
        == {d.unit_id for r in released if r.record_id == released[0].record_id for d in r.decisions}

    alert_id = next(a for a, status in told.items() if status == "OPEN")
    watching = {unit: _signed_in(cluster, task_force_principal(unit)) for unit in cluster.units}
    watching = {unit: client for unit, client in watching.items()
                if f'data-alert="{alert_id}" data-status="OPEN"' in client.get("/alerts").get_data(as_text=True)}
    assert watching, "a party's unit holds the alert in its feed"
    assert agency.post(f"/alerts/{alert_id}", data={"action": "acknowledge", "by": ""}).status_code == 400, \
        "who acted is named"
    too_long = agency.post(f"/alerts/{alert_id}", data={"action": "resolve", "by": "x" * 10_000})
    assert too_long.status_code == 400 and b"actor" in too_long.data, "a field the contract refuses, named"
    sent = agency.post(f"/alerts/{alert_id}", data={"action": "acknowledge", "by": "Sgt. R. Ortiz",
                                                    "note": "called HSI"})
    assert sent.status_code == 302 and "sent=" in sent.headers["Location"]
    cluster.run_alerts_stage()
    assert cluster.agency_alerts(ori)[alert_id] == "ACKNOWLEDGED"
    for unit, client in watching.items():  # the units' open pages read only what arrived since, and see it
        assert f'data-alert="{alert_id}" data-status="ACKNOWLEDGED"' in client.get("/alerts").get_data(as_text=True)
    audited = [everyone.decode(r.value) for r in topic_records(cluster.login("hub"), AUDIT.name(PREFIX))]
    assert any(getattr(a, "principal", "") == agency_principal(ori) and alert_id in a.subject_ids
               and "ACKNOWLEDGED (by Sgt. R. Ortiz)" in a.detail for a in audited), "audited as the agency"


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
def test_a_task_force_an_agency_and_an_auditor_sign_in_with_chromium_and_see_their_pages(cluster, served, tmp_path):
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
    unit = max(cluster.units, key=lambda u: sum(item.event is not None and item.event.primary.handling.dissemination
                                                 == "BLACK" for item in cluster.feed_items(u).values()))
    login = cluster.login(task_force_principal(unit))

    def sign_out_and_in(principal: str, home: str) -> None:
        driver.find_element(By.CSS_SELECTOR, ".signout button").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/signin"))
        user = cluster.login(principal)
        driver.find_element(By.ID, "principal-input").send_keys(user.sasl_username)
        driver.find_element(By.ID, "password-input").send_keys(user.sasl_password)
        driver.find_element(By.ID, "signin-button").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith(home))

    try:
        driver.get(f"{served}/feed")
        driver.find_element(By.ID, "principal-input").send_keys(login.sasl_username)
        driver.find_element(By.ID, "password-input").send_keys(login.sasl_password)
        driver.find_element(By.ID, "signin-button").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/feed"))
        assert driver.find_element(By.ID, "principal").text == login.sasl_username
        rows = driver.find_elements(By.CSS_SELECTOR, "#feed tbody tr[data-item]")
        shown = {r.get_attribute("data-item") for r in rows}
        assert shown == cluster.feed_ids(unit), "its own items, all of them"
        members = {ori for u in load_registry().task_forces if u.unit_id == unit for ori in u.agencies}
        black = [item.event for item_id, item in cluster.feed_items(unit).items() if item_id in shown
                 and item.event is not None and item.event.primary.handling.dissemination == "BLACK"]
        assert black and all(members & set(event.agencies) for event in black), \
            "the unit's own BLACK records are on its page, and no BLACK record it does not own"
        Select(driver.find_element(By.ID, "filter-kind")).select_by_visible_text("SEIZURE")
        driver.find_element(By.CSS_SELECTOR, "#filters button").click()
        WebDriverWait(driver, 30).until(lambda d: "kind=SEIZURE" in d.current_url)
        kinds = {r.find_elements(By.TAG_NAME, "td")[2].text
                 for r in driver.find_elements(By.CSS_SELECTOR, "#feed tbody tr[data-item]")}
        assert kinds == {"SEIZURE"}
        driver.save_screenshot(str(shots / "console-feed.png"))
        driver.find_element(By.ID, "nav-map").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/map"))
        assert driver.find_elements(By.CSS_SELECTOR, "#map .outline path")
        assert driver.find_elements(By.CSS_SELECTOR, "#map circle.event"), "the unit's seizures are on the map"
        assert driver.find_elements(By.CSS_SELECTOR, "#mix rect")
        driver.save_screenshot(str(shots / "console-map.png"))
        driver.find_element(By.ID, "nav-alerts").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/alerts"))
        assert not driver.find_elements(By.CSS_SELECTOR, "form.act"), "a task force reads alerts; its agencies act"

        ori = cluster.party_with_open_alerts()
        sign_out_and_in(agency_principal(ori), "/alerts")
        assert not driver.find_elements(By.ID, "nav-feed"), "an agency is offered no feed"
        row = driver.find_element(By.CSS_SELECTOR, "tr.alert[data-status='OPEN']")
        alert_id = row.get_attribute("data-alert")
        assert alert_id in cluster.agency_alerts(ori)
        driver.save_screenshot(str(shots / "console-alerts.png"))
        row.find_element(By.NAME, "by").send_keys("Det. A. Nguyen")
        row.find_element(By.CSS_SELECTOR, "button.acknowledge").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "sent"))
        cluster.run_alerts_stage()
        driver.refresh()
        acknowledged = driver.find_element(By.CSS_SELECTOR, f"tr.alert[data-alert='{alert_id}']")
        assert acknowledged.get_attribute("data-status") == "ACKNOWLEDGED"
        driver.find_element(By.ID, "nav-releases").click()
        WebDriverWait(driver, 30).until(lambda d: d.current_url.endswith("/releases"))
        assert driver.find_elements(By.CSS_SELECTOR, "#releases tr[data-record]")

        sign_out_and_in(auditor_principal(AUDITOR), "/audit")
        assert "every chain intact" in driver.find_element(By.ID, "chain-state").text
        assert not driver.find_elements(By.ID, "nav-feed"), "an auditor is offered no feed"
        driver.save_screenshot(str(shots / "console-audit.png"))
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], f"errors in the page's console: {errors}"
    finally:
        driver.quit()


@pytest.mark.kafka
def test_a_purge_withdraws_an_alert_from_every_party_it_was_told_to(cluster):
    """Runs last: it destroys a report of the module's sample. Alerts reach parties in the clear, so a purge of one
    of its reports leaves a tombstone (with the notice) on each party's own topic, and the party's page drops it."""
    from consumers.retention import purge
    from hub.vault import hub_codec

    ori = cluster.party_with_open_alerts()
    hub = cluster.login("hub")
    codec = hub_codec(hub)
    alert = next(a for a in (codec.decode(r.value) for r in topic_records(hub, ALERTS.name(PREFIX)))
                 if a.alert_id in cluster.agency_alerts(ori))
    told = [p.agency.ori for p in alert.parties if alert.alert_id in cluster.agency_alerts(p.agency.ori)]
    assert ori in told
    victim = alert.parties[0]
    result = purge(hub, [f"{victim.agency.ori}/{victim.event_id}"], authorized_by="Test Control Official",
                   reason="review date passed")
    assert {o for o, ids in result.withdrawn_alerts.items() if alert.alert_id in ids} == set(told)
    for party in told:
        assert alert.alert_id not in cluster.agency_alerts(party)
        tombstones = [r for r in topic_records(hub, AGENCY_FEED.name(PREFIX, ori=party))
                      if r.key == alert.alert_id.encode() and r.value is None]
        assert tombstones and b"28 CFR 23.20(h)" in dict(tombstones[-1].headers)["purge.notice"]
    page = _signed_in(cluster, agency_principal(ori)).get("/alerts").get_data(as_text=True)
    assert alert.alert_id not in page

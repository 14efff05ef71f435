"""Operating the hub on the real broker: `hub run all` scraped by a real Prometheus, an urgent alert escalated by
the wall clock with no other traffic, and a replay of that history making the same escalation."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from consumers.registry import load_registry
from consumers.replay import Replay, replay_settings
from consumers.stages import STAGES
from hub.control import apply_registry
from hub.topics import ensure_topics, hub_topics
from hub.vault import hub_codec
from schemas.topics import ALERTS, ALERTS_RAISED
from tests.conftest import hub_env, http_get, process_alive, publish_events, topic_records
from tests.test_deconflict import HSI, SHERIFF, _operation
from tests.test_monitoring_rules import PROMETHEUS_DIR, dashboard_queries

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

HUB = [sys.executable, "-m", "hub"]
#: The supervisor, then the stages in pipeline order, then the clock: `hub run all`'s processes.
PROCESSES = ["supervisor", *STAGES, "clock"]
ACK_SECONDS = 6.0  # HUB_ALERTS_URGENT_ACK_MINUTES=0.1


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1."""
    for base in range(21_000 + os.getpid() % 5_000 * 8, 60_000, count):
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port block")


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a /metrics page (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") or line.startswith(f"{name} "):
            head, value = line.rsplit(" ", 1)
            found = head[len(name):].strip("{}")
            if sorted(found.split(",")) == sorted(wanted.split(",")) if wanted else not found:
                return float(value)
    return 0.0


def _wait(predicate, timeout_s: float, what: str, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _start_prometheus(tmp_path: Path, targets: list[str]) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("HUB_REQUIRE_TOOLS") == "1":
            pytest.fail("prometheus not found (apt-get install prometheus); HUB_REQUIRE_TOOLS=1 demands it")
        pytest.skip("prometheus not found (Debian/Ubuntu: apt-get install prometheus)")
    config_dir = tmp_path / "prometheus"
    config_dir.mkdir()
    template = (PROMETHEUS_DIR / "prometheus.yml.template").read_text()
    (config_dir / "prometheus.yml").write_text(
        template.replace("${HUB_METRICS_TARGETS}", ",".join(f"'{t}'" for t in targets)))
    shutil.copy(PROMETHEUS_DIR / "rules.yml", config_dir / "rules.yml")
    address = f"127.0.0.1:{_free_ports(1)}"
    server = subprocess.Popen([binary, f"--config.file={config_dir / 'prometheus.yml'}",
                               f"--storage.tsdb.path={config_dir / 'data'}", f"--web.listen-address={address}"],
                              stdout=subprocess.DEVNULL, stderr=open(config_dir / "prometheus.log", "wb"))
    _wait(lambda: http_get(f"http://{address}/-/ready")[0] == 200, 60, "Prometheus to be ready")
    return server, f"http://{address}"


def _query(prometheus: str, expr: str) -> list[dict]:
    status, body = http_get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "success", f"{expr}: {body}"
    return answer["data"]["result"]


def test_run_all_is_scraped_by_prometheus_and_escalates_on_the_wall_clock_as_a_replay_does(hub_settings, tmp_path,
                                                                                           monkeypatch):
    settings = hub_settings
    agencies = sorted({HSI["ori"], SHERIFF["ori"]})
    units = sorted(u.unit_id for u in load_registry().task_forces)
    ensure_topics(hub_topics(settings.topic_prefix, agencies, sorted(STAGES), units), settings)
    apply_registry(settings=settings, applied_by="test")
    base = _free_ports(len(PROCESSES))
    ports = dict(zip(PROCESSES, range(base, base + len(PROCESSES))))
    log = tmp_path / "run-all.log"
    env = {**hub_env(settings), "HUB_METRICS_PORT": str(base), "HUB_ALERTS_URGENT_ACK_MINUTES": "0.1",
           "HUB_CLOCK_TICK_S": "1"}
    with open(log, "wb") as output:
        run_all = subprocess.Popen([*HUB, "run", "all", "--commit-interval", "0.3"], env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    prometheus = None
    try:
        for name, port in ports.items():
            _wait(lambda port=port: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 120, f"{name} to be ready")
        assert http_get(f"http://127.0.0.1:{ports['dedup']}/healthz") == (200, "dedup: alive\n")
        prometheus, api = _start_prometheus(tmp_path, [f"127.0.0.1:{port}" for port in ports.values()])
        before = http_get(f"http://127.0.0.1:{ports['dedup']}/metrics")[1]
        assert _metric(before, "hub_messages_processed_total", stage="dedup") == 0

        # Two agencies plan raids at one place and time; then nothing else happens.
        publish_events(settings, [
            _operation(HSI, 32.7157, -117.1611, "2025-10-05T05:00:00Z", "2025-10-05T08:00:00Z", "OP-A"),
            _operation(SHERIFF, 32.7162, -117.1605, "2025-10-05T07:00:00Z", "2025-10-05T09:00:00Z", "OP-B")],
            intake=False)
        codec = hub_codec(settings)

        def alert_states() -> dict[str, tuple]:
            return {a.status: (a, r.timestamp) for r in topic_records(settings, ALERTS.name(settings.topic_prefix))
                    for a in [codec.decode(r.value)]}

        [raised] = _wait(lambda: topic_records(settings, ALERTS_RAISED.name(settings.topic_prefix)), 120,
                         "the urgent alert to be raised")
        deadline = math.ceil(raised.timestamp / 1000 + ACK_SECONDS)  # due whole seconds after the hub took it in
        escalated, _ = _wait(lambda: alert_states().get("ESCALATED"), 60, "the escalation", every_s=0.1)
        seen_at = time.time()
        assert escalated.urgent and escalated.updated_at == datetime.fromtimestamp(deadline, tz=timezone.utc)
        assert seen_at - deadline <= 5.0, f"escalated {seen_at - deadline:.1f} s after its deadline"
        print(f"escalated and readable {seen_at - deadline:.2f} s after its {ACK_SECONDS:.0f} s deadline")

        # The stages' own figures moved with the traffic.
        dedup = http_get(f"http://127.0.0.1:{ports['dedup']}/metrics")[1]
        assert _metric(dedup, "hub_messages_processed_total", stage="dedup") == 2
        assert _metric(dedup, "hub_end_to_end_latency_seconds_count", stage="dedup") >= 2, "feed items timed"
        assert _metric(dedup, "hub_transaction_commit_seconds_count", stage="dedup") >= 1
        assert _metric(dedup, "hub_event_time_watermark_seconds", stage="dedup") > 0
        lag = re.findall(r'^hub_consumer_lag\{partition="\d",stage="dedup",topic="[^"]+"\} (\S+)$', dedup, re.M)
        assert lag and set(lag) == {"0.0"}, "every input partition's lag is shown, and nothing is left to process"
        alerts = http_get(f"http://127.0.0.1:{ports['alerts']}/metrics")[1]
        assert _metric(alerts, "hub_outputs_total", stage="alerts", counted_as="escalated-urgent") == 1
        supervisor = http_get(f"http://127.0.0.1:{ports['supervisor']}/metrics")[1]
        assert _metric(supervisor, "hub_stage_up", stage="alerts") == 1

        # ... and a real Prometheus scraped every process, evaluates the rules and the dashboard's queries.
        up = _wait(lambda: [s for s in _query(api, 'up{job="hub"}') if s["value"][1] == "1"]
                   if len(_query(api, 'up{job="hub"} == 1')) == len(ports) else None, 60, "every target up")
        assert {s["metric"]["instance"] for s in up} == {f"127.0.0.1:{port}" for port in ports.values()}
        _wait(lambda: _query(api, 'sum(hub_messages_processed_total{stage="dedup"}) == 2'), 30,
              "Prometheus to scrape dedup's count")
        _wait(lambda: _query(api, 'ALERTS{alertname="HubUrgentAlertUnacknowledged",alertstate="firing"}'), 60,
              "the urgent-escalation alert rule to fire")
        for expr in dashboard_queries():
            _query(api, expr)  # a query Prometheus refuses fails here

        run_all.send_signal(signal.SIGTERM)
        assert run_all.wait(timeout=60) == 0
        until = datetime.now(timezone.utc)
    finally:
        if run_all.poll() is None:
            os.killpg(run_all.pid, signal.SIGKILL)
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)

    # The replay copies the ticks with the history: the same alert escalates at the same moment (under the same
    # deadlines: they are the deployment's settings, live and replayed alike).
    monkeypatch.setenv("HUB_ALERTS_URGENT_ACK_MINUTES", "0.1")
    replay = Replay(settings, "ops", until - timedelta(hours=1), until)
    replay.run()
    replayed = replay_settings(settings, "ops")
    escalations = [a for r in topic_records(replayed, ALERTS.name(replayed.topic_prefix))
                   for a in [codec.decode(r.value)] if a.status == "ESCALATED"]
    assert [(a.alert_id, a.updated_at) for a in escalations] == [(escalated.alert_id, escalated.updated_at)]


def test_a_stage_that_keeps_crashing_stops_run_all_with_its_name_and_reason(hub_settings):
    """A misconfigured stage dies at start: the supervisor restarts it once (HUB_MAX_RESTARTS=1), then stops every
    other stage and exits non-zero naming the stage and why; no process is left behind."""
    ensure_topics(hub_topics(hub_settings.topic_prefix, [HSI["ori"]], sorted(STAGES), []), hub_settings)
    env = {**hub_env(hub_settings), "HUB_DEDUP_THRESHOLD": "many", "HUB_MAX_RESTARTS": "1",
           "HUB_RESTART_WINDOW_S": "120"}
    done = subprocess.run([*HUB, "run", "all"], env=env, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "stage dedup crashed 2 times in 120 s; last: ConfigError: invalid DedupConfig: HUB_DEDUP_THRESHOLD" \
        in " ".join(output.split()), output
    assert output.count("restarted dedup") == 1
    started = [json.loads(line)["pid"] for line in output.splitlines() if '"stage process started"' in line]
    assert len(started) == len(STAGES) + 2, "every stage, the clock, and dedup once more"
    assert not [pid for pid in started if process_alive(pid)]

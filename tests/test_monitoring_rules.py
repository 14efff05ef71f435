"""The monitoring kit in deploy/prometheus and deploy/grafana is valid and speaks only the hub's real metrics.

Pure: no broker, no Prometheus server. promtool (Debian's prometheus package) checks the alert rules, runs their
unit tests (rules.test.yml: each alert fires when it should and not in a look-alike healthy case) and checks the
scrape config. A metric name typo in a rule or panel would silently never match, so every name is checked against
the list the stage processes export.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules.test.yml"
CONFIG_TEMPLATE = PROMETHEUS_DIR / "prometheus.yml.template"
DASHBOARD = ROOT / "deploy" / "grafana" / "task-force-hub.json"

#: What the stage processes and the `hub run all` supervisor export (consumers/runner.py, hub's supervisor).
EXPORTED_METRICS = frozenset({
    "hub_messages_processed_total", "hub_dead_letters_total", "hub_purged_inputs_total",
    "hub_unknown_key_inputs_total", "hub_consumer_lag", "hub_transaction_commit_seconds",
    "hub_transactions_aborted_total", "hub_state_entries", "hub_rebalances_total",
    "hub_event_time_watermark_seconds", "hub_end_to_end_latency_seconds",
    "hub_stage_last_progress_timestamp_seconds", "hub_stage_ready", "hub_outputs_total",
    "hub_stage_restarts_total", "hub_stage_up",
})
ALERTS = {"HubConsumerLagGrowing", "HubDeadLetters", "HubUrgentAlertUnacknowledged", "HubAuditChainStalled",
          "HubStageDown", "HubStageRestarting"}
TWO_TARGETS = "'127.0.0.1:9401','127.0.0.1:9402'"

_HUB_NAME = re.compile(r"hub_[a-z_]+")
_HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")
_METRIC_BEFORE_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def promtool() -> str:
    """promtool's path; a missing tool fails under HUB_REQUIRE_TOOLS=1 (CI) rather than passing by skipping."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not found on PATH (Debian/Ubuntu: apt-get install prometheus)"
        if os.environ.get("HUB_REQUIRE_TOOLS") == "1":
            pytest.fail(reason + "; HUB_REQUIRE_TOOLS=1 demands it")
        pytest.skip(reason)
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool and fail with its whole output, which names the rule, time and alerts that differ."""
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (f"promtool {' '.join(args)} exited {result.returncode}\n"
                                    f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def render_config(targets: str) -> str:
    """The template with its one placeholder filled, as a deployment (or the live test) would."""
    template = CONFIG_TEMPLATE.read_text()
    assert template.count("${HUB_METRICS_TARGETS}") == 1
    return template.replace("${HUB_METRICS_TARGETS}", targets)


def dashboard_panels() -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    panels: list[dict] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_queries() -> list[str]:
    """Every PromQL expr of the dashboard, in panel order: a live-Prometheus test evaluates each of them."""
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def rule_exprs() -> dict[str, str]:
    """Alert name -> expr, from rules.yml."""
    yaml = pytest.importorskip("yaml")
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def metric_names(expr: str) -> set[str]:
    """hub_* names an expr reads, with histogram series suffixes stripped to the family name."""
    return {_HISTOGRAM_SUFFIX.sub("", name) for name in _HUB_NAME.findall(expr)}


def test_rules_pass_promtool_check() -> None:
    """Syntax, templates and durations of the alert rules."""
    run_promtool("check", "rules", str(RULES))


def test_rules_unit_tests_pass() -> None:
    """Each alert fires in its scenario and stays quiet in its healthy look-alike (rules.test.yml)."""
    result = run_promtool("test", "rules", RULES_TEST.name, cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_is_defined_and_unit_tested() -> None:
    """A new or renamed alert without a test would pass promtool silently."""
    assert set(rule_exprs()) == ALERTS
    tested = set(re.findall(r"^\s*alertname:\s*(\w+)", RULES_TEST.read_text(), re.MULTILINE))
    assert tested == ALERTS


def test_alerts_carry_severity_annotations_and_runbook() -> None:
    """On-call needs a severity to route on, a stage to look at, and what to do."""
    yaml = pytest.importorskip("yaml")
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        assert group["name"] == "task-force-hub"
        for rule in group["rules"]:
            assert "for" in rule, rule["alert"]
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
            assert "$labels.stage" in rule["annotations"]["summary"] + rule["annotations"]["description"]


def test_rendered_config_passes_promtool_check(tmp_path: Path) -> None:
    """The template with two dummy targets is a valid config whose rule_files resolve to rules.yml beside it."""
    (tmp_path / "prometheus.yml").write_text(render_config(TWO_TARGETS))
    shutil.copy(RULES, tmp_path / "rules.yml")
    result = run_promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert "1 rule files found" in result.stdout + result.stderr


def test_dashboard_panels_all_query() -> None:
    """Every panel is a timeseries or stat on the ${DS_PROMETHEUS} data source with at least one expr."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert "DS_PROMETHEUS" in [v["name"] for v in dashboard["templating"]["list"]]
    panels = dashboard_panels()
    assert panels
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel.get("targets"), f"panel {panel['title']!r} has no targets"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r} has a target without expr"
    assert len({panel["id"] for panel in panels}) == len(panels)


def test_dashboard_covers_the_operational_questions() -> None:
    """The panels an operator needs are there: a query per question."""
    queries = "\n".join(dashboard_queries())
    for needle in ("rate(hub_messages_processed_total", "hub_consumer_lag", "hub_dead_letters_total",
                   "histogram_quantile(0.5, sum by (stage, le) (rate(hub_transaction_commit_seconds_bucket",
                   "histogram_quantile(0.99, sum by (stage, le) (rate(hub_transaction_commit_seconds_bucket",
                   "hub_transactions_aborted_total", "hub_rebalances_total",
                   "time() - max by (stage) (hub_event_time_watermark_seconds",
                   "histogram_quantile(0.99, sum by (stage, le) (rate(hub_end_to_end_latency_seconds_bucket",
                   "hub_state_entries", "hub_stage_ready", "hub_stage_up", "up{", "hub_stage_restarts_total",
                   'counted_as="escalated-urgent"'):
        assert needle in queries, needle


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses each panel expr (as a recording rule), so no panel shows a query error."""
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": expr}
                                                         for i, expr in enumerate(dashboard_queries())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    run_promtool("check", "rules", str(path))


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_only_exported_metrics_are_queried(source: str) -> None:
    """A misspelt metric matches nothing and the alert or panel stays silently empty."""
    exprs = list(rule_exprs().values()) if source == "rules" else dashboard_queries()
    used: set[str] = set()
    for expr in exprs:
        used |= metric_names(expr)
        other = {name for name in _METRIC_BEFORE_SELECTOR.findall(expr) if not name.startswith("hub_")}
        assert other <= {"up"}, f"{expr!r} queries {sorted(other)}"
    assert used, f"no hub_* metrics found in the {source}"
    assert used <= EXPORTED_METRICS, f"{source} query metrics nobody exports: {sorted(used - EXPORTED_METRICS)}"

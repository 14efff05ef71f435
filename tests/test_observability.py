"""The metrics-and-probes server every long-running process serves (no broker needed)."""

from __future__ import annotations

import pytest
from prometheus_client import Counter

from hub.exceptions import ConfigError
from hub.observability import serve_health
from tests.conftest import http_get

PROBED = Counter("hub_test_probed_total", "A counter only this test moves")


def test_probes_answer_from_the_process_and_metrics_from_the_registry():
    state = {"ready": (False, "dedup: no partitions assigned and restored yet")}
    server = serve_health("127.0.0.1", 0, alive=lambda: (True, "dedup: alive"), ready=lambda: state["ready"])
    try:
        assert http_get(f"{server.url}/healthz") == (200, "dedup: alive\n")
        assert http_get(f"{server.url}/readyz") == (503, "dedup: no partitions assigned and restored yet\n")
        state["ready"] = (True, "dedup: ready, partitions [0]")
        assert http_get(f"{server.url}/readyz")[0] == 200
        PROBED.inc(3)
        status, page = http_get(f"{server.url}/metrics")
        assert status == 200 and "hub_test_probed_total 3.0" in page
    finally:
        server.close()


def test_a_port_in_use_is_refused_with_what_to_do():
    first = serve_health("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="cannot serve metrics on 127.0.0.1") as refused:
            serve_health("127.0.0.1", first.port)
        assert "HUB_METRICS_PORT" in str(refused.value)
    finally:
        first.close()

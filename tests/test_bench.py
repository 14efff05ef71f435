"""The benchmark's Quix Streams comparison (``hub bench pipeline --compare-quix``) does dedup's and route's work on
the records the hub's dedup stage reads, exactly once, and its figure counts every one of them."""

from __future__ import annotations

from collections import Counter

import pytest

from consumers.registry import load_registry
from hub.bench import _namespace, quix_drain
from hub.quix_baseline import QUIX_PREFIX
from hub.vault import hub_codec
from producers.sample import generate
from schemas.models import CanonicalEvent, FeedItem, RoutingDecisions, ShareForm
from schemas.topics import AUDIT, CANONICAL, FEED
from tests.conftest import publish_events, topic_records

pytestmark = pytest.mark.kafka


def test_the_quix_comparison_dedups_and_routes_every_ingested_record_once(hub_settings):
    events = generate(60, seed=5).events
    bench = _namespace(hub_settings, sorted({e.agency_ori for e in events}))
    publish_events(bench, events)

    quix, loop = quix_drain(bench, sorted({e.agency_ori for e in events}))

    assert quix.events == len(events) and quix.seconds > 0 and quix.peak_rss_mb > 0
    assert loop.events == len(events) and loop.seconds > 0
    codec = hub_codec(bench)

    def written(logical: str) -> list:
        return [codec.decode(r.value) for r in topic_records(bench, f"{bench.topic_prefix}{QUIX_PREFIX}{logical}")]

    canonical, audit = written(CANONICAL.pattern), written(AUDIT.name())
    units = sorted(unit.unit_id for unit in load_registry().task_forces)
    feeds = {unit: written(FEED.name(unit=unit)) for unit in units}
    assert canonical and all(isinstance(c, CanonicalEvent) for c in canonical)
    assert len({c.canonical_id for c in canonical}) < len(events)  # some reports were merged or repeated
    assert all(isinstance(a, RoutingDecisions) and [d.unit_id for d in a.decisions] == units for a in audit)
    assert Counter((a.record_id, a.revision) for a in audit) == Counter((c.canonical_id, str(c.revision))
                                                                         for c in canonical)  # once each
    sent = Counter(d.unit_id for a in audit for d in a.decisions if d.form != ShareForm.WITHHELD)
    assert {unit: len(items) for unit, items in feeds.items() if items} == dict(sent)
    assert all(isinstance(item, FeedItem) and item.unit_id == unit for unit, items in feeds.items() for item in items)


def test_the_quality_bench_runs_the_labelled_exports_through_the_stages_on_the_broker(hub_settings):
    """``hub bench quality`` on the broker: every record is accepted, published, sealed, deduplicated and correlated,
    and the figures agree with the same stages' code run in memory over the same records."""
    from hub.quality import bench_quality

    on_broker = bench_quality(incidents=80, seed=5, mode="broker", settings=hub_settings)
    in_memory = bench_quality(incidents=80, seed=5, mode="in-memory")
    assert on_broker.rejected == [] and on_broker.records == in_memory.records
    assert all(s.true_positives > 0 for s in on_broker.scores)
    # Kafka interleaves the agencies' topics otherwise than the publishing order, so a pair or two of the ~50 per
    # category may differ; a stage that dropped or mangled records would differ by far more.
    assert {s.category: s.f1 for s in on_broker.scores} == pytest.approx({s.category: s.f1 for s in in_memory.scores},
                                                                         abs=0.06)
    assert min(s.f1 for s in on_broker.scores) >= 0.9

"""The processing stages: each a small class over typed events, run by ``consumers.runner.StageRunner``.

Routing runs inside dedup and the alerts stage (:class:`consumers.stage.Fused`): the canonical events and alerts
they write reach the task forces' feeds in the same transaction, one hop sooner, with no process of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from consumers.stage import Fused, Stage
from consumers.stages.alerts import AlertLifecycleStage
from consumers.stages.correlate import CorrelateStage, DeconflictStage
from consumers.stages.dedup import DedupStage
from consumers.stages.intake import IntakeStage
from consumers.stages.route import RouteStage
from consumers.stages.seal import SealStage



def _routed(stage: type[Stage]) -> Callable[[], Stage]:
    def build() -> Stage:
        return Fused(stage(), RouteStage())
    return build


#: What ``hub run NAME`` runs, in pipeline order: a factory per stage.
STAGES: dict[str, Callable[[], Stage]] = {
    "intake": IntakeStage, "dedup": _routed(DedupStage), "correlate": CorrelateStage, "deconflict": DeconflictStage,
    "alerts": _routed(AlertLifecycleStage), "seal": SealStage,
}

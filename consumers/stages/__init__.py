"""The processing stages: each a small class over typed events, run by ``consumers.runner.StageRunner``."""

from __future__ import annotations

from consumers.stage import Stage
from consumers.stages.alerts import AlertLifecycleStage
from consumers.stages.correlate import CorrelateStage, DeconflictStage
from consumers.stages.dedup import DedupStage
from consumers.stages.intake import IntakeStage
from consumers.stages.route import RouteStage
from consumers.stages.seal import SealStage

STAGES: dict[str, type[Stage]] = {
    "intake": IntakeStage, "dedup": DedupStage, "correlate": CorrelateStage, "deconflict": DeconflictStage, "alerts": AlertLifecycleStage,
    "route": RouteStage, "seal": SealStage,
}

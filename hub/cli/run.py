"""``hub run``: the processing stages (and the hub's clock) as long-running services."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from consumers.runner import stage_lag
from consumers.stages import STAGES
from hub.cli import app, console
from hub.settings import get_settings
from hub.supervisor import CLOCK, RunOptions, Supervisor, run_process


@app.command("run")
def run(
    stage: str = typer.Argument(..., help=f"One of: {', '.join(STAGES)}, {CLOCK}, or 'all' (every stage and the "
                                "clock, supervised)."),
    instance: int = typer.Option(0, "--instance", help="Instance number within the stage's consumer group; "
                                 "each running copy needs its own (it names the transactional producer)."),
    commit_interval: float = typer.Option(0.5, "--commit-interval", help="Seconds per transaction (batch)."),
    max_batch: int = typer.Option(2000, "--max-batch", help="Messages per transaction at most."),
    transaction_timeout: float = typer.Option(30.0, "--transaction-timeout", help="Seconds after which the broker "
                                              "aborts an open transaction (the stage commits every --commit-interval, "
                                              "so this is only reached when a batch stalls; the stage then processes "
                                              "it again from the last commit)."),
) -> None:
    """Run a stage until SIGTERM or Ctrl-C: consume, process, produce and commit exactly once.

    Start more copies with different --instance numbers to scale out: partitions are shared among them.
    Local state lives under HUB_RUNTIME_DIR/state and is rebuilt from the changelog topic when missing.
    Routing to the task forces' feeds runs inside dedup and alerts (they wait for `hub taskforces apply`).
    `clock` writes the wall-clock ticks that escalate unacknowledged alerts when no other traffic comes.

    Every process serves /metrics, /healthz and /readyz on HUB_METRICS_PORT (default 9400; 0: none). `all`
    supervises one process per stage: its own figures on that port, stage N's on the port + N; SIGTERM stops
    every stage after its last commit; a stage that crashes is restarted with backoff, and after
    HUB_MAX_RESTARTS crashes within HUB_RESTART_WINDOW_S `all` stops and exits non-zero, naming the stage.
    """
    names = [*STAGES, CLOCK] if stage == "all" else [stage]
    unknown = [n for n in names if n not in STAGES and n != CLOCK]
    if unknown:
        routed = " (routing runs inside dedup and alerts)" if unknown[0] == "route" else ""
        raise typer.BadParameter(f"unknown stage {unknown[0]!r}{routed}; choose from {', '.join(STAGES)}, "
                                 f"{CLOCK} or all")
    options = RunOptions(instance, commit_interval, max_batch, transaction_timeout)
    settings = get_settings()
    if len(names) == 1:
        port = settings.metrics_port
        console.print(f"running {names[0]} (instance {instance})" + (f", metrics on :{port}" if port else "")
                      + "; Ctrl-C stops it after the current batch")
        run_process(names[0], options, port)
        return
    Supervisor(names, options, settings, say=console.print).run()


@app.command("lag")
def lag(
    stage: list[str] = typer.Argument(None, help="Stages to show (default: all, in pipeline order)."),
    wait: float = typer.Option(0.0, "--wait", help="Wait up to this many seconds for every stage to reach zero "
                               "lag, then exit 0; exit 1 if they do not."),
) -> None:
    """Show how many committed input records each stage has not processed yet (its consumer group's lag).

    With --wait, stages are checked in pipeline order, so zero everywhere means each upstream stage's outputs
    were already consumed downstream: the whole flow has caught up.
    """
    names = stage or list(STAGES)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise typer.BadParameter(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    settings = get_settings()
    deadline = time.monotonic() + wait
    while True:
        lags = {name: stage_lag(STAGES[name](), settings) for name in names}
        behind = sum(sum(per.values()) for per in lags.values())
        if not behind or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    table = Table("stage", "input partitions", "lag", "most behind")
    for name, per in lags.items():
        worst = max(per.items(), key=lambda item: item[1], default=None)
        table.add_row(name, str(len(per)), str(sum(per.values())),
                      f"{worst[0].topic}[{worst[0].partition}]" if worst and worst[1] else "-")
    console.print(table)
    if wait and behind:
        console.print(f"[red]still {behind} records behind after {wait:.0f} s[/red]")
        raise typer.Exit(1)

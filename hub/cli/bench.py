"""``hub bench``: throughput figures, always next to a baseline measured in the same run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hub.bench import BenchResult, bench_publish
from hub.cli import app, console

bench_app = typer.Typer(help="Benchmarks against the configured cluster (default: the local broker).",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def print_results(results: list[BenchResult], baseline: str) -> None:
    base = next(r for r in results if r.name.startswith(baseline))
    table = Table("stage", "events", "seconds", "events/s", "vs baseline", "peak RSS MB")
    for r in results:
        table.add_row(r.name, f"{r.events:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}",
                      f"{r.rate / base.rate:.2f}x", f"{r.peak_rss_mb:,.0f}")
    console.print(table)


@bench_app.command("publish")
def publish(count: int = typer.Option(50_000, "--count", help="Sample events to generate and publish.")) -> None:
    """Events/s for validation and encoding alone, a raw kafka-python produce of the same bytes, and the
    full Publisher path (durable spool, idempotent acks=all producer, confirmation)."""
    with console.status("running the publish benchmark"):
        results = bench_publish(count)
    print_results(results, "baseline")


@bench_app.command("pipeline")
def pipeline(
    count: int = typer.Option(20_000, "--count", help="Backlog of sample events for the throughput run."),
    paced: int = typer.Option(1000, "--paced", help="Events published at --rate for the latency run."),
    rate: float = typer.Option(200.0, "--rate", help="Events per second in the latency run."),
    compare_quix: bool = typer.Option(False, "--compare-quix", help="Also run a Quix Streams application doing "
                                      "dedup's and route's work over the same sealed records (hub.quix_baseline)."),
) -> None:
    """Events/s of every stage and p50/p99/p999 latency of the whole flow, with peak RSS, next to a raw
    kafka-python consume-to-produce passthrough and a transactional one on the same broker and input, in the same
    run."""
    from hub.bench import bench_pipeline

    with console.status("running the pipeline benchmark (passthroughs, then each stage)"):
        results = bench_pipeline(count, paced, rate, compare_quix=compare_quix)
    raw, transactional = results[0], results[1]
    table = Table("throughput", "inputs", "seconds", "events/s", "vs raw", "vs transactional", "peak RSS MB")
    for r in (r for r in results if r.kind == "throughput"):
        table.add_row(r.name, f"{r.events:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}", f"{r.rate / raw.rate:.3f}x",
                      f"{r.rate / transactional.rate:.3f}x", f"{r.peak_rss_mb:,.0f}")
    console.print(table)
    table = Table(f"latency at {rate:g} events/s", "published/s", "samples", "p50 ms", "p99 ms", "p999 ms",
                  "peak RSS MB")
    for r in (r for r in results if r.kind == "latency"):
        table.add_row(r.name, f"{r.published_per_s:,.1f}", f"{r.events:,}", f"{r.p50_ms:,.0f}", f"{r.p99_ms:,.0f}",
                      f"{r.p999_ms:,.0f}", f"{r.peak_rss_mb:,.0f}")
    console.print(table)
    console.print("Peak RSS: throughput rows, the benchmark process's so far (every stage runs in it, as threads); "
                  "the hub's latency rows and its every-stage-at-once drain, its stage processes' peaks "
                  "added up; Quix Streams, its own process's.")


@bench_app.command("profile")
def profile(
    count: int = typer.Option(1000, "--count", help="Sample events to publish; each stage then drains its backlog."),
    stage: list[str] = typer.Option(None, "--stage", help="Stages to profile (repeat; default: every stage)."),
    top: int = typer.Option(12, "--top", help="Functions to show per stage, by own time."),
    dump_dir: Path = typer.Option(None, "--dump-dir", help="Also write each stage's cProfile stats here "
                                  "(<stage>.pstats, for `python -m pstats` or snakeviz)."),
) -> None:
    """Where each stage's time goes: every stage drains a backlog in pipeline order, one after another, under
    cProfile. Waiting is time blocked on kafka-python's network thread (fetches, offset lookups, commits, acks);
    the functions are the main thread's work, by own time."""
    from consumers.stages import STAGES
    from hub.bench import bench_profile

    unknown = [s for s in stage or [] if s not in STAGES]
    if unknown:
        raise typer.BadParameter(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    with console.status(f"publishing {count:,} events, then profiling each stage as it drains its backlog"):
        profiles = bench_profile(count, stage or list(STAGES), top, dump_dir)
    summary = Table("stage", "inputs", "seconds", "inputs/s", "waiting on Kafka", "working")
    for p in profiles:
        summary.add_row(p.stage, f"{p.inputs:,}", f"{p.seconds:.2f}", f"{p.rate:,.0f}",
                        f"{p.waiting_s / p.seconds:.0%}", f"{1 - p.waiting_s / p.seconds:.0%}")
    console.print(summary)
    for p in profiles:
        table = Table("function", "calls", "own s", "cumulative s", title=f"{p.stage}: top {top} by own time")
        for function, calls, own, cumulative in p.top:
            table.add_row(function, f"{calls:,}", f"{own:.2f}", f"{cumulative:.2f}")
        console.print(table)
    console.print("Times are under cProfile, which slows Python code but not the waits: compare stages and functions "
                  "with each other, and take events/s from `hub bench pipeline`.")


@bench_app.command("soak")
def soak(
    minutes: float = typer.Option(30.0, "--minutes", help="How long to publish."),
    rate: float = typer.Option(50.0, "--rate", help="Sample events per second."),
    every: float = typer.Option(60.0, "--every", help="Seconds between memory readings."),
) -> None:
    """`hub run all` fed steady traffic for --minutes: each stage process's resident memory (RSS), and what they
    use together (PSS: pages they share counted once), every --every seconds, to show whether it stays flat."""
    from consumers.stages import STAGES
    from hub.bench import MemorySample, bench_soak

    table = Table("minute", "published", *STAGES, "stages RSS", "stages PSS", "`run all` RSS",
                  title=f"memory (MB) of `hub run all` at {rate:g} events/s")

    def show(sample: MemorySample) -> None:
        console.print(f"{sample.seconds / 60:6.1f} min  {sample.published:,} published  stages: RSS "
                      f"{sample.stages_rss_mb:,.0f} MB, PSS {sample.stages_pss_mb:,.0f} MB")
        table.add_row(f"{sample.seconds / 60:.1f}", f"{sample.published:,}",
                      *(f"{sample.stage_rss_mb[name]:,.0f}" for name in STAGES), f"{sample.stages_rss_mb:,.0f}",
                      f"{sample.stages_pss_mb:,.0f}", f"{sample.supervisor_rss_mb:,.0f}")

    samples, behind = bench_soak(minutes, rate, every, on_sample=show)
    console.print(table)
    steady = samples[1:] or samples  # the first reading comes before every stage has seen much traffic
    console.print(f"stages from minute {steady[0].seconds / 60:.1f} on: RSS "
                  f"{min(s.stages_rss_mb for s in steady):,.0f}-{max(s.stages_rss_mb for s in steady):,.0f} MB, PSS "
                  f"{min(s.stages_pss_mb for s in steady):,.0f}-{max(s.stages_pss_mb for s in steady):,.0f} MB; "
                  + ("they kept up (no input left)." if not behind else f"{behind:,} input records still unprocessed."))


@bench_app.command("quality")
def quality(
    incidents: int = typer.Option(650, "--incidents", help="Real-world incidents to generate (about three records "
                                  "each: ~2,000 records at the default)."),
    seed: int = typer.Option(2024, "--seed", help="Seed of the labelled exports (producers.exports)."),
    in_memory: bool = typer.Option(False, "--in-memory", help="Run the stages' code over in-memory state, "
                                   "partitioned as Kafka partitions it, instead of on the broker: seconds, for tuning."),
    mistakes: int = typer.Option(5, "--mistakes", help="Wrong merges and missed ones to print, with the signals "
                                 "each decision rested on."),
) -> None:
    """Precision, recall and F1 of dedup and deconfliction per category, on labelled agency exports
    (producers.exports: phones with punctuation, US dates, state names, gross weights, pills counted vs weighed,
    custody times, dashed citations, twin seizures, follow-on seizures, look-alike identifiers). Publishes them
    through each agency's Publisher and runs intake, dedup, correlate and deconflict on the broker."""
    from hub.quality import bench_quality

    where = "in memory" if in_memory else "on the broker"
    with console.status(f"publishing the labelled exports and running the stages {where}"):
        report = bench_quality(incidents, seed, "in-memory" if in_memory else "broker", mistakes=mistakes)
    table = Table(f"record linkage, {report.records:,} records, seed {seed}, {where}", "precision", "recall", "F1",
                  "pairs right", "wrongly together", "wrongly apart")
    for s in report.scores:
        table.add_row(s.category, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", f"{s.true_positives:,}",
                      f"{s.false_positives:,}", f"{s.false_negatives:,}")
    console.print(table)
    console.print(f"records refused by the contract: {len(report.rejected)}; alerts on look-alike identifiers "
                  f"(each one false): {report.lookalike_alerts}; stages ran {report.seconds:.1f} s")
    for number, why in report.rejected[:mistakes]:
        console.print(f"  refused record #{number}: {why}", markup=False)
    for mistake in report.mistakes:
        console.print(f"  {mistake}", markup=False)

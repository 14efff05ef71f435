"""``hub bench``: throughput figures, always next to a baseline measured in the same run."""

from __future__ import annotations

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
) -> None:
    """Events/s of every stage and p50/p99/p999 latency of the whole flow, with peak RSS,
    next to a raw kafka-python consume-to-produce passthrough on the same broker and input, in the same run."""
    from hub.bench import bench_pipeline

    with console.status("running the pipeline benchmark (passthrough, then each stage)"):
        results = bench_pipeline(count, paced, rate)
    base = results[0]
    table = Table("throughput", "inputs", "seconds", "events/s", "vs baseline", "peak RSS MB")
    for r in (r for r in results if r.kind == "throughput"):
        table.add_row(r.name, f"{r.events:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}", f"{r.rate / base.rate:.2f}x",
                      f"{r.peak_rss_mb:,.0f}")
    console.print(table)
    table = Table(f"latency at {rate:g} events/s", "samples", "p50 ms", "p99 ms", "p999 ms", "peak RSS MB")
    for r in (r for r in results if r.kind == "latency"):
        table.add_row(r.name, f"{r.events:,}", f"{r.p50_ms:,.0f}", f"{r.p99_ms:,.0f}", f"{r.p999_ms:,.0f}",
                      f"{r.peak_rss_mb:,.0f}")
    console.print(table)
    console.print("Peak RSS is the benchmark process's, where every stage runs (as threads), so far in the run.")

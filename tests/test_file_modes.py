"""Local copies of report data and secrets are readable by their owner only, and no secret is on a command line.

Spools, stage state stores, the KEK and the broker's segments (``changelog.<stage>`` holds plain values) are files
0600 in folders 0700 whatever the process umask; the ``hub`` command also runs with umask 077 for whatever else it
writes. The broker's StorageTool gets the admin's SCRAM password from a private Java argument file, never from its
argv, which any local user can read in ``/proc/<pid>/cmdline`` (tests/test_access.py reads the running brokers').
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from consumers.runner import StageRunner
from consumers.stages.dedup import DedupStage
from hub.broker import KafkaJars, Layout, LocalBroker, new_cluster_id
from hub.credentials import PRIVATE_UMASK, new_password, save_passwords
from hub.settings import HubSettings
from hub.topics import ensure_topics, hub_topics
from producers.directory import load_agencies
from tests.conftest import hub_env, publish_events
from tests.factories import make_event

HUB = [sys.executable, "-m", "hub"]
GROUP_OR_OTHER = 0o077


def exposed(root: Path) -> list[str]:
    """Every folder or file under ``root``, itself included, that grants its group or others anything (a running
    broker removes files as it goes: those are skipped)."""
    found = []
    for folder, folders, files in os.walk(root):  # os.walk skips folders that vanish under it
        for path in (Path(folder), *(Path(folder, name) for name in files)):
            with suppress(FileNotFoundError):
                info = path.lstat()
                if stat.S_IMODE(info.st_mode) & GROUP_OR_OTHER and not stat.S_ISLNK(info.st_mode):
                    found.append(f"{stat.S_IMODE(info.st_mode):04o} {path}")
    return sorted(found)


def listing(what: str, paths: list[str], limit: int = 25) -> str:
    more = f"\n  ... and {len(paths) - limit} more" if len(paths) > limit else ""
    return f"{what}, {len(paths)}:\n  " + "\n  ".join(paths[:limit]) + more


@pytest.mark.kafka
def test_spools_stage_state_keys_and_broker_segments_are_private_whatever_the_umask(local_kafka, hub_settings):
    """A library user's lax umask (022) must not expose reports: every file the publisher, the intake and dedup
    stages and the broker write has an explicit private mode."""
    settings = hub_settings
    previous = os.umask(0o022)
    try:
        ensure_topics(hub_topics(settings.topic_prefix, sorted(load_agencies()), ["intake", "dedup"]), settings)
        publish_events(settings, [make_event()])  # spooled, published, then sealed by intake (which makes the KEK)
        StageRunner(DedupStage(), settings, commit_interval_s=0.2).run_until_caught_up()
    finally:
        os.umask(previous)

    files = [path for path in settings.runtime_dir.rglob("*") if path.is_file()]
    written = {path.relative_to(settings.runtime_dir).parts[0] for path in files}
    assert {"spool", "state", "secrets"} <= written, f"the run wrote {sorted(written)}"
    loose = sorted({f"{stat.S_IMODE(p.stat().st_mode):04o} {p}" for path in files for p in (path, path.parent)
                    if stat.S_IMODE(p.stat().st_mode) & GROUP_OR_OTHER})
    assert not loose, listing("files and their folders others may read", loose)

    segments = list((local_kafka.node_dir(1) / "data").glob(f"{settings.topic_prefix}changelog.dedup-*/*.log"))
    assert segments, "dedup's changelog has segments on the broker's disk"
    assert not exposed(local_kafka.dir), listing("broker files others may read", exposed(local_kafka.dir))


@pytest.mark.kafka
def test_the_hub_command_keeps_what_it_writes_to_its_user(hub_settings, tmp_path):
    """The CLI's umask covers files no code gives a mode, such as sample data, and the runtime folder itself."""
    env = hub_env(hub_settings)
    out = tmp_path / "sample"
    sampled = subprocess.run([*HUB, "sample", "--count", "20", "--out-dir", str(out)], capture_output=True,
                             text=True, env=env, timeout=120)
    assert sampled.returncode == 0, sampled.stderr
    source = sorted(out.glob("*.jsonl"))[0]
    ensure_topics(hub_topics(hub_settings.topic_prefix, sorted(load_agencies()), []), hub_settings)
    published = subprocess.run([*HUB, "publish", "--agency", source.stem, str(source)], capture_output=True,
                               text=True, env=env, timeout=120, cwd=tmp_path)
    assert published.returncode == 0, published.stdout + published.stderr
    assert (hub_settings.runtime_dir / "spool" / f"{source.stem}.sqlite").exists()
    loose = exposed(out) + exposed(hub_settings.runtime_dir)
    assert not loose, listing("files others may read", loose)


def test_storage_format_takes_the_admin_password_from_a_private_file_not_its_command_line(tmp_path, monkeypatch):
    """Runs the real StorageTool (as `hub broker start --auth scram` does) and looks at what it was given."""
    jars = KafkaJars()
    if not jars.present or shutil.which("java") is None:
        pytest.skip("needs java and the broker's jars (`hub broker fetch`)")
    broker = LocalBroker(HubSettings(runtime_dir=tmp_path), name="format-only")
    broker.jars = jars  # the shared jar cache, not one under tmp_path
    password = new_password()
    save_passwords(broker.credentials_file, {"admin": password})
    layout = Layout(nodes=1, port=19092, cluster_id=new_cluster_id(), auth="scram")
    calls = []
    real_run = subprocess.run

    def run(command: list[str], *args, **kwargs) -> subprocess.CompletedProcess:
        argfile = Path(command[-1].removeprefix("@"))
        calls.append((command, stat.S_IMODE(argfile.stat().st_mode), argfile.read_text(), kwargs.get("umask")))
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    broker._render_config(layout, 1)
    broker._format_storage(layout, 1)

    [(command, mode, arguments, umask)] = calls
    assert not [arg for arg in command if password in arg], "the password is on the command line"
    assert command[-1].startswith("@") and mode == 0o600 and password in arguments, (command, oct(mode))
    assert "kafka.tools.StorageTool" in arguments and "kafka.tools.StorageTool" not in command
    assert umask == PRIVATE_UMASK
    assert not Path(command[-1][1:]).exists(), "the argument file is deleted once the format is done"
    assert (broker.node_dir(1) / "data" / "meta.properties").exists(), "the format ran"
    assert not exposed(broker.dir), listing("broker files others may read", exposed(broker.dir))


def _kek_fingerprint_of_a_fresh_stage(runtime_dir: Path, start: Any) -> str:
    from hub.vault import kek_fingerprint, load_kek

    start.wait()
    return kek_fingerprint(load_kek(HubSettings(runtime_dir=runtime_dir)))


def test_stages_started_at_once_on_a_fresh_host_agree_on_one_kek(tmp_path):
    """`hub run all` forks six stages that each load the KEK; on a fresh host each wrote one of its own, and a
    stage then could not read the keys another had wrapped (KekMismatchError)."""
    import multiprocessing

    for attempt in range(5):
        runtime_dir = tmp_path / f"host-{attempt}"
        fork = multiprocessing.get_context("fork")
        start = fork.Manager().Event()
        with fork.Pool(8) as pool:
            pending = [pool.apply_async(_kek_fingerprint_of_a_fresh_stage, (runtime_dir, start)) for _ in range(8)]
            start.set()
            fingerprints = {result.get(timeout=30) for result in pending}
        assert len(fingerprints) == 1, f"attempt {attempt}: {len(fingerprints)} different KEKs"
        assert stat.S_IMODE((runtime_dir / "secrets" / "kek").stat().st_mode) == 0o600
        assert [p.name for p in (runtime_dir / "secrets").iterdir()] == ["kek"]  # no drafts left behind

"""Secrets the local deployment keeps on disk: passwords in JSON files and private keys, readable by their owner only.

The broker's admin password and the hub's principals' passwords live under the runtime directory so that
``hub broker status`` and ``hub access`` can hand them to clients without anyone typing them. The same helpers
keep other local copies of report data (state stores, spools, broker segments) private: files 0600 in 0700
folders, whatever the process umask.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from hub.exceptions import ConfigError

PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
#: For child processes (the broker's JVMs) whose files this code does not create itself.
PRIVATE_UMASK = 0o077


def new_password() -> str:
    """192 random bits in URL-safe base64: no quote, comma or '=' that JAAS or StorageTool would trip on."""
    return secrets.token_urlsafe(24)


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` with mode 0600, never leaving a moment where it is readable by others; a folder it has to
    create (say ``secrets/``) is 0700."""
    path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, PRIVATE_FILE)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700, and tighten it if it already exists."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 in a 0700 folder unless it exists; tighten it if it does."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    os.chmod(path, PRIVATE_FILE)
    return path


def private_sqlite(path: Path) -> Path:
    """A SQLite database file made private before SQLite opens it: SQLite gives the ``-wal`` and ``-shm`` files
    the database's mode, and journals left by an older, looser version are tightened too."""
    private_file(path)
    for journal in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if journal.exists():
            os.chmod(journal, PRIVATE_FILE)
    return path


def load_passwords(path: Path) -> dict[str, str]:
    """Principal -> password from a JSON file; an absent file is an empty mapping."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the credentials file {path}: {exc}",
                          hint=f"Fix or remove {path} (removing it means passwords are generated again).") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path} is not a JSON object of principal -> password",
                          hint=f"Fix or remove {path} (removing it means passwords are generated again).")
    return data


def save_passwords(path: Path, passwords: dict[str, str]) -> None:
    write_private(path, (json.dumps(dict(sorted(passwords.items())), indent=2) + "\n").encode())

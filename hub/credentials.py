"""Secrets the local deployment keeps on disk: passwords in JSON files and private keys, readable by their owner only.

The broker's admin password and the hub's principals' passwords live under the runtime directory so that
``hub broker status`` and ``hub access`` can hand them to clients without anyone typing them.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from hub.exceptions import ConfigError


def new_password() -> str:
    """192 random bits in URL-safe base64: no quote, comma or '=' that JAAS or StorageTool would trip on."""
    return secrets.token_urlsafe(24)


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` with mode 0600, never leaving a moment where it is readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


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

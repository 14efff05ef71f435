"""Signed checkpoints of the audit chain: where every partition's chain stood when it was last verified.

A checkpoint lists each partition's last verified seal (offset, sequence, hash), signed with the hub's Ed25519
key. ``hub audit verify --from-checkpoint FILE`` checks the signature against the hub's public key (never the
one in the file), checks that each signed seal is still there unchanged, and verifies only what came after
it. Keep copies of checkpoints (and of the public key) off the cluster: they anchor the chain independently.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consumers.audit import ChainHead
from hub.exceptions import HubError
from hub.settings import HubSettings


class CheckpointError(HubError):
    """A checkpoint file is unreadable, or its signature does not verify."""

    hint = ("Use a checkpoint written by `hub audit checkpoint` on this hub (or pass --public-key with the key that "
            "signed it); without a trusted checkpoint, run `hub audit verify` from the start.")


def _key_dir(settings: HubSettings) -> Path:
    return settings.runtime_dir / "audit"


def public_key_path(settings: HubSettings) -> Path:
    return _key_dir(settings) / "checkpoint-signing.pub"


def _signing_key(settings: HubSettings) -> Ed25519PrivateKey:
    """The hub's checkpoint signing key, created (readable by this user only) on first use."""
    private = _key_dir(settings) / "checkpoint-signing.key"
    if private.exists():
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key
    private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    descriptor = os.open(private, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    public_key_path(settings).write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def _signed_part(topic: str, created_at: str, heads: list[ChainHead]) -> bytes:
    """Canonical JSON of what the signature covers."""
    return json.dumps({"topic": topic, "created_at": created_at,
                       "heads": [vars(h) for h in sorted(heads, key=lambda h: h.partition)]},
                      sort_keys=True, separators=(",", ":")).encode()


def write_checkpoint(heads: list[ChainHead], topic: str, settings: HubSettings, path: Path | None = None) -> Path:
    """Sign the chain heads and write them as JSON; returns the file written."""
    created_at = datetime.now(timezone.utc).isoformat()
    signed = _signed_part(topic, created_at, heads)
    path = path or _key_dir(settings) / "checkpoints" / f"checkpoint-{created_at[:19].replace(':', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = json.loads(signed)
    document["signature"] = base64.b64encode(_signing_key(settings).sign(signed)).decode()
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def read_checkpoint(path: Path, topic: str, settings: HubSettings, public_key: Path | None = None) -> list[ChainHead]:
    """The heads a checkpoint signed, once its signature verifies with the trusted public key."""
    trusted = public_key or public_key_path(settings)
    try:
        document = json.loads(path.read_text())
        heads = [ChainHead(**head) for head in document["heads"]]
        signature = base64.b64decode(document["signature"])
        key = serialization.load_pem_public_key(trusted.read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path} or public key {trusted}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{trusted} is not an Ed25519 public key")
    if document.get("topic") != topic:
        raise CheckpointError(f"{path} is a checkpoint of {document.get('topic')}, not of {topic}")
    try:
        key.verify(signature, _signed_part(topic, document["created_at"], heads))
    except InvalidSignature:
        raise CheckpointError(f"the signature of {path} does not verify: the checkpoint was altered or signed "
                              f"by another key") from None
    return heads

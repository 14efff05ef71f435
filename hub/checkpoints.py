"""Signed checkpoints of the audit chain: where every partition's chain stood when it was last verified.

A checkpoint lists each partition's last verified seal (offset, sequence, hash), signed with the hub's Ed25519
key. ``hub audit verify --from-checkpoint FILE`` checks the signature against the hub's public key (never the
one in the file), checks that each signed seal is still there unchanged, and verifies only what came after
it. Keep copies of checkpoints (and of the public key) off the cluster: they anchor the chain independently. Each is
also published on ``audit.checkpoints``, so an auditor's host (the console) shows the last one and checks its
signature with the public key it was given.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from consumers.audit import ChainHead
from hub.exceptions import HubError
from hub.kafka import make_producer, read_topic
from hub.settings import HubSettings
from schemas.topics import AUDIT_CHAIN, AUDIT_CHECKPOINTS


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
    """The heads a checkpoint file signed, once its signature verifies with the trusted public key."""
    trusted = public_key or public_key_path(settings)
    try:
        text, pem = path.read_text(), trusted.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path} or public key {trusted}: {exc}") from None
    return verified_heads(text, str(path), topic, pem, str(trusted))


def verified_heads(text: str, source: str, topic: str, public_key_pem: bytes, key_source: str) -> list[ChainHead]:
    """The heads the checkpoint document ``text`` signed, once its signature verifies with the trusted key."""
    try:
        document = json.loads(text)
        heads = [ChainHead(**head) for head in document["heads"]]
        signature = base64.b64decode(document["signature"])
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read checkpoint {source} or public key {key_source}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{key_source} is not an Ed25519 public key")
    if document.get("topic") != topic:
        raise CheckpointError(f"{source} is a checkpoint of {document.get('topic')}, not of {topic}")
    try:
        key.verify(signature, _signed_part(topic, document["created_at"], heads))
    except InvalidSignature:
        raise CheckpointError(f"the signature of {source} does not verify: the checkpoint was altered or signed "
                              f"by another key") from None
    return heads


def publish_checkpoint(path: Path, settings: HubSettings) -> None:
    """Put the checkpoint file on ``audit.checkpoints``, byte for byte, for auditors on other hosts."""
    producer = make_producer(settings)
    try:
        producer.send(settings.topic(AUDIT_CHECKPOINTS.pattern), key=b"checkpoint", value=path.read_bytes()).get(30)
    finally:
        producer.close()


@dataclass(frozen=True)
class PublishedCheckpoint:
    """The last checkpoint on ``audit.checkpoints``, and whether its signature verifies with the key given."""

    created_at: str
    heads: int
    verified: bool | None  # None: no public key to check it with
    problem: str = ""


def latest_checkpoint(settings: HubSettings, public_key: Path | None) -> PublishedCheckpoint | None:
    """The last published checkpoint (None: none yet), its signature checked with ``public_key`` when given."""
    records = read_topic(settings.topic(AUDIT_CHECKPOINTS.pattern), settings)
    if not records:
        return None
    text = records[-1].value.decode(errors="replace")
    try:
        document = json.loads(text)
        created_at, heads = str(document["created_at"]), len(document["heads"])
    except (ValueError, KeyError, TypeError) as exc:
        return PublishedCheckpoint("?", 0, False, f"unreadable: {exc}")
    if public_key is None:
        return PublishedCheckpoint(created_at, heads, None)
    try:
        verified_heads(text, "the last published checkpoint", settings.topic(AUDIT_CHAIN.pattern),
                       public_key.read_bytes(), str(public_key))
    except (CheckpointError, OSError) as exc:
        return PublishedCheckpoint(created_at, heads, False, str(exc).split("\n", 1)[0])
    return PublishedCheckpoint(created_at, heads, True)

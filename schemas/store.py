"""Every version of the contract in ``avsc/vN/``, resolvable by its CRC-64-AVRO fingerprint.

Each ``vN`` folder holds one ``<namespace>.<Name>.avsc`` file per named type; fastavro resolves the
references between them. The highest version is what the hub writes; every version stays readable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro.schema

from schemas.exceptions import SchemaLoadError, UnknownSchemaError

AVSC_DIR = Path(__file__).resolve().parent / "avsc"
NAMESPACE = "gov.taskforce.hub"
CASE_EVENT = f"{NAMESPACE}.CaseEvent"
PROTECTED_RECORD = f"{NAMESPACE}.ProtectedRecord"
# Records that travel on their own (topic values); every other named type is part of one of them.
TOP_LEVEL_TYPES = (CASE_EVENT, f"{NAMESPACE}.CanonicalEvent", f"{NAMESPACE}.DeconflictionAlert",
                   f"{NAMESPACE}.AlertAction", f"{NAMESPACE}.FeedItem", f"{NAMESPACE}.RoutingDecision",
                   f"{NAMESPACE}.RoutingDecisions", f"{NAMESPACE}.RegistryRevision", f"{NAMESPACE}.AuditSeal",
                   PROTECTED_RECORD, f"{NAMESPACE}.AuditEvent", f"{NAMESPACE}.ClockTick")


@dataclass(frozen=True)
class TypeSchema:
    """One top-level type as one version defines it."""

    name: str
    version: int
    schema: dict[str, Any] = field(repr=False)  # expanded JSON, as any Avro implementation reads it
    parsed: dict[str, Any] = field(repr=False)  # fastavro's parsed form, for fast encoding
    fingerprint: bytes = b""  # CRC-64-AVRO of the parsing canonical form, little-endian (single-object encoding)

    @property
    def schema_json(self) -> str:
        return json.dumps(self.schema)


@dataclass(frozen=True)
class SchemaVersion:
    """One ``vN`` folder: the top-level types it defines."""

    version: int
    path: Path
    types: dict[str, TypeSchema]

    def type(self, name: str = CASE_EVENT) -> TypeSchema:
        try:
            return self.types[name]
        except KeyError:
            raise SchemaLoadError(f"schema version v{self.version} does not define {name}") from None


def load_type(folder: Path, version: int, name: str) -> TypeSchema:
    """Load ``folder/<name>.avsc`` with every type it refers to from the same folder."""
    top = folder / f"{name}.avsc"
    try:
        expanded = fastavro.schema.load_schema(str(top), _write_hint=False)
        parsed = fastavro.schema.parse_schema(expanded)
        canonical = fastavro.schema.to_parsing_canonical_form(expanded)
    except (OSError, ValueError, fastavro.schema.SchemaParseException, fastavro.schema.UnknownType) as exc:
        raise SchemaLoadError(f"cannot load {name} of schema version {folder.name} from {top}: {exc}") from exc
    fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    return TypeSchema(name, version, expanded, parsed, fp)


def load_version(folder: Path) -> SchemaVersion:
    try:
        version = int(folder.name.lstrip("v"))
    except ValueError:
        raise SchemaLoadError(f"schema folder {folder} is not named vN") from None
    types = {name: load_type(folder, version, name) for name in TOP_LEVEL_TYPES
             if (folder / f"{name}.avsc").exists()}
    return SchemaVersion(version, folder, types)


class SchemaStore:
    """All versions under a folder; the newest version of a type is what new messages are written with."""

    def __init__(self, root: Path = AVSC_DIR) -> None:
        folders = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("v")),
                         key=lambda p: int(p.name.lstrip("v")) if p.name.lstrip("v").isdigit() else -1)
        if not folders:
            raise SchemaLoadError(f"no schema versions (v1, v2, ...) under {root}")
        self.root = root
        self.versions = [load_version(folder) for folder in folders]
        # Newer versions come last, so an unchanged type's fingerprint maps to its newest version.
        self._by_fingerprint = {t.fingerprint: t for v in self.versions for t in v.types.values()}

    @property
    def latest(self) -> SchemaVersion:
        return self.versions[-1]

    def version(self, number: int) -> SchemaVersion:
        for v in self.versions:
            if v.version == number:
                return v
        raise SchemaLoadError(f"no schema version v{number} under {self.root}",
                              hint=f"Known versions: {', '.join(f'v{v.version}' for v in self.versions)}.")

    def history(self, name: str) -> list[TypeSchema]:
        """Every version's definition of one type, oldest first."""
        return [v.types[name] for v in self.versions if name in v.types]

    def by_fingerprint(self, fingerprint: bytes) -> TypeSchema:
        try:
            return self._by_fingerprint[fingerprint]
        except KeyError:
            raise UnknownSchemaError(f"no schema version has fingerprint {fingerprint.hex()}") from None


@lru_cache(maxsize=1)
def default_store() -> SchemaStore:
    return SchemaStore()

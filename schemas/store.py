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
TOP_LEVEL_TYPE = "gov.taskforce.hub.CaseEvent"


@dataclass(frozen=True)
class SchemaVersion:
    """One version of the top-level event schema."""

    version: int
    path: Path
    schema: dict[str, Any] = field(repr=False)  # expanded JSON, as any Avro implementation reads it
    parsed: dict[str, Any] = field(repr=False)  # fastavro's parsed form, for fast encoding
    fingerprint: bytes = b""  # CRC-64-AVRO of the parsing canonical form, little-endian (single-object encoding)

    @property
    def schema_json(self) -> str:
        return json.dumps(self.schema)


def load_version(folder: Path) -> SchemaVersion:
    """Load ``folder/<TOP_LEVEL_TYPE>.avsc`` with every type it refers to from the same folder."""
    try:
        version = int(folder.name.lstrip("v"))
    except ValueError:
        raise SchemaLoadError(f"schema folder {folder} is not named vN") from None
    top = folder / f"{TOP_LEVEL_TYPE}.avsc"
    try:
        expanded = fastavro.schema.load_schema(str(top), _write_hint=False)
        parsed = fastavro.schema.parse_schema(expanded)
        canonical = fastavro.schema.to_parsing_canonical_form(expanded)
    except (OSError, ValueError, fastavro.schema.SchemaParseException, fastavro.schema.UnknownType) as exc:
        raise SchemaLoadError(f"cannot load schema version {folder.name} from {top}: {exc}") from exc
    fp = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    return SchemaVersion(version, folder, expanded, parsed, fp)


class SchemaStore:
    """All versions under a folder; ``latest`` is the one new messages are written with."""

    def __init__(self, root: Path = AVSC_DIR) -> None:
        folders = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("v")),
                         key=lambda p: int(p.name.lstrip("v")) if p.name.lstrip("v").isdigit() else -1)
        if not folders:
            raise SchemaLoadError(f"no schema versions (v1, v2, ...) under {root}")
        self.root = root
        self.versions = [load_version(folder) for folder in folders]
        self._by_fingerprint = {v.fingerprint: v for v in self.versions}

    @property
    def latest(self) -> SchemaVersion:
        return self.versions[-1]

    def version(self, number: int) -> SchemaVersion:
        for v in self.versions:
            if v.version == number:
                return v
        raise SchemaLoadError(f"no schema version v{number} under {self.root}",
                              hint=f"Known versions: {', '.join(f'v{v.version}' for v in self.versions)}.")

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion:
        try:
            return self._by_fingerprint[fingerprint]
        except KeyError:
            raise UnknownSchemaError(f"no schema version has fingerprint {fingerprint.hex()}") from None


@lru_cache(maxsize=1)
def default_store() -> SchemaStore:
    return SchemaStore()

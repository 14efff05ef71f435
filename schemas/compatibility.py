"""Schema evolution rules: every version must read data written with every earlier one.

Uses the Apache ``avro`` package's reader/writer compatibility checker (the reference implementation of
the spec's schema-resolution rules). Backward compatibility (new reader, old data) is required; forward
compatibility (old reader, new data) is reported so producers know when consumers must upgrade first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import avro.compatibility
import avro.schema

from schemas.store import TOP_LEVEL_TYPES, SchemaStore, TypeSchema

Direction = Literal["backward", "forward"]


@dataclass(frozen=True)
class CompatibilityResult:
    type_name: str
    reader: int
    writer: int
    direction: Direction
    compatible: bool
    problems: tuple[str, ...]


def field_path(schema: dict, pointer: str) -> str:
    """Turn the checker's JSON pointer (``/fields/12/type/0/fields/1``) into field names (``payload.drugs``)."""
    names, node = [], schema
    tokens = [t for t in pointer.split("/") if t]
    for previous, token in zip([None, *tokens], tokens):
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError, TypeError):
            break
        if previous == "fields" and isinstance(node, dict):
            names.append(node["name"])
    return ".".join(names) or "(top-level record)"


def _check(reader: TypeSchema, writer: TypeSchema, direction: Direction) -> CompatibilityResult:
    result = avro.compatibility.ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(reader.schema_json), avro.schema.parse(writer.schema_json)
    )
    compatible = result.compatibility is avro.compatibility.SchemaCompatibilityType.compatible
    problems: tuple[str, ...] = ()
    if not compatible:
        kinds = ", ".join(sorted(i.value for i in result.incompatibilities))
        fields = ", ".join(sorted({field_path(reader.schema, loc) for loc in result.locations if loc != "/"}))
        details = "; ".join(sorted(str(m) for m in result.messages))
        problems = (f"{kinds} in {fields or 'the top-level record'} ({details})",
                    *diagnose(reader.schema, writer.schema))
    return CompatibilityResult(reader.name, reader.version, writer.version, direction, compatible, problems)


def named_types(schema: object, found: dict[str, dict] | None = None) -> dict[str, dict]:
    """Every record and enum defined anywhere in an expanded schema, by full name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum"):
            found[schema["name"]] = schema
        children = [f["type"] for f in schema.get("fields", [])] + [schema.get("items"), schema.get("type")]
        for child in children:
            if isinstance(child, (dict, list)):
                named_types(child, found)
    return found


def diagnose(reader: dict, writer: dict) -> list[str]:
    """Name the type and field behind an incompatibility (the checker reports only the enclosing union)."""
    old = named_types(writer)
    found = []
    for name, new in named_types(reader).items():
        before = old.get(name)
        short = name.rsplit(".", 1)[-1]
        if before is None or before["type"] != new["type"]:
            continue
        if new["type"] == "enum":
            lost = [s for s in before["symbols"] if s not in new["symbols"]]
            if lost and "default" not in new:
                found.append(f"{short}: symbols {', '.join(lost)} removed and no enum default")
            continue
        old_fields = {f["name"]: f for f in before["fields"]}
        for f in new["fields"]:
            if f["name"] not in old_fields and "default" not in f:
                found.append(f"{short}.{f['name']}: new field without a default")
            elif f["name"] in old_fields and _type_name(old_fields[f["name"]]["type"]) != _type_name(f["type"]):
                found.append(f"{short}.{f['name']}: type changed from {_type_name(old_fields[f['name']]['type'])} "
                             f"to {_type_name(f['type'])}")
    return found


def _type_name(schema: object) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_type_name(b) for b in schema) + "]"
    if isinstance(schema, dict):
        return schema.get("name") or (f"array<{_type_name(schema['items'])}>" if schema.get("type") == "array"
                                      else str(schema.get("type")))
    return str(schema)


def check_store(store: SchemaStore) -> list[CompatibilityResult]:
    """Every (newer, older) pair of each top-level type's definitions, both directions."""
    results = []
    for name in TOP_LEVEL_TYPES:
        history = store.history(name)
        for index, newer in enumerate(history):
            for older in history[:index]:
                results.append(_check(newer, older, "backward"))
                results.append(_check(older, newer, "forward"))
    return results


def breaking(results: list[CompatibilityResult]) -> list[CompatibilityResult]:
    return [r for r in results if r.direction == "backward" and not r.compatible]

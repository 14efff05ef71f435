"""The directory of publishing agencies (``deploy/agencies.yaml``): ORI -> Agency."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from hub.settings import REPO_ROOT
from producers.exceptions import PublishError, UnknownAgencyError
from schemas.codec import problems_of
from schemas.models import Agency

DEFAULT_DIRECTORY = REPO_ROOT / "deploy" / "agencies.yaml"


def load_agencies(path: Path = DEFAULT_DIRECTORY) -> dict[str, Agency]:
    try:
        entries = (yaml.safe_load(path.read_text()) or {}).get("agencies", [])
    except (OSError, yaml.YAMLError) as exc:
        raise PublishError(f"cannot read the agency directory {path}: {exc}") from exc
    agencies: dict[str, Agency] = {}
    for index, entry in enumerate(entries):
        try:
            agency = Agency.model_validate(entry)
        except ValidationError as exc:
            where = "; ".join(f"{f}: {r}" for f, r in problems_of(exc))
            raise PublishError(f"{path}: agency #{index + 1} is invalid: {where}") from None
        agencies[agency.ori] = agency
    return agencies


def agency(ori: str, path: Path = DEFAULT_DIRECTORY) -> Agency:
    agencies = load_agencies(path)
    if ori not in agencies:
        raise UnknownAgencyError(f"agency {ori} is not in {path} (known: {', '.join(sorted(agencies))})")
    return agencies[ori]

"""Errors of the wire contract: invalid records, undecodable bytes, incompatible schema changes."""

from __future__ import annotations

from hub.exceptions import HubError


class SchemaError(HubError):
    """Root of the contract's errors."""


class SchemaLoadError(SchemaError):
    """An .avsc file is missing, malformed or refers to an unknown type."""

    hint = "Fix the .avsc file named above; `hub schemas check` validates every version."


class RecordInvalidError(SchemaError):
    """A record does not satisfy the contract; ``problems`` lists (field, reason) pairs."""

    hint = "Correct the fields listed and submit the record again."

    def __init__(self, message: str, problems: list[tuple[str, str]], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems


class RecordOutOfBoundsError(RecordInvalidError):
    """A well-formed record outside the contract's bounds (``schemas.limits``): too big, or dated too far from now."""

    hint = "Correct the fields listed (see schemas/limits.py for the bounds) and submit the record again."


class DecodeError(SchemaError):
    """Bytes that are not a hub message: wrong framing, unknown fingerprint or corrupt Avro."""

    hint = "The message did not come from a hub publisher of a known schema version; it belongs in the dead-letter topic."


class UnknownSchemaError(DecodeError):
    """The message names a schema fingerprint that no version in ``schemas/avsc`` has."""

    hint = "Upgrade this consumer to a release whose schemas/avsc holds the writer's schema version."


class RecordKeysError(DecodeError):
    """A protected record cannot be opened for want of record keys; ``key_ids`` names them."""

    def __init__(self, message: str, key_ids: list[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.key_ids = key_ids


class RecordPurgedError(RecordKeysError):
    """A protected record's key was destroyed by a purge: its data is gone."""

    hint = ("The record was purged under the 28 CFR Part 23 retention rules (its record key was destroyed); "
            "nothing can recover it. Skip it, and do not write records derived from it.")


class RecordKeyUnknownError(RecordKeysError):
    """A protected record names a record key the hub never had: not purged, but forged, or sealed elsewhere."""

    hint = ("Only the hub's intake stage seals records, under keys on the hub.keys topic; a record sealed by anyone "
            "else (another hub, an agency's own tool) belongs in the dead-letter topic.")


class RecordSealedError(DecodeError):
    """A protected record reached a codec that has no key vault to open it with."""

    hint = ("Only hub hosts read sealed topics, with the codec of hub.vault.hub_codec(settings) (it needs the hub "
            "principal and the KEK); agencies and task forces read their own topics, which are not sealed.")


class IncompatibleSchemaError(SchemaError):
    """A schema version cannot read data written with an earlier one."""

    hint = "Give new fields a default, keep removed fields' readers tolerant, add enum symbols only with a default."

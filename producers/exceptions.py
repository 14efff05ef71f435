"""Errors of publishing: bad input files, agency mismatches, missing topics, a busy spool."""

from __future__ import annotations

from hub.exceptions import HubError


class PublishError(HubError):
    """Root of the publishers' errors."""


class UnknownAgencyError(PublishError):
    """The ORI is not in the agency directory."""

    hint = "Add the agency to deploy/agencies.yaml (or the file given with --agencies) and run `hub topics init`."


class AgencyMismatchError(PublishError):
    """A record claims another agency than the one publishing it."""

    hint = "An agency publishes only its own records: fix source_agency.ori or publish with that agency's --agency."


class TopicMissingError(PublishError):
    """The agency's ingest topic does not exist on the cluster."""

    hint = "Create the hub's topics with `hub topics init`."


class SpoolBusyError(PublishError):
    """Another process holds this agency's spool."""

    hint = "Wait for the other `hub publish` for this agency to finish, or give this one its own HUB_RUNTIME_DIR."


class InputFormatError(PublishError):
    """An input file cannot be read at all (unknown format, unreadable, bad header)."""

    hint = "Use JSON Lines (.jsonl, .ndjson) or CSV (.csv) with dotted column names, or pass --format."

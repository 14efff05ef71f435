"""Errors of the processing stages and their runner."""

from __future__ import annotations

from hub.exceptions import HubError


class ConsumerError(HubError):
    """Root of the processing side's errors."""


class StageError(ConsumerError):
    """A stage could not process one message; the runner sends it to the dead-letter topic and goes on."""

    hint = "Inspect the message in the stage's dead-letter topic (`kcat -C -t <prefix>deadletter.<stage>`)."


class StateError(ConsumerError):
    """A state store could not be opened or restored."""

    hint = "Delete the stage's local state folder; it is rebuilt from the changelog topic on the next start."

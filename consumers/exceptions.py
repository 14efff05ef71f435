"""Errors of the processing stages and their runner."""

from __future__ import annotations

from hub.exceptions import HubError


class ConsumerError(HubError):
    """Root of the processing side's errors."""


class StageError(ConsumerError):
    """A stage could not process one message; the runner sends it to the dead-letter topic and goes on."""

    hint = "`hub deadletters <stage>` lists it with its reason and source (it is kept on <prefix>deadletter.<stage>)."


class UpdateTooLateError(StageError):
    """A later version of a record arrived after the event it updates left the stage's state (its retention in
    event time): it is dead-lettered rather than dropped, so nothing is lost unseen."""

    hint = ("Raise HUB_DEDUP_RETENTION_DAYS if agencies' updates often come this late; the record waits in "
            "deadletter.dedup with this reason (`hub deadletters dedup`).")


class StateError(ConsumerError):
    """A state store could not be opened or restored."""

    hint = "Delete the stage's local state folder; it is rebuilt from the changelog topic on the next start."


class TransactionRetryError(ConsumerError):
    """A stage's transactions kept failing: the broker aborted or refused each attempt to commit the same inputs."""

    hint = ("Check the broker's log for why (transaction timeouts, authorization, record size) and `hub broker "
            "status`; the stage resumes from its last commit when restarted.")


class RegistryError(ConsumerError):
    """The task-force registry cannot be read or is invalid (which file, which unit, which field, why)."""

    hint = ("Fix the named unit and field in the registry file (deploy/taskforces.yaml by default); "
            "ports and states must be in schemas/reference.py and ORIs in deploy/agencies.yaml.")


class UnknownTaskForceError(RegistryError):
    """No task force in the registry has the unit id asked for."""

    hint = "Use a unit id listed in deploy/taskforces.yaml (slugs like best-laredo), or add the unit there."


class FeedMissingError(ConsumerError):
    """The unit has no feed topic on this cluster."""

    hint = "Check the unit id (`hub taskforces show`) and create its feed with `hub topics init`."

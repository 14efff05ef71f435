"""The root of every error the hub raises.

Each package (``schemas``, ``producers``, ``consumers``) has its own ``exceptions.py`` whose classes
derive from :class:`HubError`, so a caller can catch one type and still print a precise message.
Every error carries a ``hint``: what the user should do next.
"""

from __future__ import annotations

from kafka.errors import KafkaError


class HubError(Exception):
    """Base class of all hub errors; ``str()`` gives the message followed by what to do next."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  -> {self.hint}" if self.hint else self.message


class ConfigError(HubError):
    """A setting is missing or malformed."""

    hint = "Check the HUB_* environment variables (`hub --help` lists them)."


class KafkaUnavailableError(HubError, KafkaError):
    """No broker answered at the configured bootstrap servers (a ``KafkaError`` too: a stage waits it out)."""

    hint = "Start the local broker with `hub broker start`, or point HUB_BOOTSTRAP_SERVERS at a running cluster."


class AuthenticationFailedError(HubError):
    """The broker refused the SASL user name or password (retrying will not help, unlike an unreachable broker)."""

    hint = ("Check HUB_SASL_USERNAME and HUB_SASL_PASSWORD: `hub broker status` prints the admin's, "
            "`hub access apply --show-passwords` every principal's.")


class BrokerError(HubError):
    """The local broker managed by `hub broker` could not be fetched, started or stopped."""


class ToolMissingError(BrokerError):
    """A program the local broker needs (java, mvn) is not on PATH."""


class PortInUseError(BrokerError):
    """A port the local broker wants is already bound by another process."""


class BrokerStartError(BrokerError):
    """The broker JVM exited or did not become ready in time."""


class AccessError(HubError):
    """Users or ACLs could not be read or changed on the broker."""

    hint = "Run `hub access apply` as the super user against a broker started with `hub broker start --auth scram`."


class AccessConfigError(AccessError):
    """The principals or passwords asked for do not fit the access model."""


class CredentialsMissingError(AccessError):
    """No password is known for a principal."""

    hint = "Run `hub access apply` (it creates the principal and stores its password under the runtime dir)."


class BenchmarkError(HubError):
    """A benchmark could not produce a trustworthy figure (so it prints none)."""

    hint = "Rerun on a quieter machine or with a smaller --count; `hub broker status` shows the broker's state."


class TopicMissingError(HubError):
    """A command needs a topic that does not exist on the cluster."""

    hint = "Create the hub's topics with `hub topics init`."


class TransactionIncompleteError(HubError, KafkaError):
    """A record sent in a transaction was not written (its batch expired or failed while a broker was away), so the
    transaction must not commit: it is aborted and its inputs processed again. A ``KafkaError`` too, so every
    handler of a failed transaction treats it as one."""

    hint = "Nothing to do: the runner processes the batch again once the brokers answer."


class ManifestError(HubError):
    """The manifests asked for cannot be rendered, or the Strimzi CRDs cannot be generated."""

    hint = "Check the options of `hub deploy render` (`hub deploy render --help`)."


class SupervisorError(HubError):
    """A stage of `hub run all` kept crashing: the supervisor gave up."""

    hint = "Read the stage's last error above (and its dead letters); fix the cause, then start `hub run all` again."


class ConsoleSignInError(HubError):
    """The console refused a sign-in."""

    hint = ("Sign in with a task force's (tf-<unit>), an agency's (agency-<ori>) or an auditor's (auditor-<name>) "
            "principal and the password `hub access apply` gave it.")

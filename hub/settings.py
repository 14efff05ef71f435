"""One typed settings object, read from ``HUB_``-prefixed environment variables.

Defaults point at the local broker that ``hub broker start`` runs, so a fresh checkout works with no
configuration at all.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_VERSION = "4.3.1"

SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
LogFormat = Literal["auto", "json", "console"]
BrokerAuth = Literal["none", "scram"]
#: What a stage does with an exception no check of the hub raised (a bug, not a record's known fault).
UnexpectedErrorAction = Literal["dead-letter", "stop"]


class HubSettings(BaseSettings):
    """Everything that differs between a laptop, CI and a production cluster."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of the Kafka cluster."
    )
    security_protocol: SecurityProtocol = Field("PLAINTEXT", description="Kafka security protocol.")
    sasl_mechanism: SaslMechanism = Field("SCRAM-SHA-512", description="SASL mechanism when SASL is on.")
    sasl_username: str | None = Field(None, description="SASL principal name.")
    sasl_password: str | None = Field(None, description="SASL password.")
    ssl_cafile: Path | None = Field(None, description="CA certificate for TLS listeners.")
    topic_prefix: str = Field("", description="Prepended to every topic name (isolates tenants and tests).")
    runtime_dir: Path = Field(
        REPO_ROOT / ".hub", description="Where the local broker keeps jars, pid files, logs and data."
    )
    kek_file: Path | None = Field(
        None, description="Hub hosts only: the key-encryption key wrapping the record keys on hub.keys (base64 of "
        "32 bytes). Default <runtime_dir>/secrets/kek, created on first use; every hub host needs the same one."
    )
    key_table_prefix: str | None = Field(
        None, description="Topic prefix of the record-key table when it differs from HUB_TOPIC_PREFIX (replays "
        "read the live one)."
    )
    broker_auth: BrokerAuth = Field(
        "none", description="Local broker started by `hub broker start`: none, or scram (SASL/SCRAM + ACLs)."
    )
    broker_tls: bool = Field(False, description="Local broker: TLS on the client listener (`hub broker start --tls`).")
    connect_timeout_s: float = Field(10.0, description="Seconds to wait for the first broker to answer.")
    client_id: str = Field("task-force-hub", description="Kafka client id sent to the broker.")
    log_format: LogFormat = Field("auto", description="auto: console on a terminal, JSON lines otherwise.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Minimum log level.")
    metrics_host: str = Field(
        "127.0.0.1", description="Address `hub run` serves /metrics, /healthz and /readyz on (0.0.0.0 in a pod)."
    )
    metrics_port: int = Field(
        9400, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz for `hub run STAGE`; `hub run all` "
        "serves its supervisor's here and stage N's (in pipeline order, from 1) on this port + N. 0: no server."
    )
    unexpected_errors: UnexpectedErrorAction = Field(
        "dead-letter", description="A stage's exception that no check raised (a bug): dead-letter the record and "
        "go on, or stop the stage (its supervisor restarts it, and gives up after repeated crashes)."
    )
    clock_tick_s: float = Field(
        1.0, gt=0, le=60, description="`hub run clock`: seconds between the wall-clock ticks that escalate "
        "unacknowledged alerts when no other traffic comes."
    )
    max_restarts: int = Field(
        5, ge=0, description="`hub run all`: crashes of one stage within restart_window_s before it gives up."
    )
    restart_window_s: float = Field(300.0, gt=0, description="`hub run all`: the window max_restarts counts in.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _has_host_and_port(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        bad = [s for s in servers if ":" not in s or not s.rsplit(":", 1)[1].isdigit()]
        if not servers or bad:
            raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return ",".join(servers)

    @property
    def bootstrap_list(self) -> list[str]:
        return self.bootstrap_servers.split(",")

    @property
    def kafka_home(self) -> Path:
        """Cache of the broker's jars, shared by every broker instance under the runtime directory."""
        return self.runtime_dir / f"kafka-{KAFKA_VERSION}"

    @property
    def key_table(self) -> str:
        """The physical name of the record-key table (``hub.keys``), shared by a replay with live."""
        return f"{self.topic_prefix if self.key_table_prefix is None else self.key_table_prefix}hub.keys"

    @property
    def kek_path(self) -> Path:
        return self.kek_file or self.runtime_dir / "secrets" / "kek"

    def topic(self, name: str) -> str:
        """The physical topic name for a logical one."""
        return f"{self.topic_prefix}{name}"


@lru_cache(maxsize=1)
def get_settings() -> HubSettings:
    """The process-wide settings, read once from the environment."""
    return HubSettings()

"""Kafka client factories: the one place that turns settings into kafka-python configuration.

Every producer, consumer and admin client in the hub comes from here, so security options, client ids
and timeouts are set once.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from hub.exceptions import KafkaUnavailableError
from hub.settings import HubSettings, get_settings


def connection_config(settings: HubSettings | None = None) -> dict[str, Any]:
    """Bootstrap and security options shared by all client types."""
    s = settings or get_settings()
    config: dict[str, Any] = {
        "bootstrap_servers": s.bootstrap_list,
        "security_protocol": s.security_protocol,
        "client_id": s.client_id,
        "bootstrap_timeout_ms": int(s.connect_timeout_s * 1000),
    }
    if s.security_protocol.startswith("SASL"):
        config.update(
            sasl_mechanism=s.sasl_mechanism,
            sasl_plain_username=s.sasl_username,
            sasl_plain_password=s.sasl_password,
        )
    if s.security_protocol.endswith("SSL") and s.ssl_cafile:
        config["ssl_cafile"] = str(s.ssl_cafile)
    return config


def _connect(factory: Any, settings: HubSettings | None, **overrides: Any) -> Any:
    config = connection_config(settings) | overrides
    try:
        return factory(**config)
    except KafkaTimeoutError as exc:
        raise KafkaUnavailableError(f"no Kafka broker answered at {','.join(config['bootstrap_servers'])}") from exc


def make_producer(settings: HubSettings | None = None, **overrides: Any) -> KafkaProducer:
    """An idempotent, acks=all producer unless overridden: nothing accepted is lost or doubled by retries."""
    defaults = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
    return _connect(KafkaProducer, settings, **(defaults | overrides))


def make_consumer(*topics: str, settings: HubSettings | None = None, **overrides: Any) -> KafkaConsumer:
    """A consumer that reads only committed data and never commits on its own."""
    defaults = {"isolation_level": "read_committed", "enable_auto_commit": False, "auto_offset_reset": "earliest"}
    consumer = _connect(KafkaConsumer, settings, **(defaults | overrides))
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def make_admin(settings: HubSettings | None = None, **overrides: Any) -> KafkaAdminClient:
    return _connect(KafkaAdminClient, settings, **overrides)

"""Structured logging: JSON lines for machines, a readable console for people.

A pipeline's log lines carry the ``stage`` and, where there is one, the ``event_id``:
``get_logger(stage="dedup").bind(event_id=...)``.
"""

from __future__ import annotations

import logging
import sys

import structlog

from hub.settings import LogFormat

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was set up (a test runner or a
    daemonising wrapper may replace, and close, the stream it was at set-up)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(log_format: LogFormat = "auto", level: str = "info") -> None:
    """Set up structlog once per process; logs go to stderr so stdout stays for command output."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
    # kafka-python logs every failed reconnect through the standard library; the hub reports outages itself
    # (one structured line), so its chatter is shown only when debugging.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)


def get_logger(**context: object) -> structlog.stdlib.BoundLogger:
    """A logger bound to ``context`` (typically ``stage=...``)."""
    return structlog.get_logger().bind(**context)

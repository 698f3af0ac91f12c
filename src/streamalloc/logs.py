"""Structured, quiet-by-default logging: one JSON object per line on stderr, secrets redacted."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

from streamalloc.client_properties import redact as _redact

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

# The process's secret values (passwords, keys, tokens of the client properties), set once at
# the edge with the log configuration: log lines and error messages built from library text
# (librdkafka, the registry client) pass through `redact` before anyone sees them.
_secrets: tuple[str, ...] = ()


def redact(text: str) -> str:
    """`text` without any of the secret values registered by `configure`."""
    return _redact(text, _secrets) if _secrets else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        line = json.dumps(payload, default=str)
        if not _secrets:
            return line
        # a secret may sit in the line as it was, or JSON-escaped (quotes, backslashes)
        return _redact(line, [*_secrets, *(json.dumps(s)[1:-1] for s in _secrets)])


def configure(level: str = "WARNING", secrets: Iterable[str] = ()) -> None:
    """Log JSON lines at `level` on stderr; never show any of `secrets`."""
    global _secrets
    _secrets = tuple(s for s in secrets if s)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("streamalloc")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.Formatter.converter = time.gmtime

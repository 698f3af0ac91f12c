"""Dead-letter records: what failed, where it came from, and the bytes exactly as they came."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from streamalloc.runtime.stage import Record


def dead_letter_record(record: Record, error: str, now_ms: int | None = None) -> dict[str, Any]:
    """The contract's dead-letter event for a record that could not be decoded or validated."""
    topic, partition, offset = record.topic, record.partition, record.offset
    return {
        "event_id": f"dlq:{topic}:{partition}:{offset}",
        "source_topic": topic,
        "partition": partition,
        "offset": offset,
        "key": record.key,
        "value": record.raw,
        "error": error,
        "failed_at": now_ms if now_ms is not None else int(time.time() * 1000),
    }


def dead_letter_encoder(encode: Callable[[dict[str, Any]], bytes]) -> Callable[[Record, str], bytes]:
    """Adapt a record encoder (the dead-letter serde) to the worker's (message, reason) hook."""

    def encoder(record: Record, error: str) -> bytes:
        return encode(dead_letter_record(record, error))

    return encoder

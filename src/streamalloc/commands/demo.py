"""`streamalloc demo`: the example data through the broker, end to end, and what happened."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from streamalloc.commands.io import consume_json, produce_file
from streamalloc.commands.topics import ensure_topics
from streamalloc.config import Settings

EXAMPLE_FILES = (
    ("locations", "locations.jsonl"),
    ("channels", "channels.jsonl"),
    ("inventory", "inventory.jsonl"),
    ("orders", "orders.jsonl"),
)


@dataclass(frozen=True)
class RoundTrip:
    topic: str
    sent: int
    read_back: int
    seconds: float


def examples_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "examples"


def round_trip(settings: Settings, examples: Path | None = None) -> list[RoundTrip]:
    """Create the topics, send every example file, read each topic back (read_committed)."""
    folder = examples or examples_dir()
    ensure_topics(settings)
    results = []
    for name, filename in EXAMPLE_FILES:
        topic = settings.topic(name)
        started = time.perf_counter()
        sent = produce_file(settings, topic, folder / filename)
        seen: list[object] = []
        consume_json(
            settings, topic, max_records=sent, from_beginning=True, idle_timeout_s=10.0, on_record=seen.append
        )
        results.append(RoundTrip(topic, sent, len(seen), time.perf_counter() - started))
    return results

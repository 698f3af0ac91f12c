"""What the worker reads from librdkafka's statistics (`statistics.interval.ms`, `stats_cb`)."""

from __future__ import annotations

import json
from typing import Any

#: librdkafka's marker for an offset it does not know yet (RD_KAFKA_OFFSET_INVALID)
_UNKNOWN = -1001


def partition_lags(stats_json: str) -> dict[tuple[str, int], int]:
    """Records not yet consumed per partition the application assigned (topic, partition).

    Under read_committed the end is the last stable offset (`ls_offset`); the position is
    the application's (`app_offset`, which steps over transaction markers), else, before the
    first record, the committed offset fetched at assignment, else (the group never committed
    there) the log start, where `auto.offset.reset=earliest` begins. librdkafka's own `consumer_lag`
    is not used: it counts from the offset the consumer committed itself, and this worker
    commits through its producer's transactions, which the consumer never hears of.
    Partitions whose end or position is still unknown are left out.
    """
    stats: dict[str, Any] = json.loads(stats_json)
    lags: dict[tuple[str, int], int] = {}
    for topic, entry in (stats.get("topics") or {}).items():
        for key, part in (entry.get("partitions") or {}).items():
            partition = int(key)
            if partition < 0 or not part.get("desired", False):
                continue  # -1 is librdkafka's unassigned-messages queue; not desired: not ours
            end = int(part.get("ls_offset", _UNKNOWN))
            if end < 0:
                end = int(part.get("hi_offset", _UNKNOWN))
            position = int(part.get("app_offset", _UNKNOWN))
            if position < 0:
                position = int(part.get("committed_offset", _UNKNOWN))
            if position < 0:  # nothing committed nor consumed yet: it starts at the earliest
                position = int(part.get("lo_offset", _UNKNOWN))
            if end < 0 or position < 0:
                continue
            lags[(topic, partition)] = max(end - position, 0)
    return lags

"""Availability queries answered by the SKU's owner (Kafka Streams' interactive queries).

A SKU's state lives in one allocator store partition, the SKU's murmur2 partition of
the co-partitioned inputs, on the one worker the group assigned it to. Any worker takes
`GET /availability/<sku>`:

- it owns the partition: it answers from its store (200, or 404 for a SKU it never saw);
- another worker owns it: it forwards the query to the owner's advertised URL
  (runtime/members.py) and relays the answer, or, with `query_forwarding` off, answers
  421 with the owner's address for the client to ask there;
- nobody owns it right now (a rebalance) or the owner is restoring: 503, try again.

A forwarded query carries `FORWARDED_HEADER`; a worker that gets one for a partition it
does not own answers 421 rather than forwarding again, so a query never loops while two
workers disagree about the owner during a rebalance.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamalloc.domain.views import Availability
from streamalloc.errors import StreamallocError
from streamalloc.kafka.partitioning import partition_for
from streamalloc.runtime.members import Members
from streamalloc.stages.allocator import availability_record

FORWARDED_HEADER = "X-Streamalloc-Forwarded"
_log = logging.getLogger("streamalloc.api.queries")

#: (partition, sku) -> ("owned" | "restoring" | "not_owned", the view if owned and known)
LocalQuery = Callable[[int, str], tuple[str, Availability | None]]


@dataclass(frozen=True)
class AvailabilityRequest:
    sku: str
    channel: str | None = None
    forwarded: bool = False


Answer = tuple[int, dict[str, Any]]


class AvailabilityService:
    """Answers `GET /availability/<sku>` on one worker (see the module docstring)."""

    def __init__(
        self,
        *,
        local: LocalQuery,
        members: Members,
        requests_topic: str,
        self_url: str,
        forwarding: bool,
        known_channels: Callable[[], set[str]],
        timeout_s: float = 5.0,
    ) -> None:
        self._local = local
        self._members = members
        self._topic = requests_topic
        self._self_url = self_url
        self._forwarding = forwarding
        self._channels = known_channels
        self._timeout_s = timeout_s

    def __call__(self, request: AvailabilityRequest) -> Answer:
        try:
            return self._answer(request)
        except StreamallocError as exc:
            return 503, {"error": str(exc), "sku": request.sku}

    def _answer(self, request: AvailabilityRequest) -> Answer:
        sku = request.sku
        if not sku:
            return 400, {"error": "no SKU in the path: GET /availability/<sku>"}
        if request.channel is not None and request.channel not in self._channels():
            return 404, {"error": f"unknown channel {request.channel!r}", "sku": sku}
        partition = partition_for(sku.encode(), self._members.partitions(self._topic))
        status, view = self._local(partition, sku)
        if status == "owned":
            if view is None:
                return 404, {"error": f"unknown SKU {sku!r}: no stock or orders seen", "sku": sku,
                             "partition": partition, "served_by": self._self_url}  # fmt: skip
            return 200, availability_body(view, partition, self._self_url, request.channel)
        if status == "restoring":
            return 503, {
                "error": "the owner is restoring the SKU's store",
                "sku": sku,
                "partition": partition,
            }
        return self._elsewhere(request, partition)

    def _elsewhere(self, request: AvailabilityRequest, partition: int) -> Answer:
        owner = self._members.view().owner(self._topic, partition)
        if owner is None or owner.url == self._self_url:
            owner = self._members.view(refresh=True).owner(self._topic, partition)
        base = {"sku": request.sku, "partition": partition}
        if owner is None or owner.url is None:
            return 503, {**base, "error": "no worker with an HTTP address owns the SKU's partition now"}
        if owner.url == self._self_url:
            return 503, {**base, "error": "this worker is taking the partition over; try again"}
        if request.forwarded or not self._forwarding:
            return 421, {**base, "error": "another worker owns this SKU", "owner": owner.url}
        return self._forward(request, owner.url, base)

    def _forward(self, request: AvailabilityRequest, owner_url: str, base: dict[str, Any]) -> Answer:
        url = availability_url(owner_url, request.sku, request.channel)
        req = urllib.request.Request(url, headers={FORWARDED_HEADER: self._self_url})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self._timeout_s) as response:  # noqa: S310
                return int(response.status), json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                body = json.load(exc)
            except ValueError:
                body = {**base, "error": f"the owner answered {exc.code}"}
            return exc.code, body
        except (OSError, ValueError) as exc:
            self._members.view(refresh=True)
            _log.info("forward failed", extra={"owner": owner_url, "error": str(exc)})
            return 503, {**base, "error": "the owner did not answer; try again", "owner": owner_url}


def availability_url(base_url: str, sku: str, channel: str | None = None) -> str:
    url = f"{base_url.rstrip('/')}/availability/{urllib.parse.quote(sku, safe='')}"
    return url + (f"?{urllib.parse.urlencode({'channel': channel})}" if channel is not None else "")


def availability_body(
    view: Availability, partition: int, served_by: str, channel: str | None
) -> dict[str, Any]:
    """The query's answer: the `availability` record's fields (docs/contract.md), and who answered."""
    record = availability_record(view, "query")
    del record["event_id"], record["cause_event_id"]
    if channel is not None:
        record["channels"] = [c for c in record["channels"] if c["channel"] == channel]
    return {**record, "partition": partition, "served_by": served_by}

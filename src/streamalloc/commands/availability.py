"""`streamalloc availability SKU`: ask a worker, which answers from the SKU's owner.

The worker asked is `--url`, else the SKU's owner as the group coordinator lists it
(runtime/members.py), else any worker that advertises an address. A 421 (the worker
does not forward) is followed once, to the owner it names.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from streamalloc.api.queries import availability_url
from streamalloc.config import Settings
from streamalloc.errors import BrokerError, StreamallocError
from streamalloc.kafka import admin_client
from streamalloc.kafka.partitioning import partition_for
from streamalloc.runtime.members import Members


class QueryFailed(StreamallocError):
    """The workers answered, but not with an availability (unknown SKU, no owner now)."""


@dataclass(frozen=True)
class QueryAnswer:
    status: int
    body: dict[str, Any]
    asked: str


def find_worker(settings: Settings, sku: str) -> str:
    """The URL of the SKU's owner if it advertises one, else of any worker that does."""
    members = Members(admin_client(settings), settings.app_id)
    view = members.view()
    partition = partition_for(sku.encode(), members.partitions(settings.topic("allocation-requests")))
    owner = view.owner(settings.topic("allocation-requests"), partition)
    if owner is not None and owner.url is not None:
        return owner.url
    for member in view.members:
        if member.url is not None:
            return member.url
    raise BrokerError(
        f"no worker of group {settings.app_id} advertises an HTTP address "
        "(start workers with --http-port, or give --url)"
    )


def ask(url: str, sku: str, channel: str | None, timeout_s: float = 10.0) -> QueryAnswer:
    """GET /availability/<sku> from `url`; HTTP errors are answers too."""
    target = availability_url(url, sku, channel)
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as response:  # noqa: S310 - our URL
            return QueryAnswer(int(response.status), json.load(response), url)
    except urllib.error.HTTPError as exc:
        try:
            body = json.load(exc)
        except ValueError:
            body = {"error": f"HTTP {exc.code} without a JSON body"}
        return QueryAnswer(exc.code, body if isinstance(body, dict) else {"error": str(body)}, url)
    except (OSError, ValueError) as exc:
        raise BrokerError(f"no answer from {url}: {exc}") from exc


def query_availability(settings: Settings, sku: str, channel: str | None, url: str | None) -> QueryAnswer:
    """The SKU's availability from its owner; raises QueryFailed with the worker's reason."""
    answer = ask(url or find_worker(settings, sku), sku, channel)
    if answer.status == 421 and isinstance(answer.body.get("owner"), str):
        answer = ask(answer.body["owner"], sku, channel)
    if answer.status != 200:
        reason = answer.body.get("error", "no reason given")
        raise QueryFailed(f"{answer.asked} answered {answer.status}: {reason}")
    return answer

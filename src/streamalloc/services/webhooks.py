"""Webhooks per channel: channel-sync's pushes POSTed to a channel's URL, one channel never
holding up another.

Each channel has its own queue and its own sender tasks (`concurrency` POSTs in flight per
channel, never two of one key at once). The queue keeps only the newest payload per key (a
slow endpoint gets the latest ATS, not a backlog of stale ones), in the order keys were
first queued, so a key's newest value is always its last POST. A POST carries the push as
JSON with an `Idempotency-Key` (the push's event id: a repeat after a restart has the same key) and
`X-Streamalloc-Signature: sha256=<hex HMAC of the body>` when a secret is set. A failure
(an error status or no answer) is retried with exponential backoff; after the last
attempt the payload goes to `dead-letter` through the `dead_letter` callback and the
sender moves on. The secret and the URL's path and query are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger(__name__)

#: (channel, feed key, body, why) of a payload given up on.
DeadLetter = Callable[[str, str, bytes, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Where and how to POST: a URL per channel, retries and backoff, the signing secret."""

    urls: Mapping[str, str] = field(default_factory=dict)
    secret: bytes | None = field(default=None, repr=False)
    attempts: int = 5
    backoff_ms: int = 200
    max_backoff_ms: int = 5_000
    timeout_ms: int = 5_000
    #: POSTs in flight per channel (different keys): one at a time left the queue behind the
    #: feed at a few hundred pushes a second (bench services)
    concurrency: int = 4


def signature(secret: bytes, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 of the exact body sent."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def backoff_ms(attempt: int, base_ms: int, max_ms: int) -> int:
    """Wait before retry `attempt` (1 for the first retry): doubling from base, capped."""
    return int(min(base_ms * (2 ** (attempt - 1)), max_ms))


def safe_url(url: str) -> str:
    """scheme://host[:port] only: paths and queries often carry tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def body_of(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class _Channel:
    url: str
    pending: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # key -> (event id, body)
    inflight: set[str] = field(default_factory=set)  # keys being POSTed: their next value waits
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def next(self) -> tuple[str, str, bytes] | None:
        """The oldest queued key not in flight, taken off the queue, or None."""
        for key in self.pending:
            if key not in self.inflight:
                event_id, body = self.pending.pop(key)
                self.inflight.add(key)
                return key, event_id, body
        return None


class WebhookSender:
    """One sender task per channel with a URL; `submit` never waits on the network."""

    def __init__(
        self, config: WebhookConfig, dead_letter: DeadLetter, *, on_result: Callable[[str, str], None]
    ) -> None:
        self.config = config
        self._dead_letter = dead_letter
        self._on_result = on_result  # (channel, "delivered" | "retried" | "failed")
        self._channels = {channel: _Channel(url) for channel, url in config.urls.items()}
        self._session: aiohttp.ClientSession | None = None

    def submit(self, channel: str, key: str, event_id: str, record: Mapping[str, Any]) -> None:
        """Queue the newest payload of `key` for `channel` (replacing one not yet sent)."""
        state = self._channels.get(channel)
        if state is None:
            return
        state.pending.pop(key, None)  # the newest goes to the back, after older keys
        state.pending[key] = (event_id, body_of(record))
        self._ensure_task(channel, state)
        state.wake.set()

    def backlog(self) -> int:
        return sum(len(state.pending) for state in self._channels.values())

    async def close(self) -> None:
        for state in self._channels.values():
            for task in state.tasks:
                task.cancel()
        if self._session is not None:
            await self._session.close()

    def _ensure_task(self, channel: str, state: _Channel) -> None:
        state.tasks = [task for task in state.tasks if not task.done()]
        loop = asyncio.get_running_loop()
        while len(state.tasks) < max(self.config.concurrency, 1):
            state.tasks.append(loop.create_task(self._run(channel, state)))

    async def _run(self, channel: str, state: _Channel) -> None:
        while True:
            item = state.next()
            if item is None:
                # no await between finding nothing and waiting: a submit cannot slip in between
                state.wake.clear()
                await state.wake.wait()
                continue
            key, event_id, body = item
            try:
                await self._deliver(channel, state.url, key, event_id, body)
            except Exception:  # a bug here must not stop the channel's sender for good
                log.exception("webhook sender of channel %s failed on %s", channel, key)
            finally:
                state.inflight.discard(key)
                if key in state.pending:
                    state.wake.set()  # its newer value waited for this POST

    async def _deliver(self, channel: str, url: str, key: str, event_id: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": event_id}
        if self.config.secret is not None:
            headers["X-Streamalloc-Signature"] = signature(self.config.secret, body)
        last = ""
        for attempt in range(1, self.config.attempts + 1):
            try:
                session = self._client()
                async with session.post(url, data=body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        self._on_result(channel, "delivered")
                        return
                    last = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            if attempt < self.config.attempts:
                self._on_result(channel, "retried")
                await asyncio.sleep(
                    backoff_ms(attempt, self.config.backoff_ms, self.config.max_backoff_ms) / 1000
                )
        self._on_result(channel, "failed")
        why = (
            f"webhook {safe_url(url)} of channel {channel} failed {self.config.attempts} times, last: {last}"
        )
        log.warning("%s; %s goes to dead-letter", why, key)
        await self._dead_letter(channel, key, body, why)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.config.timeout_ms / 1000)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

"""Webhook signing, backoff, URL redaction, and the per-channel senders (services/webhooks.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

from streamalloc.services.webhooks import (
    WebhookConfig,
    WebhookSender,
    backoff_ms,
    body_of,
    safe_url,
    signature,
)


def test_signature_is_the_hmac_sha256_of_the_exact_body() -> None:
    body = body_of({"ats": 3, "event_id": "a1:web:ats"})
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert signature(b"key", body) == f"sha256={expected}"
    assert signature(b"other", body) != signature(b"key", body)


def test_body_is_canonical_json_so_a_receiver_can_verify_it() -> None:
    assert body_of({"b": 1, "a": None}) == b'{"a":null,"b":1}'


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    assert [backoff_ms(n, 200, 1_000) for n in range(1, 6)] == [200, 400, 800, 1_000, 1_000]


def test_logged_urls_keep_only_scheme_and_host() -> None:
    assert safe_url("https://user:pw@shop.example:8443/hooks/ats?token=abc") == "https://shop.example:8443"


class _Recording(WebhookSender):
    """Delivers by sleeping instead of POSTing; records what was in flight."""

    def __init__(self, concurrency: int) -> None:
        super().__init__(
            WebhookConfig(urls={"web": "http://hook.invalid"}, concurrency=concurrency),
            self._dead,
            on_result=lambda _c, _r: None,
        )
        self.inflight: list[str] = []
        self.most = 0
        self.delivered: list[tuple[str, str]] = []  # (key, event id) in delivery order

    async def _dead(self, _c: str, _k: str, _b: bytes, _w: str) -> None:
        raise AssertionError("nothing fails here")

    async def _deliver(self, channel: str, url: str, key: str, event_id: str, body: bytes) -> None:
        assert key not in self.inflight, f"{key} POSTed twice at once"
        self.inflight.append(key)
        self.most = max(self.most, len(self.inflight))
        await asyncio.sleep(0.01)
        self.inflight.remove(key)
        self.delivered.append((key, event_id))


def test_several_posts_per_channel_are_in_flight_never_two_of_one_key_and_the_newest_goes_last() -> None:
    async def scenario() -> _Recording:
        sender = _Recording(concurrency=3)
        for n in range(6):
            sender.submit("web", f"web:SKU-{n}", f"e{n}", {"ats": n})
        await asyncio.sleep(0.001)  # SKU-0..2 are in flight now
        sender.submit("web", "web:SKU-0", "e0-newer", {"ats": 10})
        sender.submit("web", "web:SKU-0", "e0-newest", {"ats": 11})
        while sender.backlog() or sender.inflight:
            await asyncio.sleep(0.005)
        await sender.close()
        return sender

    sender = asyncio.run(scenario())
    assert sender.most == 3
    assert sorted(key for key, _ in sender.delivered) == sorted(
        [*(f"web:SKU-{n}" for n in range(6)), "web:SKU-0"]
    )
    assert [e for key, e in sender.delivered if key == "web:SKU-0"] == ["e0", "e0-newest"]

"""Webhook signing, backoff and URL redaction (pure parts of services/webhooks.py)."""

from __future__ import annotations

import hashlib
import hmac

from streamalloc.services.webhooks import backoff_ms, body_of, safe_url, signature


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

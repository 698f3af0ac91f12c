"""Pure parts of the runtime: the changelog src guard, the in-memory harness, the HTTP edge."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from streamalloc.api import HttpApi
from streamalloc.bench.counting import CountingStage
from streamalloc.metrics import PrometheusObserver
from streamalloc.runtime.changelog import encode_src, src_committed
from streamalloc.testing import StageHarness


def test_src_guard_admits_committed_batches_and_refuses_leaked_ones() -> None:
    header = encode_src({("in", 0): 120, ("inv", 0): 7})
    assert src_committed(header, {"in:0": 120, "inv:0": 7})  # exactly the committed positions
    assert src_committed(header, {"in:0": 500, "inv:0": 9})  # committed later on
    assert not src_committed(header, {"in:0": 100, "inv:0": 7})  # reached past the commit: leaked
    assert not src_committed(header, {"in:0": 120, "inv:0": 6})
    assert src_committed(header, {})  # unknown positions do not refuse


def test_harness_drives_the_counting_stage_with_exact_outputs_and_state() -> None:
    harness = StageHarness(CountingStage("in", "out"))
    outputs = harness.feed("in", [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    assert [(o.key, o.value) for o in outputs] == [(b"a", b"1"), (b"b", b"1"), (b"a", b"2")]
    assert harness.store("counts").get(b"a") == b"2"


def test_harness_abort_leaves_state_and_outputs_untouched() -> None:
    harness = StageHarness(CountingStage("in", "out"))
    harness.feed("in", [(b"a", b"1")])
    harness.feed("in", [(b"a", b"1"), (b"a", b"1")], commit=False)
    assert harness.store("counts").get(b"a") == b"1"
    assert len(harness.outputs) == 1


def test_harness_dead_letters_bad_records_and_keeps_going() -> None:
    harness = StageHarness(CountingStage("in", "out"))
    harness.feed("in", [(b"a", b"x1"), (None, b"1"), (b"a", b"5")])
    assert [d.offset for d in harness.dead_letters] == [0, 1]
    assert "digits" in harness.dead_letters[0].error
    assert harness.store("counts").get(b"a") == b"1"


def test_http_api_serves_health_readiness_metrics_and_availability() -> None:
    observer = PrometheusObserver()
    observer.on_commit(10, 3, 0.01)
    ready = {"value": False}

    def availability(sku: str) -> tuple[int, dict[str, object]]:
        return (200, {"sku": sku, "available": 4}) if sku == "SKU-1" else (404, {"error": "unknown sku"})

    api = HttpApi(
        "127.0.0.1", 0, registry=observer.registry, ready=lambda: ready["value"], availability=availability
    )
    api.start()
    base = f"http://127.0.0.1:{api.port}"
    try:
        assert json.load(urllib.request.urlopen(f"{base}/health")) == {"status": "ok"}  # noqa: S310
        try:
            urllib.request.urlopen(f"{base}/ready")  # noqa: S310
            raise AssertionError("not ready yet, expected 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        ready["value"] = True
        assert json.load(urllib.request.urlopen(f"{base}/ready")) == {"ready": True}  # noqa: S310
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()  # noqa: S310
        assert "streamalloc_committed_records_total 10.0" in metrics
        assert json.load(urllib.request.urlopen(f"{base}/availability/SKU-1"))["available"] == 4  # noqa: S310
        try:
            urllib.request.urlopen(f"{base}/availability/NOPE")  # noqa: S310
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        api.stop()

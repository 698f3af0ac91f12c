"""Serdes: every schema round-trips, bad bytes and bad JSON give a typed error with its origin."""

from __future__ import annotations

import json
import marshal
from pathlib import Path
from typing import Any

import pytest

from streamalloc.config import Settings
from streamalloc.errors import DeserializationError, ValidationError
from streamalloc.serialization import CONTRACT, SCHEMA_NAMES, LocalSchemaIds, Serde, raw_schema, topic_serde
from streamalloc.serialization.schemas import retired_schemas
from streamalloc.serialization.serde import COMPACT_MAGIC

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SETTINGS = Settings()

SAMPLES: dict[str, dict[str, Any]] = {
    "order": json.loads((EXAMPLES / "orders.jsonl").read_text().splitlines()[0]),
    "inventory": json.loads((EXAMPLES / "inventory.jsonl").read_text().splitlines()[0]),
    "location": json.loads((EXAMPLES / "locations.jsonl").read_text().splitlines()[0]),
    "channel": json.loads((EXAMPLES / "channels.jsonl").read_text().splitlines()[1]),
    "kit": json.loads((EXAMPLES / "kits.jsonl").read_text().splitlines()[0]),
    "allocation": {
        "event_id": "e1:1:allocated", "cause_event_id": "e1", "type": "allocated", "order_id": "web-1",
        "line_id": "1", "sku": "TEE", "channel": "web", "qty": 2, "location": "WH", "lot": None,
        "reason": None, "line_count": None, "occurred_at": 1, "decided_at": 2,
    },
    "allocation_request": {
        "event_id": "e1:1", "cause_event_id": "e1", "command": "allocate", "order_id": "web-1",
        "line_id": "1", "sku": "TEE", "qty": 2, "channel": "web", "occurred_at": 1,
    },
    "availability": {
        "event_id": "a1", "cause_event_id": "e1", "sku": "TEE", "as_of": 5,
        "totals": {"on_hand": 5, "allocated": 1, "picked": 0, "quality_control": 0, "damaged": 0,
                   "safety_stock": 0, "available": 4},
        "locations": [{"location": "WH", "on_hand": 5, "allocated": 1, "picked": 0, "quality_control": 0,
                       "damaged": 0, "safety_stock": 0, "available": 4, "status": "online"}],
        "channels": [{"channel": "web", "ats": 4}],
    },
    "order_status": {
        "event_id": "s1", "order_id": "web-1", "status": "allocated", "occurred_at": 3,
        "lines": [{"line_id": "1", "sku": "TEE", "qty": 2, "allocated": 2, "status": "allocated",
                   "reason": None}],
    },
    "stock_change": {
        "event_id": "c1:stock:WH", "cause_event_id": "c1", "sku": "TEE", "location": "WH",
        "reason": "counted", "on_hand_delta": -2, "on_hand": 3, "occurred_at": 1, "decided_at": 2,
    },
    "dead_letter": {
        "event_id": "d1", "source_topic": "streamalloc.orders", "partition": 0, "offset": 9,
        "key": b"k", "value": b"\xff", "error": "bad", "failed_at": 4,
    },
    "channel_ats": {
        "event_id": "a1:web:ats", "feed_key": "web:TEE", "channel": "web", "sku": "TEE", "ats": 0,
        "previous_ats": 3, "status": "out_of_stock", "stock_event": "out_of_stock", "as_of": 5,
        "cause_event_id": "e1", "availability_event_id": "a1", "changes": 2, "pushed_at": 6,
    },
    "fulfilment_request": {
        "event_id": "e1:web-1:WH:r1", "cause_event_id": "e1", "request_id": "web-1:WH", "order_id": "web-1",
        "location": "WH", "channel": "web", "status": "open", "revision": 1,
        "lines": [{"line_id": "1", "sku": "TEE", "lot": None, "qty": 2, "picked": 0}], "units": 2,
        "updated_at": 2,
    },
    "fulfilment_ack": {
        "event_id": "ack1", "order_id": "web-1", "location": "WH", "revision": 1, "acked_at": 3,
    },
    "transfer_recommendation": {
        "recommendation_id": "rec:e1:TEE:WH:STORE", "sku": "TEE", "from_location": "WH",
        "to_location": "STORE", "qty": 12, "projected_stockout_at": 9, "lead_time_s": 172800,
        "safety_stock": 4, "demand_rate": 0.0004, "decided_at": 5,
    },
}  # fmt: skip


@pytest.fixture(params=SCHEMA_NAMES)
def serde(request: pytest.FixtureRequest) -> Serde:
    return Serde(request.param, LocalSchemaIds(), "t")


def test_every_schema_round_trips_avro_with_the_wire_header(serde: Serde) -> None:
    record = serde.validate(SAMPLES[serde.name])
    data = serde.encode(record)
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == LocalSchemaIds().id_for(serde.name, "t")
    assert serde.decode(data) == record


def test_every_schema_accepts_json_of_the_same_shape(serde: Serde) -> None:
    sample = {k: (v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in SAMPLES[serde.name].items()}
    decoded = serde.decode(json.dumps(sample).encode())
    assert decoded == serde.validate(SAMPLES[serde.name]) or serde.name == "dead_letter"


def test_json_defaults_are_filled() -> None:
    serde = Serde("order", LocalSchemaIds(), "t")
    order = serde.decode(
        b'{"event_id":"e","type":"placed","order_id":"o","channel":"web","occurred_at":1,'
        b'"lines":[{"line_id":"1","sku":"S","qty":1}]}'
    )
    assert order["priority"] == 0
    assert order["ship_complete"] is False
    assert order["region"] is None
    assert order["lines"][0]["location"] is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x07abc", "neither Avro"),
        (b"\x00\x00", "shorter than"),
        (b"\x00\x00\x00\x00\x2a\x02", "unknown schema id 42"),
        (b"\x00\x00\x00\x03\xe9\x02\x04", "corrupt or truncated"),
        (b"{not json", "invalid JSON"),
        (b'{"event_id":"e","type":"placed"}', "order_id: is required"),
        (
            b'{"event_id":"e","type":"placed","order_id":"","channel":"c","occurred_at":1}',
            "order_id: must not be empty",
        ),
        (
            b'{"event_id":"e","type":"sold","order_id":"o","channel":"c","occurred_at":1}',
            "type: must be one of",
        ),
        (
            b'{"event_id":"e","type":"placed","order_id":"o","channel":"c","occurred_at":"yesterday"}',
            "occurred_at",
        ),
        (
            b'{"event_id":"e","type":"placed","order_id":"o","channel":"c","occurred_at":1,'
            b'"lines":[{"line_id":"1","sku":"S","qty":"two"}]}',
            "lines[0].qty",
        ),
    ],
)
def test_malformed_input_raises_deserialization_error_with_origin(data: bytes, reason: str) -> None:
    serde = Serde("order", LocalSchemaIds(), "t")
    with pytest.raises(DeserializationError) as caught:
        serde.decode(data, topic="streamalloc.orders", partition=3, offset=77)
    error = caught.value
    assert reason in error.reason
    assert (error.topic, error.partition, error.offset, error.value) == ("streamalloc.orders", 3, 77, data)


def test_trailing_bytes_after_avro_body_are_refused() -> None:
    serde = Serde("location", LocalSchemaIds(), "t")
    data = serde.encode(serde.validate(SAMPLES["location"]))
    with pytest.raises(DeserializationError, match="unexpected byte"):
        serde.decode(data + b"\x00")


def test_validate_names_the_field() -> None:
    serde = Serde("inventory", LocalSchemaIds(), "t")
    with pytest.raises(ValidationError, match="qty"):
        serde.validate({**SAMPLES["inventory"], "qty": 2**40})


def test_an_empty_identifier_is_refused_like_a_missing_one_on_any_topic() -> None:
    serde = Serde("inventory", LocalSchemaIds(), "t")
    with pytest.raises(ValidationError, match="sku: must not be empty"):
        serde.validate({**SAMPLES["inventory"], "sku": ""})
    with pytest.raises(ValidationError, match="sku: is required"):
        serde.validate({k: v for k, v in SAMPLES["inventory"].items() if k != "sku"})


@pytest.mark.parametrize("name", ["locations", "channels", "inventory", "orders"])
def test_every_example_line_validates_and_is_keyed(name: str) -> None:
    serde = topic_serde(SETTINGS, SETTINGS.topic(name))
    lines = (EXAMPLES / f"{name}.jsonl").read_text().splitlines()
    assert lines
    for line in lines:
        record = serde.validate(json.loads(line))
        assert serde.key_of(record)
        assert serde.decode(serde.encode(record)) == record


def test_contract_maps_channel_order_topics_and_refuses_others() -> None:
    assert topic_serde(SETTINGS, "streamalloc.orders.web").name == "order"
    assert set(CONTRACT) >= {"orders", "inventory", "allocations", "dead-letter"}
    with pytest.raises(Exception, match="not a contract topic"):
        topic_serde(SETTINGS, "streamalloc.nope")


def test_an_internal_topic_is_written_compact_and_read_back_and_avro_written_earlier_still_reads() -> None:
    serde = topic_serde(SETTINGS, SETTINGS.topic("allocation-requests"))
    record = serde.validate(
        {"event_id": "o-1:1", "cause_event_id": "o-1", "command": "allocate", "order_id": "o-1",
         "line_id": "1", "sku": "SKU-1", "qty": 2, "channel": "web", "occurred_at": 1_764_000_000_000}
    )  # fmt: skip
    avro = Serde("allocation_request", LocalSchemaIds(), serde.topic)  # as an earlier release wrote it

    written = serde.encode(record)

    assert written[0] == COMPACT_MAGIC and serde.compact
    assert serde.decode(written) == record
    assert serde.decode(avro.encode(record)) == record
    assert not topic_serde(SETTINGS, SETTINGS.topic("allocations")).compact  # public topics stay Avro


def test_a_compact_record_of_an_earlier_layout_reads_into_the_current_one_a_broken_one_not() -> None:
    name, earlier_id = "channel", 1004
    _, layout = retired_schemas()[earlier_id]
    fields = [f["name"] for f in layout["fields"]]
    values = tuple({"channel_id": "web"}.get(f) for f in fields)
    serde = Serde(name, LocalSchemaIds(), "t", compact=True)
    frame = bytes([COMPACT_MAGIC]) + earlier_id.to_bytes(4, "big")

    decoded = serde.decode(frame + marshal.dumps(values))

    assert decoded["channel_id"] == "web"
    assert set(decoded) == {f["name"] for f in raw_schema(name)["fields"]}
    with pytest.raises(DeserializationError, match="corrupt compact record"):
        serde.decode(frame + marshal.dumps(values[:-1]))
    with pytest.raises(DeserializationError, match="unknown compact layout id 999"):
        serde.decode(bytes([COMPACT_MAGIC]) + (999).to_bytes(4, "big") + marshal.dumps(values))


def test_a_replenishment_recommendation_is_a_record_of_its_topic() -> None:
    from streamalloc.domain.replenishment import Recommendation

    rec = Recommendation("rec:e1:TEE:WH:STORE", "TEE", "WH", "STORE", 12, 9, 172_800, 4, 0.0004, 5)
    serde = topic_serde(Settings(), "streamalloc.transfer-recommendations")
    assert serde.decode(serde.encode(serde.validate(rec.as_record()))) == rec.as_record()
    assert serde.key_of(rec.as_record()) == b"TEE"

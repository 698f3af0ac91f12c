"""`streamalloc replay` on files, through the real CLI (click's runner): no broker needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from streamalloc.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T0 = 1_764_000_000_000

# The scenario of test_replay.py: widening web's allow-list and letting it split moves two
# orders (web-2 gets its line 2 across two locations, so web-3 finds no stock left).
INVENTORY = [
    {"event_id": "i1", "type": "received", "sku": "A", "location": "WH", "qty": 2, "occurred_at": T0 + 1},
    {"event_id": "i2", "type": "received", "sku": "A", "location": "STORE", "qty": 2, "occurred_at": T0 + 2},
    {"event_id": "i3", "type": "received", "sku": "B", "location": "WH", "qty": 5, "occurred_at": T0 + 3},
]
ORDERS = [
    {"event_id": "o1", "type": "placed", "order_id": "web-1", "channel": "web", "occurred_at": T0 + 10,
     "lines": [{"line_id": "1", "sku": "A", "qty": 1}]},
    {"event_id": "o2", "type": "placed", "order_id": "web-2", "channel": "web", "occurred_at": T0 + 20,
     "ship_complete": True,
     "lines": [{"line_id": "1", "sku": "B", "qty": 1}, {"line_id": "2", "sku": "A", "qty": 3}]},
    {"event_id": "o3", "type": "placed", "order_id": "web-3", "channel": "web", "occurred_at": T0 + 30,
     "lines": [{"line_id": "1", "sku": "A", "qty": 1}]},
    {"event_id": "o4", "type": "cancelled", "order_id": "web-1", "channel": "web", "occurred_at": T0 + 40},
    {"event_id": "o5", "type": "placed", "order_id": "web-5", "channel": "web", "occurred_at": T0 + 50,
     "lines": [{"line_id": "1", "sku": "A", "qty": 1}]},
    {"event_id": "o6", "type": "placed", "order_id": "store-1", "channel": "store", "occurred_at": T0 + 60,
     "lines": [{"line_id": "1", "sku": "B", "qty": 2}]},
]  # fmt: skip
LOCATIONS = [{"location_id": "WH", "priority": 10}, {"location_id": "STORE", "priority": 5}]
CHANNELS = [{"channel_id": "web", "locations": ["WH"]}, {"channel_id": "store"}]
POLICY = [{"channel_id": "web", "locations": None, "allow_split": True}]


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "orders": write(tmp_path / "orders.jsonl", ORDERS),
        "inventory": write(tmp_path / "inventory.jsonl", INVENTORY),
        "locations": write(tmp_path / "locations.jsonl", LOCATIONS),
        "channels": write(tmp_path / "channels.jsonl", CHANNELS),
        "policy": write(tmp_path / "policy.jsonl", POLICY),
    }


def replay(*args: str | Path) -> Result:
    # no cluster configured, whatever the environment of the test run says
    env = {"STREAMALLOC_BOOTSTRAP": None}
    return CliRunner().invoke(main, ["replay", *(str(a) for a in args)], env=env, catch_exceptions=False)


def file_args(files: dict[str, Path]) -> list[str | Path]:
    return [
        "--orders", files["orders"], "--inventory", files["inventory"],
        "--baseline", files["locations"], "--baseline", files["channels"],
        "--policy", files["policy"],
    ]  # fmt: skip


def test_json_gives_each_channels_figures_and_the_difference(files: dict[str, Path]) -> None:
    result = replay(*file_args(files), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)

    assert data["inputs"]["order_events"] == 6 and data["inputs"]["inventory_events"] == 3
    assert data["inputs"]["locations"] == 2 and data["inputs"]["channels"] == 2
    assert data["policy_changes"] == ['channel web: allow_split false -> true, locations ["WH"] -> null']
    web = data["channels"]["web"]
    assert web["baseline"]["lines"] == {"allocated": 4, "backordered": 0, "rejected": 1, "released": 2}
    assert web["what_if"]["lines"] == {"allocated": 4, "backordered": 0, "rejected": 1, "released": 1}
    assert web["difference"]["lines"] == {"allocated": 0, "backordered": 0, "rejected": 0, "released": -1}
    assert web["baseline"]["reasons"]["rejected"] == {"insufficient_stock": 1}
    assert web["difference"]["reasons"]["released"] == {"cancelled": 0, "ship_complete_failed": -1}
    assert (web["baseline"]["split"], web["what_if"]["split"], web["difference"]["split"]) == (0, 1, 1)
    assert web["baseline"]["units"]["allocated"] == 4 and web["what_if"]["units"]["allocated"] == 6
    assert web["orders_changed"] == 2
    store = data["channels"]["store"]
    assert store["baseline"] == store["what_if"] and store["orders_changed"] == 0
    assert data["total"]["difference"]["units"]["allocated"] == 2
    assert [e["order_id"] for e in data["examples"]] == ["web-2", "web-3"]
    assert data["examples"][0]["lines"][1] == {
        "line_id": "2",
        "baseline": "rejected (insufficient_stock)",
        "what_if": "allocated STORE:2+WH:1",
    }


def test_the_table_shows_baseline_what_if_and_change_per_channel(files: dict[str, Path]) -> None:
    result = replay(*file_args(files), "--examples", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()

    def row(label: str, after: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.split()[:1] == [after])
        return next(line.split() for line in lines[start:] if label in line.split())

    # columns: allocated, rejected, backordered, released, split, partial, units allocated
    assert row("baseline", "web")[-7:] == ["4", "1", "0", "2", "0", "0", "4"]
    assert row("what-if", "web")[-7:] == ["4", "1", "0", "1", "1", "0", "6"]
    assert row("change", "web")[-7:] == ["0", "0", "0", "-1", "+1", "0", "+2"]
    assert row("change", "store")[-7:] == ["0"] * 7
    # service level: placed, baseline, what-if, change (web: one of five lines refused in both)
    service = lines[next(i for i, line in enumerate(lines) if line.startswith("service level")) :]
    assert next(line.split() for line in service if line.split()[:1] == ["web"]) == [
        "web", "5", "80.0%", "80.0%", "+0.0pp"
    ]  # fmt: skip
    assert next(line.split() for line in service if line.split()[:1] == ["store"])[1:3] == ["1", "100.0%"]
    text = result.stdout
    assert 'channel web: allow_split false -> true, locations ["WH"] -> null' in text
    assert "ship_complete_failed" in text
    assert "2 order(s) changed outcome; the first 1" in text
    assert "web-2" in text and "web-3" not in text.split("changed outcome")[1]


def test_the_example_data_replays(tmp_path: Path) -> None:
    policy = write(tmp_path / "policy.jsonl", [{"channel_id": "store", "pool_share": None}])
    result = replay(
        "--orders", EXAMPLES / "orders.jsonl", "--inventory", EXAMPLES / "inventory.jsonl",
        "--baseline", EXAMPLES / "locations.jsonl", "--baseline", EXAMPLES / "channels.jsonl",
        "--policy", policy, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["inputs"]["order_events"] == len((EXAMPLES / "orders.jsonl").read_text().splitlines())
    assert set(data["channels"]) >= {"web", "store", "marketplace"}


def test_a_bad_policy_line_is_refused_with_file_and_line(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad-policy.jsonl"
    bad.write_text(
        json.dumps({"channel_id": "web", "allow_split": True})
        + "\n\n"
        + json.dumps({"channel_id": "store", "pool_share": "half"})
        + "\n"
    )
    args = [*file_args(files)[:-1], bad]
    result = replay(*args)
    assert result.exit_code == 1
    message = result.stderr.replace("\n", "")  # rich folds a long path
    assert f"{bad}:3" in message and "pool_share" in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"priority": 3}', "one of location_id (a location), channel_id (a channel) or kit_sku"),
    ],
)
def test_policy_lines_that_are_not_records_are_refused(
    files: dict[str, Path], tmp_path: Path, line: str, expected: str
) -> None:
    bad = write(tmp_path / "p.jsonl", POLICY)
    bad.write_text(bad.read_text() + line + "\n")
    result = replay(*file_args(files)[:-1], bad)
    assert result.exit_code == 1
    message = result.stderr.replace("\n", "")
    assert f"{bad}:2" in message and expected in " ".join(result.stderr.split())


KITS = [{"kit_sku": "DUO", "components": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1}]}]
KIT_ORDERS = [
    {"event_id": "k1", "type": "placed", "order_id": "kit-1", "channel": "web", "occurred_at": T0 + 10,
     "lines": [{"line_id": "1", "sku": "DUO", "qty": 2}]},
    {"event_id": "k2", "type": "placed", "order_id": "kit-2", "channel": "web", "occurred_at": T0 + 20,
     "lines": [{"line_id": "1", "sku": "DUO", "qty": 2}]},
]  # fmt: skip


def kit_args(files: dict[str, Path], tmp_path: Path, *, kits: bool) -> list[str | Path]:
    return [
        "--orders", write(tmp_path / "kit-orders.jsonl", KIT_ORDERS), "--inventory", files["inventory"],
        "--baseline", files["locations"], "--baseline", files["channels"],
        *(["--baseline", write(tmp_path / "kits.jsonl", KITS)] if kits else []),
        "--policy", files["policy"], "--json",
    ]  # fmt: skip


def test_kit_lines_are_expanded_with_the_kit_records_of_the_baseline(
    files: dict[str, Path], tmp_path: Path
) -> None:
    result = replay(*kit_args(files, tmp_path, kits=True))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["inputs"]["kits"] == 1
    web = data["channels"]["web"]
    # baseline: web may use WH only, which has 2 of A: kit-2's A line is refused there, so its
    # B line gives its 2 units back (the kit is all or nothing); the what-if takes STORE's A
    assert web["baseline"]["lines"] == {"allocated": 3, "backordered": 0, "rejected": 1, "released": 1}
    assert web["baseline"]["reasons"]["released"] == {"ship_complete_failed": 1}
    assert web["baseline"]["orders"] == {"allocated": 1, "rejected": 1}
    assert web["what_if"]["lines"]["allocated"] == 4 and web["what_if"]["orders"] == {
        "allocated": 2,
        "rejected": 0,
    }
    [changed] = data["examples"]
    assert changed["order_id"] == "kit-2" and (changed["baseline"], changed["what_if"]) == (
        "rejected",
        "allocated",
    )
    assert {(x["line_id"], x["baseline"], x["what_if"]) for x in changed["lines"]} == {
        ("1/A", "rejected (channel_not_allowed)", "allocated STORE:2"),
        ("1/B", "released (ship_complete_failed)", "allocated WH:2"),
    }

    # without the kit records, the kit SKU is a plain SKU that nobody stocks
    result = replay(*kit_args(files, tmp_path, kits=False))
    assert result.exit_code == 0, result.output
    plain = json.loads(result.stdout)
    assert plain["inputs"]["kits"] == 0
    assert plain["channels"]["web"]["baseline"]["reasons"]["rejected"] == {"unknown_sku": 2}


def test_the_report_counts_the_baseline_kits(files: dict[str, Path], tmp_path: Path) -> None:
    result = replay(*kit_args(files, tmp_path, kits=True)[:-1])
    assert result.exit_code == 0, result.output
    assert "2 locations, 2 channels, 1 kit:" in " ".join(result.stdout.split())


def test_a_kit_record_in_a_policy_file_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    policy = write(tmp_path / "policy-kits.jsonl", [*POLICY, *KITS])
    result = replay(*file_args(files)[:-1], policy)
    assert result.exit_code == 1
    assert f"{policy}:2" in result.stderr.replace("\n", "")
    assert "a kit record belongs in the baseline" in " ".join(result.stderr.split())


def test_an_order_intake_would_refuse_is_refused_with_file_and_line(files: dict[str, Path]) -> None:
    orders = files["orders"]
    placed_without_lines = {**ORDERS[0], "event_id": "o9", "lines": []}
    orders.write_text(orders.read_text() + json.dumps(placed_without_lines) + "\n")
    result = replay(*file_args(files))
    assert result.exit_code == 1
    assert f"{orders}:7" in result.stderr.replace("\n", "")
    assert "needs at least one line" in " ".join(result.stderr.split())


def test_reading_topics_without_a_cluster_says_what_to_pass(files: dict[str, Path]) -> None:
    result = replay("--policy", files["policy"])
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "--bootstrap" in message and "--orders, --inventory and --baseline" in message


def test_a_policy_that_protects_web_shows_service_per_channel_with_and_without_it(tmp_path: Path) -> None:
    # 4 units of A; three store lines, then a web line of 2. Protecting 2 units for web turns
    # the third store line away (protected_for_priority) so web is served.
    placed = [("store-1", "store", 1), ("store-2", "store", 1), ("store-3", "store", 1), ("web-1", "web", 2)]
    orders = [
        {"event_id": f"e{n}", "type": "placed", "order_id": order_id, "channel": channel,
         "occurred_at": T0 + 10 * (n + 1), "lines": [{"line_id": "1", "sku": "A", "qty": qty}]}
        for n, (order_id, channel, qty) in enumerate(placed)
    ]  # fmt: skip
    receipt = {
        "event_id": "i1",
        "type": "received",
        "sku": "A",
        "location": "WH",
        "qty": 4,
        "occurred_at": T0,
    }
    web = {"channel_id": "web", "priority": 10}
    args = [
        "--orders", write(tmp_path / "orders.jsonl", orders),
        "--inventory", write(tmp_path / "inventory.jsonl", [receipt]),
        "--baseline", write(tmp_path / "locations.jsonl", [{"location_id": "WH"}]),
        "--baseline", write(
            tmp_path / "channels.jsonl",
            [web, {"channel_id": "store", "priority": 1}],
        ),
        "--policy", write(tmp_path / "policy.jsonl", [{**web, "protected_units": 2}]),
    ]  # fmt: skip
    data = json.loads(replay(*args, "--json").stdout)
    assert data["policy_changes"] == ["channel web: protected_units 0 -> 2"]
    assert data["channels"]["store"]["service_level"] == {"baseline": 1.0, "what_if": 2 / 3}
    assert data["channels"]["web"]["service_level"] == {"baseline": 0.0, "what_if": 1.0}
    assert data["channels"]["store"]["what_if"]["reasons"]["rejected"] == {"protected_for_priority": 1}
    text = replay(*args).stdout.splitlines()
    service = text[next(i for i, line in enumerate(text) if line.startswith("service level")) :]
    rows: dict[str, list[str]] = {}
    for line in service:  # the first row of each channel (the tables after it name them too)
        if line.split()[:1] in (["web"], ["store"]):
            rows.setdefault(line.split()[0], line.split()[1:])
    assert rows == {"store": ["3", "100.0%", "66.7%", "-33.3pp"], "web": ["1", "0.0%", "100.0%", "+100.0pp"]}


def replenish_report(tmp_path: Path, env: dict[str, str | None]) -> dict[str, Any]:
    """A day of one order an hour at STORE (2 units there, 100 at WH), replayed with --replenish."""
    inventory = [
        {"event_id": "r1", "type": "received", "sku": "A", "location": "WH", "qty": 100, "occurred_at": T0},
        {
            "event_id": "r2",
            "type": "received",
            "sku": "A",
            "location": "STORE",
            "qty": 2,
            "occurred_at": T0 + 1,
        },
    ]
    orders = [
        {"event_id": f"o{h}", "type": "placed", "order_id": f"s-{h}", "channel": "store",
         "occurred_at": T0 + 10 + h * 3_600_000, "lines": [{"line_id": "1", "sku": "A", "qty": 1}]}
        for h in range(24)
    ]  # fmt: skip
    args = [
        "--orders", write(tmp_path / "o.jsonl", orders),
        "--inventory", write(tmp_path / "i.jsonl", inventory),
        "--baseline", write(tmp_path / "l.jsonl", LOCATIONS),
        "--baseline", write(tmp_path / "c.jsonl", [{"channel_id": "store", "locations": ["STORE"]}]),
        "--replenish",
    ]  # fmt: skip
    env = {"STREAMALLOC_BOOTSTRAP": None, "STREAMALLOC_REPLENISH_LEAD_TIME_S": "1800", **env}  # half an hour
    result = CliRunner().invoke(main, ["replay", *map(str, args), "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.output)
    return report


def test_replenish_shows_the_stockout_rate_without_and_with_the_recommended_transfers(tmp_path: Path) -> None:
    report = replenish_report(tmp_path, {})
    assert report["total"]["stockout_rate"]["baseline"] > 0.9
    assert report["total"]["stockout_rate"]["what_if"] < 0.1
    assert report["replenishment"]["transfers"] > 0


def test_a_locations_own_lead_time_decides_when_its_transfers_arrive(tmp_path: Path) -> None:
    # Two days to reach STORE: what is recommended arrives after the day replayed, so the
    # stockouts stay, although WH (half an hour, the default here) has the stock.
    report = replenish_report(tmp_path, {"STREAMALLOC_REPLENISH_LEAD_TIMES": "STORE=172800"})
    assert report["total"]["stockout_rate"]["baseline"] > 0.9
    assert report["total"]["stockout_rate"]["what_if"] > 0.9
    assert report["replenishment"]["transfers"] > 0


def test_replay_needs_a_policy_or_replenish(files: dict[str, Path]) -> None:
    result = replay(
        "--orders", files["orders"], "--inventory", files["inventory"], "--baseline", files["locations"]
    )
    assert result.exit_code != 0
    assert "--replenish" in result.output

"""The Grafana dashboards and provisioning in deploy/ match what the workers really export.

Pure: reads files under deploy/ and a PrometheusObserver's own registry; no network, no broker.
PyYAML is not a dependency, so the provisioning files are read by a small parser that only
accepts the YAML subset they use (block mappings, lists of mappings, plain scalars).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from streamalloc.metrics import PrometheusObserver
from streamalloc.runtime.observer import StockSnapshot

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES_YAML = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS_YAML = GRAFANA / "provisioning" / "dashboards" / "streamalloc.yml"

#: The worker's own series, and the process and Python ones prometheus_client adds to its registry.
METRIC = re.compile(r"\b(?:streamalloc|process|python)_[a-z0-9_]+\b")
SELECTOR = re.compile(r"\b((?:streamalloc|process|python)_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
# Added by Prometheus at scrape time (deploy/prometheus/prometheus.yml), not by the observer.
TARGET_LABELS = {"job", "instance"}


# --- a parser for the YAML subset of the provisioning files ---------------------------------


def _scalar(text: str) -> Any:
    text = text.strip()
    if text[:1] in "\"'" and text[-1:] == text[:1] and len(text) >= 2:
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _lines(text: str) -> list[tuple[int, str]]:
    """(indent, content) of the meaningful lines; "- key: v" becomes "-" then "key: v" two columns in."""
    out = []
    for raw in text.splitlines():
        assert "\t" not in raw, f"tab in YAML line {raw!r}"
        content = raw.split(" #", 1)[0].rstrip()
        if not content.strip() or content.lstrip().startswith("#"):
            continue
        indent = len(content) - len(content.lstrip(" "))
        content = content.strip()
        if content.startswith("- "):
            out.append((indent, "-"))
            indent, content = indent + 2, content[2:].strip()
        out.append((indent, content))
    return out


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    """The list or mapping whose lines start at line i, indented by `indent`; and the next line."""
    if lines[i][1] == "-":
        items: list[Any] = []
        while i < len(lines) and lines[i] == (indent, "-"):
            item, i = _block(lines, i + 1, indent + 2)
            items.append(item)
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent and lines[i][1] != "-":
        key, sep, value = lines[i][1].partition(":")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"not a mapping line: {lines[i][1]!r}"
        assert key not in mapping, f"duplicate key {key!r}"
        if value.strip():
            mapping[key] = _scalar(value)
            i += 1
        else:
            assert i + 1 < len(lines) and lines[i + 1][0] > indent, f"empty value for {key!r}"
            mapping[key], i = _block(lines, i + 1, lines[i + 1][0])
    assert i == len(lines) or lines[i][0] < indent, f"bad indentation at {lines[i][1]!r}"
    return mapping, i


def load_yaml(path: Path) -> dict[str, Any]:
    lines = _lines(path.read_text())
    assert lines and lines[0][0] == 0, f"{path} is empty or starts indented"
    document, end = _block(lines, 0, 0)
    assert end == len(lines), f"{path}: unparsed line {lines[end][1]!r}"
    assert isinstance(document, dict)
    return document


def test_yaml_subset_parser_reads_nested_mappings_and_lists() -> None:
    text = "a: 1\nitems:\n  - name: x  # note\n    flag: true\n    sub:\n      path: /p\n  - name: 'y'\n"
    assert _block(_lines(text), 0, 0)[0] == {
        "a": 1,
        "items": [{"name": "x", "flag": True, "sub": {"path": "/p"}}, {"name": "y"}],
    }


# --- provisioning ---------------------------------------------------------------------------


def provisioned_datasource() -> dict[str, Any]:
    document = load_yaml(DATASOURCES_YAML)
    assert document["apiVersion"] == 1
    (datasource,) = document["datasources"]
    return datasource


def test_datasource_provisioning_parses_as_default_prometheus_with_fixed_uid() -> None:
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    assert isinstance(datasource["uid"], str) and datasource["uid"]


def test_dashboard_provider_parses_and_reads_the_directory_compose_mounts_the_dashboards_at() -> None:
    document = load_yaml(PROVIDERS_YAML)
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path == "/var/lib/grafana/dashboards"
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"./deploy/grafana/dashboards:{path}" in compose
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning" in compose


# --- what the observer exports --------------------------------------------------------------


def exported_samples() -> dict[str, set[str]]:
    """Every sample name a PrometheusObserver exposes, with its label names, once every hook ran."""
    observer = PrometheusObserver()
    observer.on_batch("allocator", 10, 0.01)
    observer.on_commit(10, 4, 0.02)
    observer.on_abort("fenced")
    observer.on_dead_letter("streamalloc.orders", "decode")
    observer.on_restore("allocator", 0, 100, 0.5)
    observer.on_assignment(3)
    observer.on_channels(["web"])
    observer.on_decision("allocated", None, "web")
    observer.on_decision("rejected", "insufficient_stock", "web")
    observer.on_decision_latency(0.2)
    observer.on_location_status("STORE-NYC", "stale")
    observer.on_consumer_lag({("streamalloc.orders", 0): 5})
    observer.on_restoring(True)
    observer.on_location_staleness(0, ["STORE-NYC"], ["STORE-NYC"])
    observer.on_stock(
        "allocator", 0, StockSnapshot({("STORE-NYC", "available"): 3}, {"STORE-NYC": 1}, 2, {"incoming": 1})
    )
    samples: dict[str, set[str]] = {}
    for family in observer.registry.collect():
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_every_observer_family_is_exported_once_all_hooks_ran() -> None:
    # Guards the test's own exercise: a labelled family with no sample would look missing.
    observer = PrometheusObserver()
    names = {family.name for family in observer.registry.collect()}
    exported = exported_samples()
    for name in names:
        assert any(sample == name or sample.startswith(name + "_") for sample in exported), name


# --- dashboards -----------------------------------------------------------------------------


def load_dashboard(path: Path) -> dict[str, Any]:
    dashboard = json.loads(path.read_text())
    assert isinstance(dashboard, dict)
    return dashboard


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every templating variable."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            found.append(
                (f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query)
            )
    return found


def test_there_is_a_dashboard_and_it_is_the_streamalloc_engine_one() -> None:
    assert DASHBOARDS, "no dashboard JSON under deploy/grafana/dashboards"
    by_uid = {load_dashboard(path)["uid"]: load_dashboard(path) for path in DASHBOARDS}
    assert by_uid["streamalloc-engine"]["title"] == "streamalloc engine"
    assert by_uid["streamalloc-operations"]["title"] == "streamalloc operations"


def test_the_operations_board_shows_every_series_the_alerts_use_and_names_each_alert() -> None:
    board = load_dashboard(GRAFANA / "dashboards" / "streamalloc-operations.json")
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    shown = {name for _, expr in queries(board) for name in METRIC.findall(expr)}
    assert set(METRIC.findall(alerts)) <= shown, set(METRIC.findall(alerts)) - shown
    described = " ".join(panel["description"] for panel in board["panels"])
    for alert in re.findall(r"- alert: (\w+)", alerts):
        if alert != "StreamallocRestoreTookLong":  # the finished-restore twin of RestoreSlow
            assert alert in described, alert


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_are_timeseries_or_stat_with_unique_ids_and_non_overlapping_grid(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["schemaVersion"] == 39
    panels = dashboard["panels"]
    assert panels
    assert len({panel["id"] for panel in panels}) == len(panels)
    occupied: dict[tuple[int, int], str] = {}
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"{panel['title']!r} overlaps {occupied[(x, y)]!r}"
                occupied[(x, y)] = panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_targets_and_variables_use_the_provisioned_datasource_uid(path: Path) -> None:
    uid = provisioned_datasource()["uid"]
    dashboard = load_dashboard(path)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            assert variable["datasource"]["uid"] == uid, variable["name"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_reference_only_sample_names_the_observer_exports(path: Path) -> None:
    exported = exported_samples()
    referenced = set()
    for where, expr in queries(load_dashboard(path)):
        names = set(METRIC.findall(expr))
        assert names, f"{where} references no metric of the worker: {expr}"
        unknown = names - exported.keys()
        assert not unknown, (
            f"{where} references {sorted(unknown)}, not exported; exported: {sorted(exported)}"
        )
        referenced |= names
    assert referenced


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_label_matchers_and_groupings_use_labels_the_series_carry(path: Path) -> None:
    exported = exported_samples()
    for where, query in queries(load_dashboard(path)):
        expr = QUOTED.sub('""', query)  # label values may hold anything, even "by (" or "="
        for name, matchers in SELECTOR.findall(expr):
            labels = set(MATCHER_LABEL.findall(matchers))
            unknown = labels - exported.get(name, set()) - TARGET_LABELS
            assert not unknown, f"{where}: {name} has no label {sorted(unknown)}"
        available = set().union(*(exported.get(name, set()) for name in METRIC.findall(expr)))
        for grouping in GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",") if label.strip()}
            unknown = labels - available - TARGET_LABELS
            assert not unknown, f"{where}: groups by {sorted(unknown)}, which its series do not carry"

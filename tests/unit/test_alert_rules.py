"""The alert rules (deploy/prometheus/alerts.yml) are valid, do what their tests say, and use
only series a worker really exports.

promtool comes from Debian's prometheus package (`make promtool`, part of `make test`). Where
it cannot be installed these tests skip and say so; under CI=true they fail instead.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import under_ci
from tests.unit.test_dashboards import DASHBOARDS, METRIC, exported_samples, load_dashboard, queries

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alerts.test.yml"
#: Grafana's variables in the panels' queries, longest first, and a value PromQL accepts for each
GRAFANA_VALUES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (`make promtool` installs Debian's prometheus package, as root)"
        if under_ci():
            pytest.fail(f"CI=true, but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def run(*args: str) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_accepts_the_rules_and_the_config_that_loads_them() -> None:
    assert "SUCCESS: 7 rules found" in run("check", "rules", str(ALERTS))
    assert "SUCCESS: 1 rule files found" in run("check", "config", str(CONFIG))


def test_promtool_rule_tests_pass() -> None:
    assert "SUCCESS" in run("test", "rules", str(RULE_TESTS))


def test_every_alert_has_a_rule_test() -> None:
    alerts = re.findall(r"^\s*- alert: (\w+)$", ALERTS.read_text(), re.MULTILINE)
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert len(alerts) == 7 and set(alerts) <= tested, set(alerts) - tested


def test_the_rules_use_only_series_the_worker_exports() -> None:
    exported = exported_samples()
    used = set(METRIC.findall(ALERTS.read_text()))
    assert used, "no streamalloc series in the rules"
    assert used <= set(exported), used - set(exported)


def test_every_alert_links_to_its_section_of_the_runbook() -> None:
    runbook = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", runbook, re.MULTILINE)
    }
    links = re.findall(r"runbook: docs/operations\.md#([a-z0-9-]+)$", ALERTS.read_text(), re.MULTILINE)
    assert len(links) == 7, links
    assert set(links) <= anchors, set(links) - anchors


def test_every_dashboard_panel_query_parses_as_promql(tmp_path: Path) -> None:
    # promtool parses the expressions of a rule file: the panels' queries become recording
    # rules, with Grafana's variables replaced by values Prometheus accepts.
    rules = []
    for path in DASHBOARDS:
        for where, expr in queries(load_dashboard(path)):
            if where.startswith("variable"):
                continue  # label_values(...) is Grafana's, not PromQL
            for variable, value in GRAFANA_VALUES.items():
                expr = expr.replace(variable, value)
            rules.append({"record": f"panel:{len(rules)}", "expr": expr})
    assert len(rules) > 40
    file = tmp_path / "panels.yml"
    file.write_text(json.dumps({"groups": [{"name": "panels", "rules": rules}]}))  # JSON is YAML
    assert f"SUCCESS: {len(rules)} rules found" in run("check", "rules", str(file))

"""deploy/kubernetes validates against the Kubernetes schemas, and its parts fit together and
fit the code: probes on the routes the processes serve, the state volume where the worker
keeps its stores, variables Settings reads, commands the CLI accepts.

kubernetes-validate (a dev dependency) ships the schemas: no network.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from streamalloc.cli import main
from streamalloc.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
#: The oldest Kubernetes still commonly run, and the newest the pinned package knows.
VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]


@functools.cache
def _parsed() -> tuple[dict[str, Any], ...]:
    found: list[dict[str, Any]] = []
    for path in MANIFESTS:
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return tuple(found)


def resources() -> list[dict[str, Any]]:
    return list(_parsed())  # the documents are shared: tests copy before they change one


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources() if r["kind"] == kind}


def test_there_are_the_worker_and_service_manifests() -> None:
    kinds = sorted((r["kind"], r["metadata"]["name"]) for r in resources())
    assert kinds == [
        ("ConfigMap", "streamalloc-config"),
        ("Deployment", "streamalloc-channel-sync"),
        ("Deployment", "streamalloc-routing"),
        ("PodDisruptionBudget", "streamalloc-worker"),
        ("Service", "streamalloc-channel-sync"),
        ("Service", "streamalloc-worker"),
        ("StatefulSet", "streamalloc-worker"),
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_validates_strictly_against_the_kubernetes_schemas(version: str) -> None:
    for resource in resources():
        kubernetes_validate.validate(resource, version, strict=True)


def test_validation_rejects_what_the_schema_does_not_allow() -> None:
    # guards the test above: a misplaced field must fail
    worker = by_kind("StatefulSet")["streamalloc-worker"]
    broken = {**worker, "spec": {**worker["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod template, container) of every workload."""
    out = []
    for kind in ("StatefulSet", "Deployment"):
        for workload in by_kind(kind).values():
            template = workload["spec"]["template"]
            out += [(template, c) for c in template["spec"]["containers"]]
    return out


def test_the_workers_are_a_statefulset_with_a_volume_per_pod_for_their_state_dir() -> None:
    worker = by_kind("StatefulSet")["streamalloc-worker"]
    spec = worker["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert _selects(spec["selector"]["matchLabels"], labels)
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["STREAMALLOC_STATE_DIR"]
    # the headless Service gives each pod the name it advertises for owner-to-owner queries
    service = by_kind("Service")[spec["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    assert _selects(service["spec"]["selector"], labels)
    assert f".{spec['serviceName']}." in env["STREAMALLOC_ADVERTISED_URL"]
    # a clean revoke (finish the batch, commit, leave the group, flush) fits in the grace period
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    pdb = by_kind("PodDisruptionBudget")["streamalloc-worker"]
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["maxUnavailable"] == 1


def test_probes_scrape_annotations_and_resources_on_every_container() -> None:
    assert len(_containers()) == 3
    for template, container in _containers():
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ports["http"]
        assert annotations["prometheus.io/path"] == "/metrics"
        command = container["command"]
        assert command[command.index("--http-port") + 1] == str(ports["http"])
        assert command[command.index("--http-host") + 1] == "0.0.0.0"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]


def test_the_commands_are_ones_the_cli_accepts() -> None:
    commands = sorted(" ".join(c["command"][1:3]) for _, c in _containers())
    assert commands == ["service channel-sync", "service routing", "worker --http-host"]
    runner = CliRunner()
    for _, container in _containers():
        program, *args = container["command"]
        assert program == "streamalloc"
        result = runner.invoke(main, [*args, "--help"])  # parses every option, runs nothing
        assert result.exit_code == 0, result.output


def test_every_streamalloc_variable_is_one_settings_reads_and_parses() -> None:
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    data = by_kind("ConfigMap")["streamalloc-config"]["data"]
    named = set(data)
    for _, container in _containers():
        named |= {e["name"] for e in container["env"] if e["name"].startswith(ENV_PREFIX)}
        for source in container["envFrom"]:
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] == "streamalloc-config"
    assert named <= fields, named - fields
    settings = Settings.from_env({**data, "STREAMALLOC_STATE_DIR": "/state"})
    assert settings.partitions == 12 and settings.num_standby_replicas == 1

"""docker-compose.yml and the Dockerfile fit together and fit the code.

No Docker engine runs on the development machines, so the stack itself cannot start here:
what the image runs is tested by installing the same wheel into a fresh venv outside the
checkout (tests/integration/test_wheel.py). This file checks what that cannot: the order
the services start in, the listeners Kafka advertises, the healthchecks, the commands and
variables, and the Prometheus targets, against the CLI and Settings.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from streamalloc.cli import main
from streamalloc.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
#: Variables mapped to client properties rather than to Settings fields (cli.py's help).
PROPERTY_PREFIXES = (f"{ENV_PREFIX}KAFKA_", f"{ENV_PREFIX}SCHEMA_REGISTRY_")


@functools.cache
def _services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _ours() -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: s for name, s in _services().items() if s.get("build") == "."}


def _long_running() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _ours().items() if s["command"][1] != "topics"}


def _port(service: dict[str, Any]) -> int:
    command = service["command"]
    if "--http-port" in command:
        return int(command[command.index("--http-port") + 1])
    return int(service["environment"][f"{ENV_PREFIX}HTTP_PORT"])


def test_the_stack_has_two_workers_both_services_and_the_topics_step() -> None:
    commands = sorted(" ".join(s["command"][1:3]) for s in _ours().values())
    assert commands == [
        "service channel-sync",
        "service routing",
        "topics create",
        "worker --http-host",
        "worker --http-host",
    ]


def test_kafka_advertises_one_listener_to_containers_and_one_to_the_host() -> None:
    env = _services()["kafka"]["environment"]
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["HOST"] == "localhost:9092"
    assert "9092:9092" in _services()["kafka"]["ports"]
    inside = advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    assert inside.startswith("kafka:") and inside != "kafka:9092"
    for name, service in _ours().items():
        assert service["environment"][f"{ENV_PREFIX}BOOTSTRAP"] == inside, name


def test_workers_start_after_the_registry_and_the_topics_and_topics_after_kafka() -> None:
    topics = _services()["topics"]["depends_on"]
    assert topics["kafka"]["condition"] == "service_healthy"
    assert topics["schema-registry"]["condition"] == "service_healthy"
    assert "healthcheck" in _services()["schema-registry"]
    for name, service in _long_running().items():
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully", name
        if service["command"][1] == "worker":
            assert service["depends_on"]["schema-registry"]["condition"] == "service_healthy", name
            assert "--no-create-topics" in service["command"], name


def test_every_process_has_a_readiness_healthcheck_on_the_port_it_serves() -> None:
    for name, service in _long_running().items():
        check = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{_port(service)}/ready" in check, (name, check)
        assert "0.0.0.0" in service["command"], f"{name} serves only its own loopback"


def test_each_worker_advertises_its_own_address_for_owner_to_owner_queries() -> None:
    workers = {n: s for n, s in _long_running().items() if s["command"][1] == "worker"}
    for name, service in workers.items():
        url = service["environment"][f"{ENV_PREFIX}ADVERTISED_URL"]
        assert url == f"http://{name}:{_port(service)}", name
    volumes = [s["volumes"][0].split(":")[0] for s in workers.values()]
    assert len(set(volumes)) == len(volumes), "two workers share a state volume"


def test_the_commands_parse_and_the_variables_are_ones_settings_reads() -> None:
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    runner = CliRunner()
    for name, service in _ours().items():
        program, *args = service["command"]
        assert program == "streamalloc", name
        result = runner.invoke(main, [*args, "--help"])  # parses every option, runs nothing
        assert result.exit_code == 0, (name, result.output)
        env = service["environment"]
        assert all(k in fields or k.startswith(PROPERTY_PREFIXES) for k in env), (name, env)
        Settings.from_env({k: v for k, v in env.items() if k in fields})


def test_prometheus_scrapes_every_worker_and_service_at_its_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"{name}:{_port(s)}" for name, s in _long_running().items()}


def test_the_image_installs_the_built_wheel_and_runs_without_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1:]
    assert len(stages) == 2, "a build stage for the wheel, a runtime stage for the image"
    runtime = stages[-1]
    assert "COPY src" not in runtime, "the runtime stage must install the wheel, not the sources"
    assert re.search(r"pip install .*-c \S*constraints\.txt \S*streamalloc-\*\.whl", runtime)
    user = re.findall(r"^USER (\S+)", runtime, flags=re.MULTILINE)
    assert user and user[-1] not in ("root", "0"), user

"""The pure parts of the real-Kafka launcher: where the jars live, how they are fetched, the
node's properties and command lines, and the one-line errors when something is missing."""

from __future__ import annotations

import os
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamalloc.broker.kafka import (
    KAFKA_VERSION,
    SERVER_MAIN,
    check_jars,
    cluster_id,
    container_environment,
    default_jars_dir,
    fetch_jars,
    find_java,
    java_command,
    kafka_files,
    ports_of,
    render_properties,
    server_properties,
)
from streamalloc.cli import main
from streamalloc.errors import BrokerError

JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"


def test_the_jars_are_cached_outside_the_clone_unless_a_variable_says_where() -> None:
    assert default_jars_dir({"HOME": "/home/u"}) == Path.home() / ".cache" / "streamalloc" / "kafka-4.1.1"
    assert default_jars_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/streamalloc/kafka-4.1.1")
    assert default_jars_dir({"XDG_CACHE_HOME": "/c", "STREAMALLOC_KAFKA_JARS": "/j"}) == Path("/j")


def test_a_single_node_binds_and_advertises_127_0_0_1_and_replicates_nothing(tmp_path: Path) -> None:
    props = server_properties(tmp_path / "data", 19092, 19093)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path / "data")
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[key] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert int(props["broker.session.timeout.ms"]) > int(props["broker.heartbeat.interval.ms"])


def test_a_restart_finds_the_ports_in_the_properties_it_wrote(tmp_path: Path) -> None:
    text = render_properties(server_properties(tmp_path, 40001, 40002))
    assert "listeners=PLAINTEXT://127.0.0.1:40001,CONTROLLER://127.0.0.1:40002" in text.splitlines()
    assert ports_of(text) == (40001, 40002)
    assert ports_of("node.id=1\n") is None


def test_the_container_runs_the_same_node_listening_on_all_interfaces_advertising_the_host_port() -> None:
    env = container_environment("127.0.0.1:32768")
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:32768"
    assert env["KAFKA_LISTENERS"] == "PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@localhost:9093"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert all(re.fullmatch(r"KAFKA_[A-Z_]+", name) for name in env)


def test_java_gets_the_class_path_wildcard_unexpanded_and_the_quiet_log_config(tmp_path: Path) -> None:
    command = java_command("/usr/bin/java", tmp_path, SERVER_MAIN, "/x/server.properties")
    assert command[0] == "/usr/bin/java"
    assert command[command.index("-cp") + 1] == f"{tmp_path}/*"
    assert command[-2:] == [SERVER_MAIN, "/x/server.properties"]
    assert "-Xmx1g" in command
    [log4j] = [arg.split("=", 1)[1] for arg in command if arg.startswith("-Dlog4j2.configurationFile=")]
    config = dict(
        line.split(" = ", 1)
        for line in Path(log4j).read_text().splitlines()
        if " = " in line and line[0] != "#"
    )
    assert config["rootLogger.level"] == "WARN"
    assert config["logger.server.name"] == "kafka.server.KafkaRaftServer"
    assert config["logger.server.level"] == "INFO"


def test_the_pom_asks_for_kafka_4_1_1_and_the_slf4j_binding_it_lacks() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(kafka_files() / "pom.xml").getroot()  # noqa: S314 - our own file
    deps = {
        dep.findtext("m:artifactId", namespaces=ns): (
            dep.findtext("m:version", namespaces=ns),
            dep.findtext("m:scope", namespaces=ns),
        )
        for dep in root.iterfind("m:dependencies/m:dependency", ns)
    }
    assert deps["kafka_2.13"] == (KAFKA_VERSION, None)
    assert deps["log4j-slf4j-impl"][1] == "runtime"
    assert root.findtext("m:packaging", namespaces=ns) == "pom"


def test_cluster_ids_are_22_url_safe_characters_never_starting_with_a_dash() -> None:
    ids = {cluster_id() for _ in range(500)}
    assert len(ids) == 500
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", value) for value in ids)


def test_missing_jars_name_the_directory_and_the_command_that_fetches_them(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=r"no Apache Kafka 4\.1\.1 jars in .*: run `make kafka"):
        check_jars(tmp_path)
    (tmp_path / JAR).touch()
    assert check_jars(tmp_path) == tmp_path


def test_java_home_wins_and_no_java_at_all_is_one_clear_error(tmp_path: Path) -> None:
    java = _executable(tmp_path / "jdk" / "bin" / "java", "")
    assert find_java({"JAVA_HOME": str(tmp_path / "jdk"), "PATH": "/nonexistent"}) == str(java)
    with pytest.raises(BrokerError, match="no java on the PATH: Apache Kafka 4.1.1 needs Java 17"):
        find_java({"PATH": str(tmp_path)})


def test_fetching_stages_the_jars_then_renames_them_into_place_and_a_second_run_does_nothing(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    # A stand-in for Maven: writes the broker jar where -DoutputDirectory says, counts its runs.
    _executable(
        tmp_path / "bin" / "mvn",
        f'echo run >> {calls}\nfor a in "$@"; do case $a in -DoutputDirectory=*) d=${{a#*=}};; esac; done\n'
        f'mkdir -p "$d" && touch "$d/{JAR}" "$d/log4j-slf4j-impl-2.24.3.jar"\n',
    )
    jars = tmp_path / "cache" / "streamalloc" / "kafka-4.1.1"
    said: list[str] = []
    env = {"PATH": str(tmp_path / "bin")}

    assert fetch_jars(jars, environ=env, say=said.append) is True
    assert sorted(p.name for p in jars.iterdir()) == [JAR, "log4j-slf4j-impl-2.24.3.jar"]
    assert [p.name for p in jars.parent.iterdir()] == ["kafka-4.1.1"], "the staging dir is gone"
    assert fetch_jars(jars, environ=env, say=said.append) is False
    assert calls.read_text().count("run") == 1
    assert len(said) == 1 and "Maven Central" in said[0]


def test_a_failed_fetch_says_why_and_leaves_no_half_filled_cache(tmp_path: Path) -> None:
    _executable(
        tmp_path / "bin" / "mvn", "echo '[ERROR] Could not transfer artifact: Unknown host'\nexit 1\n"
    )
    jars = tmp_path / "cache" / "kafka-4.1.1"
    with pytest.raises(BrokerError, match=r"mvn could not fetch .*exit 1.*make kafka.*Unknown host"):
        fetch_jars(jars, environ={"PATH": str(tmp_path / "bin")}, say=lambda _: None)
    assert list(jars.parent.iterdir()) == []
    with pytest.raises(BrokerError, match=r"no mvn on the PATH .*run `make kafka"):
        fetch_jars(jars, environ={"PATH": "/nonexistent"}, say=lambda _: None)


def test_the_broker_command_without_java_fails_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["broker", "--kafka"], env={"PATH": str(tmp_path), "JAVA_HOME": None, "COLUMNS": "400"}
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: no java on the PATH: Apache Kafka 4.1.1 needs Java 17 or later (or set JAVA_HOME)"
    ]


def test_the_broker_command_without_jars_or_maven_names_the_fetch_command(tmp_path: Path) -> None:
    _executable(tmp_path / "bin" / "java", "exit 0\n")
    env = {"PATH": str(tmp_path / "bin"), "STREAMALLOC_KAFKA_JARS": str(tmp_path / "jars"), "COLUMNS": "400"}
    result = CliRunner().invoke(main, ["broker", "--kafka"], env=env)
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"error: no Apache Kafka 4.1.1 jars in {tmp_path / 'jars'} and no mvn")
    assert "make kafka" in line


def test_log_dir_is_refused_without_kafka() -> None:
    result = CliRunner().invoke(main, ["broker", "--log-dir", "/tmp/x"])
    assert result.exit_code == 2
    assert "--log-dir needs --kafka" in result.output


def _executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    assert os.access(path, os.X_OK)
    return path

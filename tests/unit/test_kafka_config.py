"""Client properties for secured clusters: the Java file format, translation, refusals, secrets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamalloc import logs
from streamalloc.client_properties import ENGINE_CONTROLLED, is_secret, read_properties_file
from streamalloc.config import Settings
from streamalloc.connect import kafka_available
from streamalloc.errors import BrokerError, ConfigError
from streamalloc.kafka import consumer_config, kafka_errors, producer_config
from streamalloc.kafka.clients import describe_refusal
from streamalloc.serialization.ids import RegistrySchemaIds

PASSWORD = "s3cr3t-Pa55"  # noqa: S105 - a test value
SCRAM = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="{}";'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return path


def from_file(tmp_path: Path, text: str, env: dict[str, str] | None = None, **overrides: object) -> Settings:
    return Settings.from_env(env or {}, kafka_config=write(tmp_path, text), **overrides)


# ---------------------------------------------------------------- the file format


def test_the_java_properties_format_is_read_with_comments_separators_and_continuations(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "# a comment\n"
        "  ! another comment\n"
        "\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism : SCRAM-SHA-512\n"
        "ssl.ca.location=/etc/kafka/ca\\\n"
        "    .pem\n"
        "client.id=a\\=b\\u00e9\n",
    )
    source = read_properties_file(path)
    assert source.values == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "client.id": "a=bé",
    }
    assert source.origins["ssl.ca.location"] == f"{path}:6"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"security.protocol=SSL\nsasl.password {PASSWORD}\n", 2),
        (f"# ok\n\nsasl password={PASSWORD}\n", 3),
        (f"={PASSWORD}\n", 1),
    ],
    ids=["no-separator", "space-in-key", "no-key"],
)
def test_a_malformed_line_is_refused_with_file_and_line_but_not_its_text(
    tmp_path: Path, text: str, line: int
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        read_properties_file(path)
    assert f"{path}:{line}: expected key=value or key: value" in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_a_key_set_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "linger.ms=5\nacks=all\nlinger.ms=10\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: linger.ms is set twice \(first at {path}:1\)"):
        read_properties_file(path)


# ---------------------------------------------------------------- Java-only keys


@pytest.mark.parametrize("module", ["scram.ScramLoginModule", "plain.PlainLoginModule"])
def test_a_plain_or_scram_jaas_line_becomes_username_and_password(tmp_path: Path, module: str) -> None:
    jaas = (
        f"org.apache.kafka.common.security.{module} required \\\n"
        f'    username="alice" \\\n    password="{PASSWORD}";\n'
    )
    settings = from_file(tmp_path, f"sasl.jaas.config={jaas}")
    assert dict(settings.kafka_properties) == {"sasl.username": "alice", "sasl.password": PASSWORD}


@pytest.mark.parametrize(
    ("jaas", "advice"),
    [
        (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
            f'clientSecret="{PASSWORD}";',
            "sasl.oauthbearer.client.secret",
        ),
        (
            f'com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true keyTab="{PASSWORD}";',
            "sasl.kerberos.keytab",
        ),
        (
            f'org.apache.kafka.common.security.scram.ScramLoginModule required password="{PASSWORD}";',
            "needs username= and password=",
        ),
        (f"not a jaas line {PASSWORD}", "is not '<LoginModule> required"),
    ],
    ids=["oauth", "kerberos", "no-username", "garbage"],
)
def test_a_jaas_line_without_a_clear_mapping_is_refused_with_what_to_use(
    tmp_path: Path, jaas: str, advice: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        from_file(tmp_path, f"sasl.jaas.config={jaas}\n")
    assert advice in str(refused.value)
    assert "client.properties:1" in str(refused.value)
    assert PASSWORD not in str(refused.value)


@pytest.mark.parametrize(
    ("line", "advice"),
    [
        ("ssl.truststore.location=/etc/kafka/truststore.jks", "ssl.ca.location"),
        (f"ssl.truststore.password={PASSWORD}", "ssl.ca.location"),
        ("ssl.keystore.type=JKS", "-deststoretype PKCS12"),
        ("value.serializer=org.apache.kafka.common.serialization.StringSerializer", "topic contract"),
        ("ssl.enabled.protocols=TLSv1.3", "remove it"),
    ],
)
def test_java_only_keys_are_refused_with_what_to_use_instead(tmp_path: Path, line: str, advice: str) -> None:
    with pytest.raises(ConfigError) as refused:
        from_file(tmp_path, line + "\n")
    assert advice in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_java_keys_with_an_exact_equivalent_are_translated(tmp_path: Path) -> None:
    settings = from_file(
        tmp_path,
        "ssl.endpoint.identification.algorithm=\n"
        "ssl.keystore.type=PKCS12\n"
        "ssl.keystore.location=/etc/kafka/client.p12\n"
        "ssl.keystore.key=KEY\n",
    )
    assert dict(settings.kafka_properties) == {
        "ssl.endpoint.identification.algorithm": "none",
        "ssl.keystore.location": "/etc/kafka/client.p12",
        "ssl.key.pem": "KEY",
    }


# ---------------------------------------------------------------- what the engine controls


@pytest.mark.parametrize("key", sorted(ENGINE_CONTROLLED))
def test_properties_the_engine_controls_are_refused_from_file_and_environment(
    tmp_path: Path, key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"client.properties:1: {key} is set by streamalloc itself"):
        from_file(tmp_path, f"{key}=x\n")
    variable = "STREAMALLOC_KAFKA_" + key.upper().replace(".", "_")
    with pytest.raises(ConfigError, match=rf"{variable}: {key} is set by streamalloc itself"):
        Settings.from_env({variable: "x"})


def test_user_properties_reach_every_client_and_retune_defaults_but_not_exactly_once() -> None:
    settings = Settings(
        bootstrap="b:9092",
        kafka_properties={"security.protocol": "SASL_SSL", "linger.ms": "50", "session.timeout.ms": "30000"},
    )
    producer = producer_config(settings, transactional_id="t-1")
    consumer = consumer_config(settings, group_id="g")
    for config in (producer, consumer):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["bootstrap.servers"] == "b:9092"
    assert producer["linger.ms"] == "50"
    assert consumer["session.timeout.ms"] == "30000"
    # given programmatically, past the settings' refusal, they still cannot win
    sneaky = Settings(bootstrap="b:9092", kafka_properties={"enable.idempotence": "false", "group.id": "x"})
    assert producer_config(sneaky)["enable.idempotence"] is True
    assert consumer_config(sneaky, group_id="g")["group.id"] == "g"


# ---------------------------------------------------------------- environment and precedence


def test_environment_variables_name_properties_and_reserved_names_are_not_properties() -> None:
    settings = Settings.from_env(
        {
            "STREAMALLOC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMALLOC_KAFKA_SASL_USERNAME": "alice",
            "STREAMALLOC_KAFKA_SASL_PASSWORD": PASSWORD,
            "STREAMALLOC_KAFKA_JARS": "/tmp/kjars/lib",
            "STREAMALLOC_SCHEMA_REGISTRY_URL": "https://registry:8081",
            "STREAMALLOC_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"key:{PASSWORD}",
        }
    )
    assert dict(settings.kafka_properties) == {
        "security.protocol": "SASL_SSL",
        "sasl.username": "alice",
        "sasl.password": PASSWORD,
    }
    assert settings.schema_registry_url == "https://registry:8081"
    assert dict(settings.schema_registry_properties) == {"basic.auth.user.info": f"key:{PASSWORD}"}


def test_precedence_is_option_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    text = "bootstrap.servers=file:9092\nsecurity.protocol=SASL_SSL\nlinger.ms=20\nschema.registry.url=http://file\n"
    only_file = from_file(tmp_path, text)
    assert only_file.bootstrap == "file:9092"
    assert only_file.schema_registry_url == "http://file"
    assert "bootstrap.servers" not in only_file.kafka_properties
    env = {
        "STREAMALLOC_KAFKA_BOOTSTRAP_SERVERS": "kafka-env:9092",
        "STREAMALLOC_KAFKA_LINGER_MS": "30",
        "STREAMALLOC_SCHEMA_REGISTRY_URL": "http://env",
    }
    over_file = from_file(tmp_path, text, env)
    assert over_file.bootstrap == "kafka-env:9092"
    assert over_file.kafka_properties["linger.ms"] == "30"
    assert over_file.kafka_properties["security.protocol"] == "SASL_SSL"
    assert over_file.schema_registry_url == "http://env"
    setting = from_file(tmp_path, text, {**env, "STREAMALLOC_BOOTSTRAP": "setting-env:9092"})
    assert setting.bootstrap == "setting-env:9092"
    option = from_file(tmp_path, text, env, bootstrap="option:9092", schema_registry_url="http://option")
    assert (option.bootstrap, option.schema_registry_url) == ("option:9092", "http://option")
    assert Settings.from_env({}).kafka_properties == {}


def test_the_file_comes_from_STREAMALLOC_KAFKA_CONFIG_when_no_option_names_it(tmp_path: Path) -> None:  # noqa: N802
    path = write(tmp_path, "security.protocol=SSL\n")
    assert Settings.from_env({"STREAMALLOC_KAFKA_CONFIG": str(path)}).kafka_properties == {
        "security.protocol": "SSL"
    }


def test_schema_registry_properties_come_from_the_file_as_confluent_clients_write_them(
    tmp_path: Path,
) -> None:
    settings = from_file(
        tmp_path,
        "schema.registry.url=https://registry:8081\n"
        "basic.auth.credentials.source=USER_INFO\n"
        f"basic.auth.user.info=key:{PASSWORD}\n"
        "schema.registry.ssl.ca.location=/etc/registry-ca.pem\n",
    )
    assert settings.schema_registry_url == "https://registry:8081"
    assert dict(settings.schema_registry_properties) == {
        "basic.auth.user.info": f"key:{PASSWORD}",
        "ssl.ca.location": "/etc/registry-ca.pem",
    }
    assert settings.kafka_properties == {}
    inherit = from_file(
        tmp_path, f"sasl.jaas.config={SCRAM.format(PASSWORD)}\nbasic.auth.credentials.source=SASL_INHERIT\n"
    )
    assert inherit.schema_registry_properties == {"basic.auth.user.info": f"alice:{PASSWORD}"}


def test_the_registry_client_gets_the_properties_and_refuses_unknown_ones_without_secrets() -> None:
    ids = RegistrySchemaIds(
        f"https://key:{PASSWORD}@registry:8081", properties={"timeout": "5", "max.retries": "1"}
    )
    assert PASSWORD not in ids.url
    with pytest.raises(ConfigError, match="Unrecognized properties: no.such") as refused:
        RegistrySchemaIds("https://registry:8081", properties={"no.such": PASSWORD})
    assert PASSWORD not in str(refused.value)


def test_a_secured_protocol_without_bootstrap_servers_is_refused_before_starting_a_broker() -> None:
    settings = Settings(kafka_properties={"security.protocol": "SASL_SSL"})
    with pytest.raises(ConfigError, match="embedded broker speaks PLAINTEXT only"):
        with kafka_available(settings, say=lambda _: None):
            pass


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("sasl.password", True),
        ("ssl.key.password", True),
        ("ssl.keystore.password", True),
        ("sasl.oauthbearer.client.secret", True),
        ("basic.auth.user.info", True),
        ("bearer.auth.token", True),
        ("ssl.key.pem", True),
        ("sasl.oauthbearer.config", True),
        ("sasl.username", False),
        ("ssl.key.location", False),
        ("ssl.ca.location", False),
        ("security.protocol", False),
    ],
)
def test_passwords_keys_and_tokens_are_secrets_usernames_and_paths_are_not(key: str, secret: bool) -> None:
    assert is_secret(key) is secret


def test_the_settings_repr_hides_every_secret_but_shows_the_username() -> None:
    settings = Settings(
        schema_registry_url=f"https://key:{PASSWORD}@registry:8081",
        kafka_properties={
            "sasl.username": "alice",
            "sasl.password": PASSWORD,
            "ssl.key.password": PASSWORD + "2",
        },
        schema_registry_properties={"basic.auth.user.info": f"key:{PASSWORD}3"},
    )
    shown = repr(settings)
    assert PASSWORD not in shown
    assert "'sasl.username': 'alice'" in shown
    assert "'sasl.password': '***'" in shown
    assert "https://key:***@registry:8081" in shown
    assert set(settings.secrets()) >= {PASSWORD, PASSWORD + "2", f"key:{PASSWORD}3", f"{PASSWORD}3"}


@pytest.fixture
def secret_logging() -> Iterator[Settings]:
    """Logging configured as the CLI does for settings holding a password; restored after."""
    root = logging.getLogger("streamalloc")
    saved = (root.handlers[:], root.level, root.propagate)
    settings = Settings(kafka_properties={"sasl.username": "alice", "sasl.password": PASSWORD})
    logs.configure("INFO", secrets=settings.secrets())
    yield settings
    logs.configure("WARNING")
    root.handlers[:], root.level, root.propagate = saved


@pytest.mark.usefixtures("secret_logging")
def test_a_librdkafka_error_text_holding_a_secret_is_redacted() -> None:
    text = f'Invalid value "{PASSWORD}" for configuration property "ssl.key.password"'
    with pytest.raises(BrokerError) as raised:
        with kafka_errors("connecting"):
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, text))
    assert (
        str(raised.value) == 'connecting: Invalid value "***" for configuration property "ssl.key.password"'
    )


@pytest.mark.usefixtures("secret_logging")
def test_a_log_record_holding_a_secret_is_redacted() -> None:
    record = logging.LogRecord("streamalloc.kafka", logging.ERROR, "", 0, "FAIL %s", (PASSWORD,), None)
    record.config = {"sasl.password": f'"{PASSWORD}"'}
    line = logs.JsonFormatter().format(record)
    assert PASSWORD not in line
    assert json.loads(line)["msg"] == "FAIL ***"


def test_an_authentication_failure_is_one_line_with_user_mechanism_and_broker_and_no_password() -> None:
    settings = Settings(
        bootstrap="127.0.0.1:29094",
        kafka_properties={
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "alice",
            "sasl.password": PASSWORD,
        },
    )
    error = KafkaError(
        KafkaError._AUTHENTICATION,
        "sasl_plaintext://127.0.0.1:29094/bootstrap: SASL authentication error: Authentication failed "
        "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 "
        "(after 315ms in state AUTH_REQ)",
    )
    assert describe_refusal(settings, error) == (
        "authentication failed for sasl.username=alice with SCRAM-SHA-512 at 127.0.0.1:29094: "
        "SASL authentication error: Authentication failed during authentication due to invalid "
        "credentials with SASL mechanism SCRAM-SHA-512"
    )

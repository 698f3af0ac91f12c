"""Extra client properties for secured clusters: read, translated from Java, checked, redacted.

Users keep Kafka client settings in the Java properties format that Kafka's own tools take
(`--command-config`); streamalloc reads the same file and `STREAMALLOC_KAFKA_<PROPERTY>`
variables into librdkafka properties, and `schema.registry.*` into the schema registry
client's. Java-only keys are translated where the mapping is exact, refused with what to
use instead otherwise; keys the engine must control are refused. Secret values never leave
this module unredacted in a repr or a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from streamalloc.errors import ConfigError

#: Variables whose names start with these prefixes carry client properties.
KAFKA_ENV_PREFIX = "STREAMALLOC_KAFKA_"
REGISTRY_ENV_PREFIX = "STREAMALLOC_SCHEMA_REGISTRY_"
#: Variables under those prefixes that are not properties: the properties file
#: (`--kafka-config`), the Kafka jar cache of the test broker, and the registry URL setting.
NOT_PROPERTIES = frozenset(
    {"STREAMALLOC_KAFKA_CONFIG", "STREAMALLOC_KAFKA_JARS", "STREAMALLOC_SCHEMA_REGISTRY_URL"}
)

REDACTED = "***"

# Usernames are not secrets (they name who failed to log in); passwords, keys, tokens are.
_SECRET_MARKERS = (
    "password",
    "secret",
    "token",
    "passphrase",
    "private",
    "jaas",
    "user.info",
    "key.pem",
    "oauthbearer.config",
)

#: Properties the engine sets itself, and why: exactly-once and co-partitioning rest on them.
ENGINE_CONTROLLED = {
    "transactional.id": "each worker derives its own from --app-id (exactly-once)",
    "enable.idempotence": "exactly-once needs it on",
    "partitioner": "keys are partitioned with murmur2, as Java clients do",
    "isolation.level": "readers see committed records only (read_committed)",
    "group.id": "the consumer group is the application id: use --app-id",
    "group.instance.id": "one static member id shared by every worker would fence them",
    "group.protocol": "the range assignor of the classic protocol keeps co-partitioned inputs together",
    "partition.assignment.strategy": "the range assignor keeps co-partitioned inputs together",
    "enable.auto.commit": "offsets are committed inside each transaction",
    "enable.auto.offset.store": "offsets are committed inside each transaction",
    "auto.offset.reset": "each reader chooses where it starts",
    "enable.partition.eof": "restoration and the readers set it as they need",
}

_TRUSTSTORE_ADVICE = (
    "librdkafka reads a PEM CA bundle: set ssl.ca.location=<ca.pem> instead (from a JKS or PKCS12 "
    "truststore: keytool -exportcert -rfc -keystore <truststore> -alias <alias> -file ca.pem)"
)
_OAUTH_ADVICE = (
    "set sasl.oauthbearer.method=oidc with sasl.oauthbearer.client.id, sasl.oauthbearer.client.secret "
    "and sasl.oauthbearer.token.endpoint.url instead"
)
#: Java client keys with no librdkafka equivalent, and what to do instead.
_JAVA_ONLY = {
    "ssl.truststore.location": _TRUSTSTORE_ADVICE,
    "ssl.truststore.password": _TRUSTSTORE_ADVICE,
    "ssl.protocol": "librdkafka negotiates TLS with OpenSSL; remove it",
    "ssl.enabled.protocols": "librdkafka negotiates TLS with OpenSSL; remove it",
    "ssl.keymanager.algorithm": "Java-only; remove it",
    "ssl.trustmanager.algorithm": "Java-only; remove it",
    "ssl.secure.random.implementation": "Java-only; remove it",
    "ssl.engine.factory.class": "Java-only; remove it",
    "ssl.provider": "Java-only; remove it",
    "sasl.login.class": "Java-only; remove it",
    "sasl.client.callback.handler.class": "Java-only; remove it",
    "sasl.login.callback.handler.class": f"Java-only: for OAUTHBEARER {_OAUTH_ADVICE}",
    "key.serializer": "streamalloc encodes records by the topic contract; remove it",
    "value.serializer": "streamalloc encodes records by the topic contract; remove it",
    "key.deserializer": "streamalloc decodes records by the topic contract; remove it",
    "value.deserializer": "streamalloc decodes records by the topic contract; remove it",
}
#: Java keys with an exact librdkafka equivalent under another name (PEM given inline).
_RENAMED = {
    "ssl.truststore.certificates": "ssl.ca.pem",
    "ssl.keystore.certificate.chain": "ssl.certificate.pem",
    "ssl.keystore.key": "ssl.key.pem",
}
_JAAS_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule",
    "org.apache.kafka.common.security.scram.ScramLoginModule",
}
_JAAS_ADVICE = {
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule": _OAUTH_ADVICE,
    "com.sun.security.auth.module.Krb5LoginModule": (
        "set sasl.kerberos.principal and sasl.kerberos.keytab (and sasl.kerberos.service.name) instead"
    ),
}
# The schema registry client's settings in a Java client file: Confluent's serializers take
# basic.auth.* and bearer.auth.* unprefixed, everything else under schema.registry.
_REGISTRY_PREFIX = "schema.registry."
_REGISTRY_KEYS = ("basic.auth.", "bearer.auth.")


def is_secret(key: str) -> bool:
    """True for a property whose value must never be shown: passwords, keys, tokens, JAAS text."""
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


class ClientProperties(Mapping[str, str]):
    """An immutable, hashable mapping of client properties whose repr hides secret values."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, str] = dict(items)

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return repr(self.shown())

    def shown(self) -> dict[str, str]:
        """The properties as they may be printed: secret values replaced by `***`."""
        return {k: REDACTED if is_secret(k) else v for k, v in self._items.items()}

    def secrets(self) -> list[str]:
        """The secret values, to redact wherever they could be printed."""
        found: list[str] = []
        for key, value in self._items.items():
            if is_secret(key) and value:
                found.append(value)
                # user.info is "user:password"; a message may show the password alone
                if key.endswith("user.info") and ":" in value:
                    found.append(value.split(":", 1)[1])
        return found


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced by `***` (longest first, so none shows in part)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def url_password(url: str | None) -> str | None:
    """The password in a URL's user info (`https://user:password@host`), if any."""
    match = re.match(r"^[a-zA-Z][\w+.-]*://[^/@:]*:([^/@]*)@", url or "")
    return match.group(1) if match and match.group(1) else None


# ------------------------------------------------------------------ reading the sources


@dataclass(frozen=True, slots=True)
class Source:
    """One source's properties, each with where it was set (file:line or variable name)."""

    values: dict[str, str]
    origins: dict[str, str]


def read_properties_file(path: Path) -> Source:
    """Parse a Java properties file strictly: `key=value` or `key: value`, `#`/`!` comments,
    blank lines, backslash continuations and escapes. A malformed line is refused with the
    file and line number, never with its text (it may hold a password)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the Kafka client properties file {path}: {exc}") from exc
    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    for number, line in _logical_lines(text):
        where = f"{path}:{number}"
        key, value = _split(line, where)
        if key in values:
            raise ConfigError(f"{where}: {key} is set twice (first at {origins[key]})")
        values[key] = value
        origins[key] = where
    return Source(values, origins)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, logical line) without comments and blanks, continuations joined."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip()
        if not pending and (not line or line[0] in "#!"):
            continue
        if not pending:
            start = number
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes continues the line
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield start, "".join(pending)
        pending = []
    if pending:
        yield start, "".join(pending)


def _split(line: str, where: str) -> tuple[str, str]:
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\":
            index += 2
            continue
        if char in "=:":
            break
        index += 1
    else:
        raise ConfigError(f"{where}: expected key=value or key: value")
    key = _unescape(line[:index].strip(), where)
    if not key or any(c.isspace() for c in key):
        raise ConfigError(f"{where}: expected key=value or key: value")
    return key, _unescape(line[index + 1 :].strip(), where)


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str, where: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "\\" or index + 1 == len(text):
            out.append(char)
            index += 1
            continue
        escaped = text[index + 1]
        if escaped == "u":
            digits = text[index + 2 : index + 6]
            if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ConfigError(rf"{where}: malformed \uXXXX escape")
            out.append(chr(int(digits, 16)))
            index += 6
            continue
        out.append(_ESCAPES.get(escaped, escaped))
        index += 2
    return "".join(out)


def environment_source(environ: Mapping[str, str], prefix: str) -> Source:
    """`<prefix>SASL_USERNAME=alice` -> `sasl.username=alice`, for every set variable."""
    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    for name in sorted(environ):
        if not name.startswith(prefix) or name in NOT_PROPERTIES or len(name) == len(prefix):
            continue
        key = name[len(prefix) :].lower().replace("_", ".")
        values[key] = environ[name]
        origins[key] = name
    return Source(values, origins)


# ------------------------------------------------------------------ translating and checking


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What the sources add up to: librdkafka properties, registry client properties, and the
    bootstrap servers and registry URL they named (the caller decides whether those win)."""

    kafka: ClientProperties
    registry: ClientProperties
    bootstrap: str | None
    registry_url: str | None


def combine(file: Source | None, kafka_env: Source, registry_env: Source) -> ClientSettings:
    """Merge the sources, the environment over the file, after translating and checking each."""
    kafka: dict[str, str] = {}
    registry: dict[str, str] = {}
    origins: dict[str, str] = {}
    if file is not None:
        file_kafka, file_registry = _route(file)
        kafka.update(_translate(file_kafka.values, file_kafka.origins))
        registry.update(_translate_registry(file_registry.values, file_registry.origins))
        origins.update(file_kafka.origins | file_registry.origins)
    kafka.update(_translate(kafka_env.values, kafka_env.origins))
    registry.update(_translate_registry(registry_env.values, registry_env.origins))
    origins.update(kafka_env.origins | registry_env.origins)
    _inherit_sasl(kafka, registry, origins)
    bootstrap = kafka.pop("bootstrap.servers", None) or None
    url = registry.pop("url", None) or None
    return ClientSettings(ClientProperties(kafka), ClientProperties(registry), bootstrap, url)


def _route(source: Source) -> tuple[Source, Source]:
    """Split a Java client file into Kafka properties and schema registry properties."""
    kafka = Source({}, {})
    registry = Source({}, {})
    for key, value in source.values.items():
        where = source.origins[key]
        if key.startswith(_REGISTRY_PREFIX):
            name = key[len(_REGISTRY_PREFIX) :]
            if name in registry.values:
                raise ConfigError(f"{where}: {name} is given twice for the schema registry")
            registry.values[name], registry.origins[name] = value, where
        elif key.startswith(_REGISTRY_KEYS):
            if key in registry.values:
                raise ConfigError(f"{where}: {key} is given twice for the schema registry")
            registry.values[key], registry.origins[key] = value, where
        else:
            kafka.values[key], kafka.origins[key] = value, where
    return kafka, registry


def _translate(values: Mapping[str, str], origins: Mapping[str, str]) -> dict[str, str]:
    """Java client keys into librdkafka's; refuse what the engine controls or cannot map."""
    out: dict[str, str] = {}
    for key, value in values.items():
        where = origins.get(key, key)
        if key in ENGINE_CONTROLLED:
            raise ConfigError(
                f"{where}: {key} is set by streamalloc itself ({ENGINE_CONTROLLED[key]}); remove it"
            )
        if key in _JAVA_ONLY:
            raise ConfigError(f"{where}: {key} is a Java client setting: {_JAVA_ONLY[key]}")
        if key.endswith("_cb") or key == "logger":
            raise ConfigError(f"{where}: {key} is a callback; it cannot be set from text")
        if key == "sasl.jaas.config":
            out.update(_from_jaas(value, where))
        elif key == "ssl.keystore.type":
            # librdkafka knows the type from the keys used: PKCS12 at ssl.keystore.location, PEM
            # at ssl.certificate.location and ssl.key.location (or ssl.*.pem): nothing to carry
            if value.upper() not in ("PKCS12", "PEM"):
                raise ConfigError(
                    f"{where}: librdkafka reads PKCS12 or PEM keystores, not {value or 'an empty type'}: "
                    "convert it with keytool -importkeystore -deststoretype PKCS12"
                )
        elif key == "ssl.truststore.type":
            raise ConfigError(f"{where}: ssl.truststore.type is a Java client setting: {_TRUSTSTORE_ADVICE}")
        elif key == "ssl.endpoint.identification.algorithm" and not value:
            out[key] = "none"  # Java turns hostname checks off with an empty value, librdkafka with none
        else:
            out[_RENAMED.get(key, key)] = value
    both = {"sasl.username", "sasl.password"} & set(values)
    if "sasl.jaas.config" in values and both:
        where = origins.get("sasl.jaas.config", "sasl.jaas.config")
        raise ConfigError(f"{where}: sasl.jaas.config and {', '.join(sorted(both))} are both given; keep one")
    return out


def _translate_registry(values: Mapping[str, str], origins: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        where = origins.get(key, key)
        if key.startswith("ssl.truststore."):
            raise ConfigError(f"{where}: {key} is a Java client setting: {_TRUSTSTORE_ADVICE}")
        if key == "basic.auth.credentials.source":
            source = value.upper()
            if source not in ("USER_INFO", "URL", "SASL_INHERIT"):
                raise ConfigError(
                    f"{where}: basic.auth.credentials.source must be USER_INFO, URL or SASL_INHERIT"
                )
            if source == "SASL_INHERIT":
                out[key] = source  # resolved once the Kafka credentials are known
            # USER_INFO and URL: the Python client takes credentials from where they are given
            continue
        out[key] = value
    return out


def _inherit_sasl(kafka: Mapping[str, str], registry: dict[str, str], origins: Mapping[str, str]) -> None:
    """basic.auth.credentials.source=SASL_INHERIT: the registry logs in as the Kafka client does."""
    if registry.pop("basic.auth.credentials.source", None) != "SASL_INHERIT":
        return
    user, password = kafka.get("sasl.username"), kafka.get("sasl.password")
    if not user or not password:
        where = origins.get("basic.auth.credentials.source", "basic.auth.credentials.source")
        raise ConfigError(
            f"{where}: SASL_INHERIT needs sasl.username and sasl.password (or sasl.jaas.config)"
        )
    registry["basic.auth.user.info"] = f"{user}:{password}"


_JAAS_OPTION = re.compile(r'([A-Za-z_][\w.]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s;"]+))')


def _from_jaas(text: str, where: str) -> dict[str, str]:
    """The username and password of a PLAIN or SCRAM JAAS line; anything else is refused.

    Messages name the login module, never an option's value.
    """
    match = re.match(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b(.*?);?\s*$", text, re.S)
    if match is None:
        raise ConfigError(f"{where}: sasl.jaas.config is not '<LoginModule> required key=\"value\" ...;'")
    module, rest = match.group(1), match.group(3)
    if module in _JAAS_ADVICE:
        raise ConfigError(
            f"{where}: sasl.jaas.config with {module.rsplit('.', 1)[-1]}: {_JAAS_ADVICE[module]}"
        )
    if module not in _JAAS_MODULES:
        raise ConfigError(
            f"{where}: sasl.jaas.config with {module} has no librdkafka equivalent; "
            "PlainLoginModule and ScramLoginModule map to sasl.username and sasl.password"
        )
    options = {m.group(1): _jaas_value(m.group(2), m.group(3)) for m in _JAAS_OPTION.finditer(rest)}
    if not options.get("username") or "password" not in options:
        raise ConfigError(
            f"{where}: sasl.jaas.config with {module.rsplit('.', 1)[-1]} needs username= and password="
        )
    return {"sasl.username": options["username"], "sasl.password": options["password"]}


def _jaas_value(quoted: str | None, bare: str | None) -> str:
    if quoted is None:
        return bare or ""
    return re.sub(r"\\(.)", r"\1", quoted)

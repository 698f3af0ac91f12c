"""One frozen, typed configuration object, built once at the edge (CLI or environment).

Defaults live here and nowhere else. No other module reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from streamalloc.client_properties import (
    KAFKA_ENV_PREFIX,
    REDACTED,
    REGISTRY_ENV_PREFIX,
    ClientProperties,
    combine,
    environment_source,
    read_properties_file,
    url_password,
)
from streamalloc.errors import ConfigError

if TYPE_CHECKING:
    from streamalloc.domain.replenishment import ReplenishmentPolicy

BrokerProfile = Literal["auto", "embedded", "kafka"]

ENV_PREFIX = "STREAMALLOC_"
# Mappings built from many variables (STREAMALLOC_KAFKA_<PROPERTY>...), not from one.
_NOT_FROM_ONE_VARIABLE = frozenset({"kafka_properties", "schema_registry_properties"})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a streamalloc process needs to know, with production-minded defaults."""

    #: Kafka bootstrap servers; None means "start the embedded broker".
    bootstrap: str | None = None
    #: Which client timeouts to use: the embedded Tansu broker needs short group timeouts
    #: (a join takes max(1 s, session.timeout.ms / 2) there), real Kafka keeps safe ones.
    #: "auto" asks the cluster at connect time (Tansu reports cluster id "tansu_cluster").
    broker_profile: BrokerProfile = "auto"
    topic_prefix: str = "streamalloc."
    partitions: int = 4
    replication_factor: int = 1
    schema_registry_url: str | None = None
    #: Extra librdkafka properties for every Kafka client (security, TLS, tuning), from
    #: --kafka-config and STREAMALLOC_KAFKA_<PROPERTY>; never those the engine controls.
    kafka_properties: ClientProperties = field(default_factory=ClientProperties)
    #: Schema registry client properties (basic.auth.user.info, ssl.ca.location, ...).
    schema_registry_properties: ClientProperties = field(default_factory=ClientProperties)
    #: Application id: the consumer group and the prefix of changelog topics (`<app>-<store>-changelog`).
    app_id: str = "streamalloc"
    state_dir: Path = field(default_factory=lambda: Path("state"))
    #: Commit a transaction after this many records or this many milliseconds, whichever first.
    #: Every stage hop waits for its transaction, so the interval is most of a decision's
    #: latency: 30 ms halved it against Kafka Streams' 100 (p50 246 -> 120 ms at 200 lines/s)
    #: without a measurable cost in throughput (bench runtime and bench engine, 2026-11-25).
    commit_every: int = 10_000
    commit_interval_ms: int = 30
    #: A batch also commits as soon as the worker has drained its input (the poll took all
    #: that was fetched and every ready task processed it), once this long has passed since
    #: the previous commit ended: under light load a hop then waits for one commit rather
    #: than for the interval too, and the gap bounds the transaction rate (group commit:
    #: what arrives during a commit goes into the next). In a backlog the poll never drains
    #: and the interval decides. None: the profile's (`drained_commit_gap_ms`); at
    #: `commit_interval_ms` or more only the interval decides.
    commit_min_gap_ms: int | None = None
    #: Upper bound on records taken in one poll.
    poll_batch: int = 5_000
    #: How long a task with several inputs waits for a lagging one (Kafka Streams' max.task.idle.ms).
    max_task_idle_ms: int = 200
    #: Pause fetching an input partition while its task holds more records of it than this,
    #: waiting to be processed (Kafka Streams' buffered.records.per.partition); resume at half.
    #: It bounds what a task that waits for another input buffers, and how much of one
    #: topic's backlog the consumer's queue holds in front of the others'.
    buffered_records_per_partition: int = 10_000
    #: How often a stage that punctuates (reservation expiry, reacting to the `locations`
    #: table) does so per partition, for stages that take their interval from the settings.
    #: The worker runs each stage at the stage's own `punctuate_interval_ms`.
    punctuate_interval_ms: int = 250
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    log_level: str = "WARNING"
    #: The HTTP address other workers and the CLI reach this worker at (Kafka Streams'
    #: `application.server`); none: http://<http_host>:<bound port>. Advertised in the
    #: group consumer's client.id (docs/architecture.md, Queries).
    advertised_url: str | None = None
    #: A worker asked about a SKU another worker owns forwards the query to the owner;
    #: off: it answers 421 with the owner's address instead.
    query_forwarding: bool = True
    #: Warm copies each store partition has on workers that do not own it, kept by
    #: tailing its changelog (Kafka Streams' num.standby.replicas): a failover restores
    #: only the tail (docs/architecture.md, Standby replicas).
    num_standby_replicas: int = 0
    #: Replenishment (`streamalloc replenishment`, `streamalloc replay --replenish`): the
    #: half-life of the demand rate, the lead time of a transfer to a location (and the
    #: locations' own, below), the safety cover kept on top of it (seconds), and how long
    #: a recommendation that says the same (sku, from, to, qty) again is not repeated
    #: (docs/architecture.md, Replenishment).
    replenish_half_life_s: int = 7 * 86_400
    replenish_lead_time_s: int = 2 * 86_400
    #: Lead times of transfers to particular locations, overriding `replenish_lead_time_s`:
    #: "location=seconds" entries separated by commas, e.g. "STORE-1=259200,WH-2=86400".
    replenish_lead_times: str = ""
    replenish_safety_cover_s: int = 86_400
    replenish_dedup_window_ms: int = 3_600_000

    def __post_init__(self) -> None:
        # Plain dicts are accepted for convenience; what is kept is immutable and redacts itself.
        for name in ("kafka_properties", "schema_registry_properties"):
            value = getattr(self, name)
            if not isinstance(value, ClientProperties):
                object.__setattr__(self, name, ClientProperties(value))

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            password = url_password(value) if f.name == "schema_registry_url" else None
            if password:
                value = value.replace(f":{password}@", f":{REDACTED}@", 1)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def secrets(self) -> list[str]:
        """Every secret value these settings hold, for redaction wherever text is printed."""
        found = [*self.kafka_properties.secrets(), *self.schema_registry_properties.secrets()]
        password = url_password(self.schema_registry_url)
        return [*found, password] if password else found

    def topic(self, name: str) -> str:
        """Full topic name for a contract name, e.g. ``orders`` -> ``streamalloc.orders``."""
        return f"{self.topic_prefix}{name}"

    def changelog_topic(self, store: str) -> str:
        """Kafka Streams naming: `<app>-<store>-changelog`; the app id namespaces it, not the prefix."""
        return f"{self.app_id}-{store}-changelog"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def replenishment_policy(self) -> ReplenishmentPolicy:
        """The replenishment policy these settings describe: one lead time, and the
        locations' own (`replenish_lead_times`) where given."""
        from streamalloc.domain.replenishment import ReplenishmentPolicy

        return ReplenishmentPolicy(
            half_life_s=float(self.replenish_half_life_s),
            lead_time_s=self.replenish_lead_time_s,
            safety_cover_s=self.replenish_safety_cover_s,
            lead_times=self.replenish_lead_times_by_location(),
        )

    def replenish_lead_times_by_location(self) -> dict[str, int]:
        """`replenish_lead_times` as location -> seconds; ConfigError names the entry at fault."""
        found: dict[str, int] = {}
        for entry in (part.strip() for part in self.replenish_lead_times.split(",")):
            if not entry:
                continue
            location, sep, seconds = (part.strip() for part in entry.partition("="))
            if not sep or not location or not seconds.isdigit():
                raise ConfigError(
                    f"replenish_lead_times: {entry!r} is not location=seconds (a whole number of seconds)"
                )
            if location in found:
                raise ConfigError(f"replenish_lead_times: location {location!r} is given twice")
            found[location] = int(seconds)
        return found

    def group_timeouts(self) -> dict[str, int]:
        """Consumer-group timeouts for the broker profile (docs/brokers.md, Client settings)."""
        if self.broker_profile == "embedded":
            return {
                "session.timeout.ms": 3_000,
                "heartbeat.interval.ms": 500,
                "max.poll.interval.ms": 60_000,
            }
        return {
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 300_000,
        }

    @property
    def drained_commit_gap_ms(self) -> int | None:
        """`commit_min_gap_ms`, or the profile's: 10 on Kafka, none on the embedded broker.

        Measured at 1,000 lines/s (bench engine --rate 1000, runs interleaved, 2026-12-03;
        docs/performance.md, "Commit when drained"): on Kafka 4.1.1 a 10 ms gap took the p50
        down by a fifth to a third (90 / 103 -> 70 / 67 ms) for up to a fifth more worker CPU
        at that rate, and left the
        p99 as it was; a 200,000-line backlog was not slower. On the embedded broker, whose
        commits cost more, the p50 rose (181 -> 301 and 208 -> 232 ms).
        None: batches commit on `commit_interval_ms` and `commit_every` alone.
        """
        gap = self.commit_min_gap_ms
        if gap is None:
            gap = 10 if self.broker_profile == "kafka" else None
        return gap if gap is not None and gap < self.commit_interval_ms else None

    @property
    def tags_outputs(self) -> bool:
        """Whether a worker's outputs carry the `batch` header (runtime/lineage.py): on the
        embedded broker, whose leaked batches the order stage and the audit must tell apart
        (docs/exactly-once.md, guard 2); not on Kafka, where a read_committed reader never
        sees one. The header costs about 1-1.5 us of each produce call (2.7-3.1 against
        1.5-1.9 us, confluent-kafka 2.16, 50,000 records, 2026-12-04), for about a million
        outputs in `bench engine`'s 200,000 lines."""
        return self.broker_profile != "kafka"

    @property
    def fetch_wait_max_ms(self) -> int:
        """How long a fetch waits for data at the broker (docs/brokers.md, Client settings).

        Kafka answers a waiting fetch as soon as data arrives, so this only bounds the fetch
        rate of an idle consumer. The embedded broker answers at the end of the wait, so
        there it is a floor on every hop's latency (measured: 26 ms median at 50, 1.7 ms at 10).
        """
        return 10 if self.broker_profile == "embedded" else 100

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, kafka_config: Path | None = None, **overrides: Any
    ) -> Settings:
        """Settings from explicit overrides (None means unset), then ``STREAMALLOC_*`` variables,
        then the Kafka client properties file, then defaults.

        The file is `kafka_config`, else ``STREAMALLOC_KAFKA_CONFIG``; ``STREAMALLOC_KAFKA_<PROPERTY>``
        and ``STREAMALLOC_SCHEMA_REGISTRY_<PROPERTY>`` variables override its properties. Its
        ``bootstrap.servers`` and ``schema.registry.url`` apply when no option or variable names them.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in _NOT_FROM_ONE_VARIABLE:
                continue
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, raw, f.type)
        path = kafka_config or (
            Path(env["STREAMALLOC_KAFKA_CONFIG"]) if env.get("STREAMALLOC_KAFKA_CONFIG") else None
        )
        client = combine(
            read_properties_file(path) if path is not None else None,
            environment_source(env, KAFKA_ENV_PREFIX),
            environment_source(env, REGISTRY_ENV_PREFIX),
        )
        values["kafka_properties"] = client.kafka
        values["schema_registry_properties"] = client.registry
        if client.bootstrap is not None:
            values.setdefault("bootstrap", client.bootstrap)
        if client.registry_url is not None:
            values.setdefault("schema_registry_url", client.registry_url)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = cls(**values)
        except TypeError as exc:  # an unknown override name
            raise ConfigError(str(exc)) from exc
        settings.check()
        return settings

    def check(self) -> None:
        if self.broker_profile not in ("auto", "embedded", "kafka"):
            raise ConfigError(f"broker_profile must be auto, embedded or kafka, not {self.broker_profile!r}")
        for name in (
            "partitions",
            "replication_factor",
            "commit_every",
            "commit_interval_ms",
            "poll_batch",
            "punctuate_interval_ms",
            "buffered_records_per_partition",
            "replenish_half_life_s",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.commit_min_gap_ms is not None and self.commit_min_gap_ms < 0:
            raise ConfigError(f"commit_min_gap_ms must be at least 0, not {self.commit_min_gap_ms}")
        for name in (
            "replenish_lead_time_s",
            "replenish_safety_cover_s",
            "replenish_dedup_window_ms",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be at least 0, not {getattr(self, name)}")
        self.replenish_lead_times_by_location()  # refused at start, not at the first recommendation
        if self.num_standby_replicas < 0:
            raise ConfigError(f"num_standby_replicas must be at least 0, not {self.num_standby_replicas}")


def _coerce(name: str, raw: str, annotation: object) -> Any:
    text = str(annotation)
    if text == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not true or false")
    try:
        if "int" in text and "str" not in text:
            return int(raw)
        if "Path" in text:
            return Path(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a whole number") from exc
    return raw

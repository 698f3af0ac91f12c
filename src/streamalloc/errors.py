"""The project's exceptions: one root, typed subclasses, library errors mapped at the boundary."""

from __future__ import annotations


class StreamallocError(Exception):
    """Root of every error streamalloc raises on purpose."""


class ConfigError(StreamallocError):
    """A setting, CLI argument or configuration file is wrong."""


class BrokerError(StreamallocError):
    """The Kafka broker could not be started, reached or asked."""


class TopicError(StreamallocError):
    """Topics are missing or laid out against the contract (e.g. not co-partitioned)."""


class SchemaError(StreamallocError):
    """A schema cannot be loaded, registered or resolved."""


class ValidationError(StreamallocError):
    """An event does not match its topic's schema or the contract's rules."""

    def __init__(self, reason: str, *, where: str | None = None) -> None:
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)


class DeserializationError(StreamallocError):
    """A Kafka record could not be decoded; carries where it came from and the raw bytes."""

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        value: bytes | None = None,
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.value = value
        super().__init__(f"cannot decode record at {topic}[{partition}]@{offset}: {reason}")


class StateError(StreamallocError):
    """A state store was used against its protocol (closed, wrong status, corrupt checkpoint)."""


class ProcessingError(StreamallocError):
    """The stream runtime hit an error it cannot recover from in place."""

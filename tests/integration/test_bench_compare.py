"""`streamalloc bench compare` end to end on a small input: the bare loop and streamalloc.

Quix Streams is left out here only to keep the test short; it runs from the same venv.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.conftest import TestBroker

from streamalloc.bench import compare
from streamalloc.cli import main
from streamalloc.errors import StreamallocError


def test_compare_runs_the_bare_loop_and_streamalloc_on_the_same_inputs(
    kafka_broker: TestBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where each run's directory goes
    peers = compare.find_peers(Path.cwd())
    if peers is None:
        pytest.skip("no shared/peers beside the clone: the peer workload is not part of the repository")
    try:
        compare.peers_python(compare.default_peers_venv(os.environ), print)
    except StreamallocError as exc:
        pytest.skip(f"the peers' venv cannot be made here (needs PyPI): {exc}")
    messages = 12_000  # more than one poll of the counter, so the outputs have a rate
    result = CliRunner().invoke(
        main,
        ["--bootstrap", kafka_broker.bootstrap, "--broker-profile", kafka_broker.profile, "bench", "compare",
         "--messages", str(messages), "--runs", "1", "--system", "bare", "--system", "streamalloc",
         "--peers", str(peers)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for label in ("bare confluent-kafka loop", r"streamalloc \(one worker\)"):
        # every input gave exactly one committed output: a decision, for streamalloc
        assert re.search(rf"run 1: {label}: {messages:,} outputs, [\d,]+ events/s", text), text
    assert re.search(r"streamalloc / the bare loop: \d+\.\d\d", text), text
    assert "Quix" not in text
    left = sorted(p.name for p in tmp_path.glob("streamalloc-compare-*"))
    assert not left, f"finished runs left their directories behind: {left}"

"""A counting worker as its own process: `python -m streamalloc.bench.counting_worker ...`.

Crash and rebalance tests start these and kill them with real signals.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamalloc import logs
from streamalloc.bench.counting import CountingStage
from streamalloc.config import Settings
from streamalloc.runtime.dead_letter import dead_letter_encoder
from streamalloc.runtime.runner import run_until_signalled
from streamalloc.runtime.state import RocksDBStore
from streamalloc.runtime.worker import Worker
from streamalloc.serialization import dead_letter_serde

SECOND_STORE = "counts-2"  # the second stage's store, with `--then`


def build_worker(settings: Settings, input_topic: str, output_topic: str, then: str | None = None) -> Worker:
    """One counting stage, or two in a chain (input -> output -> then) in the same worker."""
    root = Path(settings.state_dir) / settings.app_id
    stages = [CountingStage(input_topic, output_topic)]
    if then is not None:
        stages.append(CountingStage(output_topic, then, store=SECOND_STORE, name="counting-2"))
    return Worker(
        settings,
        stages,
        store_factory=lambda name: RocksDBStore(name, root),
        dead_letter=dead_letter_encoder(dead_letter_serde(settings).encode),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="counting_worker")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--then", default=None, help="a second hop: count the output again into this topic")
    parser.add_argument("--broker-profile", default="auto", choices=("auto", "embedded", "kafka"))
    parser.add_argument("--commit-every", type=int, default=None)
    parser.add_argument("--commit-interval-ms", type=int, default=None)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    settings = Settings.from_env(
        {},
        bootstrap=args.bootstrap,
        topic_prefix=args.prefix,
        app_id=args.app_id,
        state_dir=args.state_dir,
        commit_every=args.commit_every,
        commit_interval_ms=args.commit_interval_ms,
        log_level=args.log_level,
        broker_profile=args.broker_profile,
    )
    logs.configure(settings.log_level)
    from streamalloc.kafka.clients import resolve_profile

    return run_until_signalled(build_worker(resolve_profile(settings), args.input, args.output, args.then))


if __name__ == "__main__":
    sys.exit(main())

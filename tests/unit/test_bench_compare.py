"""bench compare's pure parts: the order runs take and the summary's ratios."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from streamalloc.bench.compare import COUNTER_BATCH, Measured, find_peers, order, summary
from streamalloc.cli import COMPARE_MIN_MESSAGES, main


def test_runs_rotate_which_system_goes_first() -> None:
    systems = ["bare", "quix", "streamalloc"]
    firsts = [order(systems, run)[0] for run in range(3)]
    assert firsts == ["bare", "quix", "streamalloc"]
    assert all(sorted(order(systems, run)) == sorted(systems) for run in range(5))


def _m(system: str, run: int, rate: float, cpu: float) -> Measured:
    return Measured(system, run, 1000, 1000, rate, cpu, 100.0, 1.0)


def test_ratios_are_taken_run_by_run_then_the_median() -> None:
    results = [
        _m("quix", 1, 100, 10), _m("streamalloc", 1, 200, 10),
        _m("quix", 2, 100, 10), _m("streamalloc", 2, 100, 20),
        _m("quix", 3, 300, 10), _m("streamalloc", 3, 450, 5),
    ]  # fmt: skip
    s = summary(results)
    assert s["streamalloc"]["vs_quix_runs"] == [2.0, 1.0, 1.5]
    assert s["streamalloc"]["vs_quix"] == 1.5
    assert s["streamalloc"]["cpu_vs_quix"] == 1.0  # per CPU second: 1.0, 0.5, 2.0
    assert s["quix"]["rate"] == 100
    assert "vs_bare" not in s["streamalloc"]


def test_the_peers_are_found_in_a_parent_directory(tmp_path: Path) -> None:
    peers = tmp_path / "shared" / "peers"
    peers.mkdir(parents=True)
    (peers / "gen_orders.py").write_text("")
    clone = tmp_path / "wt" / "clone"
    clone.mkdir(parents=True)
    assert find_peers(clone) == peers
    assert find_peers(tmp_path / "wt") == peers
    (peers / "gen_orders.py").unlink()
    assert find_peers(clone) is None


def test_a_run_too_small_to_span_two_polls_is_refused() -> None:
    # fewer outputs than one poll of the counter can all arrive at once: no rate to time
    assert COMPARE_MIN_MESSAGES == COUNTER_BATCH + 1
    result = CliRunner().invoke(main, ["bench", "compare", "--messages", str(COUNTER_BATCH)])
    assert result.exit_code == 2
    assert "--messages" in result.output and "10001" in result.output.replace(",", "")

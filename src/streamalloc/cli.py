"""The `streamalloc` command: parses arguments, builds Settings once, and wires commands."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from streamalloc import logs
from streamalloc.config import Settings
from streamalloc.connect import kafka_available
from streamalloc.errors import StreamallocError

R = TypeVar("R")

COMPARE_MIN_MESSAGES = 10_001
"""bench compare's smallest run: more than its counter's poll (bench.compare.COUNTER_BATCH),
so the outputs span two polls and have a rate. Here so that the CLI loads without Kafka."""

console = Console(stderr=True)
out = Console()


def _say(text: str) -> None:
    console.print(f"[dim]{text}[/dim]")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "STREAMALLOC"})
@click.option(
    "--bootstrap",
    envvar="STREAMALLOC_BOOTSTRAP",
    help="Kafka bootstrap servers; none starts the embedded broker.",
)
@click.option(
    "--prefix",
    "topic_prefix",
    envvar="STREAMALLOC_TOPIC_PREFIX",
    help="Topic name prefix [streamalloc.].",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    envvar="STREAMALLOC_PARTITIONS",
    help="Partitions for new topics [4].",
)
@click.option(
    "--schema-registry",
    "schema_registry_url",
    envvar="STREAMALLOC_SCHEMA_REGISTRY_URL",
    help="Confluent schema registry URL.",
)
@click.option(
    "--app-id",
    envvar="STREAMALLOC_APP_ID",
    help="Consumer group and changelog prefix [streamalloc].",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="STREAMALLOC_STATE_DIR",
    help="Local state directory [./state].",
)
@click.option(
    "--broker-profile",
    type=click.Choice(["auto", "embedded", "kafka"]),
    envvar="STREAMALLOC_BROKER_PROFILE",
    help="Client timeouts for the broker kind [auto].",
)
@click.option(
    "--kafka-config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="STREAMALLOC_KAFKA_CONFIG",
    help="Kafka client properties file, as Kafka's tools take it (security.protocol, sasl.*, "
    "ssl.*; schema.registry.* for the registry).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    envvar="STREAMALLOC_LOG_LEVEL",
    help="Log level [WARNING].",
)
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """streamalloc: inventory allocation as an exactly-once Kafka stream processor.

    \b
    Any librdkafka property reaches every Kafka client, from --kafka-config FILE or from
    STREAMALLOC_KAFKA_<PROPERTY> (STREAMALLOC_KAFKA_SASL_USERNAME -> sasl.username); the
    schema registry client's from schema.registry.* in the file or
    STREAMALLOC_SCHEMA_REGISTRY_<PROPERTY>. Precedence: options > variables > file > defaults.
    Secret values (passwords, keys, tokens) are never printed or logged.
    """
    try:
        # Options win; every other setting (commit interval, batch size...) comes from its
        # STREAMALLOC_* variable, so a worker is tuned the same way in a shell or a container.
        settings = Settings.from_env(None, **options)
    except StreamallocError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure(settings.log_level, secrets=settings.secrets())
    ctx.obj = settings
    # SIGTERM ends a command as Ctrl-C does, so that what it started (a broker, workers,
    # services) is stopped on the way out; the worker installs its own handler (runner.py).
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _settings() -> Settings:
    value = click.get_current_context().obj
    if not isinstance(value, Settings):
        raise click.UsageError("settings were not built; call through the `streamalloc` group")
    return value


def _fail(exc: StreamallocError) -> None:
    """One line on stderr, never wrapped (logs and CI read it whole), the text taken literally."""
    console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
    sys.exit(1)


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on [a free one].")
@click.option(
    "--kafka",
    "use_kafka",
    is_flag=True,
    help="Run real Apache Kafka 4.1.1 (single-node KRaft, needs Java 17) instead of the embedded broker.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --kafka: keep the data here, across restarts [a temporary dir, removed on exit].",
)
@click.option(
    "--fetch-only",
    is_flag=True,
    help="Fetch the Kafka jars from Maven Central into the cache (once) and exit [$STREAMALLOC_KAFKA_JARS].",
)
def broker(port: int | None, use_kafka: bool, log_dir: Path | None, fetch_only: bool) -> None:
    """Run a broker until Ctrl-C or SIGTERM: the embedded Tansu broker, or Apache Kafka with --kafka."""
    from streamalloc.broker import EmbeddedBroker, KafkaBroker, default_jars_dir, fetch_jars

    if log_dir is not None and not use_kafka:
        raise click.UsageError("--log-dir needs --kafka: the embedded broker keeps its data in memory only")
    jars = default_jars_dir(os.environ)
    if fetch_only:
        try:
            if not fetch_jars(jars, environ=os.environ, say=_say):
                out.print(f"the Apache Kafka jars are already in {jars}")
        except StreamallocError as exc:
            _fail(exc)
        return
    running: EmbeddedBroker | KafkaBroker = (
        KafkaBroker(port=port, log_dir=log_dir, jars=jars, fetch=True, say=_say)
        if use_kafka
        else EmbeddedBroker(port=port)
    )
    try:
        bootstrap = running.start()
        if isinstance(running, KafkaBroker):
            kept = "kept" if log_dir is not None else "removed on exit"
            out.print(
                f"Apache Kafka (KRaft, single node) listening on [bold]{bootstrap}[/bold]; "
                f"data in {running.log_dir} ({kept}), log in {running.log_path}; Ctrl-C stops it"
            )
        else:
            out.print(
                f"embedded broker (Tansu, memory only) listening on [bold]{bootstrap}[/bold]; Ctrl-C stops it"
            )
        code = running.wait()
        _fail(StreamallocError(f"the broker exited on its own with code {code}"))
    except KeyboardInterrupt:
        out.print("stopping the broker")
    except StreamallocError as exc:
        _fail(exc)
    finally:
        running.close()


@main.group()
def topics() -> None:
    """Create or describe the contract's topics."""


@topics.command("create")
@click.option("--channel", "channels", multiple=True, help="Also create orders.<channel> (repeatable).")
def topics_create(channels: tuple[str, ...]) -> None:
    """Create every contract topic (idempotent; refuses topics that would not be co-partitioned)."""
    from streamalloc.commands.topics import ensure_topics

    try:
        with kafka_available(_settings(), _say) as settings:
            created, specs = ensure_topics(settings, channels=channels)
    except StreamallocError as exc:
        _fail(exc)
    out.print(f"created {len(created)} topic(s), {len(specs) - len(created)} already there")
    for name in created:
        out.print(f"  + {name}")


@topics.command("describe")
@click.option("--channel", "channels", multiple=True, help="Also describe orders.<channel>.")
def topics_describe(channels: tuple[str, ...]) -> None:
    """Show the contract topics: partitions and cleanup policy."""
    from streamalloc.commands.topics import describe

    try:
        with kafka_available(_settings(), _say) as settings:
            infos, missing = describe(settings, channels=channels)
    except StreamallocError as exc:
        _fail(exc)
    table = Table("topic", "partitions", "cleanup.policy")
    for info in infos:
        table.add_row(info.name, str(info.partitions), info.cleanup_policy or "delete (default)")
    for name in missing:
        table.add_row(name, "[red]missing[/red]", "")
    out.print(table)


@main.command()
@click.argument("topic")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def produce(topic: str, file: Path) -> None:
    """Send the events of a JSONL FILE to TOPIC, keyed as the contract says.

    Every line is validated against the topic's schema first; one bad line and nothing is sent.
    """
    from streamalloc.commands.io import produce_file

    try:
        with kafka_available(_settings(), _say) as settings:
            sent = produce_file(settings, topic, file)
    except StreamallocError as exc:
        _fail(exc)
    out.print(f"sent {sent} event(s) from {file} to {topic}")


@main.command()
@click.argument("topic")
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", show_default=True)
@click.option("--max", "max_records", type=click.IntRange(min=1), help="Stop after N events.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest committed event.")
@click.option("--idle-timeout", type=float, default=None, help="Stop after this many seconds without events.")
def consume(
    topic: str, fmt: str, max_records: int | None, from_beginning: bool, idle_timeout: float | None
) -> None:
    """Print TOPIC's events as JSON lines (read_committed)."""
    import json

    from streamalloc.commands.io import consume_json

    def show(event: dict[str, Any]) -> None:
        click.echo(json.dumps(event, default=_json_default, separators=(",", ":")))

    try:
        with kafka_available(_settings(), _say) as settings:
            consume_json(
                settings,
                topic,
                max_records=max_records,
                from_beginning=from_beginning,
                idle_timeout_s=idle_timeout,
                on_record=show,
            )
    except KeyboardInterrupt:
        pass
    except StreamallocError as exc:
        _fail(exc)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    raise TypeError(f"cannot show {type(value).__name__} as JSON")


@main.command()
@click.option("--http-host", default=None, help="Address for health, readiness, /metrics [127.0.0.1].")
@click.option(
    "--http-port", type=click.IntRange(0, 65535), default=None, help="Port for the HTTP API (none: off)."
)
@click.option(
    "--create-topics/--no-create-topics", default=True, show_default=True, help="Create missing topics first."
)
def worker(http_host: str | None, http_port: int | None, create_topics: bool) -> None:
    """Run every engine stage as one member of the consumer group, until SIGTERM or Ctrl-C."""
    from streamalloc.commands.topics import ensure_topics
    from streamalloc.commands.worker import run_worker

    settings = _settings()
    settings = settings.replace(
        http_host=http_host or settings.http_host,
        http_port=http_port if http_port is not None else settings.http_port,
    )
    try:
        # A broker restarting takes tens of seconds: a worker started meanwhile waits for it.
        with kafka_available(settings, _say, wait_s=120.0) as ready:
            if create_topics:
                ensure_topics(ready)
            code = run_worker(ready, say=_say)
    except StreamallocError as exc:
        _fail(exc)
    sys.exit(code)


@main.command()
@click.option(
    "--orders", type=click.IntRange(min=1), default=250, show_default=True, help="Orders per channel."
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--crash-at",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=None,
    help="Kill -9 a worker once this share of the lines is decided (e.g. 0.4), restart it, audit.",
)
def demo(orders: int, seed: int, crash_at: float | None) -> None:
    """Three channels against scarce stock, two workers, returns and cancellations; then the audit."""
    from streamalloc.commands.demo import DemoProgress, policy_rows, run_demo

    try:
        with kafka_available(_settings(), _say) as settings:
            with _counting_bar() as bar:
                task = bar.add_task("order lines decided", total=orders * 3)

                def show(p: DemoProgress) -> None:
                    bar.update(task, completed=p.lines_decided, total=max(p.lines_placed, 1))

                report = run_demo(
                    settings,
                    orders_per_channel=orders,
                    seed=seed,
                    crash_at=crash_at,
                    on_progress=show,
                    say=_say,
                )
    except StreamallocError as exc:
        _fail(exc)
    policies = Table("policy", "in this run", box=SIMPLE_HEAD, show_edge=False)
    for row in policy_rows(report):
        policies.add_row(*row)
    out.print(policies)
    out.print()
    print_audit(report)
    if not report.ok:
        sys.exit(1)


def _counting_bar(*, disable: bool = False) -> Any:
    """A transient progress bar that counts done of total (rich.progress.Progress)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=disable,
    )


@main.command()
def audit() -> None:
    """Check the engine's promises from its topics alone; exit 1 on any breach."""
    from streamalloc.commands.audit import run_audit

    try:
        with kafka_available(_settings(), _say) as settings:
            report = run_audit(settings)
    except StreamallocError as exc:
        _fail(exc)
    print_audit(report)
    if not report.ok:
        sys.exit(1)


def print_audit(report: Any) -> None:
    """The audit's summary: per channel, rejections by reason, the KPIs, then the invariants."""
    from streamalloc.kpis import kpi_rows

    columns = ("placed", "allocated", "rejected", "released", "fulfilled", "returned")
    table = Table(*(Column(c, no_wrap=True) for c in ("channel", *columns)), box=SIMPLE_HEAD, show_edge=False)
    reasons = Table("channel", "rejected because", "lines", box=SIMPLE_HEAD, show_edge=False)
    waiting = Table(
        "channel", "backordered", "partially allocated", "filled later", box=SIMPLE_HEAD, show_edge=False
    )
    for channel, stats in sorted(report.per_channel.items()):
        rejected = {k.removeprefix("rejected: "): v for k, v in stats.items() if k.startswith("rejected: ")}
        table.add_row(
            channel,
            str(stats["placed"]),
            str(stats["allocated"]),
            str(sum(rejected.values())),
            str(stats["released"]),
            str(stats["fulfilled"]),
            str(stats["returned"]),
        )
        for reason, count in sorted(rejected.items(), key=lambda item: -item[1]):
            reasons.add_row(channel, reason, str(count))
        if stats["backordered"] or stats["waitlist fills"] or stats["partially allocated"]:
            waiting.add_row(
                channel,
                str(stats["backordered"]),
                str(stats["partially allocated"]),
                str(stats["waitlist fills"]),
            )
    out.print(table)
    for extra in (reasons, waiting):
        if extra.row_count:
            out.print()
            out.print(extra)
    out.print()
    kpis = Table(
        "KPI", Column("value", justify="right", no_wrap=True), "from", box=SIMPLE_HEAD, show_edge=False
    )
    for row in kpi_rows(report.kpis):
        kpis.add_row(*row)
    out.print(kpis)
    out.print()
    decided = f"{report.lines_decided}/{report.lines_placed}"
    oversold = report.oversold_units
    out.print(f"units oversold (each location's and line's worst excess, summed): [bold]{oversold}[/bold]")
    out.print(f"order lines with exactly one first decision: {decided}")
    out.print(
        f"backorders filled later: {report.waitlist_fills}; "
        f"reallocations to another location: {report.reallocations}"
    )
    if report.holds:
        h = report.holds
        out.print(
            f"checkout holds (lines): {h['held']} held, {h['confirmed']} confirmed, "
            f"{h['expired']} expired, {h['extended']} extended"
        )
    out.print(
        f"SKUs whose final balances match their last availability record: checked {report.checked_skus}"
    )
    out.print(f"orders whose last order-status agrees with their lines: checked {report.checked_orders}")
    out.print(f"repeated events with the same id (harmless): {report.repeats}")
    if report.leaked_batches:
        out.print(
            f"left out {report.leaked_events} event(s) of {report.leaked_batches} batch(es) that never "
            "committed but that the broker showed (a crashed worker's last batch; embedded broker)"
        )
    if report.ok:
        out.print("[green]audit passed: no breach[/green]")
    else:
        out.print(f"[red]audit FAILED: {len(report.breaches)} breach(es)[/red]")
        for breach in report.breaches[:20]:
            out.print(f"  - {breach}")


@main.group()
def bench() -> None:
    """Benchmarks: they print figures (quote medians of several runs)."""


def _bench_runs(
    runs: int,
    total: int,
    unit: str,
    one: Callable[[Settings, Callable[[int], None]], R],
    describe: Callable[[R], str],
) -> list[R]:
    """Run a benchmark `runs` times with a progress bar, printing each run's figures."""
    from rich.progress import Progress, TaskID

    results: list[R] = []
    try:
        with kafka_available(_settings(), _say) as settings, Progress(console=console, transient=True) as bar:
            for run in range(runs):
                task = bar.add_task(f"run {run + 1}/{runs}: {unit}", total=total)

                def advance(done: int, task: TaskID = task) -> None:
                    bar.update(task, completed=done)

                result = one(settings, advance)
                results.append(result)
                bar.remove_task(task)
                out.print(f"run {run + 1}: {describe(result)}")
    except StreamallocError as exc:
        _fail(exc)
    return results


@bench.command("runtime")
@click.option("--records", type=click.IntRange(min=1), default=200_000, show_default=True)
@click.option("--keys", type=click.IntRange(min=1), default=1_000, show_default=True)
@click.option(
    "--rate",
    type=click.IntRange(min=1),
    default=None,
    help="Offer records/s steadily through two chained stages of one worker process and print "
    "their latency (the runtime's floor under bench engine --rate).",
)
@click.option(
    "--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat and print the median."
)
def bench_runtime(records: int, keys: int, rate: int | None, runs: int) -> None:
    """Counting stage with RocksDB, changelog and exactly-once over N records."""
    from statistics import median

    from streamalloc.bench import runtime

    if rate is not None:
        _bench_runtime_latency(records, keys, rate, runs)
        return

    def one(settings: Settings, advance: Callable[[int], None]) -> runtime.RuntimeResult:
        return runtime.run(settings, records=records, keys=keys, on_progress=advance)

    def describe(result: runtime.RuntimeResult) -> str:
        return (
            f"{result.rate_excluding_join:,.0f} records/s excluding join, "
            f"{result.rate_including_join:,.0f} including join ({result.join_seconds:.1f}s), "
            f"peak RSS {result.peak_rss_mb:.0f} MB"
        )

    results = _bench_runs(runs, records, "records", one, describe)
    table = Table("records", "keys", "records/s excl. join", "records/s incl. join", "join s", "peak RSS MB")
    table.add_row(
        f"{records:,}",
        f"{keys:,}",
        f"{median(r.rate_excluding_join for r in results):,.0f}",
        f"{median(r.rate_including_join for r in results):,.0f}",
        f"{median(r.join_seconds for r in results):.2f}",
        f"{max(r.peak_rss_mb for r in results):.0f}",
    )
    if runs > 1:
        out.print(f"median of {runs} runs:")
    out.print(table)


def _bench_runtime_latency(records: int, keys: int, rate: int, runs: int) -> None:
    from statistics import median

    from streamalloc.bench import runtime

    def one(settings: Settings, advance: Callable[[int], None]) -> runtime.LatencyResult:
        return runtime.run_latency(settings, rate=rate, records=records, keys=keys, on_progress=advance)

    def describe(result: runtime.LatencyResult) -> str:
        hops = ", ".join(
            f"{hop} {result.percentile(0.5, hop):.0f}/{result.percentile(0.99, hop):.0f}"
            for hop in runtime.HOPS
        )
        return (
            f"{result.records_per_second:,.0f} records/s through both hops, latency p50 "
            f"{result.percentile(0.5):.0f} ms p95 {result.percentile(0.95):.0f} ms p99 "
            f"{result.percentile(0.99):.0f} ms (hops p50/p99 ms: {hops}), worker CPU "
            f"{result.worker_cpu_seconds:.1f} s, peak RSS {result.peak_rss_mb:.0f} MB"
        )

    results = _bench_runs(runs, records, "records through both hops", one, describe)
    figures = runtime.latency_summary(results)
    out.print(
        f"{records:,} records offered at {rate:,}/s through two counting stages of one worker"
        + (f"; medians of {runs} runs" if runs > 1 else "")
    )
    table = Table("", "p50 ms", "p95 ms", "p99 ms", "worker CPU s")
    table.add_row(
        "input -> output",
        f"{figures['p50']:.0f}",
        f"{figures['p95']:.0f}",
        f"{figures['p99']:.0f}",
        f"{median(r.worker_cpu_seconds for r in results):.1f}",
    )
    for hop in runtime.HOPS:
        table.add_row(hop, f"{figures[f'{hop} p50']:.0f}", "", f"{figures[f'{hop} p99']:.0f}", "")
    out.print(table)


@bench.command("stages")
@click.option("--lines", type=click.IntRange(min=1), default=100_000, show_default=True, help="Order lines.")
@click.option("--skus", type=click.IntRange(min=1), default=1_000, show_default=True)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1_000,
    show_default=True,
    help="Orders per round (each stage commits once per partition per round).",
)
@click.option(
    "--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Repeat and print the median."
)
def bench_stages(lines: int, skus: int, batch: int, runs: int) -> None:
    """CPU per order line of intake, allocator and order stage in this process, no broker.

    The order stage keeps each order's history unless --broker-profile is kafka."""
    from statistics import median

    from rich.progress import Progress

    from streamalloc.bench import stages

    settings = _settings()
    results: list[stages.StagesResult] = []
    try:
        with Progress(console=console, transient=True) as bar:
            for run in range(runs):
                task = bar.add_task(f"run {run + 1}/{runs}: lines", total=lines)
                result = stages.run(
                    settings,
                    lines=lines,
                    skus=skus,
                    batch_orders=batch,
                    on_progress=lambda done, task=task: bar.update(task, completed=done),  # type: ignore[misc]
                )
                bar.remove_task(task)
                results.append(result)
                per_stage = ", ".join(f"{name} {result.us_per_line(name):.1f}" for name in stages.STAGES)
                out.print(
                    f"run {run + 1}: {result.total_us_per_line:.1f} µs CPU per line ({per_stage}, "
                    f"store flushes {result.flush_seconds / lines * 1e6:.1f}); "
                    f"{result.lines_per_cpu_second:,.0f} lines per CPU second"
                )
    except StreamallocError as exc:
        _fail(exc)
    profile = (
        "kafka (no order history)" if settings.broker_profile == "kafka" else "embedded (order history kept)"
    )
    table = Table(
        "lines",
        "orders per round",
        "profile",
        *(f"{name} µs/line" for name in stages.STAGES),
        "total µs/line",
    )
    table.add_row(
        f"{lines:,}",
        f"{batch:,}",
        profile,
        *(f"{median(r.us_per_line(name) for r in results):.1f}" for name in stages.STAGES),
        f"{median(r.total_us_per_line for r in results):.1f}",
    )
    if runs > 1:
        out.print(f"median of {runs} runs:")
    out.print(table)


@bench.command("engine")
@click.option("--lines", type=click.IntRange(min=1), default=200_000, show_default=True, help="Order lines.")
@click.option("--skus", type=click.IntRange(min=1), default=1_000, show_default=True)
@click.option(
    "--rate", type=click.IntRange(min=1), default=None, help="Offer lines/s steadily (latency mode)."
)
@click.option(
    "--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat and print the median."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes; above 1 each run measures one worker too, and the scaling is printed.",
)
def bench_engine(lines: int, skus: int, rate: int | None, runs: int, workers: int) -> None:
    """Order lines through intake, allocator and order stage with exactly-once."""
    from statistics import median

    from streamalloc.bench import engine

    counts = (1, workers) if workers > 1 else (1,)

    def one(settings: Settings, advance: Callable[[int], None]) -> list[engine.EngineResult]:
        if workers > settings.partitions:
            raise StreamallocError(
                f"--workers {workers} is more than the {settings.partitions} partitions of each topic "
                "(--partitions): the extra workers would own nothing"
            )
        return [
            engine.run(
                settings,
                lines=lines,
                skus=skus,
                rate=rate,
                on_progress=advance,
                workers=n,
                after_join=workers > 1,
            )
            for n in counts
        ]

    def describe_one(result: engine.EngineResult) -> str:
        latency = (
            f", latency p50 {result.percentile(0.5):.0f} ms p95 {result.percentile(0.95):.0f} ms "
            f"p99 {result.percentile(0.99):.0f} ms"
            if rate
            else ""
        )
        hops = (
            "; hops p50/p99 ms: "
            + ", ".join(
                f"{hop} {result.hop_percentile(hop, 0.5):.0f}/{result.hop_percentile(hop, 0.99):.0f}"
                for hop in engine.HOPS
            )
            if rate
            else ""
        )
        who = "worker" if result.workers == 1 else f"{result.workers} workers"
        return (
            f"{result.lines_per_second:,.0f} lines/s excluding join "
            f"({result.join_seconds:.1f}s join), {result.settled_lines_per_second:,.0f} lines/s until "
            f"every order had its status{latency}, {who} peak RSS {result.peak_rss_mb:.0f} MB, "
            f"CPU {result.workers_cpu_seconds:.1f} s{hops}"
        )

    def describe(results: list[engine.EngineResult]) -> str:
        if len(results) == 1:
            return describe_one(results[0])
        return "; ".join(f"{r.workers} worker(s): {describe_one(r)}" for r in results)

    measured = _bench_runs(runs, lines, "lines decided", one, describe)
    latency = ("p50 ms", "p95 ms", "p99 ms") if rate else ()
    table = Table("workers", "lines/s excl. join", "with order status", *latency, "join s")
    resources = Table("workers", "peak RSS MB each", "in all", "CPU s workers", "broker", "this process")
    summaries = {}
    for index, n in enumerate(counts):
        results = [run[index] for run in measured]
        s = summaries[n] = engine.summary(results)
        table.add_row(
            str(n),
            f"{s['lines_per_second']:,.0f}",
            f"{s['settled_lines_per_second']:,.0f}",
            *(f"{s[k]:.0f}" for k in ("p50_ms", "p95_ms", "p99_ms") if rate),
            f"{s['join_seconds']:.1f}",
        )
        broker = [r.broker_cpu_seconds for r in results if r.broker_cpu_seconds is not None]
        resources.add_row(
            str(n),
            f"{s['peak_rss_mb']:.0f}",
            f"{s['total_rss_mb']:.0f}",
            f"{s['workers_cpu_seconds']:.1f}",
            f"{median(broker):.1f}" if broker else "elsewhere",
            f"{s['bench_cpu_seconds']:.1f}",
        )
    out.print(
        f"{lines:,} lines, "
        + (f"offered at {rate:,} lines/s" if rate else "all produced first")
        + (f"; medians of {runs} runs" if runs > 1 else "")
    )
    out.print(table)
    out.print(resources)
    if workers > 1:
        one_worker, many = summaries[1], summaries[workers]
        out.print(
            f"scaling, {workers} workers against one (medians, runs interleaved): "
            f"{many['lines_per_second'] / one_worker['lines_per_second']:.2f}x decided, "
            f"{many['settled_lines_per_second'] / one_worker['settled_lines_per_second']:.2f}x with order "
            f"status; on {os.cpu_count()} CPU(s) shared with the broker and this process"
        )
    if rate:
        s = summaries[counts[-1]]
        hops = Table("hop (order event -> committed decision)", "p50 ms", "p99 ms")
        for hop in engine.HOPS:
            hops.add_row(hop, f"{s[f'{hop} p50_ms']:.0f}", f"{s[f'{hop} p99_ms']:.0f}")
        out.print(hops)


@bench.command("compare")
@click.option(
    "--messages",
    type=click.IntRange(min=COMPARE_MIN_MESSAGES),
    default=200_000,
    show_default=True,
    help="Inputs per run; the rate is timed from the first poll of outputs to the last, "
    "and one poll takes up to 10,000, so at least 10,001.",
)
@click.option("--skus", type=click.IntRange(min=1), default=1_000, show_default=True)
@click.option(
    "--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Interleaved runs; medians."
)
@click.option(
    "--system",
    "systems",
    multiple=True,
    type=click.Choice(["bare", "quix", "streamalloc"]),
    help="Only these (repeatable) [bare, quix, streamalloc].",
)
@click.option(
    "--kafka",
    "use_kafka",
    is_flag=True,
    help="A fresh Apache Kafka 4.1.1 per measurement instead of a fresh embedded broker.",
)
@click.option(
    "--peers",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    envvar="STREAMALLOC_BENCH_PEERS",
    help="The peer workload's scripts [shared/peers in this directory or a parent].",
)
@click.option(
    "--peers-venv",
    type=click.Path(file_okay=False, path_type=Path),
    help="The peers' own venv, made on first use [~/.cache/streamalloc/quix-venv].",
)
def bench_compare(
    messages: int,
    skus: int,
    runs: int,
    systems: tuple[str, ...],
    use_kafka: bool,
    peers: Path | None,
    peers_venv: Path | None,
) -> None:
    """The peer workload on a bare confluent-kafka loop, Quix Streams and streamalloc, side by side.

    Each measurement gets a fresh broker (with --bootstrap: that cluster, new topics each
    time); runs interleave the systems. Rates are committed outputs per second, from the
    first to the last.
    """
    from contextlib import contextmanager

    from streamalloc.bench import compare
    from streamalloc.broker import KafkaBroker

    settings = _settings()
    if use_kafka and settings.bootstrap:
        raise click.UsageError("--kafka starts a broker per run; it does not go with --bootstrap")
    peers = peers or compare.find_peers(Path.cwd())
    if peers is None:
        raise click.UsageError("no shared/peers directory here or above: give --peers DIR")
    chosen = [s for s in compare.SYSTEMS if s in systems] if systems else list(compare.SYSTEMS)

    @contextmanager
    def fresh_broker() -> Iterator[Settings]:
        if use_kafka:
            with KafkaBroker(fetch=True, say=_say) as bootstrap:
                yield settings.replace(bootstrap=bootstrap, broker_profile="kafka")
        else:
            with kafka_available(settings, lambda _: None) as ready:
                yield ready

    def show(m: compare.Measured) -> None:
        out.print(
            f"run {m.run}: {compare.LABELS[m.system]}: {m.outputs:,} outputs, "
            f"{m.outputs_per_second:,.0f} events/s, {m.cpu_seconds:.1f} CPU s, "
            f"peak RSS {m.peak_rss_mb:.0f} MB (load {m.load:.1f})"
        )

    try:
        python = compare.peers_python(peers_venv or compare.default_peers_venv(os.environ), _say)
        results = compare.run(
            fresh_broker, peers=peers, python=python, systems=chosen, runs=runs, messages=messages,
            skus=skus, on_result=show, say=_say,
        )  # fmt: skip
    except StreamallocError as exc:
        _fail(exc)
    s = compare.summary(results)
    table = Table(
        "system", "events/s (median)", "runs", "CPU s", "peak RSS MB", title=f"{messages:,} messages"
    )
    for system, row in s.items():
        table.add_row(
            compare.LABELS[system],
            f"{row['rate']:,.0f}",
            " / ".join(f"{r:,.0f}" for r in row["rates"]),
            f"{row['cpu_seconds']:.1f}",
            f"{row['peak_rss_mb']:.0f}",
        )
    out.print(table)
    for peer, name in (("quix", "Quix Streams"), ("bare", "the bare loop")):
        ratios = s.get("streamalloc", {}).get(f"vs_{peer}_runs")
        if ratios:
            runs_text = ", ".join(f"{r:.2f}" for r in ratios)
            mine = s["streamalloc"]
            out.print(
                f"streamalloc / {name}: [bold]{mine[f'vs_{peer}']:.2f}[/bold] (runs {runs_text}); "
                f"messages per CPU second: {mine[f'cpu_vs_{peer}']:.2f}"
            )


@bench.command("services")
@click.option("--availability", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Availability records channel-sync drains.")  # fmt: skip
@click.option("--allocations", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Allocation events routing drains.")  # fmt: skip
@click.option("--lines", type=click.IntRange(min=2), default=20_000, show_default=True,
              help="Order lines fed for the latency.")  # fmt: skip
@click.option("--rate", type=click.IntRange(min=1), default=1_000, show_default=True, help="Lines/s fed.")
@click.option("--skus", type=click.IntRange(min=1), default=1_000, show_default=True)
@click.option("--window-ms", type=click.IntRange(min=0), default=1_000, show_default=True,
              help="channel-sync's push window.")  # fmt: skip
@click.option(
    "--runs", type=click.IntRange(min=1), default=1, show_default=True, help="Repeat and print the median."
)
def bench_services(
    availability: int, allocations: int, lines: int, rate: int, skus: int, window_ms: int, runs: int
) -> None:
    """channel-sync and routing throughput (a backlog drained by one process each), and the
    latency from an order event to channel web's webhook at a steady rate of lines."""
    from statistics import median

    from streamalloc.bench import services

    # SIGTERM unwinds like Ctrl-C, so the bench stops what it started (by pid) on the way out
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    def one(settings: Settings, advance: Callable[[int], None]) -> services.ServicesResult:
        return services.run(
            settings, availability=availability, allocations=allocations, lines=lines, rate=rate,
            skus=skus, window_ms=window_ms, on_progress=advance,
        )  # fmt: skip

    def describe(r: services.ServicesResult) -> str:
        s, t, lat = r.channel_sync, r.routing, r.latency
        return (
            f"channel-sync {s.records_per_second:,.0f} availability records/s in, "
            f"{s.outputs_per_second:,.0f} pushes/s out; "
            f"routing {t.records_per_second:,.0f} allocations/s in, "
            f"{t.outputs_per_second:,.0f} requests/s out; order -> webhook at {rate:,} lines/s "
            f"p50 {lat.percentile(0.5):.0f} ms p95 {lat.percentile(0.95):.0f} ms "
            f"p99 {lat.percentile(0.99):.0f} ms ({len(lat.latencies_ms):,} POSTs; the engine's part: "
            f"p50 {lat.percentile(0.5, 'engine'):.0f} ms p99 {lat.percentile(0.99, 'engine'):.0f} ms; "
            f"push to receipt: p50 {lat.percentile(0.5, 'webhook'):.0f} ms "
            f"p99 {lat.percentile(0.99, 'webhook'):.0f} ms)"
        )

    results = _bench_runs(runs, availability + allocations + lines, "records, events, lines", one, describe)
    table = Table("figure", "value", box=SIMPLE_HEAD)
    rows = [
        (
            "channel-sync availability records in/s",
            median(r.channel_sync.records_per_second for r in results),
        ),
        ("channel-sync pushes out/s", median(r.channel_sync.outputs_per_second for r in results)),
        ("routing allocations in/s", median(r.routing.records_per_second for r in results)),
        ("routing requests out/s", median(r.routing.outputs_per_second for r in results)),
        (f"order -> webhook p50 ms at {rate:,} lines/s", median(r.latency.percentile(0.5) for r in results)),
        (f"order -> webhook p95 ms at {rate:,} lines/s", median(r.latency.percentile(0.95) for r in results)),
        (f"order -> webhook p99 ms at {rate:,} lines/s", median(r.latency.percentile(0.99) for r in results)),
        (
            "of which order -> availability p50 ms",
            median(r.latency.percentile(0.5, "engine") for r in results),
        ),
        (
            "of which order -> availability p99 ms",
            median(r.latency.percentile(0.99, "engine") for r in results),
        ),
        (
            "of which push -> webhook receipt p50 ms",
            median(r.latency.percentile(0.5, "webhook") for r in results),
        ),
        (
            "of which push -> webhook receipt p99 ms",
            median(r.latency.percentile(0.99, "webhook") for r in results),
        ),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,.0f}")
    if runs > 1:
        out.print(f"median of {runs} runs:")
    out.print(f"window {window_ms} ms, {skus:,} SKUs; {lines:,} lines for the latency")
    out.print(table)


_JSONL = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.command()
@click.option(
    "--policy",
    multiple=True,
    type=_JSONL,
    help="Location and channel records to try, JSONL; each replaces the baseline's record with its id.",
)
@click.option(
    "--replenish",
    is_flag=True,
    help="In the what-if, ship the transfers replenishment recommends (received after the lead time; "
    "STREAMALLOC_REPLENISH_* settings) and show the stockout rate without and with them.",
)
@click.option("--orders", multiple=True, type=_JSONL, help="Order events, JSONL [the orders* topics].")
@click.option("--inventory", multiple=True, type=_JSONL, help="Inventory events, JSONL [the inventory topic]")
@click.option(
    "--baseline",
    multiple=True,
    type=_JSONL,
    help="Location, channel and kit records, JSONL [the locations, channels and kits topics].",
)
@click.option(
    "--examples", type=click.IntRange(min=0), default=10, show_default=True, help="Changed orders to list."
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def replay(
    policy: tuple[Path, ...],
    orders: tuple[Path, ...],
    inventory: tuple[Path, ...],
    baseline: tuple[Path, ...],
    examples: int,
    as_json: bool,
    replenish: bool,
) -> None:
    """What-if: replay recorded orders and inventory under the baseline tables and under
    --policy (and/or with --replenish), offline, and show how allocation would have
    differed per channel.

    Every option repeats; an input given no file is read from its topic to the end
    (needs --bootstrap). Events run in occurred_at order, inventory first on a tie.
    """
    import json
    from contextlib import nullcontext

    from streamalloc.commands.replay import load_inputs, needs_topics, replay_json, replay_report
    from streamalloc.errors import ConfigError
    from streamalloc.replay import compare

    settings = _settings()
    if not policy and not replenish:
        raise click.UsageError("give --policy, --replenish or both: there is no what-if otherwise")
    try:
        if needs_topics(orders, inventory, baseline) and not settings.bootstrap:
            raise ConfigError(
                "reading the topics needs a cluster: pass --bootstrap (or set STREAMALLOC_BOOTSTRAP), "
                "or give --orders, --inventory and --baseline files"
            )
        reach = kafka_available(settings, _say) if settings.bootstrap else nullcontext(settings)
        with reach as ready:
            inputs = load_inputs(
                ready, orders=orders, inventory=inventory, baseline=baseline, policy=policy, say=_say
            )
        steps = inputs.steps
        with _counting_bar(disable=len(steps) < 20_000) as bar:
            task = bar.add_task("events replayed (baseline, then what-if)", total=2 * len(steps))
            comparison = compare(
                steps,
                inputs.baseline.tables(),
                inputs.baseline.overlay(inputs.policy).tables(),
                on_progress=lambda done: bar.update(task, completed=done),
                replenish=settings.replenishment_policy() if replenish else None,
            )
    except StreamallocError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(replay_json(inputs, comparison, examples), indent=2))
        return
    for number, part in enumerate(replay_report(inputs, comparison, examples)):
        if number > 1:
            out.print()
        out.print(part)


@main.command("availability")
@click.argument("sku")
@click.option("--channel", default=None, help="Only this channel's ATS.")
@click.option("--url", default=None, help="A worker's HTTP address [the owner, found from the group].")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def availability_command(sku: str, channel: str | None, url: str | None, as_json: bool) -> None:
    """A SKU's availability now, answered by the worker that owns it (any worker forwards)."""
    import json

    from streamalloc.commands.availability import query_availability

    try:
        answer = query_availability(_settings(), sku, channel, url)
    except StreamallocError as exc:
        _fail(exc)
        return
    body = answer.body
    if as_json:
        out.print_json(json.dumps(body))
        return
    totals = body["totals"]
    out.print(
        f"[bold]{escape(body['sku'])}[/bold] as of {body['as_of']} "
        f"(partition {body['partition']}, served by {escape(body['served_by'])})"
    )
    locations = Table(
        "location", "status", "on hand", "allocated", "picked", "available", "incoming", box=SIMPLE_HEAD
    )
    for row in body["locations"]:
        locations.add_row(
            escape(row["location"]),
            row["status"],
            *(str(row[k]) for k in ("on_hand", "allocated", "picked", "available", "incoming")),
        )
    locations.add_row(
        "total", "", *(str(totals[k]) for k in ("on_hand", "allocated", "picked", "available", "incoming"))
    )
    out.print(locations)
    channels = Table("channel", "ATS", box=SIMPLE_HEAD)
    for row in body["channels"]:
        channels.add_row(escape(row["channel"]), str(row["ats"]))
    out.print(channels)


@bench.command("restore")
@click.option("--keys", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option(
    "--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Repeat and print the median."
)
def bench_restore(keys: int, runs: int) -> None:
    """Restore one store partition of N keys from its changelog into an empty RocksDB store."""
    from statistics import median

    from streamalloc.bench import restore

    def one(settings: Settings, advance: Callable[[int], None]) -> restore.RestoreResult:
        return restore.run(settings, keys=keys, on_progress=advance)

    def describe(result: restore.RestoreResult) -> str:
        return (
            f"restored {result.restored:,} records in {result.restore_seconds:.2f}s "
            f"({result.records_per_second:,.0f}/s, {result.cpu_seconds:.2f}s CPU)"
        )

    results = _bench_runs(runs, keys, "changelog records written", one, describe)
    table = Table("keys", "restore s (median)", "min-max s", "records/s", "CPU s")
    seconds = [r.restore_seconds for r in results]
    table.add_row(
        f"{keys:,}",
        f"{median(seconds):.2f}",
        f"{min(seconds):.2f}-{max(seconds):.2f}",
        f"{median(r.records_per_second for r in results):,.0f}",
        f"{median(r.cpu_seconds for r in results):.2f}",
    )
    if runs > 1:
        out.print(f"median of {runs} runs:")
    out.print(table)


@bench.command("failover")
@click.option("--skus", type=click.IntRange(min=1), default=20_000, show_default=True, help="SKUs in stock.")
@click.option(
    "--standby", type=click.IntRange(min=0), default=0, show_default=True, help="num_standby_replicas."
)
@click.option(
    "--session-timeout-ms",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="The workers' session.timeout.ms (the broker's minimum is 6000 by default).",
)
@click.option("--rate", type=click.IntRange(min=1), default=50, show_default=True, help="Orders per second.")
@click.option(
    "--runs", type=click.IntRange(min=1), default=3, show_default=True, help="Repeat and print the median."
)
def bench_failover(skus: int, standby: int, session_timeout_ms: int, rate: int, runs: int) -> None:
    """SIGKILL one of two workers; time until another decides an order on its partitions."""
    from streamalloc.bench import failover

    def one(settings: Settings, advance: Callable[[int], None]) -> failover.FailoverResult:
        return failover.run(
            settings,
            skus=skus,
            standby=standby,
            session_timeout_ms=session_timeout_ms,
            rate=rate,
            on_progress=advance,
        )

    def describe(result: failover.FailoverResult) -> str:
        return (
            f"first decision {result.failover_seconds:.2f}s after the SIGKILL; the survivor restored "
            f"{result.restored_records:,} of {result.changelog_records:,} changelog records"
        )

    results = _bench_runs(runs, rate * 5, "decisions before the kill", one, describe)
    s = failover.summary(results)
    table = Table(
        "standby", "session timeout ms", "failover s (median)", "min-max s", "restored records", "changelog"
    )
    table.add_row(
        str(standby),
        f"{session_timeout_ms:,}",
        f"{s['median_s']:.2f}",
        f"{s['min_s']:.2f}-{s['max_s']:.2f}",
        f"{s['restored']:,.0f}",
        f"{s['changelog']:,.0f}",
    )
    if runs > 1:
        out.print(f"median of {runs} runs:")
    out.print(table)


@main.command()
@click.option("--workers", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=10, show_default=True)
@click.option("--kill-every", "kill_every", type=click.FloatRange(min=1), default=10, show_default=True,
              help="Seconds between SIGKILLs of a random worker (restarted on its state dir).")  # fmt: skip
@click.option(
    "--broker-fault", is_flag=True, help="Also SIGKILL the Kafka broker once mid-run and restart it."
)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=10, show_default=True,
              help="Orders per second per channel.")  # fmt: skip
@click.option("--seed", type=int, default=7, show_default=True)
def chaos(
    workers: int, minutes: float, kill_every: float, broker_fault: bool, rate: float, seed: int
) -> None:
    """Workers killed under load (and the broker, with --broker-fault), then the verifier and the audit.

    Starts Apache Kafka from the cached jars unless --bootstrap names a cluster, and uses
    topics and a group of its own. Exits 1 if anything was lost, doubled or mismatched.
    """
    from contextlib import ExitStack

    from rich.progress import Progress, SpinnerColumn, TextColumn

    from streamalloc.broker.kafka import KafkaBroker
    from streamalloc.commands.chaos import ChaosStats, fresh_settings, progress_line, run_chaos, summary_rows

    base = _settings()
    if broker_fault and base.bootstrap:
        raise click.UsageError("--broker-fault needs the broker chaos starts itself: leave out --bootstrap")
    try:
        with ExitStack() as stack:
            broker = None
            bootstrap = base.bootstrap
            if not bootstrap:
                broker = KafkaBroker(say=_say)
                stack.callback(broker.close)  # stops the broker (by its pid) on any exit, Ctrl-C too
                bootstrap = broker.start()
                _say(f"started Apache Kafka at {bootstrap} (log: {broker.log_path})")
            settings = fresh_settings(base, bootstrap, started=broker is not None)
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True
            ) as bar:
                task = bar.add_task("starting")

                def show(stats: ChaosStats) -> None:
                    bar.update(task, description=progress_line(stats, minutes))

                result = run_chaos(
                    settings, workers=workers, minutes=minutes, kill_every_s=kill_every,
                    broker=broker if broker_fault else None, rate=rate, seed=seed, on_progress=show, say=_say,
                )  # fmt: skip
    except StreamallocError as exc:
        _fail(exc)
    table = Table("chaos", "", box=SIMPLE_HEAD, show_edge=False)
    for row in summary_rows(result):
        table.add_row(*row)
    out.print(table)
    for detail in result.verification.details[:20]:
        out.print(f"verifier: {escape(detail)}", soft_wrap=True)
    for breach in result.report.breaches[:20]:
        out.print(f"audit: {escape(breach)}", soft_wrap=True)
    for note in [*result.stats.own_exits, *result.stats.stalls, *result.stats.hung_on_stop]:
        out.print(f"workers: {escape(note)}", soft_wrap=True)
    out.print(f"logs and worker state: {result.workdir}")
    if not (result.ok and result.recovered and result.stopped):
        sys.exit(1)


@main.group()
def service() -> None:
    """Downstream services (faust-streaming): channel-sync and routing, each its own process."""


def _pairs(values: tuple[str, ...], option: str, shape: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise click.BadParameter(f"{value!r}: give {shape}", param_hint=option)
        pairs[name] = rest
    return pairs


def _low_stock(values: tuple[str, ...]) -> dict[str, int]:
    thresholds = {}
    for value in values:
        channel, sep, number = value.partition("=")
        if not sep or not channel or not number.isdigit():
            raise click.BadParameter(
                f"{value!r}: give CHANNEL=UNITS, e.g. web=5", param_hint="--low-stock-for"
            )
        thresholds[channel] = int(number)
    return thresholds


def _services_settings() -> Settings:
    """The settings, once the client properties are known to map onto faust's (before connecting)."""
    from streamalloc.services.credentials import broker_credentials

    settings = _settings()
    try:
        broker_credentials(settings.kafka_properties)
    except StreamallocError as exc:
        _fail(exc)
    return settings


@service.command("channel-sync")
@click.option(
    "--window-ms", type=click.IntRange(min=0), default=1_000, show_default=True, help="Push window per key."
)
@click.option(
    "--low-stock", type=click.IntRange(min=0), default=0, show_default=True, help="Low-stock threshold."
)
@click.option("--low-stock-for", multiple=True, help="CHANNEL=UNITS: a channel's own threshold (repeatable).")
@click.option("--http-host", default=None, help="Address for /ats, health, readiness, /metrics [127.0.0.1].")
@click.option("--http-port", type=click.IntRange(0, 65535), default=None, help="Port for HTTP (none: off).")
@click.option("--exactly-once", is_flag=True, help="faust's exactly_once (see docs/architecture.md).")
@click.option("--webhook", "webhooks", multiple=True, help="CHANNEL=URL: POST the channel's pushes there.")
@click.option(
    "--webhook-secret",
    envvar="STREAMALLOC_WEBHOOK_SECRET",
    default=None,
    help="HMAC-SHA256 key for X-Streamalloc-Signature [$STREAMALLOC_WEBHOOK_SECRET].",
)
@click.option("--webhook-attempts", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--webhook-backoff-ms", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--webhook-concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="POSTs in flight per channel (never two of one SKU).")  # fmt: skip
def service_channel_sync(
    window_ms: int,
    low_stock: int,
    low_stock_for: tuple[str, ...],
    http_host: str | None,
    http_port: int | None,
    exactly_once: bool,
    webhooks: tuple[str, ...],
    webhook_secret: str | None,
    webhook_attempts: int,
    webhook_backoff_ms: int,
    webhook_concurrency: int,
) -> None:
    """availability -> channel-ats: per (channel, SKU) ATS, coalesced, with stock thresholds,
    and optionally a webhook per channel (retried with backoff, then dead-lettered)."""
    from streamalloc.commands.topics import ensure_topics
    from streamalloc.services.channel_sync import ChannelSyncConfig, run
    from streamalloc.services.webhooks import WebhookConfig

    settings = _services_settings()
    config = ChannelSyncConfig(
        window_ms=window_ms,
        low_stock=_low_stock(low_stock_for),
        default_low_stock=low_stock,
        guarantee="exactly_once" if exactly_once else "at_least_once",
        webhooks=WebhookConfig(
            urls=_pairs(webhooks, "--webhook", "CHANNEL=URL, e.g. web=https://shop.example/ats"),
            secret=webhook_secret.encode() if webhook_secret else None,
            attempts=webhook_attempts,
            backoff_ms=webhook_backoff_ms,
            concurrency=webhook_concurrency,
        ),
    )
    try:
        with kafka_available(settings, _say) as ready:
            ensure_topics(ready)
            code = run(ready, config, http_host=http_host or settings.http_host, http_port=http_port)
    except StreamallocError as exc:
        _fail(exc)
    sys.exit(code)


@service.command("replenishment")
@click.option("--http-host", default=None, help="Address for health, readiness, /metrics [127.0.0.1].")
@click.option("--http-port", type=click.IntRange(0, 65535), default=None, help="Port for HTTP (none: off).")
@click.option("--exactly-once", is_flag=True, help="faust's exactly_once (see docs/architecture.md).")
def service_replenishment(http_host: str | None, http_port: int | None, exactly_once: bool) -> None:
    """allocations + availability -> transfer-recommendations: a demand rate per SKU and
    location, and the transfers that keep each location's cover above lead time plus safety
    cover (STREAMALLOC_REPLENISH_* settings). Advice only: nothing ships until a
    transfer_shipped inventory event says so."""
    from streamalloc.commands.topics import ensure_topics
    from streamalloc.kafka import admin_client
    from streamalloc.kafka.admin import TopicSpec, create_topics, existing_partitions
    from streamalloc.services.replenishment import demand_topic, run

    settings = _services_settings()
    try:
        with kafka_available(settings, _say) as ready:
            ensure_topics(ready)
            admin = admin_client(ready)
            # co-partitioned with availability: one agent reads both into one table keyed by SKU
            partitions = existing_partitions(admin).get(ready.topic("availability"), ready.partitions)
            create_topics(admin, [TopicSpec(demand_topic(ready), partitions, ready.replication_factor)])
            code = run(
                ready,
                guarantee="exactly_once" if exactly_once else "at_least_once",
                http_host=http_host or settings.http_host,
                http_port=http_port,
            )
    except StreamallocError as exc:
        _fail(exc)
    sys.exit(code)


@service.command("routing")
@click.option("--http-host", default=None, help="Address for health, readiness, /metrics [127.0.0.1].")
@click.option("--http-port", type=click.IntRange(0, 65535), default=None, help="Port for HTTP (none: off).")
@click.option("--exactly-once", is_flag=True, help="faust's exactly_once (see docs/architecture.md).")
@click.option("--auto-pick", is_flag=True, help="Answer fulfilment-acks with picked order events.")
def service_routing(
    http_host: str | None, http_port: int | None, exactly_once: bool, auto_pick: bool
) -> None:
    """allocations -> fulfilment-requests: one request per (order, location), kept up to date."""
    from streamalloc.commands.topics import ensure_topics
    from streamalloc.services.routing import run

    settings = _services_settings()
    try:
        with kafka_available(settings, _say) as ready:
            ensure_topics(ready)
            code = run(
                ready,
                guarantee="exactly_once" if exactly_once else "at_least_once",
                http_host=http_host or settings.http_host,
                http_port=http_port,
                auto_pick=auto_pick,
            )
    except StreamallocError as exc:
        _fail(exc)
    sys.exit(code)

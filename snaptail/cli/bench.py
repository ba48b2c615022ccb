"""``snaptail bench``: the benchmark commands (a Typer sub-app of ``snaptail``) over
:mod:`snaptail.bench`."""

from __future__ import annotations

import logging
import os
import platform
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from snaptail.bench.intervals import (
    DEFAULT_BATCH,
    DEFAULT_INTERVALS,
    QUICK_LENGTHS,
    IntervalsConfig,
    interval_label,
    run_intervals,
)
from snaptail.bench.intervals import DEFAULT_LENGTHS as INTERVAL_LENGTHS
from snaptail.bench.run import BenchRun, Record
from snaptail.bench.scale import DEFAULT_LENGTHS as SCALE_LENGTHS
from snaptail.bench.scale import QUICK_LENGTHS as SCALE_QUICK_LENGTHS
from snaptail.bench.scale import ScaleConfig, run_scale, targets
from snaptail.cli.bench_report import (
    intervals_table,
    plot_intervals,
    plot_scale,
    recommendation_text,
    scale_tables,
    targets_table,
)

bench_app = typer.Typer(
    help="Benchmarks: snapshot intervals, and load time/memory against log length.",
    no_args_is_help=True,
)


def _ints(text: str) -> list[int]:
    try:
        return [int(part.replace("_", "").replace(",", "")) for part in text.split() if part]
    except ValueError:
        raise typer.BadParameter(
            f"give positive event counts, e.g. 1000,10000, not {text!r}"
        ) from None


def _lengths(text: str | None, default: tuple[int, ...]) -> list[int]:
    if text is None:
        return list(default)
    lengths = _ints(text.replace(",", " "))
    if not lengths or min(lengths) < 1:
        raise typer.BadParameter("give positive event counts, e.g. 1000,10000")
    return lengths


def _intervals(text: str | None) -> list[int | None]:
    if text is None:
        return list(DEFAULT_INTERVALS)
    out: list[int | None] = []
    for part in text.replace(",", " ").split():
        if part.lower() in ("none", "0", "off"):
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise typer.BadParameter(f"not an interval: {part!r} (a positive integer or none)")
    return out


def _console(json_lines: bool) -> Console:
    return Console(stderr=True) if json_lines else Console()


def _run(console: Console, json_lines: bool, data_dir: Path | None) -> BenchRun:
    """A benchmark run showing its progress (and notes) on ``console``."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    return BenchRun(progress, note=progress.console.print, json_lines=json_lines, data_dir=data_dir)


def machine() -> str:
    """One line describing where the benchmark ran."""
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}, {platform.system()} {platform.machine()}"
    )


EVENTS_HELP = "Log lengths, comma-separated (default: {default})."


@bench_app.command()
def intervals(
    events: str | None = typer.Option(
        None, "--events", help=EVENTS_HELP.format(default="1000,10000,100000")
    ),
    interval_list: str | None = typer.Option(
        None, "--intervals", help="Snapshot intervals (default: none,10,50,100,250,1000)."
    ),
    target_ms: float = typer.Option(5.0, "--target-ms", help="Load-time target to recommend for."),
    batch: int = typer.Option(
        DEFAULT_BATCH, "--batch", min=1, help="Events per save (10: about one turn)."
    ),
    seed: int = typer.Option(42, "--seed", help="Workload seed."),
    quick: bool = typer.Option(False, "--quick", help="Short logs (1000, 5000): about a minute."),
    json_lines: bool = typer.Option(False, "--json", help="Print one JSON object per result."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG plot to this file."),  # noqa: B008
    data_dir: Path | None = typer.Option(  # noqa: B008
        None, "--data-dir", help="Keep the scratch databases here (default: a temp dir)."
    ),
) -> None:
    """What each snapshot interval costs (appends, storage) and buys (load time, memory)."""
    lengths = _lengths(events, QUICK_LENGTHS if quick else INTERVAL_LENGTHS)
    config = IntervalsConfig(
        intervals=_intervals(interval_list),
        lengths=lengths,
        batch=batch,
        seed=seed,
        target_ms=target_ms,
        positions=5 if quick else 20,
        repeats=3 if quick else 5,
    )
    console = _console(json_lines)
    console.print(
        f"[bold]snaptail bench intervals[/]: intervals "
        f"{', '.join(interval_label(i) for i in config.intervals)}; logs of "
        f"{', '.join(f'{n:,}' for n in sorted(lengths))} events; {batch} events per save; "
        f"{machine()}"
    )
    with _quiet_store_logs(), _run(console, json_lines, data_dir) as run:
        interrupted = _interruptible(lambda: run_intervals(config, run))
    console.print(intervals_table(run.records, console))
    if interrupted:
        raise _stopped(console, run.records, "measurement")
    recommendation = next((r for r in run.records if r["kind"] == "recommendation"), None)
    if recommendation is not None:
        console.print(recommendation_text(recommendation))
    else:
        console.print("No recommendation: measure 'none' at two lengths and one interval.")
    if plot is not None:
        plot_intervals(run.records, plot)
        console.print(f"plot written to {plot}")


@bench_app.command()
def scale(
    events: str | None = typer.Option(
        None, "--events", help=EVENTS_HELP.format(default="1000,10000,100000,1000000")
    ),
    interval: int = typer.Option(100, "--interval", min=1, help="Snapshot interval."),
    batch: int = typer.Option(100, "--batch", min=1, help="Events per save."),
    seed: int = typer.Option(42, "--seed", help="Workload seed."),
    limit_s: float = typer.Option(
        60.0, "--limit-s", help="Stop a system after one load takes longer than this."
    ),
    quick: bool = typer.Option(False, "--quick", help="Short logs (1000, 10000): about a minute."),
    json_lines: bool = typer.Option(False, "--json", help="Print one JSON object per result."),
    plot: Path | None = typer.Option(None, "--plot", help="Write a PNG plot to this file."),  # noqa: B008
    data_dir: Path | None = typer.Option(  # noqa: B008
        None, "--data-dir", help="Keep the scratch databases here (default: a temp dir)."
    ),
) -> None:
    """Load time and memory against log length: snaptail beside stock eventsourcing,
    a full replay, the load-everything design and the sqlite3+msgspec floor."""
    lengths = _lengths(events, SCALE_QUICK_LENGTHS if quick else SCALE_LENGTHS)
    config = ScaleConfig(
        lengths=lengths,
        interval=interval,
        batch=batch,
        seed=seed,
        limit_s=limit_s,
        load_budget_s=0.3 if quick else 1.5,
        positions=5 if quick else 20,
    )
    console = _console(json_lines)
    console.print(
        f"[bold]snaptail bench scale[/]: logs of {', '.join(f'{n:,}' for n in sorted(lengths))}"
        f" events; snapshot every {interval}; {batch} events per save; {machine()}"
    )
    with _quiet_store_logs(), _run(console, json_lines, data_dir) as run:
        interrupted = _interruptible(lambda: run_scale(config, run))
        if not interrupted:
            for record in targets(run.records):
                run.emit(record)
    for table in scale_tables(run.records):
        console.print(table)
    if interrupted:
        raise _stopped(console, run.records, "load", "append", "tiny-load")
    console.print(targets_table([r for r in run.records if r["kind"] == "target"]))
    if plot is not None:
        plot_scale(run.records, plot)
        console.print(f"plot written to {plot}")


@bench_app.command("langgraph")
def langgraph_bench(
    steps: str | None = typer.Option(
        None, "--steps", help="Thread lengths in steps, comma-separated (default: 100,1000,3000)."
    ),
    chars: int = typer.Option(600, "--chars", min=1, help="Characters per message."),
    baseline_max: int = typer.Option(
        1000,
        "--baseline-max",
        min=1,
        help="Longest thread for SqliteSaver/PostgresSaver (they store O(steps^2) bytes).",
    ),
    postgres_url: str | None = typer.Option(
        None,
        "--postgres-url",
        help="PostgreSQL for snaptail and PostgresSaver "
        "(default: $SNAPTAIL_TEST_POSTGRES_URL if set and reachable).",
    ),
    quick: bool = typer.Option(False, "--quick", help="Short threads (10, 30 steps)."),
    json_lines: bool = typer.Option(False, "--json", help="Print one JSON object per result."),
) -> None:
    """One LangGraph chat thread checkpointed by SnaptailSaver beside SqliteSaver (and
    PostgresSaver): storage, time per step and get_state latency as the thread grows.
    Needs the ``langgraph`` extra and langgraph-checkpoint-sqlite/-postgres."""
    import dataclasses
    import json

    from snaptail.bench.langgraph import (
        DEFAULT_MARKS,
        QUICK_MARKS,
        LangGraphRow,
        postgres_up,
        run_langgraph_bench,
    )
    from snaptail.cli.bench_report import langgraph_table

    marks = _lengths(steps, QUICK_MARKS if quick else DEFAULT_MARKS)
    url = postgres_url or os.environ.get("SNAPTAIL_TEST_POSTGRES_URL")
    if url is not None and not postgres_up(url):
        url = None
    console = _console(json_lines)
    console.print(
        f"[bold]snaptail bench langgraph[/]: one thread to {', '.join(f'{m:,}' for m in marks)}"
        f" steps (two {chars}-character messages a step); baselines up to {baseline_max:,}"
        f" steps; PostgreSQL: {'yes' if url else 'no'}; {machine()}"
    )

    def on_row(row: LangGraphRow) -> None:
        if json_lines:
            print(json.dumps({"kind": "langgraph", **dataclasses.asdict(row)}), flush=True)
        else:
            console.print(
                f"  {row.saver}: {row.steps:,} steps, {row.storage_bytes:,} bytes,"
                f" {row.ms_per_step:.1f} ms/step"
            )

    measured: list[LangGraphRow] = []

    def keep(row: LangGraphRow) -> None:
        measured.append(row)
        on_row(row)

    with _quiet_store_logs():
        interrupted = _interruptible(lambda: run_langgraph_bench(marks, chars, url, baseline_max,
                                                                 keep))  # fmt: skip
    console.print(langgraph_table(measured, console))
    if interrupted:
        console.print(
            f"[yellow]interrupted (Ctrl-C): the table holds the {len(measured)} row(s) measured"
            " so far[/]"
        )
        raise typer.Exit(INTERRUPTED)


INTERRUPTED = 130


def _interruptible(work: Callable[[], object]) -> bool:
    """Run ``work``; True if Ctrl-C stopped it (what it measured is kept)."""
    try:
        work()
    except KeyboardInterrupt:
        return True
    return False


def _stopped(console: Console, records: list[Record], *kinds: str) -> typer.Exit:
    """Say that Ctrl-C stopped the run and how much the table above holds."""
    done = sum(1 for r in records if r["kind"] in kinds)
    console.print(
        f"[yellow]interrupted (Ctrl-C): the table above holds the {done} result(s) measured"
        " so far; no recommendation or targets from an incomplete run[/]"
    )
    return typer.Exit(INTERRUPTED)


@contextmanager
def _quiet_store_logs() -> Iterator[None]:
    # Full replays are what this benchmark measures: their warnings are expected.
    # The level is restored after (the command may run inside a test process).
    log = logging.getLogger("snaptail")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)

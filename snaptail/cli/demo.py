"""``snaptail demo``: simulate realistic agents, then show what loading them costs."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from snaptail.application.store import AgentStore
from snaptail.domain.agent import Agent
from snaptail.workload import Workload

# (name, events): one support conversation, two long chat threads, a busy automation.
DEFAULT_AGENTS: tuple[tuple[str, int], ...] = (
    ("support-bot", 1_500),
    ("slack-thread-eng", 4_000),
    ("research-assistant", 2_500),
    ("cron-digest", 8_000),
)


@dataclass(frozen=True)
class DemoRow:
    """What the demo measured for one agent."""

    agent: Agent
    events: int
    snapshot_version: int
    events_read: int
    load_ms: float
    replay_ms: float
    memory_bytes: int


def run_demo(
    store: AgentStore,
    agents: tuple[tuple[str, int], ...] = DEFAULT_AGENTS,
    seed: int = 7,
    console: Console | None = None,
) -> list[DemoRow]:
    """Write the agents' events (with a progress bar), then load each one."""
    console = console or Console()
    written: list[Agent] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("writing agents", total=sum(n for _, n in agents))
        for index, (name, events) in enumerate(agents):
            agent = Agent(name=name, system_prompt=f"You are {name}.", model="demo-model")
            Workload(seed + index).drive(
                agent,
                events - 1,
                save=store.save,
                batch=40,
                progress=lambda n: progress.advance(task, n),
            )
            progress.advance(task, 1)
            written.append(agent)
    rows = []
    for agent in written:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            loaded = store.get(agent.id)
            timings.append((time.perf_counter() - started) * 1000)
        stats = store.load_stats(loaded)
        assert stats is not None
        started = time.perf_counter()
        store.replay(agent.id)
        replay_ms = (time.perf_counter() - started) * 1000
        rows.append(
            DemoRow(
                agent=loaded,
                events=loaded.version,
                snapshot_version=stats.snapshot_version,
                events_read=stats.events_read,
                load_ms=statistics.median(timings),
                replay_ms=replay_ms,
                memory_bytes=loaded.memory_bytes(),
            )
        )
    return rows


def demo_table(rows: list[DemoRow], url: str) -> Table:
    table = Table(title=f"snaptail demo: {url}")
    for header in ("agent", "events", "snap", "read", "load ms", "replay ms", "KiB"):
        table.add_column(header, justify="left" if header == "agent" else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            row.agent.name,
            f"{row.events:,}",
            f"{row.snapshot_version:,}",
            f"{row.events_read:,}",
            f"{row.load_ms:.1f}",
            f"{row.replay_ms:.1f}",
            f"{row.memory_bytes / 1024:,.0f}",
        )
    table.caption = (
        "snap: version of the snapshot loaded; read: events read by the load (the tail "
        "after the snapshot, plus older ones only to fill the 100-event recent cache); "
        "replay ms: loading the whole log instead; KiB: memory held by the loaded agent"
    )
    return table

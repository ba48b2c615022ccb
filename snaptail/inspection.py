"""``snaptail inspect AGENT_ID``: one agent's log, snapshots, load cost and memory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from snaptail.domain.agent import Agent
from snaptail.domain.errors import AgentNotFound
from snaptail.domain.memory import MemoryUsage, format_bytes, parse_size
from snaptail.domain.schema import event_name
from snaptail.infrastructure.budget import resolve_budget
from snaptail.infrastructure.store import AgentStore, _tracking
from snaptail.snapshots import EveryNEvents, SinceSnapshot, state_fingerprint


class InspectionStore(AgentStore):
    """An AgentStore that loads agents without enforcing memory budgets, so that an
    agent over its budget can be looked at (and reported) rather than refused."""

    def _check_memory(self, agent: Agent, *, can_shed: bool, saving: bool) -> None:
        return None


@dataclass(frozen=True)
class SnapshotRow:
    version: int
    size: int
    valid: bool  # its fingerprint matches the running code


@dataclass(frozen=True)
class EventRow:
    version: int
    type: str
    time: datetime
    size: int


@dataclass(frozen=True)
class Inspection:
    """What ``inspect_agent`` found; ``warnings`` is empty for a healthy agent."""

    agent_id: UUID
    agent_type: str
    version: int
    snapshots: list[SnapshotRow]
    loaded_from: int  # the version of the snapshot the load used (0: none)
    tail: int
    load_ms: float
    event_bytes: int
    memory: MemoryUsage
    budget: int | None
    last_events: list[EventRow]
    warnings: list[str]


def inspect_agent(
    store: AgentStore, agent_id: UUID, last: int = 20, budget: int | None = None
) -> Inspection:
    """Inspect one agent. Reads the log page by page to sum its bytes (never holds it).

    Snapshots are listed as found before the agent is loaded (a load that had to fall
    back past an invalid snapshot may write a fresh one).

    ``budget`` overrides the agent type's and the store's memory budget. Pass an
    :class:`InspectionStore` to inspect agents that are over their budget.
    """
    infos = store.recorder.select_snapshot_infos(agent_id)  # as found, before loading
    agent = store.get(agent_id)
    agent_class = type(agent)
    stats = store.load_stats(agent)
    loaded_from = stats.snapshot_version if stats else 0
    tail = stats.tail if stats else agent.version
    fingerprint = state_fingerprint(agent_class)
    snapshots = [
        SnapshotRow(info.originator_version, info.size, info.fingerprint == fingerprint)
        for info in infos
    ]
    event_bytes = 0
    after: int | None = None
    while True:
        page = store.recorder.select_page(agent_id, gt=after, limit=1000)
        event_bytes += sum(len(s.state) for s in page)
        if len(page) < 1000:
            break
        after = page[-1].originator_version
    newest = store.recorder.select_page(agent_id, desc=True, limit=last)
    last_events = [
        EventRow(
            version=stored.originator_version,
            type=event_name(type(event)),
            time=event.timestamp,
            size=len(stored.state),
        )
        for stored in newest
        for event in (store.mapper.to_domain_event(stored),)
    ]
    memory = agent.memory_usage()
    if budget is None:
        budget = resolve_budget(agent_class, store.memory_budget)
    warnings = _warnings(store, agent, snapshots, loaded_from, tail, memory, budget)
    return Inspection(
        agent_id=agent_id,
        agent_type=f"{agent_class.__module__}.{agent_class.__qualname__}",
        version=agent.version,
        snapshots=snapshots,
        loaded_from=loaded_from,
        tail=tail,
        load_ms=stats.ms if stats else 0.0,
        event_bytes=event_bytes,
        memory=memory,
        budget=budget,
        last_events=last_events,
        warnings=warnings,
    )


def _warnings(
    store: AgentStore,
    agent: Agent,
    snapshots: list[SnapshotRow],
    loaded_from: int,
    tail: int,
    memory: MemoryUsage,
    budget: int | None,
) -> list[str]:
    found = []
    if snapshots and not any(s.valid for s in snapshots):
        found.append(
            f"no valid snapshot: all {len(snapshots)} were written by other code (fingerprint"
            " mismatch); every load replays the full log until a new one is taken"
        )
    elif snapshots and loaded_from == 0:
        found.append("no valid snapshot: none of the stored snapshots could be used")
    since = SinceSnapshot(events=tail, bytes=_tracking(agent).bytes_since)
    if store.policy.should_snapshot(since):
        found.append(
            f"tail past its policy: {tail} events since the last snapshot"
            f" ({'none' if loaded_from == 0 else f'version {loaded_from}'}); the snapshot"
            f" policy {store.policy!r} wanted one by now"
        )
    if budget is not None and memory.total > budget:
        found.append(
            f"over its memory budget: {format_bytes(memory.total)} held, budget"
            f" {format_bytes(budget)}; largest parts: {memory.describe()}"
        )
    return found


def render(inspection: Inspection, console: Console) -> None:
    """Print an inspection as Rich tables, warnings last."""
    summary = Table(title=f"agent {inspection.agent_id}", show_header=False)
    summary.add_column("what", style="bold")
    summary.add_column("value")
    snapshots = ", ".join(
        f"{s.version}{'' if s.valid else ' (invalid)'} ({format_bytes(s.size)})"
        for s in inspection.snapshots
    )
    budget = "none" if inspection.budget is None else format_bytes(inspection.budget)
    for what, value in (
        ("type", inspection.agent_type),
        ("version", str(inspection.version)),
        ("snapshot versions", snapshots or "none"),
        ("loaded from snapshot", str(inspection.loaded_from or "none")),
        ("tail length", f"{inspection.tail} events"),
        ("load time", f"{inspection.load_ms:.1f} ms"),
        ("event bytes", format_bytes(inspection.event_bytes)),
        ("memory", f"{format_bytes(inspection.memory.total)} (budget {budget})"),
    ):
        summary.add_row(what, value)
    console.print(summary)

    parts = Table(title="memory of the loaded agent")
    parts.add_column("part")
    parts.add_column("bytes", justify="right")
    parts.add_column("share", justify="right")
    total = max(1, inspection.memory.total)
    for name, size in inspection.memory.parts.items():
        if size:
            parts.add_row(name, format_bytes(size), f"{100 * size / total:.0f}%")
    console.print(parts)

    events = Table(title=f"last {len(inspection.last_events)} events, newest first")
    events.add_column("version", justify="right")
    events.add_column("type")
    events.add_column("time (UTC)")
    events.add_column("size", justify="right")
    for row in inspection.last_events:
        events.add_row(
            str(row.version), row.type, row.time.strftime("%Y-%m-%d %H:%M:%S"),
            format_bytes(row.size),
        )
    console.print(events)
    for warning in inspection.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    if not inspection.warnings:
        console.print("[green]healthy[/]")


def inspect_command(
    agent_id: str = typer.Argument(..., help="The agent's id (a UUID)."),
    db: str | None = typer.Option(
        None, "--db", help="Database URL (default: $SNAPTAIL_DATABASE_URL or sqlite:///snaptail.db)."
    ),
    budget: str | None = typer.Option(
        None, "--budget", help="Memory budget to check against, e.g. 2MiB (default: the type's)."
    ),
    snapshot_every: int = typer.Option(
        100, "--snapshot-every", help="The snapshot interval the agent is written with."
    ),
    last: int = typer.Option(20, "--last", help="How many of the newest events to list."),
) -> None:
    """Show an agent's version, snapshots, tail, event bytes, memory and newest events,
    with a warning where it is unhealthy."""
    console = Console()
    try:
        uuid = UUID(agent_id)
    except ValueError:
        console.print(f"[red]not an agent id (a UUID): {agent_id!r}[/]")
        raise typer.Exit(2) from None
    with InspectionStore(db, policy=EveryNEvents(snapshot_every)) as store:
        try:
            inspection = inspect_agent(
                store, uuid, last=last, budget=None if budget is None else parse_size(budget)
            )
        except AgentNotFound as exc:
            console.print(f"[red]{exc}[/] in {store.url}")
            raise typer.Exit(1) from None
        render(inspection, console)

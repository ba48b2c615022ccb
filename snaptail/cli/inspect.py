"""``snaptail inspect AGENT_ID``: prints one agent's inspection as Rich tables."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from snaptail.application.inspection import Inspection, InspectionStore, inspect_agent
from snaptail.domain.memory import format_bytes, parse_size
from snaptail.errors import AgentNotFound
from snaptail.projections import DeadLetter, read_dead_letters
from snaptail.snapshots import EveryNEvents

# Rows of the summary that only a loaded agent has.
_NEEDS_LOAD = frozenset({"loaded from snapshot", "tail length", "load time", "memory"})


def render(
    inspection: Inspection, console: Console, dead_letters: Sequence[DeadLetter] = ()
) -> None:
    """Print an inspection as Rich tables, warnings last (with the events of this
    agent that projection workers skipped: their read models miss them)."""
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
        if inspection.error and what in _NEEDS_LOAD:
            value = "does not load"
        summary.add_row(what, value)
    console.print(summary)
    if inspection.error:
        _render_events(inspection, console)
        console.print(f"[bold red]error:[/] does not load: {inspection.error}", soft_wrap=True)
        return

    parts = Table(title="memory of the loaded agent")
    parts.add_column("part")
    parts.add_column("bytes", justify="right")
    parts.add_column("share", justify="right")
    total = max(1, inspection.memory.total)
    for name, size in inspection.memory.parts.items():
        if size:
            parts.add_row(name, format_bytes(size), f"{100 * size / total:.0f}%")
    console.print(parts)

    _render_events(inspection, console)
    skipped = [
        f"projection {d.projection!r} skipped notification {d.notification_id} (version "
        f"{d.version}, event {d.event_type}) at {d.skipped_at}: {d.error}"
        for d in dead_letters
    ]
    for warning in [*inspection.warnings, *skipped]:
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if not inspection.warnings and not skipped:
        console.print("[green]healthy[/]")


def _render_events(inspection: Inspection, console: Console) -> None:
    events = Table(title=f"last {len(inspection.last_events)} events, newest first")
    events.add_column("version", justify="right")
    events.add_column("type")
    events.add_column("time (UTC)")
    events.add_column("size", justify="right")
    for row in inspection.last_events:
        events.add_row(
            str(row.version),
            row.type,
            "?" if row.time is None else row.time.strftime("%Y-%m-%d %H:%M:%S"),
            format_bytes(row.size),
        )
    console.print(events)


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
    view_db: str | None = typer.Option(
        None, "--view-db", help="Where projection views live, for their dead letters "
        "(default: the event database)."
    ),
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
        render(inspection, console, read_dead_letters(view_db or store.url, agent_id=str(uuid)))
        if inspection.error:
            raise typer.Exit(1)

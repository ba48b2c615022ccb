"""``snaptail inspect AGENT_ID``: prints one agent's inspection as Rich tables."""

from __future__ import annotations

from collections.abc import Sequence

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from snaptail.application.inspection import Inspection, InspectionStore, inspect_agent
from snaptail.cli.databases import keys_option
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
    named = f" ({inspection.name})" if inspection.name else ""
    summary = Table(title=f"agent {inspection.agent_id}{named}", show_header=False)
    summary.add_column("what", style="bold")
    summary.add_column("value")
    snapshots = ", ".join(
        f"{s.version}{'' if s.valid else ' (invalid)'} ({format_bytes(s.size)})"
        for s in inspection.snapshots
    )
    budget = "none" if inspection.budget is None else format_bytes(inspection.budget)
    for what, value in (
        ("name", inspection.name or "-"),
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


OVER_BUDGET = 3  # the exit status of an inspection that found the agent over its budget


def inspect_command(
    agent: str = typer.Argument(
        ..., help="The agent: its id, a prefix of its id no other agent shares, or its name "
        "(as `snaptail stats` shows them)."
    ),
    db: str | None = typer.Option(
        None, "--db", help="Database URL (default: $SNAPTAIL_DATABASE_URL or sqlite:///snaptail.db)."
    ),
    budget: str | None = typer.Option(
        None, "--budget", help="Memory budget to check against, e.g. 2MiB (default: the type's)."
    ),
    snapshot_every: int = typer.Option(
        100, "--snapshot-every", min=1, help="The snapshot interval the agent is written with."
    ),
    last: int = typer.Option(20, "--last", min=0, help="How many of the newest events to list."),
    view_db: str | None = typer.Option(
        None, "--view-db", help="Where projection views live, for their dead letters "
        "(default: the event database)."
    ),
    keys: str | None = keys_option(),
) -> None:
    """Show an agent's version, snapshots, tail, event bytes, memory and newest events,
    with a warning where it is unhealthy. Reads only: a missing database is "no such
    database", a read-only one is read as it is.

    Exit status: 0 healthy or warned; 1 the agent does not load (or is not found);
    2 a usage error (a bad option, or an id prefix or name matching no agent or
    several); 3 the agent is over its memory budget."""
    from snaptail.application.directory import find_agent
    from snaptail.cli.databases import database_url, existing_database
    from snaptail.errors import InvalidArgument

    limit = None
    if budget is not None:
        try:
            limit = parse_size(budget)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--budget") from None
    url = existing_database(db)
    views = database_url(view_db, "--view-db") if view_db else url
    console = Console()
    with InspectionStore(
        url, policy=EveryNEvents(snapshot_every), read_only=True, keys=keys
    ) as store:
        try:
            uuid = find_agent(store, agent)
        except InvalidArgument as exc:
            raise typer.BadParameter(str(exc).partition(": ")[2], param_hint="AGENT") from None
        try:
            inspection = inspect_agent(store, uuid, last=last, budget=limit)
        except AgentNotFound as exc:
            console.print(f"[red]{escape(str(exc))}[/] in {escape(store.url)}")
            raise typer.Exit(1) from None
        render(inspection, console, read_dead_letters(views, agent_id=str(uuid)))
    if inspection.error:
        raise typer.Exit(1)
    if inspection.budget is not None and inspection.memory.total > inspection.budget:
        raise typer.Exit(OVER_BUDGET)


"""``snaptail snapshots prune|verify``: thin CLI over ``snaptail.application.maintenance``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

snapshots_app = typer.Typer(
    help="Snapshot maintenance: apply the retention rule, verify against the log.",
    no_args_is_help=True,
)

DB_HELP = "Database URL (default: $SNAPTAIL_DATABASE_URL or sqlite:///snaptail.db)."


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[UUID], None]]:
    """A progress bar over ``total`` agents (on stderr, gone when done)."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda _agent_id: bar.advance(task)


@snapshots_app.command()
def prune(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    keep: int = typer.Option(None, "--keep", min=1, help="Snapshots kept per agent "
                             "(default: the store's keep_snapshots, 2)."),
) -> None:
    """Delete all but the newest K snapshots of every agent."""
    from snaptail.application.maintenance import count_agents, prune_snapshots
    from snaptail.application.store import AgentStore

    console = Console()
    with AgentStore(db) as store:
        total = count_agents(store)
        with _progress("pruning", total) as advance:
            report = prune_snapshots(store, keep, on_agent=advance)
    console.print(
        f"pruned {report.deleted} snapshot(s) of {report.agents} agent(s); "
        f"kept the newest {report.keep} per agent"
    )


@snapshots_app.command()
def verify(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    agent: str = typer.Option(None, "--agent", help="Verify only this agent (its id)."),
    show_all: bool = typer.Option(False, "--all", help="List every agent, not only failures."),
    sample: int = typer.Option(
        None, "--sample", min=1, help="Verify N agents drawn at random (default: every agent)."
    ),
) -> None:
    """Rebuild agents from their log and compare with their newest snapshot.

    Exits with 1 if any snapshot differs from the rebuild or would not be trusted, or
    any agent's log cannot be read or replayed (each such agent is listed).
    """
    from snaptail.application.maintenance import (
        count_agents,
        sample_agent_ids,
        verify_snapshots,
    )
    from snaptail.application.store import AgentStore
    from snaptail.errors import AgentNotFound

    console = Console()
    ids: list[UUID] | None = None
    if agent is not None:
        try:
            ids = [UUID(agent)]
        except ValueError:
            raise typer.BadParameter(f"not an agent id: {agent!r}", param_hint="--agent") from None
    if sample is not None and ids is not None:
        raise typer.BadParameter("give --agent or --sample, not both", param_hint="--sample")
    with AgentStore(db) as store:
        if sample is not None:
            ids = sample_agent_ids(store, sample)
        total = len(ids) if ids is not None else count_agents(store)
        counts = {"ok": 0, "mismatch": 0, "untrusted": 0, "error": 0, "none": 0}
        table = Table(title=f"snapshots verified against the log ({store.url})")
        table.add_column("agent", no_wrap=True, min_width=36)
        for column in ("type", "snapshot", "status"):
            table.add_column(column, no_wrap=True)
        table.add_column("differs / why", overflow="fold")
        try:
            with _progress("verifying", total) as advance:
                for verdict in verify_snapshots(store, ids, on_agent=advance):
                    counts[verdict.status] += 1
                    if verdict.failed or show_all:
                        table.add_row(
                            str(verdict.agent_id),
                            verdict.agent_type,
                            "-" if verdict.snapshot_version is None
                            else str(verdict.snapshot_version),
                            f"[red]{verdict.status}[/]" if verdict.failed else verdict.status,
                            verdict.detail or ", ".join(verdict.fields),
                        )
        except AgentNotFound as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from None
    if table.row_count:
        console.print(table)
    failed = counts["mismatch"] + counts["untrusted"] + counts["error"]
    console.print(
        f"{sum(counts.values())} agent(s): {counts['ok']} ok, {counts['mismatch']} mismatch, "
        f"{counts['untrusted']} untrusted, {counts['none']} without snapshot"
        + (f", {counts['error']} whose log cannot be loaded" if counts["error"] else "")
    )
    if failed:
        raise typer.Exit(1)

"""``snaptail snapshots prune|verify``: thin CLI over ``snaptail.application.maintenance``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from uuid import UUID

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from snaptail.cli.databases import keys_option

snapshots_app = typer.Typer(
    help="Snapshot maintenance: apply the retention rule, verify against the log.",
    no_args_is_help=True,
)

DB_HELP = "Database URL (default: $SNAPTAIL_DATABASE_URL or sqlite:///snaptail.db)."


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[UUID], None]]:
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
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Count what would be deleted; change nothing (read-only)."
    ),
) -> None:
    """Delete all but the newest K snapshots of every agent (and the newest of each of
    the last two code versions). Never creates a database: a missing one is "no such
    database"."""
    from snaptail.application.maintenance import count_agents, prune_snapshots
    from snaptail.application.store import AgentStore
    from snaptail.cli.databases import existing_database

    console = Console()
    url = existing_database(db)
    with AgentStore(url, read_only=dry_run) as store:
        total = count_agents(store)
        with _progress("counting" if dry_run else "pruning", total) as advance:
            report = prune_snapshots(store, keep, on_agent=advance, dry_run=dry_run)
    console.print(
        f"{'would prune' if dry_run else 'pruned'} {report.deleted} snapshot(s) of "
        f"{report.agents} agent(s); {'would keep' if dry_run else 'kept'} the newest "
        f"{report.keep} per agent"
    )


@snapshots_app.command()
def verify(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    agent: str = typer.Option(
        None, "--agent", help="Verify only this agent (its id, a unique id prefix, or its name)."
    ),
    show_all: bool = typer.Option(False, "--all", help="List every agent, not only failures."),
    sample: int = typer.Option(
        None, "--sample", min=1, help="Verify N agents drawn at random (default: every agent)."
    ),
    keys: str | None = keys_option(),
) -> None:
    """Rebuild agents from their log and compare with their newest snapshot.

    Exits with 1 if any snapshot differs from the rebuild or would not be trusted, or
    any agent's log cannot be read or replayed (each such agent is listed). On a
    damaged database every agent that can be reached is verified and each damaged
    one listed. Reads only: a missing database is "no such database", a read-only one
    is read as it is.
    """
    from snaptail.application.directory import find_agent
    from snaptail.application.maintenance import (
        count_agents,
        sample_agent_ids,
        verify_snapshots,
    )
    from snaptail.application.store import AgentStore
    from snaptail.cli.databases import existing_database
    from snaptail.errors import AgentNotFound, InvalidArgument

    console = Console()
    ids: list[UUID] | None = None
    if sample is not None and agent is not None:
        raise typer.BadParameter("give --agent or --sample, not both", param_hint="--sample")
    url = existing_database(db)
    with AgentStore(url, read_only=True, keys=keys) as store:
        if agent is not None:
            try:
                ids = [find_agent(store, agent, "--agent")]
            except InvalidArgument as exc:
                raise typer.BadParameter(
                    str(exc).partition(": ")[2], param_hint="--agent"
                ) from None
        if sample is not None:
            ids = sample_agent_ids(store, sample)
        try:
            total: int | None = len(ids) if ids is not None else count_agents(store)
        except Exception:  # a damaged index: verify what can be reached, unnumbered
            total = None
        counts = {"ok": 0, "mismatch": 0, "untrusted": 0, "error": 0, "none": 0, "forgotten": 0}
        table = Table(title=f"snapshots verified against the log ({store.url})")
        table.add_column("agent", no_wrap=True, min_width=36)
        for column in ("type", "snapshot", "status"):
            table.add_column(column, no_wrap=True)
        table.add_column("differs / why", overflow="fold")
        stopped = ""  # why the agents could not all be listed (a damaged index)
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
        except Exception as exc:  # the list of agents broke off: report what was reached
            stopped = f"{type(exc).__name__}: {exc}"
    if table.row_count:
        console.print(table)
    failed = counts["mismatch"] + counts["untrusted"] + counts["error"]
    console.print(
        f"{sum(counts.values())} agent(s): {counts['ok']} ok, {counts['mismatch']} mismatch, "
        f"{counts['untrusted']} untrusted, {counts['none']} without snapshot"
        + (f", {counts['error']} whose log cannot be loaded" if counts["error"] else "")
        + (f", {counts['forgotten']} forgotten" if counts["forgotten"] else "")
    )
    if stopped:
        console.print(
            f"[red]could not list the agents after these {sum(counts.values())}:[/] "
            f"{escape(stopped)}",
            soft_wrap=True,
        )
    if failed or stopped:
        raise typer.Exit(1)

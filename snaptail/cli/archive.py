"""``snaptail archive run|verify|vacuum``: thin CLI over ``snaptail.archive``."""

from __future__ import annotations

import datetime
import re

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

archive_app = typer.Typer(
    help="Move cold events into compressed archive segments; verify them; reclaim space.",
    no_args_is_help=True,
)

DB_HELP = "Database URL (default: $SNAPTAIL_DATABASE_URL or sqlite:///snaptail.db)."
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> datetime.timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"3600s"`` or ``"2w"`` as a timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise typer.BadParameter(
            f"{text!r}: give a number and a unit: s, m, h, d or w (e.g. 30d)",
            param_hint="--older-than",
        )
    return datetime.timedelta(seconds=float(match[1]) * _UNITS[match[2]])


@archive_app.command("run")
def run(
    to: str = typer.Option(..., "--to", help="Where segments go: a directory, or an fsspec "
                           "URL such as s3://bucket/prefix (needs fsspec and s3fs)."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    older_than: str = typer.Option(None, "--older-than", help="Move only events older than "
                                   "this (30d, 12h, ...)."),
    keep_events: int = typer.Option(0, "--keep-events", min=0, help="Keep at least the "
                                    "newest N events of every agent hot."),
    recent_events: int = typer.Option(100, "--recent-events", min=0, help="The stores' "
                                      "recent_events setting (that window stays hot)."),
    view_db: list[str] = typer.Option(  # noqa: B008
        [], "--view-db", help="A database holding projection "
                                      "views kept outside --db (repeat for several)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would move; move nothing."),
    wait: float = typer.Option(0.0, "--wait", min=0, help="Seconds to wait for another "
                               "archive run's lock (default: refuse at once)."),
) -> None:
    """Move events no load, worker or retention needs into verified archive segments."""
    from snaptail.application.store import AgentStore
    from snaptail.archive import Progress as Step
    from snaptail.infrastructure.recorder import Position
    from snaptail.projections.view import open_view

    age = parse_age(older_than) if older_than else None
    positions: list[Position] = []
    for url in view_db:
        view = open_view(url)
        try:
            positions.extend(view.positions("").values())
        finally:
            view.close()
    console = Console()
    with (
        AgentStore(db, recent_events=recent_events) as store,
        Progress(
            TextColumn("archiving"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(stderr=True), transient=True, disable=dry_run,
        ) as bar,
    ):  # fmt: skip
        task = bar.add_task("archiving", total=None)

        def progress(step: Step) -> None:
            bar.update(task, total=step.total_events, completed=step.done_events)

        report = store.archive(
            to, keep_events=keep_events, older_than=age, dry_run=dry_run, wait=wait,
            view_positions=positions, progress=progress,
        )  # fmt: skip
    if dry_run:
        for move in report.moves[:20]:
            console.print(f"agent {move.agent_id}: versions {move.first}-{move.last}")
        if len(report.moves) > 20:
            console.print(f"... and {len(report.moves) - 20} more agents")
    console.print(report.summary(), soft_wrap=True)


@archive_app.command("verify")
def verify(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    location: str = typer.Option(None, "--location", help="Where the segments are now, if "
                                 "not where the archive run wrote them."),
) -> None:
    """Read every archived segment back whole (checksum, blocks, versions); exit 1 if
    any is missing, truncated or corrupt."""
    from snaptail.application.store import AgentStore

    console = Console()
    bad = 0
    with AgentStore(db) as store:
        store.archive_location = location
        segments = store.archive_reader.segments()
        for segment in segments:
            problem = store.archive_reader.verify(segment)
            if problem is not None:
                bad += 1
                console.print(f"[red]BAD[/red] {problem}", soft_wrap=True)
    console.print(f"{len(segments) - bad} of {len(segments)} segment(s) verified")
    if bad:
        raise typer.Exit(1)


@archive_app.command("vacuum")
def vacuum(db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Give back the space archived rows left (SQLite: incremental vacuum or VACUUM;
    PostgreSQL: VACUUM of the events table)."""
    from snaptail.application.store import AgentStore

    with AgentStore(db) as store:
        before, after = store.vacuum_archived()
    Console().print(f"{before:,} bytes before, {after:,} after")

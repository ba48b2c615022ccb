"""``snaptail forget SUBJECT``: erase a data subject's agents (crypto-shredding)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from snaptail.application.store import AgentStore
from snaptail.cli.databases import keys_option
from snaptail.errors import SnaptailError


def forget_command(
    subject: str = typer.Argument(..., help="The subject's id, as given to add_subject."),
    db: str = typer.Option(
        None,
        "--db",
        help="Event database URL (default: $SNAPTAIL_DATABASE_URL or sqlite:///snaptail.db).",
    ),
    keys: str | None = keys_option(),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Forget SUBJECT: delete its keys, so its agents' events and snapshots can no
    longer be read anywhere (database, WAL, backups, archives). Cannot be undone.
    Prints the erasure record (no personal data)."""
    console = Console()
    if not yes:
        typer.confirm(
            f"Forget {subject!r}? Its agents' data becomes unreadable for good", abort=True
        )
    try:
        with AgentStore(db, keys=keys) as store:
            if store.keys is None:
                raise typer.BadParameter("no key store: pass --keys URL or set $SNAPTAIL_KEYS_URL")
            erasure = store.forget(subject)
    except SnaptailError as exc:
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    if erasure is None:
        console.print(
            "nothing to forget: the key store holds no key of this subject"
            " (never added, or already forgotten)"
        )
        return
    table = Table(title="erasure record", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for what, value in (
        ("erasure", erasure.id),
        ("subject reference", erasure.subject_ref),
        ("at", erasure.at),
        ("agents", str(erasure.agents)),
        ("events", str(erasure.events)),
    ):
        table.add_row(what, value)
    console.print(table)

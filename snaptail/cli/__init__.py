"""The ``snaptail`` command: a thin layer over the library (Typer + Rich).

The only package that imports Typer or Rich: one module per command group.
"""

from __future__ import annotations

import logging

import typer
from rich.console import Console

from snaptail.cli.failures import EXIT_CODES, OneLineGroup, set_verbose

app = typer.Typer(
    cls=OneLineGroup,
    help="snaptail: event-sourced LLM agents that load from snapshot + short tail.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _print_version(value: bool) -> None:
    if value:
        from snaptail import __version__

        typer.echo(f"snaptail {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log at debug level; show the traceback of an error "
        "(also: SNAPTAIL_VERBOSE=1)."
    ),
    _version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    set_verbose(verbose)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@app.command()
def demo(
    db: str = typer.Option(None, "--db", help="Database URL (default: $SNAPTAIL_DATABASE_URL "
                           "or sqlite:///snaptail.db)."),
    seed: int = typer.Option(7, help="Seed of the simulated traffic."),
    scale: float = typer.Option(1.0, help="Multiply every agent's event count by this."),
) -> None:
    """Simulate a few realistic agents, then show load time, events read and memory."""
    from snaptail.application.store import AgentStore
    from snaptail.cli.databases import database_url
    from snaptail.cli.demo import DEFAULT_AGENTS, demo_table, run_demo

    if not scale > 0:
        raise typer.BadParameter(f"must be > 0, got {scale}", param_hint="--scale")
    agents = tuple((name, max(2, int(n * scale))) for name, n in DEFAULT_AGENTS)
    with AgentStore(database_url(db)) as store:
        rows = run_demo(store, agents, seed=seed, console=console)
        console.print(demo_table(rows, store.url))


@app.command()
def migrate(
    db: str = typer.Option(None, "--db", help="Database URL (default: $SNAPTAIL_DATABASE_URL "
                           "or sqlite:///snaptail.db)."),
) -> None:
    """Upgrade a database made by an older snaptail to this version (safe to repeat).

    PostgreSQL: adds the transaction id that lets saves run without a table lock.
    Stop older writers and workers first. SQLite needs nothing."""
    from snaptail.cli.databases import database_url
    from snaptail.infrastructure.urls import sqlite_path

    url = database_url(db)
    if sqlite_path(url) is not None:
        from snaptail.application.store import AgentStore
        from snaptail.cli.databases import existing_database

        with AgentStore(existing_database(db), read_only=True):  # it is a snaptail database
            console.print("SQLite: nothing to upgrade")
        return
    from snaptail.infrastructure.postgres import migrate_postgres

    steps = migrate_postgres(url)
    for step in steps:
        console.print(step)
    console.print("up to date" if not steps else "upgraded")


@app.command()
def version() -> None:
    """Print snaptail's version."""
    from snaptail import __version__

    console.print(__version__)


from snaptail.cli.projections import stats, worker_app  # noqa: E402

app.add_typer(worker_app, name="worker")
app.command("stats")(stats)

from snaptail.cli.bench import bench_app  # noqa: E402

app.add_typer(bench_app, name="bench")

from snaptail.cli.snapshots import snapshots_app  # noqa: E402

app.add_typer(snapshots_app, name="snapshots")

from snaptail.cli.inspect import inspect_command  # noqa: E402

app.command("inspect")(inspect_command)

from snaptail.cli.forget import forget_command  # noqa: E402

app.command("forget")(forget_command)

from snaptail.cli.ui import ui_command  # noqa: E402

app.command("ui")(ui_command)

from snaptail.cli.archive import archive_app  # noqa: E402

app.add_typer(archive_app, name="archive")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

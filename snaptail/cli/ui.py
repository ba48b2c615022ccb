"""``snaptail ui``: serve the web console (the ``ui`` extra, imported only when run)."""

from __future__ import annotations

import typer
from rich.console import Console

from snaptail.cli.databases import keys_option

err = Console(stderr=True, soft_wrap=True)

DB_HELP = "Event database URL (default: $SNAPTAIL_DATABASE_URL or sqlite:///snaptail.db)."


def ui_command(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    view_db: str = typer.Option(
        None, "--view-db", help="Where projection views live (default: the event database)."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; other than loopback needs --token."
    ),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="Port to listen on."),
    token: str = typer.Option(
        None,
        "--token",
        envvar="SNAPTAIL_UI_TOKEN",
        help="Require this token on every request ($SNAPTAIL_UI_TOKEN).",
    ),
    keys: str | None = keys_option(),
) -> None:
    """Serve a read-only web console and JSON API (/api/v1): the fleet, each agent's
    timeline and time travel, projections and snapshots (needs the ui extra)."""
    try:
        from snaptail.ui import check_bind, serve
    except ImportError as exc:
        err.print(
            f"error: snaptail ui needs the 'ui' extra (missing: {exc.name}): "
            "pip install 'snaptail[ui]'",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(1) from None
    try:
        check_bind(host, token)
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    from snaptail.cli.databases import existing_database
    from snaptail.errors import SnaptailError

    db = existing_database(db)  # a bad URL: usage (2); a missing file: "no such database"
    view_db = existing_database(view_db, "--view-db") if view_db else view_db
    where = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"

    def ready() -> None:  # (after the databases and key store opened: no false start)
        err.print(f"snaptail console on {where}" + (" (token required)" if token else ""),
                  markup=False, highlight=False)  # fmt: skip

    try:
        serve(db, view_db, host=host, port=port, token=token, keys=keys, on_ready=ready)
    except (SnaptailError, ValueError, OSError) as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None

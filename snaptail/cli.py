"""The ``snaptail`` command: a thin layer over the library (Typer + Rich)."""

from __future__ import annotations

import logging

import typer
from rich.console import Console

app = typer.Typer(
    help="snaptail: event-sourced LLM agents that load from snapshot + short tail.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at debug level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@app.command()
def version() -> None:
    """Print snaptail's version."""
    from snaptail import __version__

    console.print(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""The ``--db``/``--view-db`` options of every command: checked before anything is
opened, and opened read-only by the commands that only read."""

from __future__ import annotations

import os
from typing import Any

import typer

from snaptail.application.arguments import check_url
from snaptail.cli import failures
from snaptail.infrastructure.sqlite_files import require_existing
from snaptail.infrastructure.urls import resolve_url, sqlite_path

DB_HELP = "Database URL (default: $SNAPTAIL_DATABASE_URL or sqlite:///snaptail.db)."
KEYS_HELP = (
    "Key store URL, for agents with data subjects (default: $SNAPTAIL_KEYS_URL; the "
    "master key from $SNAPTAIL_MASTER_KEY or $SNAPTAIL_MASTER_KEY_FILE)."
)


def keys_option() -> Any:
    """The ``--keys URL`` option of every command that reads or forgets agents."""
    return typer.Option(None, "--keys", help=KEYS_HELP)


def database_url(db: str | None, option: str = "--db") -> str:
    """The URL ``--db`` names (or the default), checked: a bad one is a usage error
    naming ``option``."""
    url = resolve_url(db)
    check_url(url, option)
    failures.set_database(url)
    return url


def existing_database(db: str | None, option: str = "--db") -> str:
    """:func:`database_url` of a database that must exist already (read-only
    commands): a missing SQLite file is "no such database", nothing is created."""
    url = database_url(db, option)
    path = sqlite_path(url)
    if path is not None:
        require_existing(path)
    return url


def writable(url: str) -> bool:
    """False for a SQLite database this process cannot write (the file or, for its
    WAL and lock files, its directory); True otherwise."""
    path = sqlite_path(url)
    if path is None or path == ":memory:":
        return True
    directory = os.path.dirname(os.path.abspath(path))
    return os.access(path, os.W_OK) and os.access(directory, os.W_OK)

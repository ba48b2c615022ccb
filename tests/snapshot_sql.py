"""Straight-to-the-database edits of snapshot rows, for tests of untrusted snapshots.

Works on the URLs of the ``database_url`` fixture: a SQLite file, or PostgreSQL with
``?schema=NAME``. Bypasses snaptail entirely, as a disk fault or an operator would.
"""

from __future__ import annotations

import sqlite3
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit
from uuid import UUID

TABLE = "snaptail_snapshots"


def _sqlite_path(url: str) -> str | None:
    return url[len("sqlite:///") :] if url.startswith("sqlite:///") else None


def execute(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) on the database ``url`` names."""
    path = _sqlite_path(url)
    if path is not None:
        with sqlite3.connect(path) as conn:
            rows = conn.execute(sql, params).fetchall()
        conn.close()
        return rows
    import psycopg

    parts = urlsplit(url)
    schema = parse_qs(parts.query).get("schema", ["public"])[0]
    plain = urlunsplit(parts._replace(query=""))
    with psycopg.connect(plain, autocommit=True) as pg:
        pg.execute(f"SET search_path TO {schema}")
        cur = pg.execute(sql.replace("?", "%s").encode(), params)
        return list(cur.fetchall()) if cur.description else []


def _key(url: str, agent_id: UUID) -> Any:
    return agent_id.hex if _sqlite_path(url) is not None else agent_id


def snapshot_versions(url: str, agent_id: UUID) -> list[int]:
    rows = execute(
        url,
        f"SELECT originator_version FROM {TABLE} WHERE originator_id=? ORDER BY originator_version",
        (_key(url, agent_id),),
    )
    return [int(r[0]) for r in rows]


def set_snapshot_column(url: str, agent_id: UUID, version: int, column: str, value: Any) -> None:
    """Overwrite one column (``state``, ``checksum``, ``fingerprint``, ``topic``)."""
    assert column in {"state", "checksum", "fingerprint", "topic"}
    execute(
        url,
        f"UPDATE {TABLE} SET {column}=? WHERE originator_id=? AND originator_version=?",
        (value, _key(url, agent_id), version),
    )


def snapshot_row(url: str, agent_id: UUID, version: int) -> tuple[Any, ...]:
    rows = execute(
        url,
        f"SELECT fingerprint, checksum, state FROM {TABLE} "
        "WHERE originator_id=? AND originator_version=?",
        (_key(url, agent_id), version),
    )
    assert rows, f"no snapshot of {agent_id} at version {version}"
    fingerprint, checksum, state = rows[0]
    return str(fingerprint), int(checksum), bytes(state)

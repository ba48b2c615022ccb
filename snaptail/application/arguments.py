"""Checks of the arguments ``AgentStore`` is given and of the rows it reads: each
mistake becomes a :class:`~snaptail.InvalidArgument` (or :class:`~snaptail.RowUnreadable`
for a stored row) naming the argument, agent, version or cause, before anything is
read or written."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from snaptail.domain.agent import Agent
from snaptail.domain.memory import MIB, format_bytes
from snaptail.errors import InvalidArgument, RowUnreadable
from snaptail.infrastructure.urls import is_postgres_url, parse_postgres_url, parse_sqlite_url

# The largest stored row (one event or one snapshot) a read decodes; a larger row is
# refused by name rather than loaded (decoding takes about twice its size).
DEFAULT_MAX_ROW_BYTES = 64 * MIB

# Schema names the events tables cannot live in: SQL keywords PostgreSQL reserves
# (the tables' SQL uses the schema unquoted) and PostgreSQL's own schemas.
RESERVED_SCHEMAS = frozenset(
    (
        "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric",
        "authorization", "binary", "both", "case", "cast", "check", "collate", "collation",
        "column", "concurrently", "constraint", "create", "cross", "current_catalog",
        "current_date", "current_role", "current_schema", "current_time",
        "current_timestamp", "current_user", "default", "deferrable", "desc", "distinct",
        "do", "else", "end", "except", "false", "fetch", "for", "foreign", "freeze", "from",
        "full", "grant", "group", "having", "ilike", "in", "initially", "inner",
        "intersect", "into", "is", "isnull", "join", "lateral", "leading", "left", "like",
        "limit", "localtime", "localtimestamp", "natural", "not", "notnull", "null",
        "offset", "on", "only", "or", "order", "outer", "overlaps", "placing", "primary",
        "references", "returning", "right", "select", "session_user", "similar", "some",
        "symmetric", "system_user", "table", "tablesample", "then", "to", "trailing",
        "true", "union", "unique", "user", "using", "variadic", "verbose", "when", "where",
        "window", "with", "information_schema",
    )
)


def check_url(url: str, argument: str = "url") -> None:
    """Refuse a database URL snaptail cannot use, naming ``argument`` (for the CLI,
    ``--db``): an unknown scheme, a SQLite URL that names no file the way snaptail
    reads it, a bad PostgreSQL URL or option, a reserved or system schema."""
    try:
        sqlite = parse_sqlite_url(url)
        if sqlite is not None:
            if not sqlite[0]:
                raise ValueError(f"no file in SQLite URL {url!r}: use sqlite:///file.db")
            return
        if not is_postgres_url(url):
            scheme = url.partition(":")[0] if ":" in url else url
            raise ValueError(
                f"unsupported database URL {url!r} (scheme {scheme!r}): use"
                " sqlite:///relative/file.db, sqlite:////absolute/file.db, :memory: or"
                " postgresql://user@host:5432/dbname"
            )
        schema = parse_postgres_url(url).schema
    except InvalidArgument:
        raise
    except ValueError as exc:
        raise InvalidArgument(argument, str(exc)) from None
    if schema in RESERVED_SCHEMAS or schema.startswith("pg_"):
        raise InvalidArgument(
            argument,
            f"PostgreSQL schema {schema!r} is reserved (an SQL keyword or a system schema):"
            " choose another name, e.g. ?schema=snaptail",
        )


def _count(name: str, value: object, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise InvalidArgument(name, f"must be an int >= {lowest}, got {value!r}")
    return value


def check_store_arguments(
    *,
    snapshot_every: object,
    recent_events: object,
    keep_snapshots: object,
    max_event_bytes: object,
    max_row_bytes: object,
    slow_load_ms: object,
) -> None:
    """``AgentStore``'s numeric arguments: each of the right type and range."""
    if snapshot_every is not None:
        _count("snapshot_every", snapshot_every, 1)
    _count("recent_events", recent_events, 0)
    _count("keep_snapshots", keep_snapshots, 1)
    _count("max_event_bytes", max_event_bytes, 1)
    _count("max_row_bytes", max_row_bytes, 1)
    if slow_load_ms is not None and (
        isinstance(slow_load_ms, bool)
        or not isinstance(slow_load_ms, int | float)
        or not slow_load_ms >= 0
    ):
        raise InvalidArgument("slow_load_ms", f"must be a number >= 0, got {slow_load_ms!r}")


def check_agents(agents: Sequence[object]) -> None:
    """``save(*agents)``: each one an :class:`Agent`."""
    for index, agent in enumerate(agents):
        if not isinstance(agent, Agent):
            raise InvalidArgument(
                f"save() argument {index + 1}",
                f"expected an Agent (or a subclass), got {type(agent).__name__} {agent!r:.80}",
            )


def check_types(types: Iterable[object]) -> list[type[Any] | str]:
    """``history(types=...)``/``latest(*types)``: event classes or topic strings."""
    if isinstance(types, str | bytes) or not isinstance(types, Iterable):
        raise InvalidArgument(
            "types", f"expected a list of event classes or topics, got {types!r:.80}"
        )
    checked: list[type[Any] | str] = []
    for item in types:
        if not isinstance(item, type | str):
            raise InvalidArgument(
                "types",
                f"expected event classes (such as Agent.InputAdded) or topic strings, got"
                f" {type(item).__name__} {item!r:.80}",
            )
        checked.append(item)
    return checked


def check_row_size(agent_id: UUID, version: int, size: int, limit: int, what: str) -> None:
    """Refuse to decode a stored row larger than ``limit`` bytes."""
    if size > limit:
        raise RowUnreadable(
            agent_id,
            version,
            what,
            f"it is {format_bytes(size)} ({size} bytes), over the read limit of"
            f" {format_bytes(limit)} (max_row_bytes); raise max_row_bytes to read it",
        )


def check_rows(agent_id: UUID, rows: Sequence[Sequence[Any]], total: int, limit: int) -> None:
    """The event rows of a load (``(version, topic, state)``, ``total`` bytes): one
    comparison unless their total is over ``limit``."""
    if total > limit:
        for row in rows:
            check_row_size(agent_id, row[0], len(row[2]), limit, "event")


def too_deep(agent_id: UUID, version: int | None, what: str = "event") -> RowUnreadable:
    """The error for a stored row nested too deeply to decode."""
    return RowUnreadable(
        agent_id,
        version,
        what,
        "it is nested too deeply to decode (a RecursionError); snaptail never writes such"
        " a row: it was written by something else",
    )

"""Opens the recorder a database URL names: SQLite, or PostgreSQL (imported only then)."""

from __future__ import annotations

import asyncio
import uuid

from snaptail.infrastructure.async_recorder import (
    AsyncAgentRecorder,
    SQLiteThreads,
    ThreadedRecorder,
)
from snaptail.infrastructure.recorder import AgentRecorder
from snaptail.infrastructure.sqlite import SnaptailSQLiteDatastore, SQLiteAgentRecorder
from snaptail.infrastructure.urls import (
    SQLITE_OPTIONS,
    TUNABLE,
    is_postgres_url,
    parse_sqlite_url,
    sqlite_path,
)

# Threads of an async store on a SQLite file (one for an in-memory database, which is
# one connection's).
SQLITE_THREADS = 8


def open_recorder(url: str, **options: object) -> AgentRecorder:
    """Open (and create the tables of) the recorder for ``url``.

    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``:memory:`` (one
    in-memory database per store) or ``postgresql://user@host:port/db?...``.
    """
    parsed = parse_sqlite_url(url)
    if parsed is not None:
        path, params = parsed
        if not path:
            raise ValueError(f"no file in SQLite URL {url!r}: use sqlite:///file.db")
        unknown = sorted(set(options) - set(SQLITE_OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown option {unknown[0]!r} for a SQLite store; SQLite takes"
                f" {', '.join(SQLITE_OPTIONS)} (PostgreSQL also takes {', '.join(TUNABLE)})"
            )
        if path == ":memory:":
            path = f"file:snaptail-{uuid.uuid4().hex}?mode=memory&cache=shared"
        lock_timeout = _lock_timeout(options.get("lock_timeout", params.get("lock_timeout", 30)))
        datastore = SnaptailSQLiteDatastore(path, lock_timeout=lock_timeout)
        recorder: AgentRecorder = SQLiteAgentRecorder(datastore)
        recorder.create_table()  # type: ignore[attr-defined]
        return recorder
    if is_postgres_url(url):
        from snaptail.infrastructure.postgres import open_postgres

        return open_postgres(url, **options)
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///FILE, :memory: or postgresql://..."
    )


async def open_async_recorder(url: str, **options: object) -> AsyncAgentRecorder:
    """Open (and create the tables of) the async recorder for ``url``: SQLite's runs
    the sync recorder on threads of its own, PostgreSQL's is native."""
    path = sqlite_path(url)
    if path is not None:
        threads = SQLiteThreads(1 if path == ":memory:" else SQLITE_THREADS)
        try:
            sync = await threads.run(open_recorder, url, **options)
        except BaseException:
            threads.shutdown()
            raise
        return ThreadedRecorder(sync, threads)
    from snaptail.infrastructure.postgres import open_postgres
    from snaptail.infrastructure.postgres_async import AsyncPostgresRecorder

    recorder = await asyncio.to_thread(open_postgres, url, **options)
    try:
        return await AsyncPostgresRecorder.open(recorder)
    except BaseException:
        await asyncio.to_thread(recorder.close)
        raise


def _lock_timeout(value: object) -> int:
    """SQLite's ``lock_timeout`` in whole seconds (>= 1); ``ValueError`` names it."""
    try:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError
        seconds = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(
            f"SQLite option 'lock_timeout' must be an integer, got {value!r}"
        ) from None
    if seconds < 1:
        raise ValueError(f"SQLite option 'lock_timeout' must be >= 1 second, got {value!r}")
    return seconds

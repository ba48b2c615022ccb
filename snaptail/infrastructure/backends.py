"""Opens the recorder a database URL names: SQLite, or PostgreSQL (imported only then)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid

from eventsourcing.persistence import PersistenceError

from snaptail.infrastructure import sqlite_files
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

    ``read_only=True`` (SQLite) opens an existing database for reading and creates
    nothing (:class:`~snaptail.NoSuchDatabase` if it is missing); ``file_mode``
    (SQLite, default 0600) is the mode a new database file is created with (see
    :mod:`snaptail.infrastructure.sqlite_files`).
    """
    read_only = bool(options.pop("read_only", False))
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
        mode = sqlite_files.file_mode(
            options.get("file_mode", params.get("file_mode", sqlite_files.DEFAULT_FILE_MODE))
        )
        lock_timeout = _lock_timeout(options.get("lock_timeout", params.get("lock_timeout", 30)))
        if path == ":memory:":
            name = f"file:snaptail-{uuid.uuid4().hex}?mode=memory&cache=shared"
        elif read_only:
            sqlite_files.require_existing(path)
            name = sqlite_files.read_only_name(path)
        else:
            sqlite_files.prepare(path, mode)
            name = path
        datastore = SnaptailSQLiteDatastore(name, lock_timeout=lock_timeout)
        if read_only:
            datastore.pool.is_journal_mode_wal = True  # set by the writer that made it
        recorder = SQLiteAgentRecorder(datastore, path=path)
        try:
            if read_only:
                recorder.check_tables(path)
            else:
                recorder.create_table()
        except (PersistenceError, sqlite3.Error) as exc:
            recorder.close()
            explained = sqlite_files.explain(path, exc)
            if explained is None:
                raise
            raise explained from exc
        return recorder
    if is_postgres_url(url):
        if "file_mode" in options:
            raise TypeError("file_mode is a SQLite option: PostgreSQL has no database files")
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

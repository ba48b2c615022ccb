"""Opens the recorder a database URL names: SQLite, or PostgreSQL (imported only then)."""

from __future__ import annotations

import uuid

from snaptail.infrastructure.recorder import AgentRecorder
from snaptail.infrastructure.sqlite import SnaptailSQLiteDatastore, SQLiteAgentRecorder
from snaptail.infrastructure.urls import is_postgres_url, sqlite_path


def open_recorder(url: str, **options: object) -> AgentRecorder:
    """Open (and create the tables of) the recorder for ``url``.

    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``:memory:`` (one
    in-memory database per store) or ``postgresql://user@host:port/db?...``.
    """
    path = sqlite_path(url)
    if path is not None:
        if not path:
            raise ValueError(f"no file in SQLite URL {url!r}: use sqlite:///file.db")
        if path == ":memory:":
            path = f"file:snaptail-{uuid.uuid4().hex}?mode=memory&cache=shared"
        lock_timeout = options.pop("lock_timeout", 30)
        datastore = SnaptailSQLiteDatastore(path, lock_timeout=int(str(lock_timeout)))
        recorder: AgentRecorder = SQLiteAgentRecorder(datastore)
        recorder.create_table()  # type: ignore[attr-defined]
        return recorder
    if is_postgres_url(url):
        from snaptail.infrastructure.postgres import open_postgres

        return open_postgres(url, **options)
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///FILE, :memory: or postgresql://..."
    )

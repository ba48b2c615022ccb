"""Opens the recorder a database URL names."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit

from snaptail.infrastructure.recorder import AgentRecorder
from snaptail.infrastructure.sqlite import SnaptailSQLiteDatastore, SQLiteAgentRecorder

DEFAULT_URL = "sqlite:///snaptail.db"
URL_ENV = "SNAPTAIL_DATABASE_URL"


def resolve_url(url: str | None) -> str:
    """``url``, else ``$SNAPTAIL_DATABASE_URL``, else ``sqlite:///snaptail.db``."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def sqlite_path(url: str) -> str | None:
    """The file (or ``:memory:``) a SQLite URL names; None for other URLs."""
    if url == ":memory:":
        return url
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        return path[1:] if path.startswith("/") else path
    return None


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
    scheme = urlsplit(url).scheme
    if scheme in {"postgresql", "postgres"}:
        from snaptail.infrastructure.postgres import open_postgres

        return open_postgres(url, **options)
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///FILE, :memory: or postgresql://..."
    )

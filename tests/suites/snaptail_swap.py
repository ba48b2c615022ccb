"""A pytest plugin that swaps a framework's own storage class for snaptail's, loaded into
that framework's own test suite by ``tests/integrations/test_framework_suites.py`` (``-p
snaptail_swap``). Nothing of the framework's code lives here: only the stand-ins.

``SNAPTAIL_SWAP`` says what to run: ``control`` (the original classes, untouched),
``sqlite`` or ``postgres`` (snaptail's classes on that backend; PostgreSQL at
``SNAPTAIL_SWAP_POSTGRES``, one schema per database file the test names).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

MODE = os.environ.get("SNAPTAIL_SWAP", "control")
# Test id prefixes (one a line) not run in a swapped run: tests that wait forever for
# something snaptail's class never does (each listed, with why, by the caller).
SKIP = [line for line in os.environ.get("SNAPTAIL_SWAP_SKIP", "").splitlines() if line]
POSTGRES = os.environ.get("SNAPTAIL_SWAP_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_schemas: set[str] = set()


def url_for(db_path: object, *, suffix: str = "") -> str:
    """A snaptail URL standing for the framework's database ``db_path`` (":memory:": a
    database of its own, as an in-memory SQLite database is)."""
    path = str(db_path)
    if path == ":memory:" or not path:
        path = str(Path(tempfile.mkdtemp(prefix="snaptail-swap-")) / "memory.db")
    if MODE == "sqlite":
        return f"sqlite:///{path}{suffix}"
    import psycopg

    schema = "swap_" + hashlib.sha1(f"{path}{suffix}".encode()).hexdigest()[:16]
    if schema not in _schemas:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        _schemas.add(schema)
    return f"{POSTGRES}{'&' if '?' in POSTGRES else '?'}schema={schema}"


def _swap_openai_agents() -> None:
    import agents
    import agents.memory

    from snaptail.integrations.openai_agents import SnaptailSession

    class SQLiteSession(SnaptailSession):
        """``SQLiteSession``'s constructor on a snaptail session."""

        def __init__(
            self,
            session_id: str,
            db_path: str | Path = ":memory:",
            sessions_table: str = "agent_sessions",
            messages_table: str = "agent_messages",
            session_settings: Any = None,
        ) -> None:
            tables = (sessions_table, messages_table)
            suffix = "" if tables == ("agent_sessions", "agent_messages") else "-".join(tables)
            super().__init__(
                session_id, url_for(db_path, suffix=suffix), session_settings=session_settings
            )
            self.db_path = db_path
            self.sessions_table, self.messages_table = tables

        def close(self) -> None:  # type: ignore[override]  # SQLiteSession.close is sync
            if self._lease is not None:
                self._lease.release()

    SQLiteSession.__qualname__ = SQLiteSession.__name__ = "SQLiteSession"
    agents.SQLiteSession = SQLiteSession  # type: ignore[misc,assignment]
    agents.memory.SQLiteSession = SQLiteSession  # type: ignore[misc,assignment]


def _swap_langgraph() -> None:
    import langgraph.checkpoint.sqlite as sqlite_module
    import langgraph.checkpoint.sqlite.aio as aio_module

    from snaptail.integrations.langgraph import SnaptailSaver

    class SqliteSaver(SnaptailSaver):
        """``SqliteSaver.from_conn_string`` on a snaptail saver."""

        @classmethod
        @contextmanager
        def from_conn_string(cls, conn_string: str) -> Iterator[SqliteSaver]:
            saver = cls(url_for(conn_string))
            try:
                yield saver
            finally:
                saver.close()

        def setup(self) -> None:
            """Tables are created when the store opens."""

    class AsyncSqliteSaver(SqliteSaver):
        @classmethod
        @asynccontextmanager
        async def from_conn_string(  # type: ignore[override]
            cls, conn_string: str
        ) -> AsyncIterator[AsyncSqliteSaver]:
            saver = await asyncio.to_thread(cls, url_for(conn_string))
            try:
                yield saver
            finally:
                saver.close()

        async def setup(self) -> None:  # type: ignore[override]
            """Tables are created when the store opens."""

    sqlite_module.SqliteSaver = SqliteSaver  # type: ignore[misc,assignment]
    aio_module.AsyncSqliteSaver = AsyncSqliteSaver  # type: ignore[misc,assignment]


def pytest_configure(config: Any) -> None:
    if MODE == "control":
        return
    framework = os.environ.get("SNAPTAIL_SWAP_FRAMEWORK", "")
    if framework == "openai-agents":
        _swap_openai_agents()
    elif framework == "langgraph-checkpoint-sqlite":
        _swap_langgraph()
    else:
        raise RuntimeError(f"snaptail_swap: unknown SNAPTAIL_SWAP_FRAMEWORK {framework!r}")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if MODE == "control" or not SKIP:
        return
    import pytest

    for item in items:
        if any(item.nodeid.startswith(prefix) for prefix in SKIP):
            item.add_marker(pytest.mark.skip(reason="not applicable to snaptail (waits forever)"))


def pytest_unconfigure(config: Any) -> None:
    if not _schemas:
        return
    from snaptail.integrations.shared import wait_closed

    wait_closed()
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for schema in _schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

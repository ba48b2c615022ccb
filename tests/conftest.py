"""Fixtures shared by the suite: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL tests use ``$SNAPTAIL_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), each in a fresh schema dropped
afterwards. Without a reachable server they skip, naming the URL tried; with
``SNAPTAIL_REQUIRE_POSTGRES=1`` (as in CI) they fail instead.

Hypothesis runs the ``dev`` profile here and ``ci`` with ``HYPOTHESIS_PROFILE=ci``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from snaptail import AgentStore

# Hypothesis profiles: ``dev`` (the default, small) and ``ci`` (selected by
# HYPOTHESIS_PROFILE=ci in .ci/run): at least 300 examples per property and command
# sequences of up to 200 (see tests/agents.py, ``examples`` and ``commands_up_to``).
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

POSTGRES_URL = os.environ.get(
    "SNAPTAIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("SNAPTAIL_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgres"]


def _postgres_unavailable() -> str | None:
    """None if the test server answers, else why not."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}".strip()


def require_postgres() -> None:
    """Skip (or, in CI, fail) the calling test when PostgreSQL is unreachable."""
    problem = _postgres_unavailable()
    if problem is None:
        return
    if REQUIRE_POSTGRES:
        pytest.fail(f"{problem} (SNAPTAIL_REQUIRE_POSTGRES=1)")
    pytest.skip(problem)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose ``schema`` parameter names a fresh, empty schema."""
    require_postgres()
    import psycopg

    schema = f"snaptail_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}schema={schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file URL in the test's own temporary directory (WAL mode)."""
    return f"sqlite:///{tmp_path / 'agents.db'}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database URL, once per backend."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.getfixturevalue("sqlite_url"))


@pytest.fixture(params=["sync", "async"])
def make_store(request: pytest.FixtureRequest) -> Callable[..., AgentStore]:
    """Opens a store: ``AgentStore``, or ``AsyncAgentStore`` behind a blocking facade
    (``tests.async_bridge``), so one storage test checks both."""
    if request.param == "sync":
        return AgentStore
    from tests.async_bridge import BlockingAsyncStore

    return BlockingAsyncStore  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _restore_snaptail_loggers() -> Iterator[None]:
    """Commands run in-process (Typer's CliRunner) configure the ``snaptail`` loggers as a
    command-line program should (levels, handlers, no propagation); undo that after each
    test so that later tests' ``caplog`` sees the library's records."""
    names = ("snaptail", "snaptail.projections")
    saved = {
        name: (lg.level, lg.propagate, list(lg.handlers))
        for name in names
        for lg in [logging.getLogger(name)]
    }
    yield
    for name, (level, propagate, handlers) in saved.items():
        lg = logging.getLogger(name)
        lg.setLevel(level)
        lg.propagate = propagate
        lg.handlers[:] = handlers

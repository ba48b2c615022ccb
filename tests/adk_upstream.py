"""Run ADK's own session-service tests against ``SnaptailSessionService``.

The tests are google/adk-python's ``tests/unittests/sessions/test_session_service.py``
(never committed here). They are found in ``$SNAPTAIL_ADK_TESTS`` (a directory holding
that file; the last recorded run used the copy at commit 0c1061401608, a 2026 version),
else read with ``git show`` at tag ``v<installed version>`` from a clone at
``$SNAPTAIL_ADK_REPO`` (or the project mirror), else downloaded from GitHub at that tag
(10 s timeout; not with ``SNAPTAIL_ADK_OFFLINE=1``); without any, the test skips and
says what it tried. :func:`prepare` copies the file into a temporary directory and
appends one line that rebinds the module's ``session_service`` fixture and
``get_session_service`` factory to the ones below, so every test that used ADK's
services runs on snaptail's (SQLite, or PostgreSQL with ``SNAPTAIL_ADK_BACKEND=postgres``).
Tests that cannot apply to snaptail's service are skipped with their reason
(:data:`NOT_APPLICABLE`, and any test that builds one of ADK's own services).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

TEST_FILE = "test_session_service.py"


RAW_URL = (
    "https://raw.githubusercontent.com/google/adk-python/{tag}/tests/unittests/sessions/{name}"
)
# Where the project's tooling mirrors adk-python (a git directory), if anywhere.
MIRROR = "/work/.mirror/google+adk-python/repo"


def tag() -> str:
    return f"v{version('google-adk')}"


def upstream_source() -> tuple[str | None, str]:
    """The upstream test file's text at the installed version's tag and where it came
    from, or None and every place tried (nothing is found offline without a copy)."""
    tried = []
    folder = os.environ.get("SNAPTAIL_ADK_TESTS")
    if folder:
        if (Path(folder) / TEST_FILE).is_file():
            return (Path(folder) / TEST_FILE).read_text(), folder
        tried.append(f"SNAPTAIL_ADK_TESTS={folder} (no {TEST_FILE})")
    for repo in filter(None, [os.environ.get("SNAPTAIL_ADK_REPO"), MIRROR]):
        if not Path(repo).exists():
            continue
        shown = subprocess.run(
            ["git", "-C", repo, "show", f"{tag()}:tests/unittests/sessions/{TEST_FILE}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if shown.returncode == 0:
            return shown.stdout, f"{repo} at {tag()}"
        tried.append(f"{repo} (no tag {tag()})")
    if os.environ.get("SNAPTAIL_ADK_OFFLINE") != "1":
        url = RAW_URL.format(tag=tag(), name=TEST_FILE)
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return reply.read().decode(), url
        except OSError as exc:
            tried.append(f"{url} ({exc})")
    return None, "; ".join(tried)


# Upstream tests that go through the swapped fixture or factory but check a behaviour
# the installed ADK (2.13) does not have; each is skipped with its reason.
NOT_APPLICABLE = {
    "test_append_event_to_stale_session": (
        "a later ADK merges an append through a stale Session; ADK 2.13's own "
        "DatabaseSessionService raises StaleSessionError there (the unmodified file "
        "fails this test on 2.13 too), and snaptail follows 2.13"
    ),
}


CONFTEST = """
import inspect

import pytest

from tests.adk_upstream import NOT_APPLICABLE


def pytest_collection_modifyitems(config, items):
    # Only the tests that go through the swapped fixture or factory exercise snaptail;
    # the rest build ADK's own services (SqliteSessionService's URL parsing,
    # DatabaseSessionService's SQLAlchemy session factory and rollbacks) and are
    # skipped, as are the tests of behaviour the installed ADK lacks.
    for item in items:
        name = getattr(item, "originalname", item.name)
        source = inspect.getsource(item.function) if hasattr(item, "function") else ""
        uses = "session_service" in getattr(item, "fixturenames", ())
        if name in NOT_APPLICABLE:
            item.add_marker(pytest.mark.skip(reason=NOT_APPLICABLE[name]))
        elif not (uses or "get_session_service(" in source):
            item.add_marker(
                pytest.mark.skip(reason="builds one of ADK's own session services")
            )
"""


def prepare(source: str, into: Path) -> Path:
    """Write the upstream tests into ``into`` with snaptail's service swapped in (and a
    conftest that runs only the tests that use it)."""
    into.mkdir(parents=True, exist_ok=True)
    path = into / TEST_FILE
    path.write_text(
        source + "\n\nfrom tests.adk_upstream import get_session_service, session_service  # noqa\n"
    )
    (into / "conftest.py").write_text(CONFTEST)
    return path


def _url() -> str:
    if os.environ.get("SNAPTAIL_ADK_BACKEND") == "postgres":
        import psycopg

        base = os.environ.get(
            "SNAPTAIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        )
        schema = f"snaptail_adk_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        return f"{base}{'&' if '?' in base else '?'}schema={schema}"
    return f"sqlite:///{tempfile.mkdtemp(prefix='snaptail-adk-')}/sessions.db"


def get_session_service(service_type: Any = None, tmp_path: Any = None) -> Any:
    """Replaces ADK's factory: every service type is snaptail's."""
    from snaptail.integrations.adk import SnaptailSessionService

    return SnaptailSessionService(_url())


@pytest.fixture
async def session_service() -> AsyncIterator[Any]:
    """Replaces ADK's parametrised fixture: one snaptail service per test."""
    service = get_session_service()
    try:
        yield service
    finally:
        await service.close()

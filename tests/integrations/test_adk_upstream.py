"""ADK's own session-service tests run against ``SnaptailSessionService``, when a copy
of them is available (see tests/adk_upstream.py); skipped otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("google.adk")
pytest.importorskip("pytest_asyncio")

from tests.adk_upstream import prepare, upstream_source

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_adk_session_service_suite(backend: str, tmp_path: Path) -> None:
    source, where = upstream_source()
    if source is None:
        pytest.skip(f"no copy of ADK's session tests; tried: {where}")
    if backend == "postgres":
        from tests.conftest import require_postgres

        require_postgres()
    path = prepare(source, tmp_path / "adk_sessions")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SNAPTAIL_ADK_BACKEND": backend}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "asyncio",
            "--asyncio-mode=auto",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

"""The frameworks' own test suites, run against snaptail (issue 24).

At test time the source distributions of the *installed* versions are downloaded
(``pip download --no-binary :all: --no-deps NAME==VERSION``) into a cache directory
(``$SNAPTAIL_SUITES_CACHE``, default: the system temp dir), their tests extracted, and a
few relevant test files run twice in a subprocess: as shipped (the control), and with
the framework's storage class swapped for snaptail's by the plugin
``tests/suites/snaptail_swap.py``, on SQLite and on PostgreSQL. Nothing of their code is
committed here. Without network the tests skip.

A test fails if snaptail fails a test the control passes, unless that test is listed in
``NOT_APPLICABLE`` with the reason it cannot apply (it inspects the original class's
own tables, connections or private methods). Failures shared with the control are
reported (none were seen with the versions pinned in ``pyproject.toml``'s dev extra).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import snaptail

SWAP_PLUGIN_DIR = Path(__file__).parent.parent / "suites"
CACHE = Path(os.environ.get("SNAPTAIL_SUITES_CACHE", tempfile.gettempdir())) / "snaptail-suites"


@dataclass(frozen=True)
class Suite:
    dist: str  # the distribution on PyPI
    files: tuple[str, ...]  # test files run, relative to the sdist's root
    not_applicable: dict[str, str] = field(default_factory=dict)  # test id prefix -> why
    at_least: int = 50  # tests the files hold (a smaller count: the suite did not run)
    # Not-applicable tests that would wait for their timeout: skipped in swapped runs.
    waits: tuple[str, ...] = ()


_SQLITE_INTERNALS = "inspects SQLiteSession's own sqlite3 connections, tables or locks"
_PRIVATE = "calls SQLiteSession's private methods or attributes"

OPENAI_AGENTS = Suite(
    dist="openai-agents",
    files=(
        "tests/memory/test_session.py",
        "tests/memory/test_session_limit.py",
        "tests/memory/test_openai_responses_compaction_session.py",
        "tests/memory/test_compaction_suffix.py",
        "tests/memory/test_compaction_model_visibility.py",
    ),
    not_applicable={
        "tests/memory/test_session.py::test_sqlite_session_close_": _SQLITE_INTERNALS,
        "tests/memory/test_session.py::test_sqlite_session_reaps_": _SQLITE_INTERNALS,
        "tests/memory/test_session.py::test_sqlite_session_closes_retired_": _SQLITE_INTERNALS,
        "tests/memory/test_session.py::test_sqlite_session_keeps_connections_": _SQLITE_INTERNALS,
        "tests/memory/test_session.py::test_sqlite_session_file_lock_": _SQLITE_INTERNALS,
        "tests/memory/test_session.py::test_sqlite_session_failed_": (
            "injects failures by dropping SQLiteSession's tables with sqlite3"
        ),
        "tests/memory/test_session.py::test_sqlite_session_rollback_failure_": _SQLITE_INTERNALS,
        "tests/memory/test_session.py::test_sqlite_session_pop_item_skips_corrupt": (
            "writes corrupt JSON rows into SQLiteSession's table (snaptail rows are"
            " checked events: a damaged one is a DamagedLog error, never skipped)"
        ),
        "tests/memory/test_session.py::test_sqlite_session_pop_item_returns_none_after_dropping": (
            "writes corrupt JSON rows into SQLiteSession's table"
        ),
        "tests/memory/test_session.py::test_sqlite_session_get_items_limit_skips_corrupt": (
            "writes corrupt JSON rows into SQLiteSession's table"
        ),
        "tests/memory/test_session.py::test_sqlite_session_get_items_session_settings_limit_": (
            "writes corrupt JSON rows into SQLiteSession's table"
        ),
        "tests/memory/test_session.py::test_sqlite_session_closed_rejects_empty_add_items": (
            "expects SQLiteSession's 'SQLiteSession is closed' error; a closed snaptail"
            " session gives back its hold on the shared store and keeps working"
        ),
        "tests/memory/test_session.py::test_sqlite_session_post_commit_cancellation_": (
            "patches SQLiteSession's private _write_connection"
        ),
        "tests/memory/test_openai_responses_compaction_session.py::"
        "TestOpenAIResponsesCompactionSession::test_settled_": (
            "patches SQLiteSession's private _connections_lock"
        ),
        "tests/memory/test_compaction_suffix.py::test_suffix_transaction_rolls_back_failed_": (
            "injects the failure with a sqlite3 trigger on SQLiteSession's table"
        ),
        "tests/memory/test_compaction_suffix.py::test_cancelled_suffix_transaction_settles": (
            "patches SQLiteSession's private _insert_items"
        ),
        "tests/memory/test_compaction_suffix.py::test_failed_encrypted_suffix_transaction_": (
            "injects the failure by dropping SQLiteSession's table with sqlite3"
        ),
    },
    waits=(
        # They wait (without a timeout) for the SDK's clear-then-add restore after a
        # failed replacement; a session with an atomic _atomic_replace_items (as the
        # SDK's RedisSession) never enters it: the refused replacement stores nothing,
        # so nothing needs restoring.
        "tests/memory/test_openai_responses_compaction_session.py::"
        "TestOpenAIResponsesCompactionSession::test_cancel_restore_waits_for_mutation_lock",
        "tests/memory/test_openai_responses_compaction_session.py::"
        "TestOpenAIResponsesCompactionSession::test_exception_restore_drains_",
    ),
)

# LangGraph's SQLite saver tests, SqliteSaver and AsyncSqliteSaver swapped for
# SnaptailSaver. (langgraph-checkpoint-postgres's tests need their own server on port
# 5441 and read PostgresSaver's tables; LangGraph's conformance suite, which they also
# run, passes in full: tests/integrations/test_langgraph_conformance.py.)
LANGGRAPH_SQLITE = Suite(
    dist="langgraph-checkpoint-sqlite",
    files=("tests/test_sqlite.py", "tests/test_aiosqlite.py"),
    not_applicable={
        "tests/test_sqlite.py::TestSqliteSaver::test_informative_async_errors": (
            "expects SqliteSaver's async methods to raise NotImplementedError; SnaptailSaver"
            " implements them"
        ),
        "tests/test_sqlite.py::TestSqliteSaver::test_checkpoint_search_sql_injection_": (
            "expects SqliteSaver's 'Invalid filter key' error for a key shaped as SQL;"
            " SnaptailSaver builds no SQL from filter keys: such a key matches nothing"
        ),
    },
    at_least=10,
)

SUITES = {"openai-agents": OPENAI_AGENTS, "langgraph-checkpoint-sqlite": LANGGRAPH_SQLITE}


def _sdist_tests(suite: Suite) -> Path:
    """The extracted sdist of the installed version (downloaded once per cache)."""
    version = importlib.metadata.version(suite.dist)
    root = CACHE / f"{suite.dist}-{version}"
    done = root / ".extracted"
    if done.exists():
        return next(p for p in root.iterdir() if p.is_dir())
    root.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
         "--no-deps", f"{suite.dist}=={version}", "-d", str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    archives = sorted(root.glob("*.tar.gz"))
    if download.returncode != 0 or not archives:
        why = download.stderr.strip().splitlines()[-1:] or download.returncode
        pytest.skip(f"cannot download the sdist of {suite.dist}=={version}: {why}")
    with tarfile.open(archives[0]) as archive:
        members = [
            m for m in archive.getmembers()
            if "/tests/" in m.name or m.name.endswith(("/pyproject.toml", "/conftest.py"))
        ]  # fmt: skip
        archive.extractall(root, members=members, filter="data")
    done.touch()
    return next(p for p in root.iterdir() if p.is_dir())


SUITE_TIMEOUT = 240  # s for one run of a suite's files (they take 20-35 s here)


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _last_lines(text: str, count: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def _stack_tops(dump: str, frames: int = 12) -> str:
    """faulthandler's dump cut to the newest ``frames`` calls of each thread (the
    bottoms are the same runner frames in every thread)."""
    kept: list[str] = []
    depth = 0
    for line in dump.splitlines():
        if line.startswith(("Thread ", "Current thread ")):
            depth = 0
            kept.append(line)
        elif line.startswith("  File "):
            depth += 1
            if depth <= frames:
                kept.append(line)
        elif line.strip():
            kept.append(line)
    return "\n".join(kept)[-8000:]


def _run(suite: Suite, mode: str, workdir: Path, out: Path) -> dict[str, str]:
    """Run the suite's files in a subprocess; test id -> outcome."""
    links = out / "packages"
    links.mkdir(exist_ok=True)
    link = links / "snaptail"
    if not link.exists():
        link.symlink_to(Path(snaptail.__file__).parent)  # snaptail, not our own tests/
    report = out / f"{mode}.xml"
    env = {
        **os.environ,
        "SNAPTAIL_SWAP": mode,
        "SNAPTAIL_SWAP_FRAMEWORK": suite.dist,
        "SNAPTAIL_SWAP_SKIP": "\n".join(suite.waits),
        "PYTHONPATH": os.pathsep.join([str(links), str(SWAP_PLUGIN_DIR)]),
    }
    if mode == "postgres":
        from tests.conftest import POSTGRES_URL

        env["SNAPTAIL_SWAP_POSTGRES"] = POSTGRES_URL
    # -v names each test as it starts (unbuffered: a pipe would hold the last lines
    # back), and faulthandler dumps every thread's stack when one test runs 90 s (its
    # --timeout cannot stop a thread blocked outside Python code). If the run as a
    # whole hangs it is stopped well inside this test's own timeout, and the failure
    # names the test and the top of each thread's stack. (It did so on CI, 2026-12-04:
    # a session's lease was released by the cyclic collector inside the lease
    # registry's own lock; see snaptail.integrations.shared.)
    env["PYTHONUNBUFFERED"] = "1"
    try:
        subprocess.run(
            [sys.executable, "-m", "pytest", "-v", "-p", "snaptail_swap", "-p",
             "no:cacheprovider", "--timeout", "60", "-o", "faulthandler_timeout=90",
             "--tb=no", f"--junitxml={report}", *suite.files],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=SUITE_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired as hung:
        pytest.fail(
            f"{suite.dist} ({mode}) still running after {SUITE_TIMEOUT} s; the last tests"
            f" started:\n{_last_lines(_text(hung.stdout), 3)}\n--- the top of each"
            f" thread's stack ---\n{_stack_tops(_text(hung.stderr))}"
        )
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        module, _, klass = path.partition("/Test")
        name = f"{module}.py::" + (f"Test{klass}::" if klass else "") + case.get("name", "")
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes[name] = "skipped" if case.find("skipped") is not None else (
            "failed" if failed else "passed"
        )  # fmt: skip
    return outcomes


_controls: dict[str, dict[str, str]] = {}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("name", sorted(SUITES))
def test_framework_suite_against_snaptail(name: str, backend: str, tmp_path: Path) -> None:
    if backend == "postgres":
        from tests.conftest import require_postgres

        require_postgres()
    suite = SUITES[name]
    workdir = _sdist_tests(suite)
    if name not in _controls:
        _controls[name] = _run(suite, "control", workdir, tmp_path)
    control = _controls[name]
    ours = _run(suite, backend, workdir, tmp_path)
    assert len(ours) == len(control) >= suite.at_least, "the suite ran"
    shared = sorted(t for t, o in ours.items() if o == "failed" and control.get(t) == "failed")
    ours_only = sorted(t for t, o in ours.items() if o == "failed" and control.get(t) != "failed")
    explained = {t: why for t in ours_only for p, why in suite.not_applicable.items()
                 if t.startswith(p)}  # fmt: skip
    print(f"\n{name} on {backend}: {sum(o == 'passed' for o in ours.values())} passed,"
          f" {len(shared)} failed as in the control, {len(explained)} not applicable")  # fmt: skip
    for test in shared:
        print(f"  shared with the control: {test}")
    for test, why in sorted(explained.items()):
        print(f"  not applicable: {test}: {why}")
    for test in sorted(
        t for t, o in ours.items() if o == "skipped" and control.get(t) != "skipped"
    ):
        print(f"  not run (would wait forever for what snaptail never does): {test}")
    assert [t for t in ours_only if t not in explained] == []

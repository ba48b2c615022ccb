"""Every ``snaptail`` command answers every ordinary mistake in one line (issue 18):
exit 2 for a usage error, 1 for a runtime failure (``worker run``: 4 for a database it
cannot reach), never a traceback unless ``--verbose`` or ``SNAPTAIL_VERBOSE=1`` asks.
Read-only commands never create a database or a lock file."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from snaptail import Agent, AgentStore
from snaptail.cli import app

runner = CliRunner(env={"COLUMNS": "120"})

# Every command that opens a database, with the arguments it needs besides --db.
DB_COMMANDS: dict[str, list[str]] = {
    "demo": ["demo", "--scale", "0.001"],
    "migrate": ["migrate"],
    "stats": ["stats"],
    "stats --no-update": ["stats", "--no-update"],
    "inspect": ["inspect", "abc"],
    "snapshots verify": ["snapshots", "verify"],
    "snapshots prune": ["snapshots", "prune"],
    "snapshots prune --dry-run": ["snapshots", "prune", "--dry-run"],
    "worker run": [
        "worker", "run", "snaptail.projections:AgentStats", "--catch-up-only", "--no-progress",
        "--give-up-after", "0.5",
    ],
    "ui": ["ui", "--port", "18766"],
}  # fmt: skip
READ_ONLY = ("stats", "stats --no-update", "inspect", "snapshots verify",
             "snapshots prune --dry-run", "ui")  # fmt: skip
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"


def run(args: list[str], env: dict[str, str] | None = None) -> Result:
    # catch_exceptions=False: an exception that escapes the command fails the test
    return runner.invoke(app, args, env=env, catch_exceptions=False)


def assert_one_line(result: Result, code: int, *words: str) -> str:
    """The command failed with ``code`` and said why in one ``error:`` line, no traceback."""
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text and "╭─" not in text, text
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def place(tmp_path: Path) -> Path:
    (tmp_path / "junk.db").write_text("this is not a database\n")
    return tmp_path


def _bad_databases(place: Path) -> dict[str, tuple[str, int, tuple[str, ...]]]:
    """name -> (--db URL, exit status, words the error line must hold)."""
    return {
        "bad scheme": ("sqlit:///x.db", 2, ("--db", "unsupported database URL", "sqlit")),
        "reserved schema": (f"{UNREACHABLE}?schema=select", 2, ("--db", "'select'", "reserved")),
        "missing directory": (f"sqlite:///{place}/missing/x.db", 1, ("does not exist",)),
        "not a database": (f"sqlite:///{place}/junk.db", 1, ("junk.db", "not a SQLite database")),
        "unreachable PostgreSQL": (UNREACHABLE, 1, ("127.0.0.1",)),
    }


@pytest.mark.parametrize("command", sorted(DB_COMMANDS))
def test_every_database_command_answers_bad_databases_in_one_line(
    place: Path, command: str
) -> None:
    if command != "demo":
        pytest.importorskip("psycopg")
    if command == "ui":
        pytest.importorskip("snaptail.ui", exc_type=ImportError)
    for case, (url, code, words) in _bad_databases(place).items():
        if case == "unreachable PostgreSQL" and command == "worker run":
            code = 4  # worker run: the database stayed unreachable (documented)
        if case == "missing directory" and command in (*READ_ONLY, "snapshots prune"):
            words = ("no such database",)
        before = sorted(p.name for p in place.rglob("*"))
        result = run([*DB_COMMANDS[command], "--db", url])
        try:
            assert_one_line(result, code, *words)
        except AssertionError as exc:
            raise AssertionError(f"{command} with {case}: {exc}") from None
        assert sorted(p.name for p in place.rglob("*")) == before, f"{command} {case}"


def test_read_only_commands_never_create_a_database(place: Path) -> None:
    missing = place / "fleet.db"
    for command in (*READ_ONLY, "snapshots prune"):
        if command == "ui":
            continue  # (its own test needs the ui extra)
        result = run([*DB_COMMANDS[command], "--db", f"sqlite:///{missing}"])
        assert_one_line(result, 1, "no such database", str(missing))
    assert sorted(p.name for p in place.iterdir()) == ["junk.db"]  # no file, no lock


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["inspect", "abc", "--budget", "lots"], ("--budget", "not a size: 'lots'")),
        (["inspect", "abc", "--last", "-1"], ("--last",)),
        (["stats", "--top", "-1"], ("--top",)),
        (["stats", "--sort", "size"], ("--sort", "events, bytes, tokens")),
        (["stats", "--json", "yes"], ("yes",)),
        (["demo", "--scale", "0"], ("--scale",)),
        (["snapshots", "prune", "--keep", "0"], ("--keep",)),
        (["snapshots", "verify", "--sample", "2", "--agent", "x"], ("--sample",)),
        (["worker", "run", "nosuchmodule:Nothing"], ("nosuchmodule",)),
        (
            ["worker", "run", "snaptail.projections:AgentStats", "--partition", "3"],
            ("--partition",),
        ),
        (["bench", "intervals", "--events", "lots"], ("event counts",)),
        (["bench", "intervals", "--intervals", "often"], ("often",)),
        (["bench", "intervals", "--target-ms", "soon"], ("--target-ms",)),
        (["bench", "scale", "--events", "lots"], ("event counts",)),
        (["bench", "langgraph", "--steps", "lots"], ("event counts",)),
        (["nosuchcommand"], ("nosuchcommand",)),
        (["snapshots", "verify", "--nosuchoption"], ("--nosuchoption",)),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    place: Path, args: list[str], words: tuple[str, ...]
) -> None:
    db = ["--db", f"sqlite:///{place}/fleet.db"] if args[0] in {"inspect", "stats", "demo"} else []
    assert_one_line(run([*args, *db]), 2, *words)


def test_a_partitions_mismatch_is_one_usage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    with AgentStore(url) as store:
        store.save(Agent("one"))
    worker = [*DB_COMMANDS["worker run"], "--db", url]
    assert run(worker).exit_code == 0
    line = assert_one_line(run([*worker, "--partitions", "2"]), 2, "--partitions")
    assert "built unpartitioned" in line and "--partitions 1" in line


def test_verbose_shows_the_traceback(place: Path) -> None:
    url = f"sqlite:///{place}/junk.db"
    quiet = run(["stats", "--db", url])
    assert_one_line(quiet, 1, "not a SQLite database")
    for args, env in ((["--verbose", "stats", "--db", url], None),
                      (["stats", "--db", url], {"SNAPTAIL_VERBOSE": "1"})):  # fmt: skip
        loud = run(args, env)
        assert loud.exit_code == 1
        assert "Traceback (most recent call last)" in loud.stderr
        assert loud.stderr.strip().splitlines()[-1].startswith("error: ")


def test_version_and_exit_codes_in_help() -> None:
    from snaptail import __version__

    result = run(["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"snaptail {__version__}"
    help_text = " ".join(run(["--help"], {"COLUMNS": "200"}).output.split())
    for words in ("Exit status: 0 success", "1 a runtime failure", "2 a usage error",
                  "3 inspect: an agent over its memory budget", "130 interrupted"):  # fmt: skip
        assert words in help_text
    stats_help = " ".join(run(["stats", "--help"], {"COLUMNS": "200"}).output.split())
    assert "--json " in stats_help and "--json BOOLEAN" not in stats_help


# -- read-only files and directories (run as an unprivileged user when root) ----------


@pytest.fixture
def read_only_fleet() -> Iterator[Path]:
    """A fleet database in a directory nobody may write (readable by all)."""
    where = Path(tempfile.mkdtemp(prefix="snaptail-ro-"))
    try:
        url = f"sqlite:///{where / 'fleet.db'}"
        with AgentStore(url, snapshot_every=5, file_mode=0o644) as store:
            for n in range(3):
                agent = Agent(f"agent-{n}")
                for i in range(12):
                    agent.add_input("user", f"{n}:{i}")
                store.save(agent)
        assert run(["stats", "--db", url]).exit_code == 0  # the view, caught up once
        for path in where.iterdir():
            path.chmod(0o444)
        where.chmod(0o555)
        yield where
    finally:
        where.chmod(0o755)
        shutil.rmtree(where)


def _unprivileged(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``python -m snaptail.cli ARGS`` as this user, or as nobody when this is root
    (root writes to read-only files)."""
    command = [sys.executable, "-m", "snaptail.cli", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop privileges")
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_read_only_commands_work_on_a_read_only_database(read_only_fleet: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    if not os.access(root, os.R_OK | os.X_OK) or stat.S_IMODE(root.stat().st_mode) & 0o005 != 5:
        pytest.skip("the checkout is not readable by an unprivileged user")
    url = f"sqlite:///{read_only_fleet / 'fleet.db'}"
    before = sorted(p.name for p in read_only_fleet.iterdir())
    stats = _unprivileged(["stats", "--db", url])
    assert stats.returncode == 0, stats.stderr
    assert "agent-0" in stats.stdout and "read-only database" in stats.stderr
    verify = _unprivileged(["snapshots", "verify", "--db", url])
    assert verify.returncode == 0, verify.stderr + verify.stdout
    assert "3 agent(s): 3 ok" in verify.stdout
    inspect = _unprivileged(["inspect", "agent-1", "--db", url])
    assert inspect.returncode == 0, inspect.stderr + inspect.stdout
    assert "agent-1" in inspect.stdout
    dry = _unprivileged(["snapshots", "prune", "--dry-run", "--db", url])
    assert dry.returncode == 0 and "would prune" in dry.stdout, dry.stderr
    # A command that writes says why it cannot, in one line naming the file.
    demo = _unprivileged(["demo", "--scale", "0.001", "--db", url])
    assert demo.returncode == 1 and "Traceback" not in demo.stderr, demo.stderr
    assert demo.stderr.strip().startswith("error: ") and "fleet.db" in demo.stderr
    assert "read-only" in demo.stderr
    assert sorted(p.name for p in read_only_fleet.iterdir()) == before

"""Issue 11, "Bad data": a damaged log gives an error naming the agent and version.

Rows are deleted or overwritten straight in the database, as a disk fault or an
operator would, on both backends.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

import msgspec
import pytest
from typer.testing import CliRunner

from snaptail import (
    Agent,
    AgentState,
    AgentStore,
    DamagedLog,
    EveryNEvents,
    Never,
    UnknownTopic,
    event,
    register_topic,
)
from snaptail.cli import app
from snaptail.domain.compare import agent_differences
from tests.snapshot_sql import execute, set_snapshot_column, snapshot_row

# Removed as the faults are fixed (issue 11).


runner = CliRunner(env={"COLUMNS": "250"})


def _key(url: str, agent_id: UUID) -> object:
    return agent_id.hex if url.startswith("sqlite:") else agent_id


def delete_event(url: str, agent_id: UUID, version: int) -> None:
    execute(
        url,
        "DELETE FROM stored_events WHERE originator_id=? AND originator_version=?",
        (_key(url, agent_id), version),
    )


def set_topic(url: str, agent_id: UUID, version: int, topic: str) -> None:
    execute(
        url,
        "UPDATE stored_events SET topic=? WHERE originator_id=? AND originator_version=?",
        (topic, _key(url, agent_id), version),
    )


def written(url: str, events: int = 10, snapshot_every: int | None = None) -> Agent:
    policy = Never() if snapshot_every is None else EveryNEvents(snapshot_every)
    with AgentStore(url, policy=policy, keep_snapshots=10) as store:
        agent = Agent("damaged")
        for i in range(events - 1):
            agent.add_input("user", f"message {i}")
            store.save(agent)
    return agent


def _names_gap(message: str, agent: Agent, version: int) -> None:
    assert str(agent.id) in message
    assert f"version {version}" in message
    assert "missing" in message
    assert "backup" in message  # what to do


@pytest.mark.parametrize("snapshot_every", [None, 3], ids=["no-snapshot", "tail-after-snapshot"])
def test_a_deleted_tail_row_names_agent_and_missing_version(
    database_url: str, snapshot_every: int | None
) -> None:

    agent = written(database_url, snapshot_every=snapshot_every)
    delete_event(database_url, agent.id, 8)  # newest snapshot (if any) is at 6 or 9 -> use 6
    if snapshot_every is not None:
        execute(
            database_url,
            "DELETE FROM snaptail_snapshots WHERE originator_id=? AND originator_version>6",
            (_key(database_url, agent.id),),
        )
    with AgentStore(database_url) as store:
        with pytest.raises(Exception) as loaded:
            store.get(agent.id)
        _names_gap(str(loaded.value), agent, 8)
        with pytest.raises(Exception) as replayed:
            store.replay(agent.id)
        _names_gap(str(replayed.value), agent, 8)
        # The state before the gap is still reachable.
        assert store.get(agent.id, version=7).version == 7


def test_history_does_not_skip_a_gap(database_url: str) -> None:
    agent = written(database_url)
    delete_event(database_url, agent.id, 4)
    with AgentStore(database_url) as store:
        for kwargs in (
            {},
            {"page_size": 2},
            {"reverse": True},
            {"after": 2},
            {"before": 5},  # the gap is the last version asked for
            {"before": 5, "reverse": True},  # ...or the first, newest first
            {"after": 3, "before": 5},  # ...or the only one
        ):
            seen: list[int] = []
            with pytest.raises(Exception) as caught:
                for e in store.history(agent.id, **kwargs):  # type: ignore[arg-type]
                    seen.append(e.originator_version)
            _names_gap(str(caught.value), agent, 4)
            assert 4 not in seen
        # Filtered by type, versions are not consecutive: no gap to report.
        types = [Agent.InputItemAdded]
        assert len(list(store.history(agent.id, types=types))) == 8


def test_a_deleted_first_event_names_version_1(database_url: str) -> None:
    agent = written(database_url)
    delete_event(database_url, agent.id, 1)
    with AgentStore(database_url) as store, pytest.raises(Exception) as caught:
        store.get(agent.id)
    _names_gap(str(caught.value), agent, 1)


def test_a_damaged_topic_names_agent_and_version(database_url: str) -> None:
    agent = written(database_url)
    set_topic(database_url, agent.id, 5, "no_such_module.anywhere:Gone")
    with AgentStore(database_url) as store:
        for action in (lambda: store.get(agent.id), lambda: list(store.history(agent.id))):
            with pytest.raises(Exception) as caught:
                action()
            assert type(caught.value).__name__ != "TopicError"
            message = str(caught.value)
            assert str(agent.id) in message and "version 5" in message
            assert "no_such_module.anywhere:Gone" in message


def set_payload(url: str, agent_id: UUID, version: int, payload: bytes) -> None:
    execute(
        url,
        "UPDATE stored_events SET state=? WHERE originator_id=? AND originator_version=?",
        (payload, _key(url, agent_id), version),
    )


@pytest.mark.parametrize("snapshot_every", [None, 3], ids=["no-snapshot", "tail-after-snapshot"])
def test_a_damaged_payload_is_a_snaptail_error_naming_agent_version_and_type(
    database_url: str, snapshot_every: int | None
) -> None:
    """A payload whose bytes do not decode as its type (a disk fault, a hand edit) was an
    ``eventsourcing`` ``MapperDeserialisationError``: no ``SnaptailError`` at all. It is
    now ``RowUnreadable`` (still that ``eventsourcing`` error, for code catching it)."""
    from eventsourcing.persistence import MapperDeserialisationError

    from snaptail import RowUnreadable, SnaptailError

    agent = written(database_url, snapshot_every=snapshot_every)
    set_payload(database_url, agent.id, 10, msgspec.msgpack.encode({"x": None}))
    with AgentStore(database_url) as store:
        for action in (lambda: store.get(agent.id), lambda: list(store.history(agent.id))):
            with pytest.raises(SnaptailError) as caught:
                action()
            assert isinstance(caught.value, RowUnreadable)
            assert isinstance(caught.value, MapperDeserialisationError)
            message = str(caught.value)
            assert str(agent.id) in message and "version 10" in message
            assert "InputItemAdded" in message and "backup" in message


# -- snaptail snapshots verify --------------------------------------------------------


@dataclass
class FloatState(AgentState):
    score: float = 0.0


class ScoredAgent(Agent):
    """Holds a float that may be NaN (parsed from text, never passed as NaN)."""

    State = FloatState

    @event("Scored")
    def score(self, text: str) -> None:
        self.state.score = float(text)  # type: ignore[attr-defined]


def test_verify_reports_every_broken_agent_and_exits_1(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=3, keep_snapshots=10) as store:
        agents = []
        for n in range(4):
            agent = Agent(f"agent-{n}")
            for i in range(9):
                agent.add_input("user", f"{n}:{i}")
                store.save(agent)
            agents.append(agent)
    tail_gap, old_gap, bad_topic, healthy = agents
    delete_event(database_url, tail_gap.id, 8)
    execute(
        database_url,
        "DELETE FROM snaptail_snapshots WHERE originator_id=? AND originator_version>6",
        (_key(database_url, tail_gap.id),),
    )  # get() replays 7..10 and meets the gap; the snapshot at 6 is fine
    delete_event(database_url, old_gap.id, 2)  # behind every snapshot: only replay sees it
    set_topic(database_url, bad_topic.id, 4, "no_such_module:Gone")
    result = runner.invoke(app, ["snapshots", "verify", "--db", database_url])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    for broken in (tail_gap, old_gap, bad_topic):
        assert str(broken.id) in result.output, result.output
    assert str(healthy.id) not in result.output


def test_verify_compares_nan_as_equal_to_nan(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=2) as store:
        agent = ScoredAgent("nan")
        agent.score("nan")
        store.save(agent)
        assert math.isnan(store.get(agent.id).state.score)  # type: ignore[attr-defined]
    result = runner.invoke(app, ["snapshots", "verify", "--db", database_url])
    assert result.exit_code == 0, result.output
    assert "1 ok" in result.output


# -- snaptail inspect -----------------------------------------------------------------


def test_inspect_an_unloadable_agent_prints_what_it_can_and_why(database_url: str) -> None:
    agent = written(database_url, events=12, snapshot_every=5)
    delete_event(database_url, agent.id, 12)
    delete_event(database_url, agent.id, 11)
    execute(
        database_url,
        "DELETE FROM snaptail_snapshots WHERE originator_id=? AND originator_version>5",
        (_key(database_url, agent.id),),
    )
    set_topic(database_url, agent.id, 8, "no_such_module:Gone")
    result = runner.invoke(app, ["inspect", str(agent.id), "--db", database_url])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "healthy" not in result.output
    assert str(agent.id) in result.output
    assert "version 8" in result.output  # the reason
    assert "5" in result.output  # the snapshot it found
    assert "10" in result.output  # how far the log goes


def test_inspect_never_says_healthy_when_a_snapshot_was_distrusted(database_url: str) -> None:
    agent = written(database_url, events=30, snapshot_every=10)
    _, _, state = snapshot_row(database_url, agent.id, 30)
    set_snapshot_column(database_url, agent.id, 30, "checksum", zlib.crc32(state) ^ 1)
    result = runner.invoke(app, ["inspect", str(agent.id), "--db", database_url])
    assert result.exit_code == 0, result.output
    assert "healthy" not in result.output
    assert "30" in result.output and "checksum" in result.output


# -- issue 18, items 6 and 7: a stored topic never makes a reader import anything -----

SIDE_EFFECT_MODULE = "snaptail_test_side_effect"


@pytest.fixture
def side_effect_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module beside the reader whose import writes a marker file (and prints)."""
    marker = tmp_path / "imported.marker"
    (tmp_path / f"{SIDE_EFFECT_MODULE}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nprint('SIDE EFFECT RAN')\nclass Thing:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, SIDE_EFFECT_MODULE, raising=False)
    monkeypatch.delitem(sys.modules, "this", raising=False)
    return marker


def _nothing_imported(marker: Path, output: str) -> None:
    assert not marker.exists(), "a stored topic made a reader import a module"
    assert SIDE_EFFECT_MODULE not in sys.modules
    assert "this" not in sys.modules
    assert "Beautiful is better" not in output and "SIDE EFFECT RAN" not in output


def set_event_state(url: str, agent_id: UUID, version: int, state: bytes) -> None:
    execute(
        url,
        "UPDATE stored_events SET state=? WHERE originator_id=? AND originator_version=?",
        (state, _key(url, agent_id), version),
    )


def event_state(url: str, agent_id: UUID, version: int) -> bytes:
    rows = execute(
        url,
        "SELECT state FROM stored_events WHERE originator_id=? AND originator_version=?",
        (_key(url, agent_id), version),
    )
    return bytes(rows[0][0])


@pytest.mark.parametrize(
    "topic",
    [
        "this:Zen",
        f"{SIDE_EFFECT_MODULE}:Thing",
        "snaptail.domain.agent:Agent",  # an agent type, not an event class
        "snaptail.domain.agent:Agent.Event",  # a base class no event is ever of
    ],
)
def test_an_unknown_event_topic_is_refused_without_importing_it(
    database_url: str,
    topic: str,
    side_effect_module: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    agent = written(database_url, snapshot_every=3)
    set_topic(database_url, agent.id, 8, topic)  # after the snapshot at 6: the tail
    execute(
        database_url,
        "DELETE FROM snaptail_snapshots WHERE originator_id=? AND originator_version>6",
        (_key(database_url, agent.id),),
    )
    with AgentStore(database_url) as store:
        for action in (
            lambda: store.get(agent.id),
            lambda: store.replay(agent.id),
            lambda: list(store.history(agent.id)),
            lambda: list(store.history(agent.id, reverse=True)),
        ):
            with pytest.raises(UnknownTopic) as caught:
                action()
            assert isinstance(caught.value, DamagedLog)
            message = str(caught.value)
            assert str(agent.id) in message and "version 8" in message and topic in message
            assert "register_topic" in message
    for args in (["inspect", str(agent.id)], ["snapshots", "verify"]):
        result = runner.invoke(app, [*args, "--db", database_url])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert str(agent.id) in result.output
        assert "version 8" in result.output, result.output
        _nothing_imported(side_effect_module, result.output)
    _nothing_imported(side_effect_module, capfd.readouterr().out)


@pytest.mark.parametrize(
    "topic",
    [
        "this:Zen",
        f"{SIDE_EFFECT_MODULE}:Thing",
        "snaptail.domain.memory:MIB",  # imported already, but an int, not an agent type
        "snaptail.domain.agent:Agent.InputItemAdded",  # an event class, not an agent type
        "no_such_module:Gone",
    ],
)
def test_a_bad_snapshot_topic_is_untrusted_and_the_load_replays(
    database_url: str,
    topic: str,
    side_effect_module: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    agent = written(database_url, snapshot_every=3)
    set_snapshot_column(database_url, agent.id, 9, "topic", topic)
    result = runner.invoke(app, ["snapshots", "verify", "--db", database_url])
    assert "Traceback" not in result.output
    assert "1 untrusted" in result.output, result.output  # the snapshot, not the log
    assert "cannot be loaded" not in result.output
    with AgentStore(database_url) as store:
        loaded = store.get(agent.id)  # passes the snapshot over (and replaces it)
        assert store.load_stats(loaded).untrusted  # type: ignore[union-attr]
        assert not agent_differences(loaded, store.replay(agent.id))
    _nothing_imported(side_effect_module, result.output + capfd.readouterr().out)


@pytest.mark.parametrize(
    "topic", ["this:Zen", "snaptail.domain.memory:MIB", "snaptail.domain.agent:Agent.Created"]
)
def test_a_forged_originator_topic_is_a_clear_error(
    database_url: str,
    topic: str,
    side_effect_module: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    agent = written(database_url)
    created = msgspec.msgpack.decode(event_state(database_url, agent.id, 1))
    created["originator_topic"] = topic
    set_event_state(database_url, agent.id, 1, msgspec.msgpack.encode(created))
    with AgentStore(database_url) as store:
        for load in (store.get, store.replay):
            with pytest.raises(UnknownTopic) as caught:
                load(agent.id)
            assert str(agent.id) in str(caught.value) and "version 1" in str(caught.value)
    _nothing_imported(side_effect_module, capfd.readouterr().out)


class MovedAgent(Agent):
    """Stands for a class whose events were stored under an older name."""


def test_register_topic_reads_rows_of_a_moved_class(database_url: str) -> None:
    with AgentStore(database_url) as store:
        agent = MovedAgent("moved")
        agent.add_input("user", "hello")
        store.save(agent)
    old = f"old_home_{uuid4().hex}.agents:OldAgent"  # registrations last for the process
    execute(
        database_url,
        "UPDATE stored_events SET topic=replace(topic, ?, ?) WHERE originator_id=?",
        (f"{__name__}:MovedAgent", old, _key(database_url, agent.id)),
    )
    created = msgspec.msgpack.decode(event_state(database_url, agent.id, 1))
    created["originator_topic"] = old
    set_event_state(database_url, agent.id, 1, msgspec.msgpack.encode(created))
    with AgentStore(database_url) as store:
        with pytest.raises(UnknownTopic, match=old):
            store.get(agent.id)
        register_topic(old, MovedAgent)  # and its event classes, under the old name
        loaded = store.get(agent.id)
        assert type(loaded) is MovedAgent and loaded.version == 2
    with pytest.raises(TypeError, match="not an agent type"):
        register_topic("x:Y", int)
    with pytest.raises(ValueError, match="already registered"):
        register_topic(old, Agent)


WRITER = """
import sys
from snaptail import AgentStore
from snaptail_test_operator_agents import OperatorAgent
with AgentStore(sys.argv[1]) as store:
    agent = OperatorAgent("operated")
    agent.add_input("user", "hello")
    store.save(agent)
print(agent.id)
"""


def test_a_reader_imports_only_the_modules_the_operator_names(tmp_path: Path) -> None:
    (tmp_path / "snaptail_test_operator_agents.py").write_text(
        "from snaptail import Agent\n\n\nclass OperatorAgent(Agent):\n    pass\n"
    )
    url = f"sqlite:///{tmp_path / 'operated.db'}"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{tmp_path}"}
    env.pop("SNAPTAIL_AGENT_MODULES", None)

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, **extra, "COLUMNS": "250"},
            check=False,
        )

    written_by = run("-c", WRITER, url)
    assert written_by.returncode == 0, written_by.stderr
    agent_id = written_by.stdout.strip()
    verify = ("-m", "snaptail.cli", "snapshots", "verify", "--db", url)
    unknown = run(*verify)
    assert unknown.returncode == 1, unknown.stdout + unknown.stderr
    assert agent_id in unknown.stdout and "SNAPTAIL_AGENT_MODULES" in unknown.stdout
    named = run(*verify, SNAPTAIL_AGENT_MODULES="snaptail_test_operator_agents")
    assert named.returncode == 0, named.stdout + named.stderr
    assert "without snapshot" in named.stdout and "cannot be loaded" not in named.stdout


def test_the_console_imports_nothing_a_row_names(
    sqlite_url: str, side_effect_module: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from starlette.testclient import TestClient

    from snaptail.ui import create_app

    agent = written(sqlite_url, snapshot_every=3)
    created = msgspec.msgpack.decode(event_state(sqlite_url, agent.id, 1))
    created["originator_topic"] = f"{SIDE_EFFECT_MODULE}:Thing"
    set_event_state(sqlite_url, agent.id, 1, msgspec.msgpack.encode(created))
    execute(sqlite_url, "UPDATE snaptail_snapshots SET topic=?", ("this:Zen",))
    with TestClient(create_app(sqlite_url), base_url="http://127.0.0.1") as client:
        texts = []
        for path in (
            "/api/v1/snapshots",
            f"/api/v1/agents/{agent.id}",
            f"/api/v1/agents/{agent.id}/events?type=InputItemAdded",
        ):
            response = client.get(path)
            texts.append(response.text)
            if response.status_code != 200:
                assert str(agent.id) in response.json()["error"], response.text
    _nothing_imported(side_effect_module, "".join(texts) + capfd.readouterr().out)


@dataclass
class CountState(AgentState):
    count: int = 0


class Counting(Agent):
    """An agent type whose event a damaged log may hold in another agent's log."""

    State = CountState

    @event("Bumped")
    def bump(self, by: int) -> None:
        self.state.count += by  # type: ignore[attr-defined]


def test_an_event_whose_handler_raises_on_load_is_a_snaptail_error_naming_it(
    database_url: str,
) -> None:
    """Another type's event in an agent's log (a row moved by hand or a damaged copy)
    made the load raise the handler's bare ``AttributeError``, naming nothing. Now it
    is ``ReplayFailed`` naming the agent, its type, the version and the event type."""
    from snaptail.errors import ReplayFailed

    with AgentStore(database_url) as store:
        counting = Counting(name="counting")
        counting.bump(2)
        store.save(counting)
        agent = Agent(name="plain")
        agent.add_input("user", "hi")
        store.save(agent)
    foreign = f"{__name__}:Counting.Bumped"
    row = execute(
        database_url,
        "SELECT state FROM stored_events WHERE originator_id=? AND originator_version=2",
        (_key(database_url, counting.id),),
    )
    execute(
        database_url,
        "UPDATE stored_events SET topic=?, state=? WHERE originator_id=? AND originator_version=2",
        (foreign, bytes(row[0][0]), _key(database_url, agent.id)),
    )
    with AgentStore(database_url) as store:
        for read in (store.get, store.replay):
            with pytest.raises(ReplayFailed) as caught:
                read(agent.id)
            message = str(caught.value)
            assert str(agent.id) in message and "version 2" in message
            assert "Counting.Bumped" in message and "AttributeError" in message

"""Snapshots meet new code in a fresh process, as after a deploy.

Agents are written by one process with version 1 of an agent type (a module
generated into ``tmp_path``), then loaded by another process running a changed
module of the same name: a changed state shape (stale snapshots: one warning, a
full replay, a fresh snapshot), corrupted snapshot bytes (one warning, the previous
snapshot, a fresh one) or a deliberate migration (``class_version`` with
``upcast_v1_v2`` on the agent and on an event: trusted, upcast, no warning).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from uuid import UUID

from tests.snapshot_sql import set_snapshot_column, snapshot_versions

ROOT = Path(__file__).resolve().parents[2]
NOTES = (12, 20)  # notes per agent: snapshots at 7 and 13, and at 13 and 19 (K=2)

V1 = """
from dataclasses import dataclass, field
from snaptail import Agent, AgentState, event

@dataclass
class NotesState(AgentState):
    notes: list[str] = field(default_factory=list)

class NotesAgent(Agent):
    State = NotesState

    def write(self, text: str) -> None:
        self.add_note(text)

    @event("NoteAdded")
    def add_note(self, text: str) -> None:
        self.state.notes.append(text)
"""

# The same class, one more state field: every stored snapshot is stale.
V2_SHAPE = """
from dataclasses import dataclass, field
from snaptail import Agent, AgentState, event

@dataclass
class NotesState(AgentState):
    notes: list[str] = field(default_factory=list)
    note_count: int = 0

class NotesAgent(Agent):
    State = NotesState

    @event("NoteAdded")
    def add_note(self, text: str) -> None:
        self.state.notes.append(text)
        self.state.note_count += 1
"""

# A deliberate migration: class_version 2 with upcasters for snapshots and events.
V2_UPCAST = """
from dataclasses import dataclass, field
from typing import Any
from snaptail import Agent, AgentState, event

@dataclass
class NotesState(AgentState):
    notes: list[str] = field(default_factory=list)
    note_count: int = 0

class NotesAgent(Agent):
    State = NotesState
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        # What replaying the v1 events with the v2 code would have built.
        state["notes"] = [note + "|v1" for note in state["notes"]]
        state["note_count"] = len(state["notes"])

    class NoteAdded(Agent.Event):
        text: str
        tags: list[str]
        class_version = 2

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["tags"] = ["v1"]

    @event(NoteAdded)
    def add_note(self, text: str, tags: list[str]) -> None:
        self.state.notes.append(text + "|" + ",".join(tags))
        self.state.note_count += 1
"""

SCRIPT = """
import json, logging, sys
from uuid import UUID

sys.path.insert(0, sys.argv[3])
import notes_agents
from snaptail import AgentStore

mode, url = sys.argv[1], sys.argv[2]
warnings = []

class Grab(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())

log = logging.getLogger("snaptail")
log.addHandler(Grab(level=logging.WARNING))
log.setLevel(logging.WARNING)

with AgentStore(url, snapshot_every=5, keep_snapshots=2) as store:
    if mode == "write":
        ids = []
        for n in json.loads(sys.argv[4]):
            agent = notes_agents.NotesAgent(name=f"notes-{n}")
            for i in range(n):
                agent.write(f"note {i}")
                if i % 3 == 2:
                    store.save(agent)
            store.save(agent)
            ids.append(str(agent.id))
        print(json.dumps(ids))
    else:
        out = []
        for agent_id in map(UUID, json.loads(sys.argv[4])):
            del warnings[:]
            loaded = store.get(agent_id)
            first = list(warnings)
            replayed = store.replay(agent_id)
            del warnings[:]
            again = store.get(agent_id)
            out.append({
                "id": str(agent_id),
                "version": loaded.version,
                "equal": loaded.state == replayed.state == again.state,
                "notes": loaded.state.notes,
                "note_count": getattr(loaded.state, "note_count", None),
                "loaded_from": store.load_stats(loaded).snapshot_version,
                "warnings": first,
                "reloaded_from": store.load_stats(again).snapshot_version,
                "warnings_again": list(warnings),
                "snapshots": sorted(
                    i.originator_version for i in store.recorder.select_snapshot_infos(agent_id)
                ),
            })
        print(json.dumps(out))
"""


def _run(tmp_path: Path, module: str, mode: str, url: str, arg: str) -> Any:
    folder = tmp_path / f"{mode}-{abs(hash(module))}"
    folder.mkdir(exist_ok=True)
    (folder / "notes_agents.py").write_text(textwrap.dedent(module))
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), mode, url, str(folder), arg],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_v1(tmp_path: Path, url: str) -> list[str]:
    ids: list[str] = _run(tmp_path, V1, "write", url, json.dumps(NOTES))
    assert [snapshot_versions(url, UUID(i)) for i in ids] == [[7, 13], [13, 19]]
    return ids


def test_changed_state_shape_in_a_fresh_process(database_url: str, tmp_path: Path) -> None:
    ids = _write_v1(tmp_path, database_url)
    results = _run(tmp_path, V2_SHAPE, "read", database_url, json.dumps(ids))
    for n, agent_id, r in zip(NOTES, ids, results, strict=True):
        assert r["equal"], "load, full replay and reload agree"
        assert r["version"] == n + 1
        assert r["notes"] == [f"note {i}" for i in range(n)]
        assert r["note_count"] == n, "the new field was derived from the events"
        assert r["loaded_from"] == 0, "both stored snapshots were stale: full replay"
        (warning,) = r["warnings"]
        assert agent_id in warning and "fingerprint does not match" in warning
        assert r["snapshots"][-1] == n + 1, "a fresh snapshot of the loaded state"
        assert r["reloaded_from"] == n + 1 and r["warnings_again"] == []


def test_corrupted_snapshot_bytes_in_a_fresh_process(database_url: str, tmp_path: Path) -> None:
    ids = _write_v1(tmp_path, database_url)
    for uuid in map(UUID, ids):
        newest = snapshot_versions(database_url, uuid)[-1]
        set_snapshot_column(database_url, uuid, newest, "state", b"\x00garbage\xff")
    results = _run(tmp_path, V1, "read", database_url, json.dumps(ids))
    for n, agent_id, r in zip(NOTES, ids, results, strict=True):
        assert r["equal"]
        assert r["notes"] == [f"note {i}" for i in range(n)]
        (warning,) = r["warnings"]
        assert agent_id in warning and "checksum mismatch" in warning
        assert r["loaded_from"] == {12: 7, 20: 13}[n], "the previous valid snapshot"
        assert r["snapshots"] == {12: [7, 13], 20: [13, 21]}[n]
        assert r["reloaded_from"] == n + 1 and r["warnings_again"] == []


def test_upcasting_snapshots_and_events_in_a_fresh_process(
    database_url: str, tmp_path: Path
) -> None:
    ids = _write_v1(tmp_path, database_url)
    results = _run(tmp_path, V2_UPCAST, "read", database_url, json.dumps(ids))
    for n, r in zip(NOTES, results, strict=True):
        assert r["equal"], "upcast snapshot + upcast tail == upcast full replay"
        assert r["notes"] == [f"note {i}|v1" for i in range(n)]
        assert r["note_count"] == n
        assert r["warnings"] == [], "a deliberate migration is not a stale snapshot"
        assert r["loaded_from"] == {12: 13, 20: 19}[n], "the v1 snapshot was trusted"

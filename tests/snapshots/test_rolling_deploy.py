"""Deploys and rollbacks never cause a replay storm, and never a wrong state.

Each step runs in a fresh process with one version of an agent type (a module
generated into ``tmp_path``), as two versions of a service do during a rolling
deploy. Rows read are counted at the recorder (every ``select_for_load`` call).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RECENT = 10

V1 = """
from dataclasses import dataclass
from snaptail import Agent, AgentState, event

@dataclass
class TallyState(AgentState):
    count: int = 0
    last: str = ""

class Tally(Agent):
    State = TallyState

    @event("Noted")
    def note(self, text: str) -> None:
        self.state.count += 1
        self.state.last = text
"""

# One more state field, derived by the handler; snapshots of v1 are upcast.
V2 = """
from dataclasses import dataclass
from typing import Any
from snaptail import Agent, AgentState, event

@dataclass
class TallyState(AgentState):
    count: int = 0
    last: str = ""
    parity: str = "even"

class Tally(Agent):
    State = TallyState
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["parity"] = "odd" if state["count"] % 2 else "even"

    @event("Noted")
    def note(self, text: str) -> None:
        self.state.count += 1
        self.state.last = text
        self.state.parity = "odd" if self.state.count % 2 else "even"
"""

SCRIPT = """
import json, logging, sys
from uuid import UUID

sys.path.insert(0, sys.argv[3])
import tally_agents
from snaptail import AgentStore
from snaptail.snapshots import state_fingerprint
from snaptail.testing import assert_same

mode, url, arg = sys.argv[1], sys.argv[2], json.loads(sys.argv[4])
warnings = []

class Grab(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())

log = logging.getLogger("snaptail")
log.addHandler(Grab(level=logging.WARNING))
log.setLevel(logging.WARNING)

store = AgentStore(url, snapshot_every=100, keep_snapshots=2, recent_events=RECENT)
rows_read = []
inner = store.recorder.select_for_load

def counting(*args, **kwargs):
    rows = inner(*args, **kwargs)
    rows_read.append(len(rows.events) + (rows.snapshot is not None))
    return rows

store.recorder.select_for_load = counting
inner_snapshot = getattr(store.recorder, "select_snapshot", None)

def counting_snapshot(*args, **kwargs):
    snapshot = inner_snapshot(*args, **kwargs)
    rows_read.append(snapshot is not None)
    return snapshot

if inner_snapshot is not None:
    store.recorder.select_snapshot = counting_snapshot

def record(agent, n):
    for i in range(n):
        agent.note(f"note {agent.version}")
        if i % 50 == 49:
            store.save(agent)
    store.save(agent)

def snapshots(agent_id):
    return [(i.originator_version, i.fingerprint)
            for i in store.recorder.select_snapshot_infos(agent_id)]

def load(agent_id):
    own = state_fingerprint(tally_agents.Tally)
    own_newest = max((v for v, f in snapshots(agent_id) if f == own), default=0)
    before = snapshots(agent_id)
    del warnings[:], rows_read[:]
    agent = store.get(agent_id)
    read = sum(rows_read)
    assert_same(agent, store.replay(agent_id), agent.version, "get()")
    return agent, {
        "version": agent.version,
        "rows_read": read,
        "loaded_from": store.load_stats(agent).snapshot_version,
        "own_newest": own_newest,
        "warnings": list(warnings),
        "snapshots_before": before,
        "snapshots_after": snapshots(agent_id),
    }

if mode == "write":
    agent = tally_agents.Tally(name="tally")
    record(agent, arg["events"] - 1)
    print(json.dumps({"id": str(agent.id), "version": agent.version}))
else:
    agent, report = load(UUID(arg["id"]))
    if arg.get("record"):
        record(agent, arg["record"])
        report["snapshots_after_saves"] = snapshots(agent.id)
    if arg.get("twice"):
        report["again"] = load(agent.id)[1]
    print(json.dumps(report))
""".replace("RECENT", str(RECENT))


def _run(tmp_path: Path, module: str, mode: str, url: str, arg: dict[str, Any]) -> Any:
    folder = tmp_path / f"code-{abs(hash(module))}"
    folder.mkdir(exist_ok=True)
    (folder / "tally_agents.py").write_text(textwrap.dedent(module))
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), mode, url, str(folder), json.dumps(arg)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_read_only_its_tail(step: str, report: dict[str, Any]) -> None:
    """At most the tail after this code's own newest snapshot, plus the recent cache
    (twice: once with the first snapshot row tried, once with the one used), plus the
    snapshot rows passed over, and never the whole log."""
    tail = report["version"] - report["own_newest"]
    assert report["own_newest"] > 0, f"{step}: this code has no snapshot left: {report}"
    assert report["loaded_from"] == report["own_newest"] or report["loaded_from"] > 0, report
    passed_over = sum(v > report["loaded_from"] for v, _ in report["snapshots_before"])
    assert report["rows_read"] <= tail + 2 * (RECENT + 1) + passed_over, f"{step}: {report}"
    assert report["rows_read"] < report["version"] // 4, f"{step}: read the log: {report}"


def test_rolling_deploy_and_rollback_read_only_their_tail(
    database_url: str, tmp_path: Path
) -> None:
    written = _run(tmp_path, V1, "write", database_url, {"events": 3000})
    agent_id = written["id"]
    assert written["version"] == 3000

    v2 = _run(tmp_path, V2, "load", database_url, {"id": agent_id, "record": 250})
    assert v2["version"] == 3000 and v2["loaded_from"] == 2901, "v1's snapshot, upcast"
    assert v2["warnings"] == [], "a deliberate migration is not a stale snapshot"
    _assert_read_only_its_tail("v2 after v1", {**v2, "own_newest": 2901})
    kept = {v for v, _ in v2["snapshots_after_saves"]}
    assert 2901 in kept, f"v1's newest snapshot survives v2's saves: {kept}"

    v1 = _run(tmp_path, V1, "load", database_url, {"id": agent_id})
    assert v1["version"] == 3250
    assert v1["own_newest"] == v1["loaded_from"] == 2901, v1
    _assert_read_only_its_tail("v1 after v2 (rollback)", v1)
    assert {v for v, _ in v1["snapshots_after"]} >= {v for v, _ in v1["snapshots_before"]}, (
        "a load never deletes a snapshot written by newer code"
    )

    again = _run(tmp_path, V2, "load", database_url, {"id": agent_id})
    assert again["version"] == 3250 and again["loaded_from"] >= 3201, again
    _assert_read_only_its_tail("v2 again", again)
    assert again["warnings"] == []


# Same code, snapshot_version bumped: every snapshot of the type is stale.
V1_BUMPED = V1.replace("State = TallyState", "State = TallyState\n    snapshot_version = 2")
# Same code, a command-only limit raised: every snapshot stays valid.
V1_BIGGER_EVENTS = V1.replace(
    "State = TallyState", "State = TallyState\n    max_event_bytes = 4 * 1024 * 1024"
)


def test_raising_max_event_bytes_keeps_every_snapshot(database_url: str, tmp_path: Path) -> None:
    agent_id = _run(tmp_path, V1, "write", database_url, {"events": 450})["id"]
    report = _run(tmp_path, V1_BIGGER_EVENTS, "load", database_url, {"id": agent_id})
    assert report["loaded_from"] == 401 and report["warnings"] == [], report
    assert report["snapshots_after"] == report["snapshots_before"], "the load wrote nothing"


def test_bumping_snapshot_version_replays_once_with_one_warning(
    database_url: str, tmp_path: Path
) -> None:
    agent_id = _run(tmp_path, V1, "write", database_url, {"events": 450})["id"]
    report = _run(
        tmp_path, V1_BUMPED, "load", database_url, {"id": agent_id, "twice": True}
    )
    assert report["loaded_from"] == 0, "the stale snapshots were passed over: one replay"
    (warning,) = report["warnings"]
    assert agent_id in warning and "fingerprint" in warning
    again = report["again"]
    assert again["loaded_from"] == 450 and again["warnings"] == [], again
    assert again["rows_read"] <= RECENT + 1

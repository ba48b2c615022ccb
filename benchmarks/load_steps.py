"""Where a load's time goes, step by step, beside the floor's (issue 19).

    python -m benchmarks.load_steps [--rounds 20] [--runs 200]

Seeds one SQLite file with the two agents of ``benchmarks.load_side_by_side`` (a
1,050-event agent of the bench workload, snapshot at 1,001, and the tiny agent of
``snaptail bench scale``) and times, with ``recent_events=0``, in one process, the
cases taking turns each round (order alternating): the whole load (``store.get``), its
steps run alone on the same rows, and the floor's (plain ``sqlite3`` + msgspec,
``snaptail.bench.systems.Floor``) two steps. Prints the median µs per call of each:

* ``read``: ``select_for_load`` (snapshot and tail rows in one read transaction);
* ``snapshot``: ``judge_snapshot`` (checksum, fingerprint check, typed decode);
  ``fingerprint`` and ``decode`` are two of its parts, timed alone;
* ``replay``: the tail applied to the decoded snapshot (``replay_rows``: typed decode
  of each row and its handler);
* ``bookkeeping``: the rest of ``build_agent`` (version checks, byte counts, the
  recent-event cache, the load's stats and the store's record of the agent);
* ``driver``: what the whole load costs beyond those steps (the step generator, its
  driver, the load's report).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from benchmarks.load_side_by_side import seed
from snaptail import AgentStore
from snaptail.application.engine import Engine
from snaptail.application.loading import AgentBooks, build_agent
from snaptail.bench.systems import Floor, connect
from snaptail.domain.topics import agent_class_of
from snaptail.infrastructure.backends import open_recorder
from snaptail.snapshots import state_fingerprint
from snaptail.snapshots.codec import decode_snapshot
from snaptail.snapshots.trust import judge_snapshot


def cases(path: Path, agent_id: UUID) -> dict[str, Callable[[], Any]]:
    store = AgentStore(f"sqlite:///{path}", recent_events=0)
    engine = Engine(recent_events=0)
    recorder = open_recorder(f"sqlite:///{path}")
    floor = Floor(connect(path), recent_events=0)
    rows = recorder.select_for_load(agent_id, recent=0)
    snapshot = rows.snapshot
    assert snapshot is not None
    agent_class = agent_class_of(snapshot.topic)
    assert agent_class is not None
    books = AgentBooks()
    mapper, opened = engine.mapper, engine.open_snapshot
    decode = Floor.decode

    def judged() -> Any:
        return judge_snapshot(snapshot, opened).agent

    def replayed() -> Any:
        return mapper.replay_rows(judge_snapshot(snapshot, opened).agent, agent_id, rows.events)

    def built() -> Any:
        agent = judge_snapshot(snapshot, opened).agent
        return build_agent(agent_id, agent, len(snapshot.state), rows.events, mapper, 0, 0.0, books)

    return {
        "load": lambda: store.get(agent_id),
        "read": lambda: recorder.select_for_load(agent_id, recent=0),
        "snapshot": judged,
        "fingerprint": lambda: state_fingerprint(agent_class),
        "decode": lambda: decode_snapshot(
            agent_class, agent_id, snapshot.originator_version, snapshot.state
        ),
        "snapshot+replay": replayed,
        "snapshot+build": built,
        "floor": lambda: floor.load(agent_id),
        "floor read": lambda: floor.read(agent_id),
        "floor decode": lambda: decode(floor.read(agent_id)),
    }


def measure(loads: dict[str, Callable[[], Any]], rounds: int, runs: int) -> dict[str, float]:
    clock = time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in loads}
    names = list(loads)
    for load in loads.values():  # warm up
        for _ in range(50):
            load()
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            load = loads[name]
            started = clock()
            for _ in range(runs):
                load()
            times[name].append((clock() - started) / runs * 1e6)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "steps.db"
        ids = seed(path)
        print(f"{args.rounds} rounds x {args.runs} calls per case; medians in µs per call")
        print("agent  step          snaptail   floor   (floor step)")
        for name in ("tiny", "big"):
            m = measure(cases(path, UUID(ids[name])), args.rounds, args.runs)
            replay = m["snapshot+replay"] - m["snapshot"]
            bookkeeping = m["snapshot+build"] - m["snapshot+replay"]
            driver = m["load"] - m["read"] - m["snapshot+build"]
            floor_decode = m["floor decode"] - m["floor read"]
            rows = [
                ("read", m["read"], m["floor read"], "two SELECTs"),
                ("snapshot", m["snapshot"], None, ""),
                ("  fingerprint", m["fingerprint"], None, ""),
                ("  decode", m["decode"], None, ""),
                ("replay", replay, None, ""),
                ("(decode all)", None, floor_decode, "msgspec, untyped"),
                ("bookkeeping", bookkeeping, None, ""),
                ("driver", driver, None, ""),
                ("total", m["load"], m["floor"], ""),
            ]
            for step, ours, floor, note in rows:
                a = f"{ours:8.2f}" if ours is not None else " " * 8
                b = f"{floor:8.2f}" if floor is not None else " " * 8
                print(f"{name:6} {step:13} {a}  {b}   {note}")
            print(f"{name:6} {'ratio':13} {m['load'] / m['floor']:8.2f}")


if __name__ == "__main__":
    main()

"""Several processes writing one store at once, on SQLite (one file) and PostgreSQL.

Four processes each write their own 200 agents; three more contend on the same few
agents (load, add an event, save; on a conflict reload and retry). Afterwards no
acknowledged event is missing, no event is there that was not acknowledged, versions
run 1..n without a gap or a duplicate, every conflict surfaced as
``ConcurrencyError``, and every agent's snapshot + tail equals its full replay.
"""

from __future__ import annotations

import multiprocessing
import traceback
import uuid
from collections import Counter
from multiprocessing.synchronize import Barrier
from typing import Any

from snaptail import AgentStore, ConcurrencyError
from snaptail.domain.agent import Agent

OWN_WRITERS = 4
AGENTS_PER_WRITER = 200
CONTENDERS = 3
CONTENDED_AGENTS = 2
ROUNDS_PER_CONTENDER = 20
SNAPSHOT_EVERY = 3  # small, so that many saves also write (and prune) a snapshot


def write_own_agents(url: str, writer: int, barrier: Barrier, results: Any) -> None:
    """Create 200 agents and grow each in two saves; report what was acknowledged."""
    report: dict[str, Any] = {"writer": writer, "acked": {}, "errors": []}
    try:
        with AgentStore(url, snapshot_every=SNAPSHOT_EVERY) as store:
            barrier.wait()
            for n in range(AGENTS_PER_WRITER):
                agent = Agent(name=f"w{writer}-{n}")
                agent.add_input("user", f"w{writer}-{n}-q")
                store.save(agent)
                texts = [f"w{writer}-{n}-q"]
                agent.add_output("assistant_message", f"w{writer}-{n}-a")
                agent.add_input("user", f"w{writer}-{n}-q2")
                store.save(agent)
                texts += [f"w{writer}-{n}-a", f"w{writer}-{n}-q2"]
                report["acked"][agent.id.hex] = texts
    except BaseException:
        report["errors"].append(traceback.format_exc())
    results.put(report)


def contend(url: str, writer: int, agent_ids: list[str], barrier: Barrier, results: Any) -> None:
    """Add events to shared agents, retrying on conflicts; report acks and conflicts."""
    report: dict[str, Any] = {"writer": writer, "acked": [], "conflicts": 0, "errors": []}
    ids = [uuid.UUID(h) for h in agent_ids]
    try:
        with AgentStore(url, snapshot_every=SNAPSHOT_EVERY) as store:
            # First round: everyone loads the same version before anyone saves, so
            # all but one save must conflict.
            first = store.get(ids[0])
            first.add_input("user", f"c{writer}-first")
            barrier.wait()
            try:
                store.save(first)
                report["acked"].append((ids[0].hex, f"c{writer}-first"))
            except ConcurrencyError:
                report["conflicts"] += 1
            for n in range(ROUNDS_PER_CONTENDER):
                agent_id = ids[n % len(ids)]
                text = f"c{writer}-{n}"
                while True:
                    agent = store.get(agent_id)
                    agent.add_input("user", text)
                    try:
                        store.save(agent)
                    except ConcurrencyError:
                        report["conflicts"] += 1
                        continue
                    report["acked"].append((agent_id.hex, text))
                    break
    except BaseException:
        report["errors"].append(traceback.format_exc())
    results.put(report)


def _texts(store: AgentStore, agent_id: uuid.UUID) -> list[str]:
    return [e.item.text for e in store.history(agent_id) if hasattr(e, "item")]


def test_concurrent_writers(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=SNAPSHOT_EVERY) as store:
        shared = []
        for n in range(CONTENDED_AGENTS):
            agent = Agent(name=f"shared-{n}")
            store.save(agent)
            shared.append(agent.id)

    ctx = multiprocessing.get_context("spawn")
    barrier_own = ctx.Barrier(OWN_WRITERS, timeout=120)
    barrier_contend = ctx.Barrier(CONTENDERS, timeout=120)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=write_own_agents, args=(database_url, w, barrier_own, results))
        for w in range(OWN_WRITERS)
    ] + [
        ctx.Process(
            target=contend,
            args=(database_url, w, [i.hex for i in shared], barrier_contend, results),
        )
        for w in range(CONTENDERS)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    errors = [e for r in reports for e in r["errors"]]
    assert errors == [], "\n".join(errors)
    contenders = [r for r in reports if "conflicts" in r]
    conflicts = sum(r["conflicts"] for r in contenders)
    assert conflicts >= CONTENDERS - 1  # the synchronised first round guarantees these

    with AgentStore(database_url, snapshot_every=SNAPSHOT_EVERY) as store:
        # Agents with one writer each: exactly the acknowledged events, in order.
        own: dict[str, list[str]] = {}
        for report in reports:
            if "conflicts" not in report:
                own.update(report["acked"])
        assert len(own) == OWN_WRITERS * AGENTS_PER_WRITER
        for hex_id, texts in own.items():
            agent_id = uuid.UUID(hex_id)
            assert _texts(store, agent_id) == texts
            assert store.event_count(agent_id) == 4

        # Shared agents: every acknowledged event once, nothing unacknowledged.
        acked = Counter((agent_id, text) for r in contenders for agent_id, text in r["acked"])
        assert all(count == 1 for count in acked.values())
        assert len(acked) == CONTENDERS * ROUNDS_PER_CONTENDER + 1
        for agent_id in shared:
            texts = _texts(store, agent_id)
            assert Counter(texts) == Counter(t for i, t in acked if i == agent_id.hex)
            versions = [e.originator_version for e in store.history(agent_id)]
            assert versions == list(range(1, len(versions) + 1))
            assert store.event_count(agent_id) == len(versions) == len(texts) + 1

        # Snapshot + tail equals full replay, for every agent.
        for agent_id in [*shared, *(uuid.UUID(h) for h in own)]:
            assert store.get(agent_id).state == store.replay(agent_id).state
        assert len(store.recorder.select_snapshot_infos(shared[0])) >= 1

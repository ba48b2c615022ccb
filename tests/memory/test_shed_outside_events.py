"""Review: ``shed_memory`` must shed state only by recording events. One that changes
the state directly (``del self.state.notes[:-2]``) left the live agent unlike its log,
and the next snapshot (taken from the live agent) made every later load differ from
the full replay: 2 notes loaded, 30 in the log, silently. Now the store checks, after
shedding, that replaying the events it recorded on the state before gives the state
after; if not, the agent object is broken (it refuses commands and saves) and a load
that sheds raises ``AgentBroken`` naming ``shed_memory``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from snaptail import Agent, AgentBroken, AgentState, AgentStore, event
from snaptail.domain.compare import agent_differences
from snaptail.snapshots import decode_state


@dataclass
class NotesState(AgentState):
    notes: list[str] = field(default_factory=list)


class Notes(Agent):
    State = NotesState
    memory_budget = 40_000
    if TYPE_CHECKING:
        state: NotesState

    @event("Noted")
    def note(self, text: str) -> None:
        self.state.notes.append(text)


class SheddingDirectly(Notes):
    def shed_memory(self, target_bytes: int) -> None:
        del self.state.notes[:-2]  # no event: the log still has every note
        super().shed_memory(target_bytes)


class SheddingByEvents(Notes):
    def shed_memory(self, target_bytes: int) -> None:
        if len(self.state.notes) > 2:
            self._dropped(keep=2)
        super().shed_memory(target_bytes)

    @event("Dropped")
    def _dropped(self, keep: int) -> None:
        del self.state.notes[:-keep]


def _fill(store: AgentStore, agent: Notes) -> None:
    for i in range(30):
        agent.note(f"{i} " + "x" * 2_000)
        store.save(agent)  # over budget from about the 20th note: sheds after the commit


def test_shedding_outside_events_breaks_the_agent_instead_of_its_snapshots(
    sqlite_url: str,
) -> None:
    with AgentStore(sqlite_url, snapshot_every=5, recent_events=0) as store:
        agent = SheddingDirectly(name="direct")
        with pytest.raises(AgentBroken, match="shed_memory"):
            _fill(store, agent)  # the save after the bad shed is refused
        with pytest.raises(AgentBroken, match="shed_memory"):
            store.get(agent.id)  # a load over budget sheds: refused loudly
        head = store.event_count(agent.id)
        infos = store.recorder.select_snapshot_infos(agent.id)
        assert infos
        for info in infos:  # every snapshot stored is its version's replay
            snapshot = store.recorder.select_snapshot(agent.id, lte=info.originator_version)
            assert snapshot is not None
            at = decode_state(SheddingDirectly, agent.id, info.originator_version, snapshot.state)
            replayed = store.replay(agent.id, version=info.originator_version)
            assert not agent_differences(at, replayed), info
        assert len(store.replay(agent.id).state.notes) == head - 1  # type: ignore[attr-defined]


def test_shedding_by_events_loads_as_the_replay(sqlite_url: str) -> None:
    with AgentStore(sqlite_url, snapshot_every=5, recent_events=0) as store:
        agent = SheddingByEvents(name="events")
        _fill(store, agent)
        loaded = store.get(agent.id)
        assert len(loaded.state.notes) < 30  # type: ignore[attr-defined]
        assert not agent_differences(loaded, store.replay(agent.id))

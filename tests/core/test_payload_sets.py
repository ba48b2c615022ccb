"""Review: a command's set items and dict keys are checked as exactly as its other
values. ``{1, 2}`` for a ``set[float]`` field, or ``{3: "x"}`` for a
``dict[float, str]`` one, is stored and read back as floats: a handler saw ints live
and floats on every replay, and a snapshot taken from the live agent then disagreed
with the full replay, silently. Such a payload is refused, naming the field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from snaptail import Agent, AgentState, AgentStore, InvalidEventPayload, event
from snaptail.domain.compare import agent_differences, describe


@dataclass
class ShownState(AgentState):
    shown: list[str] = field(default_factory=list)


class Scorer(Agent):
    State = ShownState
    if TYPE_CHECKING:
        state: ShownState

    @event("Scored")
    def score(self, values: set[float], by: dict[float, str]) -> None:
        keys = ",".join(str(k) for k in by)
        self.state.shown.append(",".join(sorted(str(v) for v in values)) + "|" + keys)


def test_ints_in_a_set_of_floats_are_refused() -> None:
    agent = Scorer(name="s")
    with pytest.raises(InvalidEventPayload, match="'values'"):
        agent.score({1.5, 2}, {3.0: "x"})
    assert agent.version == 1


def test_int_keys_of_a_float_keyed_dict_are_refused() -> None:
    agent = Scorer(name="s")
    with pytest.raises(InvalidEventPayload, match="'by'"):
        agent.score({1.5}, {3: "x"})
    assert agent.version == 1


def test_exact_sets_and_keys_load_as_they_ran(database_url: str) -> None:
    agent = Scorer(name="s")
    with AgentStore(database_url, snapshot_every=2) as store:
        for i in range(4):
            agent.score({1.5, float(i)}, {float(i): "x", 0.5: "y"})
            store.save(agent)
        replayed = store.replay(agent.id)
        for other, name in ((store.get(agent.id), "get"), (agent, "live")):
            differences = agent_differences(other, replayed)
            assert not differences, describe(differences, name, "replay")

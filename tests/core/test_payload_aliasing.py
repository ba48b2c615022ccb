"""Review: an event's payload must not share mutable objects with the agent's state or
with the caller. Before, a handler that kept a payload list in the state
(``self.state.tags = tags``) and a later handler that appended to it (before the
save) changed the first event's payload too: the log then held ``["x", "y"]`` for the
first event and the replay appended ``"y"`` again, while the live agent (and the
snapshot taken from it) had it once. A caller mutating the list it passed to a command
changed the live state after the fact. Every case was silent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from snaptail import Agent, AgentState, AgentStore, event
from snaptail.domain.compare import agent_differences, describe


@dataclass
class TagState(AgentState):
    tags: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


class Tagger(Agent):
    State = TagState
    if TYPE_CHECKING:
        state: TagState

    @event("Created")
    def __init__(
        self, name: str, system_prompt: str = "", model: str = "", tags: list[str] | None = None
    ) -> None:
        self.state = self.new_state()  # type: ignore[assignment]
        self.state.name = name
        self.state.tags = tags if tags is not None else []

    @event("TagsSet")
    def set_tags(self, tags: list[str]) -> None:
        self.state.tags = tags

    @event("Tagged")
    def tag(self, tag: str) -> None:
        self.state.tags.append(tag)

    @event("OptionsSet")
    def set_options(self, options: dict[str, Any]) -> None:
        self.state.options = options

    @event("OptionSet")
    def set_option(self, key: str, value: int) -> None:
        self.state.options[key] = value


def _same_everywhere(store: AgentStore, agent: Agent) -> None:
    replayed = store.replay(agent.id)
    for other, name in ((store.get(agent.id), "get"), (agent, "live")):
        differences = agent_differences(other, replayed)
        assert not differences, describe(differences, name, "replay")


def test_a_later_handler_does_not_rewrite_an_unsaved_events_payload(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=3) as store:
        agent = Tagger(name="t")
        agent.set_tags(["x"])
        agent.tag("y")
        agent.set_options({"depth": {"max": 1}})
        agent.set_option("width", 2)
        store.save(agent)  # one save: a snapshot of the live agent at version 5
        _same_everywhere(store, agent)
        assert agent.state.tags == ["x", "y"]
        stored = list(store.history(agent.id))
        assert stored[1].tags == ["x"] and stored[3].options == {"depth": {"max": 1}}


def test_the_created_events_payload_is_not_the_states(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=2) as store:
        agent = Tagger(name="t", tags=["x"])
        agent.tag("y")
        store.save(agent)
        _same_everywhere(store, agent)
        assert next(iter(store.history(agent.id))).tags == ["x"]


def test_the_caller_mutating_what_it_passed_changes_nothing(database_url: str) -> None:
    with AgentStore(database_url, snapshot_every=2) as store:
        agent = Tagger(name="t")
        tags = ["x"]
        agent.set_tags(tags)
        tags.append("after the command")
        store.save(agent)
        tags.append("after the save")
        _same_everywhere(store, agent)
        assert agent.state.tags == ["x"]

"""Review: a datetime with a UTC offset other than 0 in a command's payload comes back
from the store in UTC (msgspec's MessagePack timestamp). A handler deriving anything
from its wall-clock fields (date, hour) saw other values live than every load does, and
the snapshot taken from the live agent then disagreed with the full replay, silently.
Such a payload is refused, naming the field, before anything is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from snaptail import Agent, AgentState, AgentStore, InvalidEventPayload, event
from snaptail.domain.compare import agent_differences, describe


@dataclass
class DayState(AgentState):
    day: date | None = None
    hour: int = 0


class Scheduler(Agent):
    State = DayState
    if TYPE_CHECKING:
        state: DayState

    @event("Scheduled")
    def schedule(self, when: datetime) -> None:
        self.state.day = when.date()
        self.state.hour = when.hour


PARIS_WINTER = timezone(timedelta(hours=1))


def test_a_datetime_not_in_utc_is_refused_naming_the_field() -> None:
    agent = Scheduler(name="s")
    with pytest.raises(InvalidEventPayload, match="'when'") as caught:
        agent.schedule(datetime(2024, 1, 1, 0, 30, tzinfo=PARIS_WINTER))
    assert "UTC" in str(caught.value)
    assert agent.version == 1 and agent.state.day is None  # nothing applied


def test_utc_and_naive_datetimes_load_as_they_ran(database_url: str) -> None:
    agent = Scheduler(name="s")
    agent.schedule(datetime(2024, 1, 1, 0, 30, tzinfo=UTC))
    agent.schedule(datetime(2024, 1, 1, 0, 30))  # naive: stored as it is
    with AgentStore(database_url, snapshot_every=2) as store:
        store.save(agent)
        agent.schedule(datetime(2024, 3, 5, 23, 59, tzinfo=UTC))
        store.save(agent)
        replayed = store.replay(agent.id)
        for other, name in ((store.get(agent.id), "get"), (agent, "live")):
            differences = agent_differences(other, replayed)
            assert not differences, describe(differences, name, "replay")
    assert agent.state.day == date(2024, 3, 5) and agent.state.hour == 23


class Stamper(Agent):
    """A handler that takes the event's timestamp, which a command may pass."""

    State = DayState
    if TYPE_CHECKING:
        state: DayState

    @event("Stamped")
    def stamp(self, timestamp: datetime | None = None) -> None:
        assert timestamp is not None
        self.state.day = timestamp.date()
        self.state.hour = timestamp.hour


def test_a_timestamp_passed_by_the_caller_is_checked_too() -> None:
    agent = Stamper(name="s")
    with pytest.raises(InvalidEventPayload, match=r"'timestamp'.*UTC"):
        agent.stamp(timestamp=datetime(2024, 1, 1, 0, 30, tzinfo=PARIS_WINTER))
    with pytest.raises(InvalidEventPayload, match="'timestamp'"):
        agent.stamp(timestamp="2024-01-01")  # type: ignore[arg-type]
    assert agent.version == 1 and agent.state.day is None


def test_a_utc_timestamp_passed_by_the_caller_loads_as_it_ran(database_url: str) -> None:
    agent = Stamper(name="s")
    with AgentStore(database_url, snapshot_every=2) as store:
        for day in (1, 2, 3):
            agent.stamp(timestamp=datetime(2024, 1, day, 0, 30, tzinfo=UTC))
            store.save(agent)
        agent.stamp()  # the aggregate's own timestamp
        store.save(agent)
        replayed = store.replay(agent.id)
        for other, name in ((store.get(agent.id), "get"), (agent, "live")):
            differences = agent_differences(other, replayed)
            assert not differences, describe(differences, name, "replay")

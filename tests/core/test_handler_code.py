"""Review: the digest of an agent type's handler code (which makes the store warn when
handlers changed but the fingerprint did not) covered only ``@event`` methods. An
event class with its own ``apply`` (as ``eventsourcing`` users write them) could
change what it derives with no warning at all: snapshots of the old code were used
silently."""

from __future__ import annotations

from typing import Any

from snaptail import Agent
from snaptail.snapshots.fingerprint import handler_code


def _agent_type(points: int) -> type[Agent]:
    class Scored(Agent.Event):
        by: int

        if points == 1:

            def apply(self, aggregate: Any) -> None:
                aggregate.state.usage.errors += self.by

        else:

            def apply(self, aggregate: Any) -> None:
                aggregate.state.usage.errors += 2 * self.by

    class Scorer(Agent):
        pass

    Scorer.Scored = Scored  # type: ignore[attr-defined]
    return Scorer


def test_an_event_classs_own_apply_is_part_of_the_handler_code() -> None:
    assert handler_code(_agent_type(1)) != handler_code(_agent_type(2))


def test_the_same_code_gives_the_same_digest() -> None:
    assert handler_code(_agent_type(1)) == handler_code(_agent_type(1))

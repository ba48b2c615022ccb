"""The memory budget: what the store does when a loaded agent holds too many bytes.

Checked after every load and after every save, when a budget applies (the agent
type's ``memory_budget`` wins over the store's). Over budget, in this order:

1. shrink the agent's recent-event cache (halving it) until the agent fits;
2. take a snapshot at the agent's version, so reloading it later is cheap;
3. call ``agent.shed_memory(budget)``: the agent type compacts its derived state,
   by recording events (the built-in one: ``WindowShrunk``), so that a replay of
   the log gives the same, smaller state; after a save those events are saved at
   once, after a load they are saved with the agent's next save. The store checks
   that replaying those events on a copy taken before gives the state after: if
   not, the agent object is broken (:class:`~snaptail.AgentBroken`);
4. if it is still over: raise :class:`~snaptail.MemoryBudgetExceeded`, naming the
   agent, its bytes, the budget and the parts holding the bytes.

An agent is never left in memory over its budget without an error: a load raises it;
a save, whose transaction has committed by then, logs it (``AgentStore.save`` never
raises after its commit) and the agent's next load raises it.

Cost: each check measures the agent (``Agent.memory_usage``), which walks its objects
and takes about as long as loading it (1-2 ms for a 220 KB agent with 100 recent
events on a 2-core machine). Without a budget (and with metrics off) nothing is
measured.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

from snaptail.application import metrics
from snaptail.application.drivers import Steps
from snaptail.application.loading import Bookkeeping
from snaptail.domain.agent import Agent
from snaptail.domain.compare import agent_differences
from snaptail.domain.guard import BROKEN, is_bookkeeping
from snaptail.domain.memory import MemoryUsage, parse_size
from snaptail.domain.replay import apply_events
from snaptail.errors import AgentBroken, MemoryBudgetExceeded

logger = logging.getLogger("snaptail.memory")


def resolve_budget(agent_type: type[Agent], store_budget: int | None) -> int | None:
    """The budget in bytes that applies to agents of ``agent_type`` (None: none)."""
    own = agent_type.memory_budget
    return store_budget if own is None else parse_size(own)


def enforce_budget(
    agent: Agent,
    books: Bookkeeping,
    budget: int,
    *,
    can_shed: bool,
    snapshot: Callable[[Agent], Steps[None]],
    save: Callable[[Agent], Steps[None]] | None,
) -> Steps[MemoryUsage]:
    """The steps that bring ``agent`` within ``budget`` bytes or raise; they return
    its final usage. ``books``: the store's record of the agent.

    ``can_shed`` is False for a load at a past version (no snapshot, no events
    recorded then). Before shedding, the steps of ``snapshot(agent)`` store a
    snapshot at its version; those of ``save`` (given while saving) save the
    shedding events right away.
    """
    usage = agent.memory_usage()
    if usage.total <= budget or books.shedding:
        _observe(agent, usage)
        return usage
    agent_type = type(agent).__qualname__
    start = usage.total
    recent = agent.recent_events
    while usage.total > budget and len(recent) > 0:
        recent.resize(len(recent) // 2)
        usage = agent.memory_usage()
    shed = usage.total > budget and can_shed
    if shed:
        yield from snapshot(agent)
        books.shedding = True
        try:
            before = _copy(agent)
            agent.shed_memory(budget)
            _require_shed_by_events(agent, before)
            if save is not None and agent.pending_events:
                yield from save(agent)
        finally:
            books.shedding = False
        usage = agent.memory_usage()
    _observe(agent, usage)
    if usage.total > budget:
        logger.warning(
            "memory budget exceeded: agent=%s type=%s bytes=%s budget=%s holders=%r",
            agent.id,
            agent_type,
            usage.total,
            budget,
            usage.describe(),
        )
        raise MemoryBudgetExceeded(agent.id, agent_type, usage.total, budget, usage.describe())
    logger.log(
        logging.INFO if shed else logging.DEBUG,
        "memory budget kept: agent=%s type=%s bytes_before=%s bytes=%s budget=%s "
        "recent_events=%s window_items=%s shed=%s",
        agent.id,
        agent_type,
        start,
        usage.total,
        budget,
        len(recent),
        len(agent.state.window.items),
        shed,
    )
    return usage


def _copy(agent: Agent) -> tuple[Agent, int]:
    """A copy of ``agent`` (its own state; no bookkeeping) and its count of unsaved
    events, taken before it sheds."""
    twin = object.__new__(type(agent))
    vars(twin).update({k: v for k, v in vars(agent).items() if not is_bookkeeping(k)})
    twin.state = copy.deepcopy(agent.state)
    return twin, len(agent.pending_events)


def _require_shed_by_events(agent: Agent, before: tuple[Agent, int]) -> None:
    """Raise :class:`AgentBroken` (and break the agent object) unless applying the
    events ``shed_memory`` recorded to the copy taken before gives the agent after:
    state shed any other way is not in the log, and a snapshot would spread it."""
    twin, pending = before
    twin = apply_events(twin, agent.pending_events[pending:])
    differences = agent_differences(agent, twin, limit=1)
    if differences:
        agent_type = type(agent).__qualname__
        broken = AgentBroken(
            agent.id,
            agent_type,
            agent.version,
            f"{agent_type}.shed_memory",
            "it changed state without recording events: "
            + differences[0].describe("the agent", "its events"),
        )
        agent.__dict__[BROKEN] = broken
        raise broken


def observe_memory(agent: Agent) -> None:
    """Record the agent's memory in the metrics, if they are enabled (else free)."""
    if metrics.active() is not None:
        _observe(agent, agent.memory_usage())


def _observe(agent: Agent, usage: MemoryUsage) -> None:
    active = metrics.active()
    if active is not None:
        active.observe_memory(type(agent).__qualname__, usage.total)

"""``AgentCache``: the loaded agents of a long-running process, bounded in total bytes."""

from __future__ import annotations

import logging
from collections import OrderedDict
from uuid import UUID

from snaptail.application.store import AgentStore
from snaptail.domain.agent import Agent
from snaptail.domain.guard import is_broken
from snaptail.domain.memory import parse_size
from snaptail.privacy.registry import register_cache

logger = logging.getLogger("snaptail.cache")


class AgentCache:
    """A least-recently-used cache of loaded agents whose total :meth:`Agent.memory_bytes`
    stays within ``max_bytes`` (an int or a size such as ``"64MiB"``).

    ``get`` returns the cached agent or loads it from ``store``; ``save`` saves agents
    through the store and re-measures them; both evict the least recently used agents
    until the total fits. Sizes are measured when an agent enters the cache and at each
    save through the cache (not while you change it in between). Evicting drops only the
    cache's reference: an agent you still hold keeps its unsaved events, and saving it
    through the cache brings it back. An agent larger than ``max_bytes`` on its own is
    returned but not cached (and a warning is logged).
    """

    def __init__(self, store: AgentStore, max_bytes: int | str) -> None:
        self.store = store
        self.max_bytes = parse_size(max_bytes)
        self._agents: OrderedDict[UUID, tuple[Agent, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        register_cache(self)  # store.forget evicts forgotten agents

    def get(self, agent_id: UUID) -> Agent:
        """The agent, from the cache (most recently used now) or loaded from the store.
        A cached agent broken by a failing handler (:class:`~snaptail.AgentBroken`) is
        dropped and loaded again."""
        entry = self._agents.get(agent_id)
        if entry is not None and is_broken(entry[0]):
            self.evict(agent_id)
            entry = None
        if entry is not None:
            self._agents.move_to_end(agent_id)
            self.hits += 1
            return entry[0]
        self.misses += 1
        agent = self.store.get(agent_id)
        self.put(agent)
        return agent

    def put(self, agent: Agent) -> None:
        """Cache ``agent`` (e.g. one just created) as the most recently used."""
        size = agent.memory_bytes()
        old = self._agents.pop(agent.id, None)
        if old is not None:
            self.bytes -= old[1]
        if size > self.max_bytes:
            logger.warning(
                "agent not cached, larger than the whole cache: agent=%s bytes=%s max_bytes=%s",
                agent.id,
                size,
                self.max_bytes,
            )
            return
        self._agents[agent.id] = (agent, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._agents.popitem(last=False)
            self.bytes -= dropped
            self.evictions += 1

    def save(self, *agents: Agent) -> None:
        """Save the agents (one transaction, as ``store.save``) and re-measure them.

        If the save raises (a :class:`ConcurrencyError`, a lock timeout, a lost
        connection: ``store.save`` never raises once it committed, so nothing was
        written), every one of the agents is evicted: the next ``get`` loads what is
        stored, so a caller that retries the command applies it once. An agent object
        you still hold keeps its unsaved events; saving it through the cache again
        brings it back."""
        try:
            self.store.save(*agents)
        except BaseException:
            for agent in agents:
                self.evict(agent.id)
            raise
        for agent in agents:
            self.put(agent)

    def evict(self, agent_id: UUID) -> bool:
        """Drop the agent from the cache; returns whether it was there."""
        entry = self._agents.pop(agent_id, None)
        if entry is None:
            return False
        self.bytes -= entry[1]
        return True

    def clear(self) -> None:
        self._agents.clear()
        self.bytes = 0

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def __len__(self) -> int:
        return len(self._agents)

    def __repr__(self) -> str:
        return (
            f"AgentCache(agents={len(self)}, bytes={self.bytes}, max_bytes={self.max_bytes},"
            f" hits={self.hits}, misses={self.misses}, evictions={self.evictions})"
        )

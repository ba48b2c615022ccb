"""The process's caches of agents and keys, evicted together when a subject is forgotten."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Protocol
from uuid import UUID


class Evictable(Protocol):
    """A cache of loaded agents or keys (``AgentCache``, a payload cipher, an
    integration's own cache)."""

    def evict(self, agent_id: UUID) -> object: ...


_caches: weakref.WeakSet[Evictable] = weakref.WeakSet()
_lock = threading.Lock()


def register_cache(cache: Evictable) -> None:
    """Have ``forget`` evict forgotten agents from ``cache`` (held weakly)."""
    with _lock:
        _caches.add(cache)


def evict_agents(agent_ids: Sequence[UUID]) -> None:
    """Drop ``agent_ids`` from every registered cache of this process."""
    with _lock:
        caches = list(_caches)
    for cache in caches:
        for agent_id in agent_ids:
            cache.evict(agent_id)

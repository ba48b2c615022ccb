"""Adding data subjects to agents, and forgetting a subject (crypto-shredding).

These functions take the store's parts (its recorder, key store and payload cipher)
rather than the store, so that ``AgentStore`` and ``AsyncAgentStore`` share them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol
from uuid import UUID

from snaptail.errors import KeysRequired, SubjectTooLate
from snaptail.privacy.cipher import PayloadCipher
from snaptail.privacy.keys import Erasure, KeyStore
from snaptail.privacy.registry import evict_agents

logger = logging.getLogger("snaptail.privacy")


_listeners: list[Callable[[Erasure], None]] = []
_lock = threading.Lock()


def on_forget(listener: Callable[[Erasure], None]) -> Callable[[Erasure], None]:
    """Call ``listener(erasure)`` after every ``forget`` in this process (after the
    keys are deleted and the caches evicted); usable as a decorator. A listener that
    raises is logged, never undoes the erasure."""
    with _lock:
        _listeners.append(listener)
    return listener


def remove_listener(listener: Callable[[Erasure], None]) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


class _Recorder(Protocol):
    def max_version(self, originator_id: UUID) -> int | None: ...


def _require(
    keys: KeyStore | None, cipher: PayloadCipher | None, agent_id: UUID | None
) -> tuple[KeyStore, PayloadCipher]:
    if keys is None or cipher is None:
        raise KeysRequired(agent_id, "subjects need a key store and none is open")
    return keys, cipher


def add_subjects(
    recorder: _Recorder,
    keys: KeyStore | None,
    cipher: PayloadCipher | None,
    agent_id: UUID,
    subjects: Sequence[str],
) -> tuple[str, ...]:
    """Make ``subjects`` data subjects of the agent; returns its subject references.

    The agent's payloads are encrypted from then on with its data key. An agent
    with stored events and no subject yet is refused (:class:`SubjectTooLate`): its
    plaintext events could never be forgotten."""
    keys, cipher = _require(keys, cipher, agent_id)
    if not subjects:
        raise ValueError(f"agent {agent_id}: add_subject needs at least one subject")
    if not cipher.has_key(agent_id):  # raises AgentForgotten for a forgotten agent
        stored = recorder.max_version(agent_id) or 0
        if stored:
            raise SubjectTooLate(agent_id, stored)
    refs = keys.add_subjects(agent_id, subjects)
    evict_agents([agent_id])  # "no subject" may be cached, here or by another store
    return refs


def forget_subject(
    recorder: _Recorder, keys: KeyStore | None, cipher: PayloadCipher | None, subject: str
) -> Erasure | None:
    """Forget ``subject``: delete its key and the data key of each of its agents (one
    key-store transaction, which also writes the erasure record), then evict those
    agents from this process's caches and call the :func:`on_forget` listeners.

    Returns the :class:`Erasure`, or None if the key store has no key for the
    subject (never added, or already forgotten)."""
    keys, cipher = _require(keys, cipher, None)
    ref = keys.subject_ref(subject)

    def count_events(agent_ids: Sequence[UUID]) -> int:
        return sum(recorder.max_version(a) or 0 for a in agent_ids)

    erasure = keys.forget(ref, count_events)
    if erasure is None:
        return None
    evict_agents([UUID(a) for a in erasure.agent_ids])  # every cipher and agent cache
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(erasure)
        except Exception:
            logger.exception("on_forget listener failed: erasure=%s", erasure.id)
    logger.info(
        "subject forgotten: ref=%s erasure=%s agents=%s events=%s",
        erasure.subject_ref, erasure.id, erasure.agents, erasure.events,
    )  # fmt: skip
    return erasure

"""The decision whether a stored snapshot may be used to load an agent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple, Protocol
from uuid import UUID

from snaptail.domain.agent import Agent
from snaptail.domain.topics import agent_class_of
from snaptail.errors import DamagedLog
from snaptail.snapshots.codec import checksum, decode_snapshot, stored_generation, upcastable
from snaptail.snapshots.fingerprint import handler_code, state_fingerprint

logger = logging.getLogger("snaptail.snapshots")


class SnapshotRecord(Protocol):
    """A stored snapshot as a recorder returns it."""

    @property
    def originator_id(self) -> UUID: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def checksum(self) -> int: ...
    @property
    def state(self) -> bytes: ...


# How a snapshot that is not used came to be so, which decides what a load may do
# about it (see AgentStore.get):
CORRUPT = "corrupt"  # bad checksum, or written by this very code and does not decode
STALE = "stale"  # written by older code (or code that is gone): a load may replace it
NEWER = "newer"  # written by newer code: never deleted or replaced by a load


class Judgement(NamedTuple):
    """Whether a snapshot may be used: ``agent`` (decoded) if so; else why not and
    which kind of refusal it is (:data:`CORRUPT`, :data:`STALE` or :data:`NEWER`).
    (A named tuple: one is built on every load, in a third of a frozen dataclass's time.)"""

    agent: Agent | None
    why: str = ""
    kind: str = ""


def generation(agent_class: type[Agent]) -> tuple[int, int]:
    """``(class_version, snapshot_version)`` of the running code: the order in which
    code versions follow one another, as far as snapshots are concerned."""
    return (getattr(agent_class, "class_version", 1), getattr(agent_class, "snapshot_version", 1))


# Opens a snapshot's stored bytes (agent id, version, bytes -> plaintext): decryption
# by snaptail.privacy; raises AgentForgotten or KeysRequired, DamagedLog if the bytes
# do not authenticate.
OpenState = Callable[[UUID, int, bytes], bytes]


def judge_snapshot(snapshot: SnapshotRecord, open_state: OpenState | None = None) -> Judgement:
    """Decode a snapshot if the running code may use it, else say why not. Never raises,
    except the privacy errors of ``open_state`` (the store's decryption):
    :class:`~snaptail.errors.AgentForgotten` and :class:`~snaptail.errors.KeysRequired`.

    Used: the fingerprint matches the running code's (or the snapshot was written by
    an older ``class_version`` that the code upcasts) and the bytes pass the checksum
    and decode. When the fingerprint matches but the event handlers' code changed
    since the snapshot was written, it is used and the store warns once per type
    (:func:`warn_if_handlers_changed`).
    """
    agent_class = agent_class_of(snapshot.topic)
    if agent_class is None:  # nothing imported: a stored topic never runs code
        return Judgement(
            None,
            f"agent type {snapshot.topic!r} not found: no agent type this process defined"
            " or registered has that topic (nothing was imported)",
            STALE,
        )
    if checksum(snapshot.state) != snapshot.checksum:
        return Judgement(None, "checksum mismatch (corrupted bytes)", CORRUPT)
    state = snapshot.state
    if open_state is not None:  # decrypted here: its privacy errors are raised
        try:
            state = open_state(snapshot.originator_id, snapshot.originator_version, state)
        except DamagedLog as exc:
            return Judgement(None, f"encrypted bytes do not open ({exc})", CORRUPT)
    try:
        return _judge(snapshot, agent_class, state)
    except Exception as exc:  # a bad snapshot must never fail a load
        return Judgement(None, f"cannot be judged ({type(exc).__name__}: {exc})", STALE)


def _judge(snapshot: SnapshotRecord, agent_class: type[Agent], state: bytes) -> Judgement:
    """:func:`judge_snapshot` of a known agent type whose bytes passed the checksum;
    ``state``: the bytes, decrypted."""
    own = snapshot.fingerprint == state_fingerprint(agent_class)
    if not own and not upcastable(agent_class, state):
        written_by = stored_generation(state)
        if written_by is not None and written_by > generation(agent_class):
            return Judgement(
                None,
                f"written by newer code (class_version, snapshot_version = {written_by})",
                NEWER,
            )
        return Judgement(None, "fingerprint does not match the running code", STALE)
    try:
        decoded = decode_snapshot(
            agent_class, snapshot.originator_id, snapshot.originator_version, state
        )
    except Exception as exc:  # a bad snapshot must never fail a load
        return Judgement(None, f"bytes do not decode ({exc})", CORRUPT if own else STALE)
    if own:
        warn_if_handlers_changed(agent_class, decoded.code)
    return Judgement(decoded.agent, "", "")


def trust_snapshot(
    snapshot: SnapshotRecord, open_state: OpenState | None = None
) -> tuple[Agent | None, str]:
    """:func:`judge_snapshot` as ``(agent, "")`` or ``(None, why)``."""
    judgement = judge_snapshot(snapshot, open_state)
    return judgement.agent, judgement.why


_warned: set[type[Agent]] = set()


def warn_if_handlers_changed(agent_class: type[Agent], stored_code: str | None) -> None:
    """Log one warning per agent type per process when a snapshot with the running
    fingerprint was written by other event-handler code."""
    if stored_code is None or agent_class in _warned or stored_code == handler_code(agent_class):
        return
    _warned.add(agent_class)
    logger.warning(
        "event handler code changed: type=%s; its snapshots were written by other handler"
        " code with the same state schema, settings and versions, and are still used. If"
        " the change alters derived state, bump %s.snapshot_version; check a sample of"
        " agents against their full replay with `snaptail snapshots verify --sample N`",
        agent_class.__qualname__,
        agent_class.__qualname__,
    )

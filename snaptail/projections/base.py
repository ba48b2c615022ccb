"""The projection interface: tables to create, and a function of a batch of events.

A projection sees stored events as ``eventsourcing`` notifications (``id``,
``originator_id``, ``originator_version``, ``topic``, ``state``: the msgspec
bytes), not decoded domain events: most read models need only the topic and the
size, and the few fields they read are decoded with :func:`decode` into a small
``msgspec.Struct``. That keeps catch-up fast and makes events of user-defined
agent types (other topics, same event names) count like built-in ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

import msgspec
from eventsourcing.persistence import Notification

from snaptail.privacy.keys import Erasure
from snaptail.projections.view import AddColumn, ViewCursor

T = TypeVar("T")


class Projection:
    """Subclass and implement :meth:`handle` (one event) or :meth:`process` (a batch).

    ``name`` (default: the class name) keys the projection's position and lock;
    ``tables`` are ``CREATE TABLE IF NOT EXISTS`` statements run when a worker
    starts (and :class:`~snaptail.projections.view.AddColumn` for columns added
    later); ``partitionable`` says whether it can be split by agent
    (``snaptail worker run --partitions N``). Everything written through ``view``
    commits in one transaction together with the new position: an event's effects
    happen exactly once.
    """

    name: ClassVar[str] = ""
    tables: ClassVar[Sequence[str | AddColumn]] = ()
    # True if the projection may run as several workers, each given the events of
    # a slice of the agents (a Partition): its effects for one agent must depend on
    # that agent's events only, and slices must not write the same rows.
    partitionable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def process(self, view: ViewCursor, batch: Sequence[Notification]) -> None:
        """Apply a batch of events (in notification order) to the view."""
        for notification in batch:
            self.handle(view, notification)

    def handle(self, view: ViewCursor, notification: Notification) -> None:
        """Apply one event to the view (the default :meth:`process` calls this)."""

    def forget(self, view: ViewCursor, erasure: Erasure) -> None:
        """A data subject was forgotten (``store.forget``): drop what the view keeps
        about ``erasure.agent_ids`` that is personal. Called once per erasure, in a
        view transaction, by a worker opened with the key store; the default keeps
        everything (``AgentStats`` keeps its counts). Later events of those agents
        reach :meth:`process` with an empty payload."""


@lru_cache(maxsize=4096)
def event_name(topic: str) -> str:
    """``"examples.chat_agent:ChatPlatformAgent.ToolCallCompleted"`` -> ``"ToolCallCompleted"``."""
    return topic.rpartition(":")[2].rpartition(".")[2]


@lru_cache(maxsize=4096)
def agent_type(topic: str) -> str:
    """The agent class path of an event topic (``"snaptail.domain.agent:Agent"``)."""
    return topic.rpartition(".")[0] if "." in topic.rpartition(":")[2] else topic


_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}


def decode(state: bytes, struct: type[T]) -> T:
    """Decode only the fields ``struct`` declares from an event's stored bytes.

    Unknown fields are skipped without building Python objects for them.
    """
    decoder = _decoders.get(struct)
    if decoder is None:
        decoder = _decoders[struct] = msgspec.msgpack.Decoder(struct)
    return decoder.decode(state)  # type: ignore[no-any-return]

"""Which stored topics may be read: only classes this process defined or registered.

A topic (``module:QualName``) in a stored row names the class to decode it with.
Resolving it by importing the module would let anyone who can write a row run code
in every reader, so snaptail resolves a topic only to

* an agent type (a subclass of :class:`~snaptail.Agent`) or one of its event classes
  (a subclass of ``Agent.Event``) that this process has defined, by the topic its
  class has now; or
* a class registered under an old topic with :func:`register_topic` (a class that was
  moved or renamed after its events were stored).

Anything else is unknown: the reader raises :class:`~snaptail.errors.UnknownTopic`
(or passes a snapshot over) and imports nothing. A program that reads agents it does
not import itself (the ``snaptail`` CLI, a projection worker) is told which modules
define them by the operator, never by the data: ``SNAPTAIL_AGENT_MODULES`` (module
names, comma-separated) is imported before the first unknown topic is looked up.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
from typing import Any

from eventsourcing.utils import TopicError, construct_topic
from eventsourcing.utils import register_topic as _eventsourcing_register

from snaptail.domain.agent import Agent

# Old topics registered by the user (they win over the classes found).
_registered: dict[str, type[Any]] = {}
# Topics of the agent and event classes found when last looked for.
_found: dict[str, type[Any]] = {}
_lock = threading.Lock()
# The value of SNAPTAIL_AGENT_MODULES whose modules were imported (None: not yet).
_imported_for: list[str | None] = [None]
logger = logging.getLogger("snaptail.topics")
ENV_MODULES = "SNAPTAIL_AGENT_MODULES"


def register_topic(topic: str, cls: type[Any]) -> None:
    """Let stored rows whose topic is ``topic`` be read as ``cls``: an agent type or
    one of its event classes that was moved or renamed after rows were stored under
    its old name. Registering an agent type's old topic (``"old.module:OldAgent"``)
    registers its event classes' too (``"old.module:OldAgent.Created"``...); register
    an event class defined outside its agent type on its own. Call it at start-up,
    after importing the class. Raises ``TypeError`` for anything but an agent or
    event class, ``ValueError`` if a topic is registered for another class."""
    if not isinstance(topic, str) or ":" not in topic:
        raise TypeError(f"register_topic: topic must be a 'module:QualName' string, got {topic!r}")
    if not _is_allowed_class(cls):
        raise TypeError(
            f"register_topic: {cls!r} is not an agent type (a subclass of snaptail.Agent)"
            " or one of its event classes; only those can be named by a stored topic"
        )
    pairs: list[tuple[str, type[Any]]] = [(topic, cls)]
    if issubclass(cls, Agent):  # and its event classes under the old name
        prefix = cls.__qualname__ + "."
        for name in dir(cls):
            value = getattr(cls, name, None)
            if isinstance(value, type) and _is_allowed_class(value):
                if not value.__qualname__.startswith(prefix):
                    continue
                pairs.append((f"{topic}.{value.__qualname__[len(prefix) :]}", value))
    with _lock:
        for old, new in pairs:
            known = _registered.get(old)
            if known is not None and known is not new:
                raise ValueError(f"register_topic: {old!r} is already registered for {known!r}")
        for old, new in pairs:
            _registered[old] = new
            # eventsourcing resolves a created event's originator_topic itself (after
            # our check, see agent_class_of); if it caches another object, ours runs first.
            with contextlib.suppress(TopicError):
                _eventsourcing_register(old, new)


def known_class(topic: str) -> type[Any] | None:
    """The agent or event class ``topic`` names in this process, or None. Imports
    nothing."""
    found = _registered.get(topic) or _found.get(topic)
    if found is not None:
        return found
    _rescan()
    return _registered.get(topic) or _found.get(topic)


def agent_class_of(topic: object) -> type[Agent] | None:
    """The agent type ``topic`` names (None if it names none: see :func:`known_class`)."""
    found = known_class(topic) if isinstance(topic, str) else None
    if found is None or not issubclass(found, Agent):
        return None
    return found


def event_class_of(topic: object) -> type[Any] | None:
    """The event class ``topic`` names (None if it names none: see :func:`known_class`).
    An agent type's base ``Event`` class is none: no event of it is ever recorded
    (``eventsourcing`` refuses to trigger it), and applying one would do nothing."""
    found = known_class(topic) if isinstance(topic, str) else None
    if found is None or not issubclass(found, Agent.Event) or found.__name__ == "Event":
        return None
    return found


def _is_allowed_class(cls: object) -> bool:
    return isinstance(cls, type) and (issubclass(cls, Agent) or issubclass(cls, Agent.Event))


def import_agent_modules() -> None:
    """Import the modules named in ``$SNAPTAIL_AGENT_MODULES`` (once per value): the
    operator's list of modules defining agent types. A module that fails to import is
    logged, not raised: its agents' rows then raise ``UnknownTopic``."""
    wanted = os.environ.get(ENV_MODULES, "")
    if _imported_for[0] == wanted:
        return
    _imported_for[0] = wanted
    for name in filter(None, (part.strip() for part in wanted.split(","))):
        try:
            importlib.import_module(name)
        except Exception as exc:
            logger.warning(
                "%s: cannot import %r (%s: %s)", ENV_MODULES, name, type(exc).__name__, exc
            )


def _rescan() -> None:
    """Find every agent and event class defined so far (subclasses of ``Agent`` and of
    ``Agent.Event``, at any depth); a class defined later under the same topic wins."""
    import_agent_modules()
    found: dict[str, type[Any]] = {}
    for root in (Agent, Agent.Event):
        stack: list[type[Any]] = [root]
        seen: set[type[Any]] = set()
        while stack:
            cls = stack.pop(0)
            if cls in seen:
                continue
            seen.add(cls)
            found[construct_topic(cls)] = cls
            stack.extend(cls.__subclasses__())
    global _found
    _found = found  # one assignment: a reader on another thread sees the old or the new

"""Applies stored events to an agent, fast: no per-event Protocol check, no re-inspection.

``eventsourcing``'s default projector checks every event against a runtime Protocol and
its ``@event`` events re-inspect the decorated method's signature on every apply. Here
the method and its parameter names are looked up once per event class. Events whose
class customises ``apply`` or ``mutate`` are applied the ordinary way.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from eventsourcing.domain import (
    CanMutateAggregate,
    DecoratedFuncCaller,
    OriginatorVersionError,
    decorated_funcs,
)

from snaptail.errors import ReplayFailed, SnaptailError

# event class -> (decorated method, its parameter names) or None for the ordinary path
_appliers: dict[type[Any], tuple[Callable[..., Any], tuple[str, ...]] | None] = {}


def applier(event_class: type[Any]) -> tuple[Callable[..., Any], tuple[str, ...]] | None:
    """``(method, parameter names)`` to apply events of ``event_class`` directly:
    ``method(agent, **{name: payload[name]})``, then set the agent's version and
    ``modified_on`` (the event's timestamp). The names are the method's parameters
    that the event carries (possibly ``timestamp``); the others have defaults. None:
    apply them with ``event.mutate``."""
    if event_class in _appliers:
        return _appliers[event_class]
    found = None
    func = decorated_funcs.get(event_class)
    if (
        func is not None
        and event_class.mutate is CanMutateAggregate.mutate
        and event_class.apply is DecoratedFuncCaller.apply
        and _plain_apply_after_caller(event_class)
    ):
        params = list(inspect.signature(func).parameters.values())[1:]
        # As eventsourcing's apply: the handler gets the event attributes it names; a
        # parameter the event does not carry takes its default.
        carried = {f.name for f in dataclasses.fields(event_class)}
        if all(
            (p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY)
            and (p.name in carried or p.default is not p.empty)
            for p in params
        ):
            found = (func, tuple(p.name for p in params if p.name in carried))
    _appliers[event_class] = found
    return found


def _plain_apply_after_caller(event_class: type[Any]) -> bool:
    """True if no class after DecoratedFuncCaller in the MRO defines its own apply."""
    mro = event_class.__mro__
    after = mro[mro.index(DecoratedFuncCaller) + 1 :]
    return all("apply" not in vars(k) or k is CanMutateAggregate for k in after)


def apply_events(agent: Any, events: Iterable[Any], *, stored: bool = True) -> Any:
    """Apply ``events`` in order to ``agent`` (None before the created event). For
    ``stored`` events (a load, a replay), a handler that raises is a
    :class:`~snaptail.errors.ReplayFailed` naming the event; for a new event
    (``stored=False``, a command) the handler's own error is raised."""
    for event in events:
        applier_ = None if agent is None else applier(type(event))
        if applier_ is None:
            try:
                agent = event.mutate(agent)
            except (SnaptailError, OriginatorVersionError):
                raise
            except Exception as exc:
                if not stored:
                    raise
                raise replay_failed(
                    agent, event.originator_id, event.originator_version, topic_of(event), exc
                ) from exc
            continue
        version = event.originator_version
        if version != agent._version + 1:
            raise OriginatorVersionError(version, agent._version + 1)
        func, names = applier_
        state = event.__dict__
        try:
            func(agent, **{name: state[name] for name in names})
        except SnaptailError:
            raise
        except Exception as exc:
            if not stored:
                raise
            raise replay_failed(agent, agent.id, version, topic_of(event), exc) from exc
        agent._version = version
        agent._modified_on = state["timestamp"]
    return agent


def replay_failed(
    agent: Any, agent_id: Any, version: int, topic: str, exc: Exception
) -> ReplayFailed:
    """The error for a handler that raised on a stored event (see ``apply_events``)."""
    agent_type = "not yet created" if agent is None else type(agent).__qualname__
    return ReplayFailed(agent_id, agent_type, version, topic, f"{type(exc).__name__}: {exc}")


def topic_of(event: Any) -> str:
    """``module:QualifiedName`` of an event's class (for messages)."""
    kind = type(event)
    return f"{kind.__module__}:{kind.__qualname__}"

"""Keeps a live agent equal to what its log produces, or makes it refuse to go on.

Two ways a live agent can drift from its log without anyone noticing:

* an event handler keeps state where snapshots do not carry it (an attribute on the
  agent, or an undeclared attribute on its state dataclass): a load from a snapshot
  would silently lack it. :func:`check_shape` refuses that at the first command,
  before the event is recorded;
* an event handler raises, possibly after changing state: the event is not recorded
  but any change stays. snaptail cannot cheaply tell whether anything changed, so
  :func:`apply_new_event` marks the agent object broken on any exception from a
  handler; a broken agent refuses further commands and saves
  (:func:`refuse_if_broken`) until it is loaded again. (Validate in the command
  method, before the event, so that handlers never raise.)

The checks cost a few ``len()`` calls per command. Replays are not checked: the
snapshot encoder refuses an agent with attributes outside its state or undeclared
attributes anywhere inside it (:func:`attributes_outside_state`,
:func:`undeclared_attributes`), so such state is never snapshotted.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

from eventsourcing.domain import decorated_funcs

from snaptail.domain.replay import apply_events
from snaptail.errors import AgentBroken, UndeclaredState

BROKEN = "_snaptail_broken"


def handler_name(agent: Any, event: Any) -> str:
    """``Type.method`` of the handler that applies ``event`` (or the event's name)."""
    func = decorated_funcs.get(type(event))
    name = func.__name__ if func is not None else type(event).__name__
    return f"{type(agent).__qualname__}.{name}"


def is_broken(agent: Any) -> bool:
    """True if a handler of this agent object raised (it must be loaded again)."""
    return BROKEN in agent.__dict__


def refuse_if_broken(agent: Any) -> None:
    """Raise :class:`AgentBroken` if a handler of this agent object raised earlier."""
    broken = agent.__dict__.get(BROKEN)
    if broken is not None:
        raise broken.with_traceback(None)


def apply_new_event(agent: Any, new_event: Any) -> None:
    """Apply a newly triggered event; if its handler raises (or keeps undeclared
    state), mark the agent broken and re-raise."""
    keys = len(agent.__dict__)
    try:
        apply_events(agent, (new_event,), stored=False)  # as a replay applies it
        check_shape(agent, new_event, keys)
    except BaseException as exc:
        agent.__dict__[BROKEN] = AgentBroken(
            agent.id,
            type(agent).__qualname__,
            agent.version,
            handler_name(agent, new_event),
            f"{type(exc).__name__}: {exc}"[:300],
        )
        raise


# What an agent object holds right after its created event: eventsourcing's own
# attributes and ``state``.
CREATED_KEYS = frozenset(
    {"_id", "_version", "_created_on", "_modified_on", "_pending_events", "state"}
)


def is_bookkeeping(name: str) -> bool:
    """True for attributes snaptail keeps on an agent that are not derived from its
    log: unsaved events, the recent-event cache and ``_snaptail*`` tracking."""
    return name in {"_pending_events", "_recent_events"} or name.startswith("_snaptail")


def attributes_outside_state(agent: Any) -> list[str]:
    """Attributes of ``agent`` that neither eventsourcing, ``state`` nor snaptail's
    bookkeeping account for: a snapshot would not carry them (a log written before
    handlers were checked can put them there on replay)."""
    return [
        name for name in agent.__dict__ if name not in CREATED_KEYS and not is_bookkeeping(name)
    ]


def check_created(agent: Any, event: Any) -> None:
    """:func:`check_shape` for a new agent (its created event's handler)."""
    extra = next((name for name in agent.__dict__ if name not in CREATED_KEYS), None)
    if extra is not None:
        _refuse(agent, event, extra, f"set the attribute {extra!r} on the agent")
    check_shape(agent, event, len(agent.__dict__))


def check_shape(agent: Any, event: Any, keys_before: int) -> None:
    """Raise :class:`UndeclaredState` if applying ``event`` left state outside the
    agent's declared ``State`` fields (checked: new attributes on the agent, the type
    of ``state``, undeclared attributes on it and on the dataclasses in its fields)."""
    attributes = agent.__dict__
    if len(attributes) > keys_before:
        for name in list(attributes)[keys_before:]:
            if not is_bookkeeping(name):
                _refuse(agent, event, name, f"set the attribute {name!r} on the agent")
    state = attributes.get("state")
    declared = type(agent).State
    if type(state) is not declared:
        _refuse(
            agent,
            event,
            "state",
            f"replaced `state` by a {type(state).__qualname__}, not a {declared.__qualname__}",
        )
    extra = _extra_attribute(state)
    if extra is not None:
        _refuse(agent, event, extra, _on_state(state, extra, "state"))
    for name in _dataclass_fields(declared):
        inner = getattr(state, name)
        extra = _extra_attribute(inner)
        if extra is not None:
            _refuse(agent, event, extra, _on_state(inner, extra, f"state.{name}"))


_ATOMIC = frozenset({str, int, float, bool, bytes, type(None)})


def undeclared_attributes(value: Any, path: str = "state") -> Iterator[str]:
    """Paths of attributes, anywhere in ``value``, that are not declared dataclass
    fields (the snapshot codec would drop them)."""
    # Runs on every snapshot a save takes: depth first without recursion, in the order
    # of a recursive walk; leaves are not stacked, and a path is spelt out only for
    # what is yielded. An entry: (value, parent entry, step, depth), a step being
    # (True, attribute name) or (False, key or index).
    limit = sys.getrecursionlimit()
    stack: list[_Entry] = [(value, None, (True, path), 0)]
    while stack:
        entry = stack.pop()
        obj, _, _, depth = entry
        if depth > limit:  # deeper than a recursive walk may go: a cycle
            raise RecursionError(f"{path} is nested more than {limit} levels deep")
        cls = type(obj)
        children: list[tuple[Any, tuple[bool, Any]]]
        if _is_dataclass(cls):  # type: ignore[arg-type]
            fields = _field_names(cls)  # type: ignore[arg-type]
            for name in getattr(obj, "__dict__", ()):
                if name not in fields:
                    yield f"{_spelt(entry)}.{name}"
            children = [(getattr(obj, name), (True, name)) for name in fields]
        elif isinstance(obj, dict):
            children = [(item, (False, key)) for key, item in obj.items()]
        elif isinstance(obj, list | tuple):
            children = [(item, (False, i)) for i, item in enumerate(obj)]
        else:
            continue
        depth += 1
        for item, step in reversed(children):
            if type(item) not in _ATOMIC:
                stack.append((item, entry, step, depth))


_Entry = tuple[Any, Any, tuple[bool, Any], int]


def _spelt(entry: _Entry | None) -> str:
    """The path of a walk entry: ``state.window.items[3]``."""
    steps = []
    while entry is not None:
        steps.append(entry[2])
        entry = entry[1]
    first = str(steps.pop()[1])  # the root's own name
    return first + "".join(f".{key}" if attr else f"[{key!r}]" for attr, key in reversed(steps))


@cache
def _is_dataclass(cls: type[Any]) -> bool:
    """Whether instances of ``cls`` are dataclass instances (a dataclass class itself,
    as a value, is not: its type is ``type``)."""
    return dataclasses.is_dataclass(cls)


def _on_state(obj: Any, name: str, path: str) -> str:
    return (
        f"set the attribute {name!r} on {path} ({type(obj).__qualname__}), which is not"
        " a declared field"
    )


def _refuse(agent: Any, event: Any, attribute: str, detail: str) -> None:
    raise UndeclaredState(
        agent.id, type(agent).__qualname__, handler_name(agent, event), attribute, detail
    )


def _extra_attribute(obj: Any) -> str | None:
    attributes = getattr(obj, "__dict__", None)
    if attributes is None:
        return None
    fields = _field_names(type(obj))  # type: ignore[arg-type]
    if len(attributes) == len(fields):
        return None
    return next((name for name in attributes if name not in fields), None)


@cache
def _field_names(cls: type[Any]) -> frozenset[str]:
    if not dataclasses.is_dataclass(cls):
        return frozenset()
    return frozenset(f.name for f in dataclasses.fields(cls))


@cache
def _dataclass_fields(cls: type[Any]) -> tuple[str, ...]:
    """Fields of ``cls`` whose values are dataclass instances with a ``__dict__``,
    judged from the class's defaults (a fresh instance)."""
    if not dataclasses.is_dataclass(cls):
        return ()
    try:
        sample = cls()
    except TypeError:
        return ()
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if dataclasses.is_dataclass(getattr(sample, f.name, None))
        and hasattr(getattr(sample, f.name), "__dict__")
    )

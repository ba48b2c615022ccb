"""A fingerprint of an agent type's state schema: a snapshot is trusted only if it matches."""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from collections.abc import Callable
from functools import cache
from operator import attrgetter, is_
from typing import Any

from eventsourcing.domain import decorated_funcs

from snaptail.domain.schema import snapshot_settings


def _describe(tp: Any, seen: set[type]) -> str:
    """A stable text description of a type, recursing into dataclasses."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if tp in seen:
            return f"{tp.__module__}.{tp.__qualname__}"
        seen = seen | {tp}
        hints = typing.get_type_hints(tp)
        inner = ",".join(
            f"{f.name}:{_describe(hints.get(f.name, Any), seen)}" for f in dataclasses.fields(tp)
        )
        return f"{tp.__module__}.{tp.__qualname__}{{{inner}}}"
    origin = typing.get_origin(tp)
    if origin is not None:
        args = ",".join(_describe(a, seen) for a in typing.get_args(tp))
        return f"{_describe(origin, seen)}[{args}]"
    if isinstance(tp, type):
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


def _describe_value(value: object) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}:{value!r}"


# (agent type, State, class_version, snapshot_version, settings) -> fingerprint: the
# values are read at every call, so a setting changed at run time counts at once.
_fingerprints: dict[tuple[Any, ...], str] = {}


def state_fingerprint(agent_class: type[Any]) -> str:
    """Fingerprint of what a snapshot of ``agent_class`` holds and how it is read.

    Covers exactly: the agent type's name; its ``State`` dataclass (every field's
    name and type, recursively); ``class_version`` and the names of its
    ``upcast_vX_vY`` methods; ``snapshot_version``; and the value (with its type:
    bool, Enum, tuple and so on) of each setting named in ``snapshot_settings``.
    Change any of them and older snapshots of the type stop matching: a load passes
    them over and rebuilds from events. Nothing else counts: raising a limit that
    only commands check (``max_event_bytes``, ``max_labels``) keeps every snapshot.
    """
    # Every load and snapshot asks: answer from the settings' current values when each
    # is an int, str, bool or None (its value and type then say all its description
    # would), keyed also by the declarations, so that any change is seen at once.
    # First, the last answer for the type while everything it was computed from is
    # the very same object (the same value, of the same type) or the same declaration.
    last = _last.get(agent_class)
    if last is not None:
        state, class_version, snapshot_version, declarations, get_values, settings, answer = last
        try:
            if (
                agent_class.State is state
                and getattr(agent_class, "class_version", 1) is class_version
                and getattr(agent_class, "snapshot_version", 1) is snapshot_version
                and [klass.__dict__.get("snapshot_settings") for klass in agent_class.__mro__]
                == declarations
                and all(map(is_, get_values(agent_class), settings))
            ):
                return answer
        except AttributeError:  # a setting is gone: the full path says what is wrong
            pass
    declared = tuple([klass.__dict__.get("snapshot_settings") for klass in agent_class.__mro__])
    try:
        names = _setting_names.get((agent_class, declared))
    except TypeError:  # an unhashable declaration: the full path says what is wrong
        names = None
    if names is not None:
        values = tuple([getattr(agent_class, name, _MISSING) for name in names])
        kinds = tuple([type(value) for value in values])
        if _PLAIN.issuperset(kinds):
            found = _by_values.get(_values_key(agent_class, declared, kinds, values))
            if found is not None:
                _remember(agent_class, declared, names, values, found)
                return found
    found = _fingerprint(agent_class)
    settings = snapshot_settings(agent_class)
    values = tuple(settings.values())
    kinds = tuple([type(value) for value in values])
    try:
        _setting_names[(agent_class, declared)] = tuple(settings)
    except TypeError:
        return found
    if _PLAIN.issuperset(kinds):
        _by_values[_values_key(agent_class, declared, kinds, values)] = found
        _remember(agent_class, declared, tuple(settings), values, found)
    return found


def _remember(
    agent_class: type[Any],
    declared: tuple[Any, ...],
    names: tuple[str, ...],
    values: tuple[Any, ...],
    found: str,
) -> None:
    """Keep ``found`` as the type's last answer (settings of _PLAIN types, hashable
    declarations only: nothing in it can change in place)."""
    get_values: Callable[[type[Any]], tuple[Any, ...]]
    if len(names) > 1:
        get_values = attrgetter(*names)
    elif names:
        name = names[0]
        get_values = lambda klass: (getattr(klass, name),)  # noqa: E731
    else:
        get_values = lambda klass: ()  # noqa: E731
    _last[agent_class] = (
        agent_class.State,
        getattr(agent_class, "class_version", 1),
        getattr(agent_class, "snapshot_version", 1),
        list(declared),
        get_values,
        values,
        found,
    )


_MISSING = object()
# agent type -> (State, class_version, snapshot_version, snapshot_settings declarations
# along its MRO, a getter of its settings' values, those values, fingerprint)
_last: dict[type[Any], tuple[Any, Any, Any, list[Any], Callable[[type[Any]], Any], Any, str]] = {}
_PLAIN = frozenset({int, str, bool, type(None)})
# (agent type, its snapshot_settings declarations) -> the setting names they resolve to
_setting_names: dict[tuple[Any, ...], tuple[str, ...]] = {}
# _values_key(...) -> fingerprint, for settings of _PLAIN types only
_by_values: dict[tuple[Any, ...], str] = {}


def _values_key(
    agent_class: type[Any],
    declared: tuple[Any, ...],
    kinds: tuple[type, ...],
    values: tuple[Any, ...],
) -> tuple[Any, ...]:
    return (
        agent_class,
        agent_class.State,
        getattr(agent_class, "class_version", 1),
        getattr(agent_class, "snapshot_version", 1),
        declared,
        kinds,
        values,
    )


def _fingerprint(agent_class: type[Any]) -> str:
    settings = "settings=" + ";".join(
        f"{k}={_describe_value(v)}" for k, v in snapshot_settings(agent_class).items()
    )
    class_version = getattr(agent_class, "class_version", 1)
    snapshot_version = getattr(agent_class, "snapshot_version", 1)
    key = (agent_class, agent_class.State, class_version, snapshot_version, settings)
    found = _fingerprints.get(key)
    if found is not None:
        return found
    upcasters = sorted(n for n in dir(agent_class) if n.startswith("upcast_v"))
    parts = [
        f"{agent_class.__module__}.{agent_class.__qualname__}",
        _describe(agent_class.State, set()),
        f"class_version={class_version}",
        f"upcasters={upcasters}",
        f"snapshot_version={snapshot_version!r}",
        settings,
    ]
    found = _fingerprints[key] = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
    return found


@cache
def handler_code(agent_class: type[Any]) -> str:
    """A digest of the code of ``agent_class``'s event handlers (the ``@event``
    methods', and the ``apply`` of event classes that define their own: their own
    bytecode, constants and names; not line numbers, not the functions they call).
    Stored in each snapshot: when it differs from the running code's while the
    fingerprint matches, the store warns once per type (see ``snapshots.trust``)."""
    digest = hashlib.sha256()
    for name in sorted(dir(agent_class)):
        value = getattr(agent_class, name, None)
        if not isinstance(value, type):
            continue
        func = next((decorated_funcs[k] for k in value.__mro__ if k in decorated_funcs), None)
        if func is None:
            func = _own_apply(value)
        if func is not None:
            digest.update(name.encode())
            _digest_code(func.__code__, digest)
    return digest.hexdigest()[:16]


def _own_apply(event_class: type[Any]) -> Any:
    """The ``apply`` (or ``mutate``) an event class defines itself, or inherits from
    a class that is not ``eventsourcing``'s (None if there is none)."""
    for klass in event_class.__mro__:
        if klass.__module__.split(".")[0] == "eventsourcing":
            continue
        for method in ("apply", "mutate"):
            func = vars(klass).get(method)
            if hasattr(func, "__code__"):
                return func
    return None


def _digest_code(code: Any, digest: Any) -> None:
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames)).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _digest_code(const, digest)
        else:
            digest.update(repr(const).encode())

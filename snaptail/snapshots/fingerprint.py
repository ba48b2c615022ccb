"""A fingerprint of an agent type's state schema: a snapshot is trusted only if it matches."""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from collections.abc import Callable
from functools import cache
from operator import attrgetter, is_
from typing import Any, cast

from snaptail.domain.handler_reads import (
    HandlerReads,
    event_handlers,
    handler_reads,
    ignored_names,
)
from snaptail.domain.schema import snapshot_settings
from snaptail.errors import InvalidAgentType


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
    """The type and value of a setting, the same in every process (the items of a
    set or frozenset in a stable order: its repr's order depends on string hashing)."""
    kind = type(value)
    if isinstance(value, set | frozenset):
        shown = "{" + ",".join(sorted(_describe_value(item) for item in value)) + "}"
    elif isinstance(value, tuple | list) and kind in (tuple, list):
        shown = "(" + ",".join(_describe_value(item) for item in value) + ")"
    elif isinstance(value, dict) and kind is dict:
        pairs = [f"{_describe_value(k)}:{_describe_value(v)}" for k, v in value.items()]
        shown = "{" + ",".join(pairs) + "}"
    else:
        shown = repr(value)
    return f"{kind.__module__}.{kind.__qualname__}:{shown}"


def fingerprint_settings(agent_class: type[Any]) -> dict[str, object]:
    """``{name: value}`` of every setting the fingerprint covers: the names listed in
    ``snapshot_settings``, and the class attributes, module globals (``module.NAME``)
    and closure variables holding plain values that the event handlers read (see
    ``snaptail.domain.handler_reads``), less the names listed in ``snapshot_ignore``."""
    return _Readers(agent_class).settings(agent_class)


class _Readers:
    """Reads the current values of the settings of an agent type (see
    :func:`fingerprint_settings`), in a fixed order."""

    def __init__(self, agent_class: type[Any]) -> None:
        declared = snapshot_settings(agent_class)
        ignored = ignored_names(agent_class)
        reads = _handler_reads(agent_class)
        attributes = set(declared) | {n for n in reads.attributes if n not in ignored}
        self.names = tuple(sorted(attributes))
        self.others = tuple(
            sorted(
                (label, read)
                for label, read in reads.others.items()
                if label.rpartition(".")[2] not in ignored and label not in ignored
            )
        )
        # The values of the class attributes among them (one C call for two or more).
        self.get: Callable[[type[Any]], tuple[Any, ...]]
        if len(self.names) > 1:
            self.get = cast(Callable[[type[Any]], tuple[Any, ...]], attrgetter(*self.names))
        elif self.names:
            name = self.names[0]
            self.get = lambda klass: (getattr(klass, name),)
        else:
            self.get = lambda klass: ()

    def values(self, agent_class: type[Any]) -> tuple[Any, ...]:
        if not self.others:
            return self.get(agent_class)
        return (*self.get(agent_class), *[read() for _, read in self.others])

    def settings(self, agent_class: type[Any]) -> dict[str, object]:
        labels = [*self.names, *[label for label, _ in self.others]]
        return dict(zip(labels, self.values(agent_class), strict=True))


# agent type -> what its handlers read (the handlers' code is read once per type)
_reads: dict[type[Any], HandlerReads] = {}


def _handler_reads(agent_class: type[Any]) -> HandlerReads:
    found = _reads.get(agent_class)
    if found is None:
        found = handler_reads(agent_class)
        _refuse_computed_reads(agent_class, found)
        _reads[agent_class] = found
    return found


def check_handler_reads(agent_class: type[Any]) -> None:
    """Raise :class:`~snaptail.errors.InvalidAgentType` if the handlers of
    ``agent_class`` read an attribute of the agent by a computed name
    (``getattr(self, name)``) and the type declares no ``snapshot_settings`` of its
    own: what they read could change without the fingerprint seeing it. Called by
    every save (cheap after the first call per type), so before anything is stored."""
    _handler_reads(agent_class)


def _refuse_computed_reads(agent_class: type[Any], found: HandlerReads) -> None:
    if not found.computed:
        return
    declares = any(
        "snapshot_settings" in vars(klass)
        for klass in agent_class.__mro__
        if klass.__module__ != "snaptail.domain.agent"
    )
    if declares:
        return
    raise InvalidAgentType(
        agent_class.__qualname__,
        f"{', '.join(found.computed)} reads an attribute of the agent by a computed name"
        " (getattr(self, name)), so the snapshot fingerprint cannot see which setting"
        " shapes the state: a snapshot taken under one value would be trusted under"
        " another. List the class attributes it may read in `snapshot_settings ="
        " ('NAME', ...)` on the type (an empty tuple if none shapes state), or read them"
        " as self.NAME",
    )


def _declarations(agent_class: type[Any]) -> list[Any]:
    """What the type and its bases declare about settings, along the MRO."""
    return [
        (vars_.get("snapshot_settings"), vars_.get("snapshot_ignore"))
        for vars_ in [klass.__dict__ for klass in agent_class.__mro__]
    ]


# (agent type, State, class_version, snapshot_version, settings) -> fingerprint: the
# values are read at every call, so a setting changed at run time counts at once.
_fingerprints: dict[tuple[Any, ...], str] = {}


def state_fingerprint(agent_class: type[Any]) -> str:
    """Fingerprint of what a snapshot of ``agent_class`` holds and how it is read.

    Covers exactly: the agent type's name; its ``State`` dataclass (every field's
    name and type, recursively); ``class_version`` and the names of its
    ``upcast_vX_vY`` methods; ``snapshot_version``; and the value (with its type:
    bool, Enum, tuple and so on) of each setting (:func:`fingerprint_settings`): the
    names in ``snapshot_settings`` and every plain class attribute, module global or
    closure variable the event handlers read, less ``snapshot_ignore``.
    Change any of them and older snapshots of the type stop matching: a load passes
    them over and rebuilds from events. Nothing else counts: raising a limit that
    only commands check (``max_event_bytes``, ``max_labels``) keeps every snapshot.
    """
    # Every load and snapshot asks: answer from the settings' current values when each
    # is an int, str, bool or None (its value and type then say all its description
    # would), keyed also by the declarations, so that any change is seen at once.
    # First, the last answer for the type while everything it was computed from is
    # the very same object (the same value, of the same type) or the same declaration.
    # (The fast path compares the snapshot_settings declarations along the MRO, and
    # the snapshot_ignore the type has: a base's snapshot_ignore changed at run time
    # under a subclass's own is seen only by the full path.)
    last = _last.get(agent_class)
    if last is not None:
        (state, class_version, snapshot_version, declarations, ignore, read, settings, _,
         mro, namespaces) = last  # fmt: skip
        try:
            if (
                agent_class.State is state
                and getattr(agent_class, "class_version", 1) is class_version
                and getattr(agent_class, "snapshot_version", 1) is snapshot_version
                and getattr(agent_class, "snapshot_ignore", None) is ignore
                and agent_class.__mro__ is mro
                # The classes' namespaces (live views of their __dict__), asked first
                # whether they declare it: a view's get() is a method call, `in` is not.
                and [ns[_SETTINGS] if _SETTINGS in ns else None for ns in namespaces]  # noqa: SIM401
                == declarations
                and all(map(is_, read(agent_class), settings))
            ):
                return last[7]
        except AttributeError:  # a setting is gone: the full path says what is wrong
            pass
    declared = tuple(_declarations(agent_class))
    try:
        known = _settings_readers.get((agent_class, declared))
    except TypeError:  # an unhashable declaration: the full path says what is wrong
        known = None
    values: tuple[Any, ...] | None = None
    if known is not None:
        try:
            values = known.values(agent_class)
        except AttributeError:  # a setting is gone: the full path says what is wrong
            known = None
        if known is not None and values is not None:
            kinds = tuple([type(value) for value in values])
            if _PLAIN.issuperset(kinds):
                found = _by_values.get(_values_key(agent_class, declared, kinds, values))
                if found is not None:
                    _remember(agent_class, declared, known, values, found)
                    return found
    readers = known if known is not None else _Readers(agent_class)
    current = readers.values(agent_class)
    found = _fingerprint(agent_class, readers.settings(agent_class))
    kinds = tuple([type(value) for value in current])
    try:
        _settings_readers[(agent_class, declared)] = readers
    except TypeError:
        return found
    if _PLAIN.issuperset(kinds):
        _by_values[_values_key(agent_class, declared, kinds, current)] = found
        _remember(agent_class, declared, readers, current, found)
    return found


def _remember(
    agent_class: type[Any],
    declared: tuple[Any, ...],
    readers: _Readers,
    values: tuple[Any, ...],
    found: str,
) -> None:
    """Keep ``found`` as the type's last answer (settings of _PLAIN types, hashable
    declarations only: nothing in it can change in place)."""
    _last[agent_class] = (
        agent_class.State,
        getattr(agent_class, "class_version", 1),
        getattr(agent_class, "snapshot_version", 1),
        [settings for settings, _ in declared],
        getattr(agent_class, "snapshot_ignore", None),
        readers.values if readers.others else readers.get,
        values,
        found,
        agent_class.__mro__,
        tuple([klass.__dict__ for klass in agent_class.__mro__]),
    )


_SETTINGS = "snapshot_settings"
# agent type -> (State, class_version, snapshot_version, snapshot_settings declarations
# along its MRO, its snapshot_ignore, a reader of its settings' values, those values,
# fingerprint, the MRO, its classes' namespaces)
_last: dict[
    type[Any],
    tuple[Any, Any, Any, list[Any], Any, Callable[[Any], Any], Any, str, Any, tuple[Any, ...]],
] = {}
_PLAIN = frozenset({int, str, bool, type(None)})
# (agent type, its settings declarations) -> the readers of its settings
_settings_readers: dict[tuple[Any, ...], _Readers] = {}
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


def _fingerprint(agent_class: type[Any], values: dict[str, object]) -> str:
    settings = "settings=" + ";".join(f"{k}={_describe_value(v)}" for k, v in values.items())
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
    for name, func in event_handlers(agent_class):
        digest.update(name.encode())
        _digest_code(func.__code__, digest)
    return digest.hexdigest()[:16]


def _digest_code(code: Any, digest: Any) -> None:
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames)).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _digest_code(const, digest)
        else:
            digest.update(repr(const).encode())

"""Introspection of event classes: which payload fields an event has, and their types."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

# Fields every aggregate event carries, kept out of the encoded payload.
ENVELOPE_FIELDS = frozenset({"originator_id", "originator_version"})


_fields_cache: dict[type[Any], dict[str, Any]] = {}


def payload_fields(event_class: type[Any]) -> dict[str, Any]:
    """Return ``{field name: type}`` for the fields an event stores, in order.

    ``timestamp`` and (for created events) ``originator_topic`` are included;
    ``originator_id`` and ``originator_version`` are not: they are columns.
    """
    cached = _fields_cache.get(event_class)
    if cached is not None:
        return cached
    try:
        hints = typing.get_type_hints(event_class)
    except (NameError, TypeError):
        hints = {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(event_class):
        if f.name in ENVELOPE_FIELDS:
            continue
        fields[f.name] = hints.get(f.name, Any)
    _fields_cache[event_class] = fields
    return fields


def event_name(event_class: type[Any]) -> str:
    """The short, human name of an event class (``Agent.ToolCallCompleted``)."""
    return str(event_class.__qualname__)


def snapshot_settings(agent_class: type[Any]) -> dict[str, object]:
    """``{name: value}`` of the settings that shape ``agent_class``'s derived state: the
    names listed in ``snapshot_settings`` by the class and its bases (a subclass adds
    to its bases' list). Raises ``TypeError`` for a name the class does not have."""
    names: set[str] = set()
    for klass in agent_class.__mro__:
        declared = vars(klass).get("snapshot_settings", ())
        if isinstance(declared, str) or not all(isinstance(n, str) for n in declared):
            raise TypeError(
                f"{klass.__qualname__}.snapshot_settings must be a tuple of attribute names,"
                f" got {declared!r}"
            )
        names.update(declared)
    missing = sorted(n for n in names if not hasattr(agent_class, n))
    if missing:
        raise TypeError(
            f"{agent_class.__qualname__}.snapshot_settings names {missing}, which the class"
            " does not have"
        )
    return {name: getattr(agent_class, name) for name in sorted(names)}

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

"""Checks on the values inside a command's payload that its types cannot express:
no NaN or infinity (float or ``Decimal``) anywhere, and no nesting deeper than
:data:`MAX_DEPTH` (which would fail to encode with a bare ``RecursionError``).

Run before the payload is encoded; walks containers (dict, list, tuple, set,
dataclass, msgspec Struct) iteratively, and skips everything else at once.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from snaptail.errors import InvalidEventPayload

# Deeper than any JSON a tool or model should produce, far below Python's and
# msgspec's recursion limits.
MAX_DEPTH = 64


def check_values(agent_id: UUID, event: str, payload: dict[str, Any]) -> None:
    """Raise :class:`InvalidEventPayload` naming the field (and the path inside it) of
    the first NaN or infinity, or of nesting deeper than :data:`MAX_DEPTH`."""
    for field, value in payload.items():
        if type(value) in _SCALARS or not _has_problem(value, 0):
            continue
        path, problem = _find_problem(value, field, 0)  # the slow walk, for the message
        raise InvalidEventPayload(agent_id, event, field, f"{path} is {problem}")


# Types that hold no other value and are always finite: skipped at once.
_SCALARS = frozenset({str, bytes, int, bool, type(None), UUID})


def _has_problem(value: Any, depth: int) -> bool:
    """The fast walk, from ``value`` at nesting ``depth``: iterative, builds no paths."""
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        children: Any
        if kind is dict:
            children = item.values()
        elif kind is list or kind is tuple:
            children = item
        elif _not_finite(item):
            return True
        else:
            children = [getattr(item, name) for name in _names(kind)] or _set_items(item)
        if children:
            if level >= MAX_DEPTH:
                return True
            stack.extend((child, level + 1) for child in children)
    return False


def _find_problem(value: Any, path: str, depth: int) -> tuple[str, str]:
    """The path of the first problem :func:`_has_problem` finds in ``value``, and what
    it is (only called when there is one)."""
    problem = _not_finite(value)
    if problem:
        return path, problem
    children = _children(value)
    if children and depth >= MAX_DEPTH:
        return path, f"nested more than {MAX_DEPTH} deep"
    for key, child in children:
        if _has_problem(child, depth + 1):
            return _find_problem(child, f"{path}{key}", depth + 1)
    return path, "not valid"


def _not_finite(value: Any) -> str:
    kind = type(value)
    if kind is float and not math.isfinite(value):
        return f"{value!r} (NaN and infinities are refused: they do not compare or sum)"
    if kind is Decimal and not value.is_finite():
        return f"Decimal({str(value)!r}) (NaN and infinities are refused)"
    return ""


# Field names of each dataclass or msgspec Struct type met (() for other types).
_field_names: dict[type[Any], tuple[str, ...]] = {}


def _names(kind: type[Any]) -> tuple[str, ...]:
    names = _field_names.get(kind)
    if names is None:
        if issubclass(kind, msgspec.Struct):
            names = kind.__struct_fields__
        elif dataclasses.is_dataclass(kind):
            names = tuple(f.name for f in dataclasses.fields(kind))
        else:
            names = ()
        _field_names[kind] = names
    return names


def _set_items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, set | frozenset) else []


def _children(value: Any) -> list[tuple[str, Any]]:
    """``value``'s items with their paths (for the error message)."""
    if isinstance(value, dict):
        return [(f"[{k!r}]", v) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [(f"[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        return [("[...]", v) for v in value]
    return [(f".{name}", getattr(value, name)) for name in _names(type(value))]

"""Compares two agents attribute by attribute, with types: what a snapshot gives back
against what a full replay gives. Used by ``snaptail.testing`` and ``snapshots verify``.

Every attribute counts, declared or not, at every depth, and so does every type: a
``set`` where a replay has a ``list`` is a difference even when the items agree, so
is an int in a set where the other has the equal float, so is a datetime in another
time zone (the same instant, another date and hour), and so is a dict's key order
(iterating it is how code reads it: a listing kept in order, for one).
snaptail's own bookkeeping (unsaved events, the recent-event cache, load tracking)
is left out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from snaptail.domain.guard import is_bookkeeping

_MISSING = object()


@dataclass(frozen=True)
class Difference:
    """One attribute whose value (or type) differs between two agents."""

    path: str
    snapshot: Any
    replay: Any

    def __str__(self) -> str:
        return self.describe()

    def describe(self, this: str = "snapshot", other: str = "replay") -> str:
        return (
            f"{self.path}: {this} gives {_show(self.snapshot)}, {other} gives {_show(self.replay)}"
        )


def agent_differences(loaded: Any, replayed: Any, limit: int = 10) -> list[Difference]:
    """Up to ``limit`` differences between two agents (empty: they are the same agent,
    type for type). ``loaded`` is the one built from a snapshot."""
    found: list[Difference] = []
    if type(loaded) is not type(replayed):
        return [Difference("<agent type>", type(loaded), type(replayed))]
    _walk_attributes(_attributes(loaded), _attributes(replayed), "", found, limit)
    return found


def value_differences(
    loaded: Any, replayed: Any, path: str = "", limit: int = 10
) -> list[Difference]:
    """:func:`agent_differences` for two values (``path``: where they are)."""
    if _same(loaded, replayed):
        return []
    found: list[Difference] = []
    _walk(loaded, replayed, path, found, limit)
    return found


def describe(differences: list[Difference], this: str = "snapshot", other: str = "replay") -> str:
    """The differences, one per line (for an error or an assertion message)."""
    return "\n".join(f"  {d.describe(this, other)}" for d in differences)


def _attributes(agent: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(agent).items() if not is_bookkeeping(k)}


# Types compared with ``==`` at once (hold nothing :func:`_walk` looks into).
_PLAIN = frozenset({str, int, bool, bytes, type(None), UUID, Decimal})


def _same(a: Any, b: Any) -> bool:
    """True if :func:`_walk` would find no difference between ``a`` and ``b``: the
    same walk, iterative, building no paths (the fast answer for the usual case)."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        kind = type(x)
        if kind is not type(y):
            return False
        if kind in _PLAIN:
            if x != y:
                return False
        elif isinstance(x, dict):
            if list(x) != list(y):  # the same keys in the same order
                return False
            stack.extend([(x[k], y[k]) for k in x])
        elif isinstance(x, list | tuple):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif isinstance(x, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
        elif isinstance(x, set | frozenset):
            if x != y:
                return False
            items = {item: item for item in y}
            stack.extend([(item, items[item]) for item in x])
        elif isinstance(x, datetime):
            if x != y or x.utcoffset() != y.utcoffset():
                return False
        elif (names := _field_names(kind)) is not None:
            left = getattr(x, "__dict__", None)
            if left is None:  # slots: exactly its fields
                stack.extend([(getattr(x, n, _MISSING), getattr(y, n, _MISSING)) for n in names])
                continue
            if len(left) != len(names):  # not just its fields
                left, right = _object_attributes(x), _object_attributes(y)
            else:
                right = y.__dict__
            if left.keys() != right.keys():
                return False
            stack.extend([(left[k], right[k]) for k in left])
        elif x != y:
            return False
    return True


def _walk(a: Any, b: Any, path: str, found: list[Difference], limit: int) -> None:
    if len(found) >= limit:
        return
    if type(a) is not type(b):
        found.append(Difference(path, a, b))
    elif isinstance(a, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            _walk(a.get(key, _MISSING), b.get(key, _MISSING), f"{path}[{key!r}]", found, limit)
        if len(found) < limit and a.keys() == b.keys() and list(a) != list(b):
            found.append(Difference(f"{path} (key order)", list(a), list(b)))
    elif isinstance(a, list | tuple):
        if len(a) != len(b):
            found.append(Difference(path, a, b))
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{path}[{i}]", found, limit)
    elif isinstance(a, float):
        if not (a == b or (math.isnan(a) and math.isnan(b))):
            found.append(Difference(path, a, b))
    elif isinstance(a, set | frozenset):
        if a != b:
            found.append(Difference(path, a, b))
            return
        # Equal sets can still hold items of other types ({2} == {2.0}).
        items = {item: item for item in b}
        for item in a:
            _walk(item, items[item], f"{path}[{item!r}]", found, limit)
    elif isinstance(a, datetime):
        # Equal instants in other time zones differ in date, hour, isoformat().
        if a != b or a.utcoffset() != b.utcoffset():
            found.append(Difference(path, a, b))
    elif _has_attributes(a):
        _walk_attributes(_object_attributes(a), _object_attributes(b), path, found, limit)
    elif a is not _MISSING and a != b:
        found.append(Difference(path, a, b))


def _walk_attributes(
    a: dict[str, Any], b: dict[str, Any], prefix: str, found: list[Difference], limit: int
) -> None:
    for name in [*a, *(k for k in b if k not in a)]:
        path = f"{prefix}.{name}" if prefix else name
        _walk(a.get(name, _MISSING), b.get(name, _MISSING), path, found, limit)


def _has_attributes(value: Any) -> bool:
    return _field_names(type(value)) is not None


# Field names of each type met: a dataclass's or msgspec Struct's, None for others.
_names: dict[type[Any], tuple[str, ...] | None] = {}


def _field_names(kind: type[Any]) -> tuple[str, ...] | None:
    if kind in _names:
        return _names[kind]
    names: tuple[str, ...] | None = None
    if dataclasses.is_dataclass(kind):
        names = tuple(f.name for f in dataclasses.fields(kind))
    elif hasattr(kind, "__struct_fields__"):
        names = tuple(kind.__struct_fields__)
    _names[kind] = names
    return names


def _object_attributes(value: Any) -> dict[str, Any]:
    """Every attribute of a dataclass or msgspec Struct: its fields, and anything else
    in its ``__dict__`` (which a snapshot would not carry)."""
    names = _field_names(type(value)) or ()
    attributes = {name: getattr(value, name, _MISSING) for name in names}
    for name, item in getattr(value, "__dict__", {}).items():
        attributes.setdefault(name, item)
    return attributes


def _show(value: Any) -> str:
    if value is _MISSING:
        return "nothing (no such attribute)"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__qualname__} {text}"

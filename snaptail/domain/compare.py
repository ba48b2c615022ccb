"""Compares two agents attribute by attribute, with types: what a snapshot gives back
against what a full replay gives. Used by ``snaptail.testing`` and ``snapshots verify``.

Every attribute counts, declared or not, at every depth, and so does every type: a
``set`` where a replay has a ``list`` is a difference even when the items agree.
snaptail's own bookkeeping (unsaved events, the recent-event cache, load tracking)
is left out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

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


def describe(differences: list[Difference], this: str = "snapshot", other: str = "replay") -> str:
    """The differences, one per line (for an error or an assertion message)."""
    return "\n".join(f"  {d.describe(this, other)}" for d in differences)


def _attributes(agent: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(agent).items() if not is_bookkeeping(k)}


def _walk(a: Any, b: Any, path: str, found: list[Difference], limit: int) -> None:
    if len(found) >= limit:
        return
    if type(a) is not type(b):
        found.append(Difference(path, a, b))
    elif isinstance(a, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            _walk(a.get(key, _MISSING), b.get(key, _MISSING), f"{path}[{key!r}]", found, limit)
    elif isinstance(a, list | tuple):
        if len(a) != len(b):
            found.append(Difference(path, a, b))
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{path}[{i}]", found, limit)
    elif isinstance(a, float):
        if not (a == b or (math.isnan(a) and math.isnan(b))):
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
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)) or hasattr(
        type(value), "__struct_fields__"
    )


def _object_attributes(value: Any) -> dict[str, Any]:
    """Every attribute of a dataclass or msgspec Struct: its fields, and anything else
    in its ``__dict__`` (which a snapshot would not carry)."""
    names: list[str] = list(getattr(type(value), "__struct_fields__", ()))
    if dataclasses.is_dataclass(value):
        names = [f.name for f in dataclasses.fields(value)]
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

"""A fingerprint of an agent type's state schema: a snapshot is trusted only if it matches."""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from functools import cache
from typing import Any


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


@cache
def state_fingerprint(agent_class: type[Any]) -> str:
    """Fingerprint of what a snapshot of ``agent_class`` holds and how it is read.

    Covers the state dataclass (every field's name and type, recursively), the
    agent's ``class_version`` and ``snapshot_version``, and the class attributes that
    shape derived state (window size, bounds). Change any of them and every older
    snapshot of the type stops matching: it is ignored and rebuilt from events.
    """
    config = {
        name: getattr(agent_class, name)
        for name in sorted(dir(agent_class))
        if not name.startswith("_")
        and isinstance(getattr(agent_class, name, None), int | str | float)
        and not isinstance(getattr(agent_class, name, None), bool)
        and name not in {"INITIAL_VERSION", "memory_budget"}
    }
    parts = [
        f"{agent_class.__module__}.{agent_class.__qualname__}",
        _describe(agent_class.State, set()),
        f"class_version={getattr(agent_class, 'class_version', 1)}",
        repr(sorted(config.items())),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]

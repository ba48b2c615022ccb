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
        stack: list[tuple[Any, str, int]] = [(value, field, 0)]
        while stack:
            item, path, depth = stack.pop()
            if isinstance(item, str | bytes | int | bool | None):
                continue
            problem = _not_finite(item)
            if problem:
                raise InvalidEventPayload(agent_id, event, field, f"{path} is {problem}")
            children = _children(item)
            if not children:
                continue
            if depth >= MAX_DEPTH:
                raise InvalidEventPayload(
                    agent_id, event, field, f"{path} is nested more than {MAX_DEPTH} deep"
                )
            stack.extend((child, f"{path}{key}", depth + 1) for key, child in children)


def _not_finite(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} (NaN and infinities are refused: they do not compare or sum)"
    if isinstance(value, Decimal) and not value.is_finite():
        return f"Decimal({str(value)!r}) (NaN and infinities are refused)"
    return ""


def _children(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [(f"[{k!r}]", v) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [(f"[{i}]", v) for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        return [("[...]", v) for v in value]
    if isinstance(value, msgspec.Struct):
        return [(f".{name}", getattr(value, name)) for name in value.__struct_fields__]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f".{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
    return []

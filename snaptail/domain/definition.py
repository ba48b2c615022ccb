"""Checks an agent type when it is defined: what it declares must survive a snapshot."""

from __future__ import annotations

from typing import Any

import msgspec

from snaptail.domain.compare import value_differences
from snaptail.errors import InvalidAgentType

_encoder = msgspec.msgpack.Encoder()
# State classes whose defaults were found to round-trip exactly.
_checked: set[type[Any]] = set()


def check_state_defaults(agent_class: type[Any]) -> None:
    """Raise :class:`~snaptail.errors.InvalidAgentType` if a fresh ``agent_class.State()``
    does not come back exactly from a snapshot: a default whose type is not its field's
    declared type (``score: float = 0``, an int where a float is declared) would make
    every snapshot of an agent holding it be skipped (and every load replay)."""
    state_class = getattr(agent_class, "State", None)
    if not isinstance(state_class, type) or state_class in _checked:
        return
    try:
        state = state_class()
    except TypeError:  # a field without a default: new_state() says so at the first agent
        return
    name, where = agent_class.__qualname__, state_class.__qualname__
    try:
        back: Any = msgspec.msgpack.decode(_encoder.encode(state), type=state_class)
    except (TypeError, ValueError, msgspec.MsgspecError) as exc:
        raise InvalidAgentType(
            name,
            f"the defaults of its State ({where}) do not survive a snapshot with their"
            f" declared types ({exc}); give each field a default of its declared type",
        ) from None
    differences = value_differences(back, state, "State", limit=1)
    if differences:
        found = differences[0]
        raise InvalidAgentType(
            name,
            f"{found.path} defaults to {found.replay!r} ({type(found.replay).__qualname__}),"
            f" not a value of its declared type: a snapshot stores it and reads it back as"
            f" {found.snapshot!r} ({type(found.snapshot).__qualname__}), so every snapshot"
            " of an agent holding this default would be skipped and every load would"
            f" replay the whole log. Give the field a default of its declared type (e.g."
            f" `{found.path.rpartition('.')[2]}: {type(found.snapshot).__qualname__} ="
            f" {found.snapshot!r}`) or declare the type it holds",
        )
    _checked.add(state_class)

"""Checks a command's payload before its event exists: exact types and encoded size."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, TypedDict
from uuid import UUID

import msgspec

from snaptail.domain.payload_values import check_values
from snaptail.domain.schema import event_name, payload_fields
from snaptail.errors import EventTooLarge, InvalidEventPayload

_encoder = msgspec.msgpack.Encoder()
# Set by the aggregate itself, not by the command's caller.
_MANAGED = frozenset({"timestamp", "originator_topic"})
_FIELD_PATH = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")


_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}


def _decoder(event_class: type[Any]) -> msgspec.msgpack.Decoder[Any]:
    decoder = _decoders.get(event_class)
    if decoder is not None:
        return decoder
    fields = {k: v for k, v in payload_fields(event_class).items() if k not in _MANAGED}
    shape = TypedDict(f"{event_class.__name__}Payload", fields, total=False)  # type: ignore[misc]
    decoder = _decoders[event_class] = msgspec.msgpack.Decoder(shape)
    return decoder


def check_payload(
    agent_id: UUID, event_class: type[Any], kwargs: dict[str, Any], max_bytes: int
) -> Callable[[], dict[str, Any]] | None:
    """Raise if ``kwargs`` would not round-trip as ``event_class`` or are too large.

    The payload is encoded once and decoded with the event's declared types, which is
    exactly what storing and loading it will do. Returns None if every value is
    immutable, else a function giving a fresh copy of the payload as stored (new
    objects at each call): the handler gets one and the event keeps another, so that
    neither the caller, nor the state, nor a later handler can change what is stored.
    """
    name = event_name(event_class)
    if kwargs.get("timestamp") is not None:  # given by the caller, not the aggregate
        _check_timestamp(agent_id, name, kwargs["timestamp"])
    payload = {k: v for k, v in kwargs.items() if k not in _MANAGED}
    check_values(agent_id, name, payload)  # NaN, infinities, nesting
    try:
        data = _encoder.encode(payload)
    except (TypeError, ValueError, OverflowError) as exc:
        field = _offending_field(payload)
        raise InvalidEventPayload(agent_id, name, field, f"cannot be encoded: {exc}") from None
    try:
        stored = _decoder(event_class).decode(data)
    except msgspec.ValidationError as exc:
        match = _FIELD_PATH.search(str(exc))
        field = match.group(1) if match else "?"
        raise InvalidEventPayload(agent_id, name, field, str(exc)) from None
    for key, value in payload.items():
        problem = inexact(value, stored.get(key), key)
        if problem is not None:
            raise InvalidEventPayload(agent_id, name, key, problem)
    if len(data) > max_bytes:
        sizes = {k: len(_encoder.encode(v)) for k, v in payload.items()}
        largest = max(sizes, key=sizes.__getitem__) if sizes else "?"
        raise EventTooLarge(agent_id, name, largest, len(data), max_bytes)
    for value in stored.values():
        if type(value) not in _IMMUTABLE and not _immutable(value):
            break
    else:
        return None  # nothing to share: no copies, no extra memory
    copies = [stored]  # the first copy is the one just decoded
    decoder = _decoder(event_class)
    return lambda: copies.pop() if copies else decoder.decode(data)


# Payload values no handler, caller or state can change in place.
_IMMUTABLE = frozenset(
    {str, int, float, bool, bytes, type(None), UUID, Decimal, datetime, date, time, timedelta}
)


def _immutable(value: Any) -> bool:
    """True if nothing can change ``value`` in place: a scalar, an Enum member, or a
    tuple, frozenset or frozen dataclass of such values."""
    kind = type(value)
    if kind in _IMMUTABLE or isinstance(value, Enum):
        return True
    if kind is tuple or kind is frozenset:
        return all(_immutable(item) for item in value)
    params = getattr(kind, "__dataclass_params__", None)
    if params is not None and params.frozen:
        return all(_immutable(getattr(value, name)) for name in _dataclass_names(kind) or ())
    return False


# Field names of each dataclass type met; None for other types.
_dataclass_field_names: dict[type[Any], tuple[str, ...] | None] = {}


def _dataclass_names(kind: type[Any]) -> tuple[str, ...] | None:
    """The field names of ``kind`` if it is a dataclass, else None (cached per type)."""
    try:
        return _dataclass_field_names[kind]
    except KeyError:
        pass
    names = None
    if dataclasses.is_dataclass(kind):
        names = tuple(f.name for f in dataclasses.fields(kind))
    _dataclass_field_names[kind] = names
    return names


# Values whose exact type is all there is to compare: nothing inside them can differ
# once the types match (NaN and infinities are refused by ``check_values``).
_PLAIN = frozenset({str, int, float, bool, bytes, type(None), UUID, Decimal})


def _check_timestamp(agent_id: UUID, name: str, stamp: Any) -> None:
    """A ``timestamp`` a command passes (a handler taking it as a parameter) is held
    to the rules of every other field."""
    if type(stamp) is not datetime:
        detail = f"must be a datetime, got {type(stamp).__qualname__} {_short(stamp)}"
        raise InvalidEventPayload(agent_id, name, "timestamp", detail)
    back = msgspec.msgpack.decode(_encoder.encode(stamp), type=datetime)
    problem = inexact(stamp, back, "timestamp")
    if problem is not None:
        raise InvalidEventPayload(agent_id, name, "timestamp", problem)


def inexact(sent: Any, back: Any, path: str) -> str | None:
    """Why ``sent`` is not exactly what the store gives back (``back``, the same value
    encoded and decoded with its declared type), or None if it is: same types all the
    way down (a float is not a Decimal, a dict is not a TokenUsage, a tuple in an
    ``Any`` field comes back as a list, a datetime comes back in UTC, an int in a
    ``set[float]`` or as a key of a ``dict[float, ...]`` comes back a float), so a handler
    sees on replay what it saw live.
    """
    kind = type(sent)
    if kind is not type(back):
        return (
            f"{path} is a {type(sent).__qualname__} ({_short(sent)}), but it is stored and"
            f" read back as a {type(back).__qualname__}: pass a {type(back).__qualname__}"
        )
    if kind in _PLAIN:
        return None
    if isinstance(sent, datetime) and sent.utcoffset() != back.utcoffset():
        return (
            f"{path} is {sent.isoformat()}, but it is stored and read back in UTC, as"
            f" {back.isoformat()} (its date and hour would differ on replay): pass it in"
            " UTC, e.g. `.astimezone(datetime.UTC)`"
        )
    if isinstance(sent, dict):
        keys = dict(zip(sent, back, strict=False))  # same order: the encoded map's
        for key, value in sent.items():
            problem = inexact(key, keys.get(key), f"{path} key {key!r}") or inexact(
                value, back.get(key), f"{path}[{key!r}]"
            )
            if problem is not None:
                return problem
    elif isinstance(sent, set | frozenset):
        items = {item: item for item in back}  # equal items (2 == 2.0): compare types
        for item in sent:
            problem = inexact(item, items.get(item), f"{path} item {item!r}")
            if problem is not None:
                return problem
    elif isinstance(sent, list | tuple):
        for i, (a, b) in enumerate(zip(sent, back, strict=False)):
            problem = inexact(a, b, f"{path}[{i}]")
            if problem is not None:
                return problem
    elif (names := _dataclass_names(kind)) is not None:
        for name in names:
            problem = inexact(getattr(sent, name), getattr(back, name), f"{path}.{name}")
            if problem is not None:
                return problem
    elif isinstance(sent, msgspec.Struct):
        for name in sent.__struct_fields__:
            problem = inexact(getattr(sent, name), getattr(back, name), f"{path}.{name}")
            if problem is not None:
                return problem
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _offending_field(payload: dict[str, Any]) -> str:
    for key, value in payload.items():
        try:
            _encoder.encode(value)
        except (TypeError, ValueError, OverflowError):
            return key
    return "?"

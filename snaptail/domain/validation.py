"""Checks a command's payload before its event exists: types and encoded size."""

from __future__ import annotations

import re
from typing import Any, TypedDict
from uuid import UUID

import msgspec

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
) -> None:
    """Raise if ``kwargs`` would not round-trip as ``event_class`` or are too large.

    The payload is encoded once and decoded with the event's declared types, which is
    exactly what storing and loading it will do.
    """
    name = event_name(event_class)
    payload = {k: v for k, v in kwargs.items() if k not in _MANAGED}
    try:
        data = _encoder.encode(payload)
    except (TypeError, ValueError, OverflowError) as exc:
        field = _offending_field(payload)
        raise InvalidEventPayload(agent_id, name, field, f"cannot be encoded: {exc}") from None
    try:
        _decoder(event_class).decode(data)
    except msgspec.ValidationError as exc:
        match = _FIELD_PATH.search(str(exc))
        field = match.group(1) if match else "?"
        raise InvalidEventPayload(agent_id, name, field, str(exc)) from None
    if len(data) > max_bytes:
        sizes = {k: len(_encoder.encode(v)) for k, v in payload.items()}
        largest = max(sizes, key=sizes.__getitem__) if sizes else "?"
        raise EventTooLarge(agent_id, name, largest, len(data), max_bytes)


def _offending_field(payload: dict[str, Any]) -> str:
    for key, value in payload.items():
        try:
            _encoder.encode(value)
        except (TypeError, ValueError, OverflowError):
            return key
    return "?"

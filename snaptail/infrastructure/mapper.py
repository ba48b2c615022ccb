"""A msgspec mapper: domain events to stored bytes and back, typed, with no JSON."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, cast
from uuid import UUID

import msgspec
from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
    find_id_convertor,
)
from eventsourcing.utils import get_topic, resolve_topic

from snaptail.domain.replay import applier, apply_events
from snaptail.domain.schema import payload_fields
from snaptail.infrastructure.recorder import EventRow


class NoTranscoder(Transcoder):
    """Placeholder for eventsourcing's Mapper signature: msgspec does the encoding."""

    def encode(self, obj: Any) -> bytes:
        return msgspec.msgpack.encode(obj)

    def decode(self, data: bytes) -> Any:
        return msgspec.msgpack.decode(data)


@dataclass(frozen=True)
class _EventCodec:
    cls: type[Any]
    class_version: int
    decoder: msgspec.msgpack.Decoder[Any]


# How rows of one event class are applied without building the event: the payload
# decoded straight into the decorated method's keyword arguments. (decode, method,
# the payload fields it takes; None: the payload, less its timestamp, IS the keyword
# arguments.)
_DirectApply = tuple[Callable[[bytes], Any], Callable[..., Any], tuple[str, ...] | None]
_UNSEEN: Any = object()


class MsgspecMapper(Mapper[Any]):
    """Maps ``eventsourcing`` domain events to :class:`StoredEvent` with msgspec.

    Each event class gets a typed decoder built from its declared field types, so
    UUID, datetime, Decimal, tuples, bytes and nested dataclasses come back exactly
    as they went in. Events written by an older ``class_version`` are upcast with the
    class's ``upcast_vX_vY`` static methods. Usable wherever ``eventsourcing``
    expects a mapper (``MAPPER_TOPIC``).
    """

    def __init__(
        self,
        transcoder: Transcoder | None = None,
        compressor: Compressor | None = None,
        cipher: Cipher | None = None,
    ) -> None:
        super().__init__(transcoder or NoTranscoder(), compressor=compressor, cipher=cipher)
        self._encoder = msgspec.msgpack.Encoder()
        self._codecs: dict[str, _EventCodec] = {}
        self._topics: dict[type[Any], str] = {}
        self._direct: dict[str, _DirectApply | None] = {}

    def topic_of(self, event_class: type[Any]) -> str:
        topic = self._topics.get(event_class)
        if topic is None:
            topic = self._topics[event_class] = get_topic(event_class)
        return topic

    def encode_payload(self, domain_event: Any) -> bytes:
        state = dict(vars(domain_event))
        del state["originator_id"], state["originator_version"]
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        return self._encoder.encode(state)

    def encoded_size(self, value: Any) -> int:
        """Bytes ``value`` takes encoded as one field of an event (uncompressed)."""
        return len(self._encoder.encode(value))

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        data = self.encode_payload(domain_event)
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=self.topic_of(type(domain_event)),
            state=data,
        )

    def _codec(self, topic: str) -> _EventCodec:
        codec = self._codecs.get(topic)
        if codec is None:
            cls = resolve_topic(topic)
            fields: dict[str, Any] = dict(payload_fields(cls))
            fields["class_version"] = NotRequired[int]
            shape = TypedDict(f"{cls.__name__}Stored", fields)  # type: ignore[misc]
            decoder = msgspec.msgpack.Decoder(shape)
            codec = _EventCodec(cls, getattr(cls, "class_version", 1), decoder)
            self._codecs[topic] = codec
        return codec

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        return self.decode_event(
            stored_event.originator_id,
            stored_event.originator_version,
            stored_event.topic,
            stored_event.state,
        )

    def decode_event(
        self, originator_id: Any, originator_version: int, topic: str, data: bytes
    ) -> Any:
        """The domain event stored as ``data`` (one row's columns, no StoredEvent)."""
        try:
            codec = self._codecs.get(topic) or self._codec(topic)
        except Exception as exc:  # a damaged or retired topic: name the event
            msg = (
                f"cannot decode stored event of agent {originator_id} at"
                f" version {originator_version}: its type"
                f" {topic!r} cannot be imported ({type(exc).__name__}: {exc})"
            )
            raise MapperDeserialisationError(msg) from exc
        try:
            if self.cipher:
                data = self.cipher.decrypt(data)
            if self.compressor:
                data = self.compressor.decompress(data)
            try:
                state = codec.decoder.decode(data)
                stored_version = state.pop("class_version", 1)
            except msgspec.ValidationError:
                if codec.class_version == 1:
                    raise
                state, stored_version = _untyped(data), -1
            if stored_version != codec.class_version:
                state = self._upcast(codec, state)
        except (msgspec.MsgspecError, ValueError, TypeError, AttributeError) as exc:
            msg = (
                f"cannot decode stored event {topic!r} of agent"
                f" {originator_id} at version {originator_version}: {exc}"
            )
            raise MapperDeserialisationError(msg) from exc
        if not isinstance(originator_id, UUID):
            originator_id = find_id_convertor(codec.cls, str)(originator_id)  # type: ignore[arg-type]
        state["originator_id"] = originator_id
        state["originator_version"] = originator_version
        event = object.__new__(codec.cls)
        object.__setattr__(event, "__dict__", state)
        return event

    def replay_rows(self, agent: Any, originator_id: Any, rows: Sequence[EventRow]) -> Any:
        """Apply stored ``rows`` (oldest first) to ``agent`` (None before its created
        event): the same as ``apply_events(agent, [decode_event(...) for each row])``.

        Rows of events applied by their decorated method are decoded straight into its
        arguments, with no event object; any other row (the created event, an event
        class with its own ``apply``/``mutate`` or ``class_version``, a row that does
        not decode) takes that ordinary path, which upcasts or raises as it does.
        """
        if self.cipher or self.compressor:
            return apply_events(agent, [self.decode_event(originator_id, *row) for row in rows])
        direct = self._direct
        for row in rows:
            version, topic, data = row
            how = direct.get(topic, _UNSEEN)
            if how is _UNSEEN:
                how = self._direct_apply(topic)
            if how is not None and agent is not None:
                decode, method, names = how
                try:
                    payload = decode(data)
                except msgspec.MsgspecError:
                    payload = None  # decode_event below raises, naming the event
                if payload is not None and "class_version" not in payload:
                    if version != agent._version + 1:
                        raise OriginatorVersionError(version, agent._version + 1)
                    timestamp = payload["timestamp"]
                    if names is None:
                        del payload["timestamp"]
                        method(agent, **payload)
                    else:
                        method(agent, **{name: payload[name] for name in names})
                    agent._version = version
                    agent._modified_on = timestamp
                    continue
            agent = apply_events(agent, (self.decode_event(originator_id, *row),))
        return agent

    def _direct_apply(self, topic: str) -> _DirectApply | None:
        try:
            codec = self._codecs.get(topic) or self._codec(topic)
        except Exception:  # not importable: decode_event raises, naming the event
            return None
        fields = payload_fields(codec.cls)
        found = applier(codec.cls) if codec.class_version == 1 else None
        how = None
        if found is not None and "timestamp" in fields:
            method, names = found
            exact = "timestamp" not in names and set(fields) - {"timestamp"} == set(names)
            how = (codec.decoder.decode, method, None if exact else names)
        self._direct[topic] = how
        return how

    def _upcast(self, codec: _EventCodec, state: dict[str, Any]) -> dict[str, Any]:
        version = state.pop("class_version", 1)
        while version < codec.class_version:
            getattr(codec.cls, f"upcast_v{version}_v{version + 1}")(state)
            version += 1
        fields = payload_fields(codec.cls)
        typed = TypedDict(f"{codec.cls.__name__}Upcast", dict(fields))  # type: ignore[misc]  # noqa: UP013
        return cast(dict[str, Any], msgspec.convert(state, typed, strict=False))


def _untyped(data: bytes) -> dict[str, Any]:
    return cast(dict[str, Any], msgspec.msgpack.decode(data))

"""A msgspec mapper: domain events to stored bytes and back, typed, with no JSON."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NotRequired, TypedDict, cast
from uuid import UUID

import msgspec
from eventsourcing.domain import OriginatorVersionError
from eventsourcing.persistence import (
    Cipher,
    Compressor,
    Mapper,
    StoredEvent,
    Transcoder,
    find_id_convertor,
)
from eventsourcing.utils import get_topic

from snaptail.domain.replay import applier, apply_events, replay_failed
from snaptail.domain.schema import payload_fields
from snaptail.domain.topics import agent_class_of, event_class_of
from snaptail.errors import (
    AgentForgotten,
    InvalidAgentType,
    RowUnreadable,
    SnaptailError,
    UnknownTopic,
)
from snaptail.infrastructure.recorder import EventRow
from snaptail.privacy.cipher import (
    SEALED,
    PayloadCipher,
    RedactedEvent,
    is_sealed,
    require_keys,
)


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
    creates: bool  # a created event: its payload names the agent type (originator_topic)


class _NotAllowed(LookupError):
    """A topic that names no agent or event class of this process (nothing imported)."""


# How rows of one event class are applied without building the event: the payload
# decoded into a struct (every stored field, typed as the event class's decoder types
# it, ``class_version`` UNSET unless stored), the decorated method given its arguments
# by position: (decode, method, the struct's fields that are its arguments, in order).
_DirectApply = tuple[Callable[[bytes], Any], Callable[..., Any], Callable[[Any], tuple[Any, ...]]]
_UNSEEN: Any = object()
_UNSET = msgspec.UNSET


def _no_arguments(_: Any) -> tuple[Any, ...]:
    return ()


def _arguments(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The struct's fields ``names`` as a tuple (one C call for two or more)."""
    if not names:
        return _no_arguments
    if len(names) == 1:
        name = names[0]
        return lambda struct: (getattr(struct, name),)
    return cast(Callable[[Any], tuple[Any, ...]], attrgetter(*names))


def _by_name(method: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., Any]:
    """``method`` taking its arguments (``names``, in that order) by position."""

    def call(agent: Any, *values: Any) -> Any:
        return method(agent, **dict(zip(names, values, strict=True)))

    return call


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
        self._class_versions: dict[type[Any], int] = {}
        self._direct: dict[str, _DirectApply | None] = {}
        # Per-agent encryption (snaptail.privacy): set by a store with a key store.
        self.payload_cipher: PayloadCipher | None = None

    def topic_of(self, event_class: type[Any]) -> str:
        topic = self._topics.get(event_class)
        if topic is None:
            topic = self._topics[event_class] = get_topic(event_class)
        return topic

    def encode_payload(self, domain_event: Any) -> bytes:
        state = dict(vars(domain_event))
        del state["originator_id"], state["originator_version"]
        event_class = type(domain_event)
        class_version = self._class_versions.get(event_class)
        if class_version is None:  # read once per class, as _codec reads it for decoding
            class_version = self._class_versions[event_class] = getattr(
                event_class, "class_version", 1
            )
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
        topic = self.topic_of(type(domain_event))
        if topic.startswith("__main__:"):
            raise _defined_in_main(domain_event, topic)
        if self.payload_cipher is not None:
            data = self.payload_cipher.seal_event(
                domain_event.originator_id, domain_event.originator_version, data
            )
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=topic,
            state=data,
        )

    def _codec(self, topic: str) -> _EventCodec:
        codec = self._codecs.get(topic)
        if codec is None:
            cls = event_class_of(topic)
            if cls is None:
                raise _NotAllowed(topic)
            fields: dict[str, Any] = dict(payload_fields(cls))
            fields["class_version"] = NotRequired[int]
            shape = TypedDict(f"{cls.__name__}Stored", fields)  # type: ignore[misc]
            decoder = msgspec.msgpack.Decoder(shape)
            codec = _EventCodec(
                cls, getattr(cls, "class_version", 1), decoder, "originator_topic" in fields
            )
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
        """The domain event stored as ``data`` (one row's columns, no StoredEvent); a
        :class:`~snaptail.privacy.RedactedEvent` if its agent was forgotten."""
        if data and data[0] == SEALED:
            agent_id = originator_id if isinstance(originator_id, UUID) else UUID(originator_id)
            if self.payload_cipher is None:
                require_keys(agent_id, data)
            else:
                try:
                    data = self.payload_cipher.open_event(agent_id, originator_version, data)
                except AgentForgotten as gone:
                    return RedactedEvent(
                        agent_id, originator_version, topic, len(data),
                        gone.erasure_id, gone.forgotten_at,
                    )  # fmt: skip
        try:
            codec = self._codecs.get(topic) or self._codec(topic)
        except _NotAllowed:
            raise UnknownTopic(originator_id, originator_version, topic) from None
        except Exception as exc:  # a damaged or retired topic: name the event
            raise RowUnreadable(
                originator_id,
                originator_version,
                f"event {topic!r}",
                f"its type cannot be prepared ({type(exc).__name__}: {exc})",
            ) from exc
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
            raise RowUnreadable(
                originator_id,
                originator_version,
                f"event {topic!r}",
                f"its bytes do not decode as that type ({exc}); the row is damaged:"
                " restore it from a backup, or, if the class's fields changed without"
                " a new class_version, give it one and an upcaster",
            ) from exc
        if codec.creates and agent_class_of(state.get("originator_topic")) is None:
            raise UnknownTopic(
                originator_id,
                originator_version,
                str(state.get("originator_topic")),
                "created event's agent type (originator_topic)",
            )
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
        unset = _UNSET
        cipher = self.payload_cipher
        if cipher is not None and rows and is_sealed(rows[-1][2]):
            # The rows opened at once (snaptail.privacy: an agent's rows are sealed
            # from its first subject on); raises AgentForgotten for a forgotten agent.
            # A sealed row this misses takes the decode_event path below, which opens it.
            rows = cipher.open_rows(originator_id, rows)
        for row in rows:
            version, topic, data = row
            how = direct.get(topic, _UNSEEN)
            if how is _UNSEEN:
                how = self._direct_apply(topic)
            if how is not None and agent is not None:
                decode, method, arguments = how
                try:
                    payload = decode(data)
                except msgspec.MsgspecError:
                    payload = None  # decode_event below raises, naming the event
                if payload is not None and payload.class_version is unset:
                    if version != agent._version + 1:
                        raise OriginatorVersionError(version, agent._version + 1)
                    try:
                        method(agent, *arguments(payload))
                    except SnaptailError:
                        raise
                    except Exception as exc:
                        raise replay_failed(agent, originator_id, version, topic, exc) from exc
                    agent._version = version
                    agent._modified_on = payload.timestamp
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
            # The arguments go by position when the names are the method's leading
            # parameters (after self), in order, each passable by position; else by
            # name, through a wrapper.
            params = list(inspect.signature(method).parameters.values())[1 : len(names) + 1]
            if [p.name for p in params] != list(names) or any(
                p.kind is not p.POSITIONAL_OR_KEYWORD for p in params
            ):
                method = _by_name(method, names)
            try:
                struct = msgspec.defstruct(
                    f"{codec.cls.__name__}Row",
                    [*fields.items(), ("class_version", int | msgspec.UnsetType, _UNSET)],
                    gc=False,  # transient, holds no cycle: not tracked
                )
            except (TypeError, ValueError):  # a field name a struct cannot have
                struct = None
            if struct is not None:
                how = (msgspec.msgpack.Decoder(struct).decode, method, _arguments(names))
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


def _defined_in_main(domain_event: Any, topic: str) -> InvalidAgentType:
    """The error for an event of a class defined in the script being run."""
    agent_type = topic.partition(":")[2].split(".")[0]
    return InvalidAgentType(
        agent_type,
        f"it is defined in the script being run (`__main__`), so agent"
        f" {domain_event.originator_id} would be stored under the topic {topic!r}, which"
        " no other program (the snaptail CLI, a projection worker, another script, this"
        " script imported as a module) can read back. Nothing was saved. Define the"
        f" class in a module and import it from the script (`from mymodule import"
        f" {agent_type}`)",
    )


def _untyped(data: bytes) -> dict[str, Any]:
    return cast(dict[str, Any], msgspec.msgpack.decode(data))

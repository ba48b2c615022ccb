"""How ``SnaptailSaver`` encodes LangGraph values: LangGraph's serializer for the bytes,
message bodies stored once per thread and referred to by :class:`MsgRef`.

A message body is the serialized message without its id (the id travels in the ref),
so the message a node wrote and the same message in the channel (where
``add_messages`` may have given it an id) share one body.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Sequence
from operator import is_
from typing import Any, cast
from uuid import UUID

from langchain_core.messages import BaseMessage
from langgraph.checkpoint.serde.base import SerializerProtocol

from snaptail.integrations.langgraph_thread import (
    MAPPING,
    MESSAGES,
    VALUE,
    MsgRef,
    digest,
)

Body = tuple[str, bytes]
# A body this large or larger is stored zlib-compressed when that saves a fifth.
COMPRESS_FROM = 256
ZLIB = "zlib:"
# kind, vtype, data, refs, layout, single
Encoded = tuple[int, str, bytes, list[MsgRef], list[tuple[str, int, bool]], bool]


def is_messages(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(m, BaseMessage) for m in value)
    )


def copy_message(message: BaseMessage) -> BaseMessage:
    """A shallow copy of a message (what ``model_copy()`` makes, without its generic
    ``copy.copy`` calls): a caller may set its fields without touching ``message``."""
    new = object.__new__(type(message))
    setattr_ = object.__setattr__
    setattr_(new, "__dict__", message.__dict__.copy())
    extra, private = message.__pydantic_extra__, message.__pydantic_private__
    setattr_(new, "__pydantic_extra__", None if extra is None else extra.copy())
    setattr_(new, "__pydantic_fields_set__", message.__pydantic_fields_set__.copy())
    setattr_(new, "__pydantic_private__", None if private is None else private.copy())
    return new


class Seen:
    """The messages of one list as last handed to (or received from) the graph, with
    their field values at that moment, to tell cheaply whether a message is unchanged:
    the same object with the same field values, or an equal one."""

    __slots__ = ("objs", "vals")

    def __init__(self, objs: list[BaseMessage], vals: list[tuple[Any, ...]] | None = None):
        self.objs = objs
        self.vals = vals if vals is not None else [tuple(m.__dict__.values()) for m in objs]

    def __len__(self) -> int:
        return len(self.objs)

    def same(self, at: int, message: BaseMessage) -> bool:
        held = self.objs[at]
        now = held.__dict__
        then = self.vals[at]
        if len(now) != len(then) or not all(map(is_, now.values(), then)):
            return False  # the held message was changed in place since
        return message is held or message == held

    def handout(self) -> list[BaseMessage]:
        """Copies for a caller; they are what the graph holds from now on."""
        self.objs = [copy_message(m) for m in self.objs]
        return list(self.objs)


class BodyCache:
    """Message bodies by (thread aggregate, event version), least recently used first,
    bounded in total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[UUID, int], list[Body]] = OrderedDict()

    def get(self, key: tuple[UUID, int]) -> list[Body] | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def evict(self, agent_id: UUID) -> None:
        """Drop the bodies of one thread (its subject was forgotten)."""
        for key in [k for k in self._entries if k[0] == agent_id]:
            self.bytes -= sum(len(b[1]) for b in self._entries.pop(key))

    def put(self, key: tuple[UUID, int], bodies: list[Body]) -> None:
        size = sum(len(b[1]) for b in bodies)
        if not bodies or size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = bodies
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= sum(len(b[1]) for b in dropped)


class ValueCodec:
    """Encodes values into (kind, type, bytes, refs, layout, single) and back.

    With ``compress``, a message body of COMPRESS_FROM bytes or more is stored
    zlib-compressed (its type prefixed with ``zlib:``) when that saves a fifth."""

    def __init__(self, serde: SerializerProtocol, *, compress: bool = True) -> None:
        self.serde = serde
        self.compress = compress

    def body(self, message: BaseMessage) -> Body:
        bare = message.model_copy(update={"id": None}) if message.id is not None else message
        vtype, data = self.serde.dumps_typed(bare)
        if self.compress and len(data) >= COMPRESS_FROM:
            packed = zlib.compress(data, 6)
            if len(packed) * 5 <= len(data) * 4:
                return ZLIB + vtype, packed
        return vtype, data

    def message(self, body: Body, message_id: str | None) -> BaseMessage:
        if body[0].startswith(ZLIB):
            body = (body[0][len(ZLIB) :], zlib.decompress(body[1]))
        message = cast(BaseMessage, self.serde.loads_typed(body))
        if message_id is not None:
            message.id = message_id
        return message

    def ref(self, message: BaseMessage, bodies: list[Body], known: dict[str, MsgRef]) -> MsgRef:
        """A ref to the message's body: one already stored (``known`` by digest, this
        event's own included) or a new slot of ``bodies``."""
        body = self.body(message)
        key = digest(body)
        stored = known.get(key)
        if stored is None:
            stored = known[key] = MsgRef(0, len(bodies))
            bodies.append(body)
        return MsgRef(stored.version, stored.slot, message.id)

    def encode(self, value: Any, bodies: list[Body], known: dict[str, MsgRef]) -> Encoded:
        if isinstance(value, BaseMessage):
            return MESSAGES, "", b"", [self.ref(value, bodies, known)], [], True
        if is_messages(value):
            refs = [self.ref(m, bodies, known) for m in value]
            return MESSAGES, "", b"", refs, [], False
        if isinstance(value, dict) and any(
            isinstance(v, BaseMessage) or is_messages(v) for v in value.values()
        ):
            rest = dict(value)
            refs, layout = [], []
            for key, item in value.items():
                single = isinstance(item, BaseMessage)
                if single or is_messages(item):
                    del rest[key]
                    items = [item] if single else item
                    refs.extend(self.ref(m, bodies, known) for m in items)
                    layout.append((key, len(items), single))
            vtype, data = self.serde.dumps_typed(rest)
            return MAPPING, vtype, data, refs, layout, False
        vtype, data = self.serde.dumps_typed(value)
        return VALUE, vtype, data, [], [], False

    def decode(
        self,
        kind: int,
        vtype: str,
        data: bytes,
        refs: Sequence[MsgRef],
        layout: Sequence[tuple[str, int, bool]],
        single: bool,
        bodies: dict[int, list[Body]],
    ) -> Any:
        if kind == VALUE:
            return self.serde.loads_typed((vtype, data))
        messages = self.messages(refs, bodies)
        if kind == MESSAGES:
            return messages[0] if single else messages
        value = self.serde.loads_typed((vtype, data))
        at = 0
        for key, count, one in layout:
            value[key] = messages[at] if one else messages[at : at + count]
            at += count
        return value

    def messages(self, refs: Sequence[MsgRef], bodies: dict[int, list[Body]]) -> list[BaseMessage]:
        return [self.message(bodies[r.version][r.slot], r.id) for r in refs]

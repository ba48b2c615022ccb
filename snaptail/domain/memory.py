"""How many bytes a loaded agent holds, counted deeply, and which part holds them.

Method: walk the object graph from the agent (iteratively, no recursion limit) and
add the size of every object reached. Not counted, because the agent does not own
them:

* classes, functions, methods, modules and code (shared by every agent of a type);
* the interpreter's shared singletons: ``None``, ``True``/``False``, ``Ellipsis``,
  ``NotImplemented``, the small ints -5..256, the empty string and one-character
  Latin-1 strings (by value: CPython caches them), the empty tuple, bytes and
  frozenset;
* snaptail's load bookkeeping (the ``_snaptail`` tracking record: a few hundred
  bytes whatever the agent).

Canonical: the same state measures the same bytes however it was built (decoded from
a snapshot, replayed from events, built by commands in this process), so that an
agent near its budget is judged alike on every load. So sizes are those of the
values, not of the particular objects:

* a list, dict or set counts what a fresh one with the same items takes (``[]``
  grown by appends keeps spare capacity, a dict emptied by ``pop`` keeps its table,
  an object's attribute dict may share its keys: none of that counts);
* a string counts its characters and header, not the UTF-8 copy CPython caches in
  a non-ASCII string once it is encoded;
* equal strings and bytes count once per measurement, whether they are one shared
  object (a replay's ``"assistant"`` in every item) or many equal ones (a decoded
  snapshot's); an int or float counts wherever it is referred to (a replay's
  version number may be one object in two places, a decoded snapshot's two); other
  objects count once per object (de-duplicated by ``id``).

Not counted either: allocator rounding and free lists, so the figure is what the
agent's objects ask for, not what the process gives back when they go. Measured
against ``tracemalloc`` (``tests/memory/test_memory.py``): the documented (and tested)
tolerance is 30%.

Everything else reachable is counted as the agent's: a state field that refers to a
large object shared with the rest of the process (a config, a client) makes the agent
look that much bigger. Keep derived state to plain data.

Bytes shared by two parts (a message's text is both in the conversation window and
in the recent event that added it) are counted once, in the first part walked:
derived state first (field by field, in declaration order), then the recent-event
cache, then unsaved events, then the agent object itself.
"""

from __future__ import annotations

import re
import struct
import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from types import (
    BuiltinFunctionType,
    CodeType,
    FrameType,
    FunctionType,
    MethodType,
    ModuleType,
)
from typing import Any

MIB = 1024 * 1024

_NOT_OWNED = (type, ModuleType, FunctionType, BuiltinFunctionType, MethodType, CodeType, FrameType)
_SHARED: tuple[object, ...] = (None, True, False, Ellipsis, NotImplemented, (), b"", frozenset())
_SINGLETONS = {id(o) for o in _SHARED}
_SINGLETONS |= {id(i) for i in range(-5, 257)}
_MISSING = object()
_LEAVES = (str, bytes, bytearray, int, float, complex, bool, memoryview, range)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "ki": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "gi": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
    "ti": 1024**4,
}


def parse_size(size: int | str) -> int:
    """Bytes in ``size``: an int, or text such as ``"2MiB"``, ``"512 KiB"``, ``"1.5MB"``,
    ``"1048576"``. KiB/MiB/GiB are powers of 1024, kB/MB/GB powers of 1000.

    Hand-written on purpose: one regular expression and a table, not worth a dependency."""
    if isinstance(size, bool):
        raise ValueError(f"not a size: {size!r}")
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE.match(size)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"not a size: {size!r} (try 1048576, '512KiB' or '2MiB')")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 0:
        raise ValueError(f"a size must be >= 0, got {size!r}")
    return value


def format_bytes(n: int) -> str:
    """``n`` bytes for people: ``"812 B"``, ``"3.4 KiB"``, ``"1.20 MiB"``."""
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    if n < 1024**3:
        return f"{n / 1024**2:.2f} MiB"
    return f"{n / 1024**3:.2f} GiB"


_LEAF, _MAPPING, _ITEMS, _OBJECT, _SKIP = range(5)
_kinds: dict[type[Any], tuple[int, tuple[str, ...]]] = {}


def _kind(cls: type[Any]) -> tuple[int, tuple[str, ...]]:
    """How to walk instances of ``cls``, and its slot names (cached per class)."""
    kind = _kinds.get(cls)
    if kind is not None:
        return kind
    slots: list[str] = []
    if issubclass(cls, _NOT_OWNED):
        code = _SKIP
    elif issubclass(cls, _LEAVES):
        code = _LEAF
    elif issubclass(cls, Mapping) and not hasattr(cls, "__slots__"):
        code = _MAPPING
    elif issubclass(cls, list | tuple | set | frozenset | deque):
        code = _ITEMS
    else:
        code = _OBJECT
        for klass in cls.__mro__:
            names = klass.__dict__.get("__slots__", ())
            for name in (names,) if isinstance(names, str) else names:
                if name not in ("__dict__", "__weakref__"):
                    slots.append(name)
    kind = _kinds[cls] = (code, tuple(slots))
    return kind


_POINTER = struct.calcsize("P")
_LIST_BASE = sys.getsizeof([])
_STR_HEADER = {  # the header of a compact non-ASCII string, by bytes per character
    width: sys.getsizeof(char) - 2 * width
    for width, char in ((1, "\xe9"), (2, "\u0101"), (4, "\U0001f600"))
}
# (kind, item count) -> bytes a fresh dict (str keys or not) or set of that many takes
_fresh_sizes: dict[tuple[int, int], int] = {}
_DICT_STR, _DICT_ANY, _SET, _DEQUE = range(4)


def _fresh_size(kind: int, count: int) -> int:
    """Bytes a dict (``_DICT_STR``: every key a str; ``_DICT_ANY``), set or deque of
    ``count`` items built by inserting them one by one takes (cached per count)."""
    key = (kind, count)
    size = _fresh_sizes.get(key)
    if size is None:
        fresh: Any
        if kind == _SET:
            fresh = set()
            for i in range(count):
                fresh.add(i)
        elif kind == _DEQUE:
            fresh = deque(range(count))
        else:
            fresh = {}
            for i in range(count):
                fresh[f"k{i}" if kind == _DICT_STR else i] = None
        size = _fresh_sizes[key] = sys.getsizeof(fresh)
    return size


def _dict_size(mapping: dict[Any, Any]) -> int:
    kind = _DICT_STR if all(type(k) is str for k in mapping) else _DICT_ANY
    return _fresh_size(kind, len(mapping))


def _str_size(text: str) -> int:
    """Bytes of ``text`` without the UTF-8 copy a non-ASCII string may cache."""
    if text.isascii():
        return sys.getsizeof(text)
    top = ord(max(text))
    width = 1 if top < 0x100 else 2 if top < 0x10000 else 4
    return _STR_HEADER[width] + (len(text) + 1) * width


def deep_sizeof(obj: Any, seen: set[Any] | None = None) -> int:
    """Bytes held by ``obj`` and everything it refers to, measured canonically (see
    the module's docstring): each object once, equal strings and bytes once.

    Pass the same ``seen`` set to several calls to count shared objects only in
    the first call that reaches them. An instance dict's keys are attribute names,
    interned and shared by every instance: only its values are walked.

    Hand-written on purpose: it runs on every budget check, so it is tuned to agent
    state (shared singletons and interned names skipped), and it is small.
    """
    seen = set() if seen is None else seen
    skip = _SINGLETONS
    kinds = _kinds
    total = 0
    stack = [obj]
    pop, push, extend, getsizeof = stack.pop, stack.append, stack.extend, sys.getsizeof
    add = seen.add
    while stack:
        item = pop()
        cls = type(item)
        if cls is str:  # the commonest object: no kind lookup; equal strings once
            if (len(item) > 1 or (item and item >= "\u0100")) and item not in seen:
                add(item)
                total += _str_size(item)
            continue
        if cls is bytes:
            if item and item not in seen:
                add(item)
                total += getsizeof(item)
            continue
        if cls is int or cls is float:  # by value, every time: shared or not
            if cls is float or not -5 <= item <= 256:
                total += getsizeof(item)
            continue
        key = id(item)
        if key in seen or key in skip:
            continue
        kind = kinds.get(cls) or _kind(cls)
        code = kind[0]
        if code == _SKIP:
            continue
        add(key)
        if code == _LEAF:
            total += _str_size(item) if isinstance(item, str) else getsizeof(item)
            continue
        if code == _ITEMS:
            if isinstance(item, list):
                total += _LIST_BASE + len(item) * _POINTER
            elif isinstance(item, set | frozenset):
                total += _fresh_size(_SET, len(item)) if item else getsizeof(item)
            elif isinstance(item, deque):
                total += _fresh_size(_DEQUE, len(item))
            else:
                total += getsizeof(item)
            extend(item)
        elif code == _MAPPING:
            total += _dict_size(item) if isinstance(item, dict) else getsizeof(item)
            extend(item.keys())
            extend(item.values())
        else:
            total += getsizeof(item)
            instance_dict = getattr(item, "__dict__", None)
            if type(instance_dict) is dict and id(instance_dict) not in seen:
                add(id(instance_dict))
                total += _dict_size(instance_dict)
                extend(instance_dict.values())
            for name in kind[1]:
                value = getattr(item, name, _MISSING)
                if value is not _MISSING:
                    push(value)
    return total


@dataclass(frozen=True)
class MemoryUsage:
    """What one loaded agent holds: ``total`` bytes and ``parts`` (name to bytes,
    largest first). Part names are the state's field names (``window``,
    ``participants``, ``pending_tool_calls``, your own fields...) plus
    ``recent_events``, ``pending_events`` and ``agent`` (the object and its ids)."""

    total: int
    parts: dict[str, int]

    def largest(self, n: int = 3) -> list[tuple[str, int]]:
        return list(self.parts.items())[:n]

    def describe(self, n: int = 3) -> str:
        """``"window 1.20 MiB, recent_events 310.2 KiB, participants 12.0 KiB"``."""
        return ", ".join(f"{name} {format_bytes(size)}" for name, size in self.largest(n))


def measure_agent(agent: Any) -> MemoryUsage:
    """Measure ``agent`` (see the module's docstring for the method)."""
    seen: set[Any] = set()
    parts: dict[str, int] = {}
    attributes = vars(agent)
    state = attributes.get("state")
    agent_bytes = sys.getsizeof(agent) + _dict_size(attributes)
    seen.update((id(agent), id(attributes)))
    if state is not None:
        state_dict = getattr(state, "__dict__", None)
        agent_bytes += sys.getsizeof(state)
        seen.add(id(state))
        if isinstance(state_dict, dict):
            agent_bytes += _dict_size(state_dict)
            seen.add(id(state_dict))
        names = [f.name for f in fields(state)] if is_dataclass(state) else list(state_dict or {})
        for name in names:
            parts[name] = deep_sizeof(getattr(state, name, None), seen)
    for key, value in attributes.items():
        if key == "state" or key.startswith("_snaptail"):  # load bookkeeping: not counted
            continue
        if key == "_recent_events":
            parts["recent_events"] = deep_sizeof(value, seen)
        elif key == "_pending_events":
            parts["pending_events"] = deep_sizeof(value, seen)
        else:
            agent_bytes += deep_sizeof(value, seen)
    parts["agent"] = agent_bytes
    ordered = dict(sorted(parts.items(), key=lambda kv: kv[1], reverse=True))
    return MemoryUsage(total=sum(parts.values()), parts=ordered)

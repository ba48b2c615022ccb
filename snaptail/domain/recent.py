"""The bounded cache of an agent's newest events."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload


class RecentEvents(Sequence[Any]):
    """The newest ``maxlen`` events of one agent, oldest first.

    Filled by the load that builds the agent and kept current by every save; it never
    holds more than ``maxlen`` events. Older events are read with ``store.history()``.
    The load puts the rows it read here as they are (tuples): each is decoded with
    ``decode(*row)`` when first accessed, so a load decodes no event for this cache.
    """

    __slots__ = ("_decode", "_events")

    def __init__(
        self,
        maxlen: int,
        events: Iterable[Any] = (),
        decode: Callable[..., Any] | None = None,
    ) -> None:
        self._events: deque[Any] = deque(events, maxlen=max(0, maxlen))
        self._decode = decode

    @property
    def maxlen(self) -> int:
        return self._events.maxlen or 0

    def extend(self, events: Iterable[Any]) -> None:
        self._events.extend(events)

    def resize(self, maxlen: int) -> None:
        """Keep at most ``maxlen`` events from now on (the newest ones)."""
        self._events = deque(self._events, maxlen=max(0, maxlen))

    def _decoded(self, index: int) -> Any:
        item = self._events[index]
        if type(item) is tuple:  # a stored row (no domain event is a plain tuple)
            assert self._decode is not None, "stored rows come with their decoder"
            item = self._events[index] = self._decode(*item)
        return item

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Any]:
        for index in range(len(self._events)):
            yield self._decoded(index)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._decoded(i) for i in range(len(self._events))[index]]
        return self._decoded(index)

    def __repr__(self) -> str:
        return f"RecentEvents(maxlen={self.maxlen}, len={len(self)})"

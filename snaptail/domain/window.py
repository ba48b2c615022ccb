"""The conversation window: the newest items within an item count and a byte budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from snaptail.domain.values import WindowItem

TRUNCATION_MARK = " [...truncated; full text in history()]"


# WindowItem built without its dataclass __init__ (which sets each field through
# object.__setattr__, as a frozen dataclass must): the same object, set through its
# slots' descriptors, in about 60% of the time. Every item a load replays is built so.
_new_item = object.__new__
_set_version = vars(WindowItem)["version"].__set__
_set_role = vars(WindowItem)["role"].__set__
_set_text = vars(WindowItem)["text"].__set__


def _utf8_len(text: str) -> int:
    # ASCII text (the common case) has as many bytes as characters: no encoding needed.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@dataclass
class ConversationWindow:
    """What the agent would send to the model: newest items plus the latest summary.

    Bounded on two axes: ``max_items`` items and ``max_bytes`` bytes of text (UTF-8).
    Older items leave the window but stay in the store; each keeps its event version,
    so the full text is one ``history()`` call away.
    """

    max_items: int = 50
    max_bytes: int = 64 * 1024
    items: list[WindowItem] = field(default_factory=list)
    text_bytes: int = 0
    summary: str = ""
    summary_through: int = 0
    dropped: int = 0

    def add(self, version: int, role: str, text: str) -> None:
        # Run for every item a load replays: sizes inline, _trim only when over a bound.
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
        max_bytes = self.max_bytes
        if size > max_bytes:
            keep = max(0, max_bytes - len(TRUNCATION_MARK))
            text = text.encode("utf-8")[:keep].decode("utf-8", "ignore") + TRUNCATION_MARK
            size = _utf8_len(text)
        item = _new_item(WindowItem)
        _set_version(item, version)
        _set_role(item, role)
        _set_text(item, text)
        items = self.items
        items.append(item)
        self.text_bytes = size = self.text_bytes + size
        if len(items) > self.max_items or size > max_bytes:
            self._trim(self.max_items, max_bytes)

    def compact(self, summary: str, through_version: int) -> None:
        """Replace every item up to ``through_version`` by ``summary``."""
        kept = [item for item in self.items if item.version > through_version]
        self.dropped += len(self.items) - len(kept)
        self.items = kept
        self.text_bytes = sum(_utf8_len(item.text) for item in kept)
        self.summary = summary
        self.summary_through = max(self.summary_through, through_version)

    def shrink(self, max_items: int) -> int:
        """Keep at most ``max_items`` items from now on; returns how many were dropped."""
        self.max_items = max(1, max_items)
        before = len(self.items)
        self._trim(self.max_items, self.max_bytes)
        return before - len(self.items)

    def _trim(self, max_items: int, max_bytes: int) -> None:
        drop = 0
        size = self.text_bytes
        items = self.items
        while len(items) - drop > max_items or (size > max_bytes and len(items) - drop > 1):
            text = items[drop].text
            size -= len(text) if text.isascii() else len(text.encode("utf-8"))
            drop += 1
        if drop:
            del items[:drop]
            self.text_bytes = size
            self.dropped += drop

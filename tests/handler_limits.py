"""A module of limits and helpers that an agent type's handlers use (for
tests/snapshots/test_fingerprint_settings.py): its values shape state through the module."""

from __future__ import annotations

KEEP = 20


def keep_newest(items: list[str]) -> None:
    del items[:-KEEP]

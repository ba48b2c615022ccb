"""``state_fingerprint`` (asked by every load and snapshot) answers from the settings'
current values: every change of a value, of its type or of the declared names is
seen at the next call, and a value changed back gives the fingerprint back."""

from __future__ import annotations

from typing import cast

import pytest

from snaptail import Agent
from snaptail.snapshots import state_fingerprint


class Tunable(Agent):
    snapshot_settings = cast("tuple[str, ...]", ("depth", "ratio"))
    depth = cast(object, 1)
    ratio = cast(object, "a")
    other = cast(object, "a")


def test_every_change_of_a_setting_changes_the_fingerprint() -> None:
    first = state_fingerprint(Tunable)
    assert state_fingerprint(Tunable) == first
    seen = {first}
    try:
        for depth in (2, True, "1", None, 1.0):  # bool, str, None and float differ from 1
            Tunable.depth = depth
            changed = state_fingerprint(Tunable)
            assert changed not in seen, depth
            assert state_fingerprint(Tunable) == changed
            seen.add(changed)
        Tunable.depth = 1
        assert state_fingerprint(Tunable) == first
        for ratio in ((1, 2), (1, 3), (1, True)):  # not plain values: read at every call
            Tunable.ratio = ratio
            changed = state_fingerprint(Tunable)
            assert changed not in seen, ratio
            seen.add(changed)
        Tunable.ratio = "a"
        assert state_fingerprint(Tunable) == first
    finally:
        Tunable.depth, Tunable.ratio = 1, "a"


def test_a_change_of_the_declared_settings_changes_the_fingerprint() -> None:
    first = state_fingerprint(Tunable)
    try:
        Tunable.snapshot_settings = ("depth", "other")  # the same values, other names
        assert state_fingerprint(Tunable) != first
        Tunable.snapshot_settings = ("depth",)
        fewer = state_fingerprint(Tunable)
        assert fewer != first
        Tunable.snapshot_settings = ["depth"]  # type: ignore[assignment]  # unhashable
        assert state_fingerprint(Tunable) == fewer
        Tunable.snapshot_settings = "depth"  # type: ignore[assignment]
        with pytest.raises(TypeError, match="tuple of attribute names"):
            state_fingerprint(Tunable)
        Tunable.snapshot_settings = ("depth", "missing")
        with pytest.raises(TypeError, match="does not have"):
            state_fingerprint(Tunable)
    finally:
        Tunable.snapshot_settings = ("depth", "ratio")
    assert state_fingerprint(Tunable) == first

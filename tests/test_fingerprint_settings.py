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


def test_a_change_of_state_or_versions_at_run_time_is_seen_at_the_next_call() -> None:
    from dataclasses import dataclass

    from snaptail import AgentState

    @dataclass
    class OtherState(AgentState):
        extra: int = 0

    first = state_fingerprint(Tunable)
    original_state = Tunable.State
    try:
        for name, value in (("class_version", 2), ("snapshot_version", 3)):
            setattr(Tunable, name, value)
            changed = state_fingerprint(Tunable)
            assert changed != first, name
            assert state_fingerprint(Tunable) == changed
            delattr(Tunable, name)
            assert state_fingerprint(Tunable) == first, name
        Tunable.State = OtherState
        assert state_fingerprint(Tunable) != first
        Tunable.State = original_state
        assert state_fingerprint(Tunable) == first
        Tunable.depth = 10**30  # a large int: not a cached small-int object
        assert state_fingerprint(Tunable) != first
        Tunable.depth = int("1" * 30)  # equal value, another object: the same answer
        big = state_fingerprint(Tunable)
        Tunable.depth = int("1" * 30)
        assert state_fingerprint(Tunable) == big
    finally:
        Tunable.State = original_state
        Tunable.depth = 1
        for name in ("class_version", "snapshot_version"):
            if name in vars(Tunable):
                delattr(Tunable, name)

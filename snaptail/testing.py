"""Property checks for your own agent types: call them from your test suite.

:func:`check_agent_type` is what snaptail's own tests run on the built-in
:class:`~snaptail.Agent`. Give it your agent type and a hypothesis strategy of
commands (functions that take an agent and call its command methods); it saves
through the real ``AgentStore.save`` under random snapshot policies, reloads,
snapshots and sheds memory at random points, half the time with tiny limits
(:data:`TINY_LIMITS`), and proves, for every sequence hypothesis tries, that

* the whole agent (every attribute, declared or not, type for type) loaded from a
  snapshot plus the tail equals a full replay, at each snapshot point, the head and
  a sample of versions (every version of short logs);
* the agent survives the snapshot codec exactly (same values, same types, same bytes
  when encoded again);
* the state fingerprint changes when any field of the state (or of a dataclass
  directly inside it) is added, removed or retyped, when ``snapshot_version`` is
  bumped and when a snapshot setting changes, and does not change with
  ``max_event_bytes``, so stale snapshots of your type are never trusted and
  command-only limits never force replays;
* the newest snapshot still equals the replay with every class attribute the
  fingerprint does not cover changed (:func:`changed_settings`), so no setting that
  shapes state escapes the fingerprint (one read unseen, or left out by mistake with
  ``snapshot_ignore``).

Failures read as ``Type at version V: ... differs from the replay:`` followed by one
line per attribute with its snapshot value and its replay value. Call it from a plain
test function, not from inside another ``@given`` test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import random
import tempfile
import typing
from collections.abc import Callable, Iterator, Mapping
from functools import reduce
from operator import or_
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snaptail.application.store import AgentStore
from snaptail.domain.agent import Agent
from snaptail.domain.compare import agent_differences, describe
from snaptail.errors import AgentLimitExceeded, InvalidCommand
from snaptail.snapshots import (
    EveryNBytes,
    EveryNEvents,
    LoadSlowerThan,
    Never,
    SnapshotPolicy,
    decode_state,
    encode_state,
    fingerprint_settings,
    state_fingerprint,
)
from snaptail.snapshots.codec import SnapshotEncodeError

A = TypeVar("A", bound=Agent)

# After each command: nothing, save, save and reload (the agent goes on from the
# loaded copy), save and take a snapshot on demand, or shed memory (WindowShrunk
# events) and save.
ACTIONS = ("none", "none", "save", "reload", "snapshot", "shed")

# The tiny-limits profile: every bound of the built-in agent is reached within a few
# commands (limits a type does not have are skipped).
TINY_LIMITS: Mapping[str, int] = {
    "window_items": 3,
    "window_bytes": 64,
    "idempotency_window": 2,
    "tool_output_preview": 8,
    "max_labels": 3,
    "max_metadata_keys": 3,
    "max_participants": 2,
    "max_pending": 2,
}

# Every version is checked against a replay when there are at most this many;
# beyond, the snapshot versions, the head and this many random versions.
CHECK_VERSIONS = 30

_single_policies: st.SearchStrategy[SnapshotPolicy] = st.one_of(
    st.builds(EveryNEvents, st.integers(1, 12)),
    st.builds(EveryNBytes, st.integers(1, 3000)),
    # Either always or never over the limit, so the checks hold without timing.
    st.builds(LoadSlowerThan, st.sampled_from([1e-9, 1e9])),
    st.just(Never()),
)
policies: st.SearchStrategy[SnapshotPolicy] = st.lists(
    _single_policies, min_size=1, max_size=3
).map(lambda ps: ps[0] if len(ps) == 1 else reduce(or_, ps))
"""Random snapshot policies (any of one to three ``EveryNEvents``/``EveryNBytes``/
``LoadSlowerThan``/``Never``): where the real save path takes its snapshots."""


def check_agent_type(
    agent_type: type[A],
    commands: st.SearchStrategy[Callable[[A], Any]],
    *,
    new_agent: Callable[[], A] | None = None,
    store_url: str | None = None,
    max_examples: int = 50,
    max_commands: int = 30,
    hypothesis_settings: settings | None = None,
    tiny_limits: Mapping[str, object] = TINY_LIMITS,
) -> None:
    """Check snapshot correctness for ``agent_type``; raises ``AssertionError`` (with
    hypothesis's smallest failing example and a diff naming each attribute, its
    snapshot value, its replay value and the version) when a property does not hold.

    ``commands`` draws callables that run one command on an agent; a command raising
    :class:`~snaptail.InvalidCommand` or :class:`~snaptail.AgentLimitExceeded` is
    skipped, as a caller would. ``new_agent`` makes the agent each example starts
    from (default ``agent_type(name="check")``). ``store_url`` runs the checks on
    that database (default: a fresh SQLite file per example). ``max_examples`` and
    ``max_commands`` bound the work (half the sequences have at least
    ``max_commands // 2`` commands). Half the examples run with ``tiny_limits``
    (class attributes set on ``agent_type`` for that example and restored after; add
    your own type's limits to drive it past them). ``hypothesis_settings`` (a
    ``hypothesis.settings``) is the parent of the settings used, which add
    ``max_examples`` and ``deadline=None`` to it.
    """
    check_fingerprint(agent_type)
    make: Callable[[], A] = new_agent or (lambda: agent_type(name="check"))
    step = st.tuples(commands, st.sampled_from(ACTIONS))
    # Half the sequences are long (hypothesis's lists are short unless told otherwise):
    # long runs are where bounds are reached and snapshot != replay bugs live.
    steps = st.one_of(
        st.lists(step, min_size=1, max_size=max_commands),
        st.lists(step, min_size=max(1, max_commands // 2), max_size=max_commands),
    )

    @settings(
        hypothesis_settings,
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        steps=steps,
        policy=policies,
        keep=st.integers(1, 3),
        tiny=st.booleans(),
        rnd=st.randoms(use_true_random=False),
    )
    def snapshots_are_exact(
        steps: list[tuple[Callable[[A], Any], str]],
        policy: SnapshotPolicy,
        keep: int,
        tiny: bool,
        rnd: random.Random,
    ) -> None:
        limits = tiny_limits if tiny else {}
        with _store(store_url, policy, keep) as store:
            with limited(agent_type, limits):
                agent = make()
                check_history(store, agent, steps, rnd)
            # The same log loaded with every class attribute the fingerprint does not
            # cover changed (those it covers as written): the fingerprint is the same,
            # the snapshots are trusted, and they must still be the replay. If one of
            # those attributes shapes state (a handler reads it, unseen, or it is
            # listed in snapshot_ignore by mistake), they are not.
            covered = set(fingerprint_settings(agent_type))
            if tiny:
                other = {k: v for k, v in tiny_limits.items() if k in covered}
            else:
                other = {
                    k: v
                    for k, v in changed_settings(agent_type, tiny_limits).items()
                    if k not in covered
                }
            with limited(agent_type, other):
                check_loads(store, agent.id)

    snapshots_are_exact()


# Class attributes never changed by changed_settings: versions, the memory budget and
# the settings declarations.
_KEPT = frozenset(
    {"class_version", "snapshot_version", "memory_budget", "snapshot_settings", "snapshot_ignore"}
)


def changed_settings(
    agent_type: type[Agent], tiny_limits: Mapping[str, object]
) -> dict[str, object]:
    """``tiny_limits``, and every other public int, bool, float, str, tuple or Enum
    class attribute of ``agent_type`` changed (an int to 2 or less, a bool flipped,
    a float plus 1, a str or tuple extended, an Enum to another member): the settings under
    which :func:`check_agent_type` loads again a log written under the usual ones,
    so that a setting the handlers read and the fingerprint misses is caught whether
    or not it is listed anywhere."""
    changed: dict[str, object] = dict(tiny_limits)
    for name in dir(agent_type):
        if name.startswith("_") or name in changed or name in _KEPT:
            continue
        owner = next((k for k in agent_type.__mro__ if name in vars(k)), None)
        if owner is None or not issubclass(owner, Agent):  # eventsourcing's own
            continue
        value = getattr(agent_type, name, None)
        if type(value) is int:
            changed[name] = min(value - 1, 2) if value > 1 else value + 1
        elif isinstance(value, bool | float | str | tuple | enum.Enum):
            other = _other_value(value)
            if other is not _ABSENT:
                changed[name] = other
    return changed


def check_loads(store: AgentStore, agent_id: Any) -> None:
    """``store.get`` equals a full replay at the newest snapshot's version (a load
    from the snapshot alone, no tail to hide a difference), under the class attributes
    in force now; nothing is checked without a snapshot, or if the replay raises under
    them (nothing to compare). Failures read ``... after its settings changed ...``:
    a class attribute the fingerprint does not cover shapes state."""
    infos = store.snapshot_infos(agent_id)
    versions = [max(i.originator_version for i in infos)] if infos else []
    for version in versions:
        try:
            replayed = store.replay(agent_id, version=version)
        except Exception:  # the handlers refuse these settings: nothing to compare
            continue
        loaded = store.get(agent_id, version=version)
        stats = store.load_stats(loaded)
        origin = (
            f"after its settings changed, snapshot at version {stats.snapshot_version} + tail"
            if stats and stats.snapshot_version
            else "after its settings changed, a load without snapshot"
        )
        assert_same(loaded, replayed, version, origin)


@contextlib.contextmanager
def limited(agent_type: type[Agent], limits: Mapping[str, object]) -> Iterator[None]:
    """Set ``limits`` (those ``agent_type`` has) as class attributes of ``agent_type``
    for the duration; restore them after. Not thread-safe: for tests."""
    saved = {name: vars(agent_type).get(name, _ABSENT) for name in limits}
    applied = [name for name in limits if hasattr(agent_type, name)]
    try:
        for name in applied:
            setattr(agent_type, name, limits[name])
        yield
    finally:
        for name in applied:
            if saved[name] is _ABSENT:
                delattr(agent_type, name)
            else:
                setattr(agent_type, name, saved[name])


_ABSENT = object()


def check_history(
    store: AgentStore,
    agent: A,
    steps: list[tuple[Callable[[A], Any], str]],
    rnd: random.Random | None = None,
) -> None:
    """Run ``steps`` on ``agent`` through ``store`` (its policy snapshots on save;
    steps also reload, snapshot on demand and shed memory), checking the codec after
    every command and each reload against a full replay; then check the snapshot
    versions, the head and up to :data:`CHECK_VERSIONS` versions (all of them when
    there are no more) against a full replay, comparing the whole agent."""
    store.save(agent)
    for command, action in steps:
        with contextlib.suppress(InvalidCommand, AgentLimitExceeded):
            command(agent)
        check_codec(agent)
        if action == "shed":
            agent.shed_memory(0)
        if action != "none":
            store.save(agent)
        if action == "reload":
            loaded = store.get(agent.id)
            assert_same(loaded, agent, agent.version, "the agent loaded after a save", "live agent")
            agent = loaded  # type: ignore[assignment]
        elif action == "snapshot":
            store.snapshot(agent.id)
    store.save(agent)
    head = agent.version
    versions = {head}
    versions.update(i.originator_version for i in store.snapshot_infos(agent.id))
    if head <= CHECK_VERSIONS:
        versions.update(range(1, head + 1))
    else:
        versions.update((rnd or random.Random(head)).sample(range(1, head), CHECK_VERSIONS))
    for version in sorted(versions):
        loaded = store.get(agent.id, version=version)
        stats = store.load_stats(loaded)
        origin = (
            f"snapshot at version {stats.snapshot_version} + tail"
            if stats and stats.snapshot_version
            else "a load without snapshot"
        )
        assert_same(loaded, store.replay(agent.id, version=version), version, origin)
    assert_same(store.get(agent.id), agent, head, "the loaded agent", "live agent")


def assert_same(
    loaded: Agent, other: Agent, version: int, origin: str, other_name: str = "replay"
) -> None:
    """Assert two agents are the same, attribute by attribute and type by type."""
    differences = agent_differences(loaded, other)
    assert not differences, (
        f"{type(other).__qualname__} at version {version}: {origin} differs from the"
        f" {other_name}:\n{describe(differences, 'snapshot', other_name)}"
    )


def check_codec(agent: Agent) -> None:
    """The agent survives the snapshot codec exactly: every attribute, every type."""
    name = type(agent).__qualname__
    try:
        data = encode_state(agent)
    except SnapshotEncodeError as exc:
        raise AssertionError(
            f"{name} at version {agent.version}: the snapshot codec refuses it: {exc}"
        ) from None
    back = decode_state(type(agent), agent.id, agent.version, data)
    assert_same(back, agent, agent.version, "the snapshot codec's copy", "live agent")
    assert encode_state(back) == data, "encoding the decoded state gave other bytes"


def check_fingerprint(agent_type: type[Agent]) -> None:
    """Every change to the state's fields, and a ``snapshot_version`` bump, changes
    the fingerprint of ``agent_type`` (checked on stand-ins with the same names)."""
    if agent_type in _fingerprint_checked:
        return
    state = agent_type.State
    same = state_fingerprint(_stand_in(agent_type, state))
    assert same == state_fingerprint(agent_type), (
        f"{agent_type.__qualname__}: the fingerprint depends on more than the checks see"
    )
    bumped = _stand_in(agent_type, state, snapshot_version=agent_type.snapshot_version + 1)
    assert state_fingerprint(bumped) != same, "bumping snapshot_version keeps the fingerprint"
    for name, value in _attribute_settings(agent_type).items():
        other = _other_value(value)
        if other is not _ABSENT:
            changed = _stand_in(agent_type, state, **{name: other})
            assert state_fingerprint(changed) != same, (
                f"{agent_type.__qualname__}: changing {name} (a snapshot setting) keeps the"
                " fingerprint"
            )
    raised = _stand_in(agent_type, state, max_event_bytes=2 * agent_type.max_event_bytes)
    assert state_fingerprint(raised) == same, (
        f"{agent_type.__qualname__}: raising max_event_bytes (checked by commands only)"
        " changes the fingerprint, so every snapshot of the type would be rebuilt"
    )
    unnoticed = [
        change
        for change, variant in _state_variants(state)
        if state_fingerprint(_stand_in(agent_type, variant)) == same
    ]
    assert not unnoticed, (
        f"{agent_type.__qualname__}: the state fingerprint does not change when "
        + "; ".join(unnoticed)
    )
    _fingerprint_checked.add(agent_type)


_fingerprint_checked: set[type[Agent]] = set()


# -- helpers --------------------------------------------------------------------------


@contextlib.contextmanager
def _store(url: str | None, policy: SnapshotPolicy, keep: int) -> Iterator[AgentStore]:
    options: dict[str, Any] = {"policy": policy, "keep_snapshots": keep, "recent_events": 3}
    if url is not None:
        with AgentStore(url, **options) as store:
            yield store
        return
    with (
        tempfile.TemporaryDirectory(prefix="snaptail-check-") as folder,
        AgentStore(f"sqlite:///{Path(folder) / 'check.db'}", **options) as store,
    ):
        yield store


def _stand_in(agent_type: type[Agent], state: type[Any], **overrides: Any) -> Any:
    """A plain class that the fingerprint cannot tell from ``agent_type`` except for
    its ``State`` (an agent type cannot be defined twice under one name)."""
    namespace = {
        name: getattr(agent_type, name) for name in dir(agent_type) if not name.startswith("__")
    }
    namespace.update(
        State=state,
        snapshot_settings=tuple(_attribute_settings(agent_type)),
        __module__=agent_type.__module__,
        __qualname__=agent_type.__qualname__,
    )
    init = next((vars(k)["__init__"] for k in agent_type.__mro__ if "__init__" in vars(k)), None)
    if init is not None:  # read for what it reads (it applies the created event)
        namespace["__init__"] = init
    namespace.update(overrides)
    return type(agent_type.__name__, (), namespace)


def _attribute_settings(agent_type: type[Agent]) -> dict[str, object]:
    """The settings of ``agent_type`` that are its class attributes (not globals)."""
    return {
        name: value
        for name, value in fingerprint_settings(agent_type).items()
        if hasattr(agent_type, name) and "." not in name
    }


def _other_value(value: object) -> object:
    """Another value of the same type (a changed setting), or _ABSENT if unknown."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, enum.Enum):
        others = [m for m in type(value) if m is not value]
        return others[0] if others else _ABSENT
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return (*value, "x")
    return _ABSENT


def _same_name(cls: type[Any], fields: list[tuple[str, Any, Any]]) -> type[Any]:
    variant = dataclasses.make_dataclass(cls.__name__, fields)
    variant.__module__, variant.__qualname__ = cls.__module__, cls.__qualname__
    return variant


def _fields(cls: type[Any]) -> list[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], None) for f in dataclasses.fields(cls)]


def _state_variants(state: type[Any], depth: int = 1) -> Iterator[tuple[str, type[Any]]]:
    """(description, variant) for each change of ``state``'s fields, keeping its name."""
    fields = _fields(state)
    yield "a field is added", _same_name(state, [*fields, ("snaptail_probe", int, None)])
    for i, (name, tp, default) in enumerate(fields):
        others = fields[:i] + fields[i + 1 :]
        yield f"field {name!r} is removed", _same_name(state, others)
        renamed = (f"{name}_renamed", tp, default)
        yield f"field {name!r} is renamed", _same_name(state, [*others[:i], renamed, *others[i:]])
        retyped = (name, int if tp is not int else str, default)
        yield f"field {name!r} changes type", _same_name(state, [*others[:i], retyped, *others[i:]])
        if depth > 0 and dataclasses.is_dataclass(tp) and isinstance(tp, type):
            for change, inner in _state_variants(tp, depth - 1):
                nested = (name, inner, default)
                yield (
                    f"in field {name!r}, {change}",
                    _same_name(state, [*others[:i], nested, *others[i:]]),
                )


__all__ = [
    "assert_same",
    "changed_settings",
    "check_agent_type",
    "check_codec",
    "check_fingerprint",
    "check_history",
    "check_loads",
    "limited",
]

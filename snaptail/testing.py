"""Property checks for your own agent types: call them from your test suite.

:func:`check_agent_type` is what snaptail's own tests run on the built-in
:class:`~snaptail.Agent`. Give it your agent type and a hypothesis strategy of
commands (functions that take an agent and call its command methods); it proves, for
every sequence hypothesis tries, that

* loading from a snapshot plus the tail equals a full replay, at every version and
  from every snapshot point;
* the state survives the snapshot codec exactly (same values, same types, same bytes
  when encoded again);
* the state fingerprint changes when any field of the state (or of a dataclass
  directly inside it) is added, removed or retyped, and when ``snapshot_version`` is
  bumped, so stale snapshots of your type are never trusted.

Call it from a plain test function, not from inside another ``@given`` test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snaptail.application.store import AgentStore
from snaptail.domain.agent import Agent
from snaptail.errors import InvalidCommand
from snaptail.snapshots import Never, decode_state, encode_state, state_fingerprint

A = TypeVar("A", bound=Agent)

# After each command: do nothing, save, or save and take a snapshot.
ACTIONS = ("none", "none", "save", "snapshot")


def check_agent_type(
    agent_type: type[A],
    commands: st.SearchStrategy[Callable[[A], Any]],
    *,
    new_agent: Callable[[], A] | None = None,
    store_url: str | None = None,
    max_examples: int = 50,
    max_commands: int = 30,
    hypothesis_settings: settings | None = None,
) -> None:
    """Check snapshot correctness for ``agent_type``; raises ``AssertionError`` (with
    hypothesis's smallest failing example) when a property does not hold.

    ``commands`` draws callables that run one command on an agent; a command raising
    :class:`~snaptail.InvalidCommand` is skipped, as a caller would. ``new_agent``
    makes the agent each example starts from (default ``agent_type(name="check")``).
    ``store_url`` runs the checks on that database (default: a fresh SQLite file per
    example). ``max_examples`` and ``max_commands`` bound the work.
    ``hypothesis_settings`` (a ``hypothesis.settings``) is the parent of the settings
    used, which add ``max_examples`` and ``deadline=None`` to it.
    """
    check_fingerprint(agent_type)
    make: Callable[[], A] = new_agent or (lambda: agent_type(name="check"))
    steps = st.lists(
        st.tuples(commands, st.sampled_from(ACTIONS)), min_size=1, max_size=max_commands
    )

    @settings(
        hypothesis_settings,
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(steps=steps)
    def snapshots_are_exact(steps: list[tuple[Callable[[A], Any], str]]) -> None:
        with _store(store_url) as store:
            check_history(store, make(), steps)

    snapshots_are_exact()


def check_history(
    store: AgentStore, agent: A, steps: list[tuple[Callable[[A], Any], str]]
) -> None:
    """Run ``steps`` on ``agent`` (saving and snapshotting where they say), checking
    the codec after every command, then every version against a full replay."""
    store.save(agent)
    for command, action in steps:
        with contextlib.suppress(InvalidCommand):
            command(agent)
        check_codec(agent)
        if action != "none":
            store.save(agent)
        if action == "snapshot":
            store.snapshot(agent.id)
    store.save(agent)
    for version in range(1, agent.version + 1):
        loaded = store.get(agent.id, version=version)
        replayed = store.replay(agent.id, version=version)
        stats = store.load_stats(loaded)
        origin = f"snapshot at version {stats.snapshot_version}" if stats else "?"
        assert loaded.version == replayed.version == version
        assert type(loaded) is type(replayed) is type(agent)
        assert loaded.state == replayed.state, (
            f"{type(agent).__qualname__} at version {version}: {origin} + tail differs "
            f"from a full replay in {_differing_fields(loaded.state, replayed.state)}"
        )
        assert loaded.modified_on == replayed.modified_on
    assert store.get(agent.id).state == agent.state, "the loaded agent differs from the live one"


def check_codec(agent: Agent) -> None:
    """The agent's state survives the snapshot codec exactly."""
    data = encode_state(agent)
    back = decode_state(type(agent), agent.id, agent.version, data)
    assert type(back.state) is type(agent.state)
    assert back.state == agent.state, (
        f"{type(agent).__qualname__}: the snapshot codec changed "
        f"{_differing_fields(back.state, agent.state)}"
    )
    assert (back.created_on, back.modified_on) == (agent.created_on, agent.modified_on)
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
def _store(url: str | None) -> Iterator[AgentStore]:
    options: dict[str, Any] = {"policy": Never(), "keep_snapshots": 1_000_000, "recent_events": 3}
    if url is not None:
        with AgentStore(url, **options) as store:
            yield store
        return
    with (
        tempfile.TemporaryDirectory(prefix="snaptail-check-") as folder,
        AgentStore(f"sqlite:///{Path(folder) / 'check.db'}", **options) as store,
    ):
        yield store


def _differing_fields(a: Any, b: Any) -> list[str]:
    if not dataclasses.is_dataclass(a) or type(a) is not type(b):
        return ["<the whole state>"]
    return [
        f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)
    ]


def _stand_in(agent_type: type[Agent], state: type[Any], **overrides: Any) -> Any:
    """A plain class that the fingerprint cannot tell from ``agent_type`` except for
    its ``State`` (an agent type cannot be defined twice under one name)."""
    namespace = {
        name: getattr(agent_type, name) for name in dir(agent_type) if not name.startswith("__")
    }
    namespace.update(
        State=state, __module__=agent_type.__module__, __qualname__=agent_type.__qualname__
    )
    namespace.update(overrides)
    return type(agent_type.__name__, (), namespace)


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

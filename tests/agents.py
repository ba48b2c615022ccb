"""Command strategies for the built-in Agent, shared by the property tests, and the
size of those tests: small locally, large under the ``ci`` hypothesis profile
(``HYPOTHESIS_PROFILE=ci``, set by ``.ci/run``; registered in ``tests/conftest.py``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from hypothesis import event
from hypothesis import strategies as st

from snaptail import Agent, AgentLimitExceeded, InvalidCommand, Participant, TokenUsage
from snaptail.domain.window import TRUNCATION_MARK
from snaptail.testing import TINY_LIMITS

Command = Callable[[Agent], None]
T = TypeVar("T")

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
CI_EXAMPLES = 300
CI_COMMANDS = 200


def examples(local: int) -> int:
    """Examples per property: ``local`` here, at least 300 under the ci profile."""
    return max(local, CI_EXAMPLES) if CI else local


def commands_up_to(local: int) -> int:
    """Longest command sequence: ``local`` here, 200 under the ci profile."""
    return max(local, CI_COMMANDS) if CI else local


def sequences(elements: st.SearchStrategy[T], local: int) -> st.SearchStrategy[list[T]]:
    """Lists of 1 to :func:`commands_up_to(local)` elements; under the ci profile half
    of them are long (at least half the maximum), which hypothesis would rarely draw
    on its own, so that every bound of the state is reached."""
    longest = commands_up_to(local)
    short = st.lists(elements, min_size=1, max_size=local)
    if not CI:
        return short
    return st.one_of(short, st.lists(elements, min_size=longest // 2, max_size=longest))


class TinyAgent(Agent):
    """The built-in agent with tiny limits: a few commands reach every bound."""

    window_items = TINY_LIMITS["window_items"]
    window_bytes = TINY_LIMITS["window_bytes"]
    idempotency_window = TINY_LIMITS["idempotency_window"]
    tool_output_preview = TINY_LIMITS["tool_output_preview"]
    max_labels = TINY_LIMITS["max_labels"]
    max_metadata_keys = TINY_LIMITS["max_metadata_keys"]
    max_participants = TINY_LIMITS["max_participants"]
    max_pending = TINY_LIMITS["max_pending"]


agent_types = st.sampled_from([Agent, TinyAgent])


def note_bounds(agent: Agent) -> None:
    """Report (``hypothesis.event``, seen with ``--hypothesis-show-statistics``) each
    bound of the agent's state that is full."""
    s, kind = agent.state, type(agent)
    window = s.window
    reached = {
        "window items": len(window.items) >= window.max_items,
        "window items shed": window.max_items < kind.window_items,
        "window bytes (truncated or trimmed by bytes)": any(
            item.text.endswith(TRUNCATION_MARK) for item in window.items
        )
        or (window.dropped > 0 and len(window.items) < window.max_items),
        "window dropped": window.dropped > 0,
        "idempotency window": len(s.idempotency_keys) >= kind.idempotency_window,
        "labels": len(s.labels) >= kind.max_labels,
        "metadata": len(s.metadata) >= kind.max_metadata_keys,
        "participants": len(s.participants) >= kind.max_participants,
        "pending tool calls": len(s.pending_tool_calls) >= kind.max_pending,
        "pending approvals": len(s.pending_approvals) >= kind.max_pending,
    }
    for bound, full in reached.items():
        if full:
            event(f"{kind.__name__} bound reached: {bound}")


# Mostly short texts, some longer than a tiny window's byte budget (truncated).
texts = st.one_of(st.text(max_size=60), st.text(min_size=61, max_size=120))
names = st.text(alphabet="abcdefghij", min_size=1, max_size=4)


def _tolerant(command: Command) -> Command:
    """Commands that are invalid in the current state, or over a limit, are skipped,
    as a caller would."""

    def run(agent: Agent) -> None:
        with contextlib.suppress(InvalidCommand, AgentLimitExceeded):
            command(agent)

    return run


def _finish(agent: Agent, usage: TokenUsage) -> None:
    if agent.state.llm_request is not None:
        agent.finish_llm_request(agent.state.llm_request, usage)


def _complete(agent: Agent, output: str | None, error: str | None, ms: int) -> None:
    for call_id in list(agent.state.pending_tool_calls)[:1]:
        agent.complete_tool_call(call_id, output=output, error=error, duration_ms=ms)


def _decide(agent: Agent, approved: bool) -> None:
    for key in list(agent.state.pending_approvals)[:1]:
        agent.decide_approval(key, approved, "reviewer")


usages = st.builds(
    TokenUsage,
    input_tokens=st.integers(0, 10_000),
    output_tokens=st.integers(0, 10_000),
    cached_tokens=st.integers(0, 100),
    cost_usd=st.decimals(min_value=0, max_value=10, places=4).map(Decimal),
)

commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(lambda t: lambda a: a.add_input("user", t), texts),
    st.builds(lambda t: lambda a: a.add_output("assistant_message", t), texts),
    st.builds(lambda p: lambda a: a.set_system_prompt(p), texts),
    st.builds(lambda k, v: _tolerant(lambda a: a.set_metadata(k, v)), names, texts),
    st.builds(lambda label: _tolerant(lambda a: a.add_label(label)), names),
    st.builds(lambda label: lambda a: a.remove_label(label), names),
    st.builds(lambda u: _tolerant(lambda a: a.join(Participant(user_id=u, display_name=u))), names),
    st.builds(lambda u: _tolerant(lambda a: a.leave(u)), names),
    st.just(_tolerant(lambda a: a.start_llm_request() and None)),  # type: ignore[arg-type]
    st.builds(lambda u: _tolerant(lambda a: _finish(a, u)), usages),
    st.builds(lambda c, t: _tolerant(lambda a: a.request_tool_call(c, t, {"q": c})), names, names),
    st.builds(
        lambda o, ms: _tolerant(lambda a: _complete(a, o, None if o else "boom", ms)),
        st.one_of(st.none(), texts),
        st.integers(0, 5000),
    ),
    st.builds(lambda k: _tolerant(lambda a: a.request_approval(k, "shell", {})), names),
    st.builds(lambda ok: _tolerant(lambda a: _decide(a, ok)), st.booleans()),
    st.just(lambda a: a.pause("maintenance")),
    st.just(lambda a: a.resume()),
    st.builds(lambda m: lambda a: a.record_error(m), texts),
    st.builds(
        lambda body, key: lambda a: a.receive_webhook("slack", body, key) and None,
        st.binary(max_size=64),
        st.one_of(st.none(), names),
    ),
    st.builds(lambda s: _tolerant(lambda a: a.compact_context(s, max(1, a.version - 2))), texts),
    st.builds(lambda n: lambda a: a.shrink_window(n), st.integers(1, 4)),
    st.builds(lambda target: lambda a: a.shed_memory(target), st.integers(0, 30_000)),
)

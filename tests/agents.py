"""Command strategies for the built-in Agent, shared by the property tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from decimal import Decimal

from hypothesis import strategies as st

from snaptail import Agent, InvalidCommand, Participant, TokenUsage

Command = Callable[[Agent], None]

texts = st.text(max_size=60)
names = st.text(alphabet="abcdefghij", min_size=1, max_size=4)


def _tolerant(command: Command) -> Command:
    """Commands that are invalid in the current state are skipped, as a caller would."""

    def run(agent: Agent) -> None:
        with contextlib.suppress(InvalidCommand):
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
    st.builds(lambda k, v: lambda a: a.set_metadata(k, v), names, texts),
    st.builds(lambda label: lambda a: a.add_label(label), names),
    st.builds(lambda label: lambda a: a.remove_label(label), names),
    st.builds(lambda u: lambda a: a.join(Participant(user_id=u, display_name=u)), names),
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
)

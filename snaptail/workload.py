"""Seeded, deterministic, realistic agent traffic: for benchmarks, demos and tests.

A :class:`Workload` is an endless stream of commands on the built-in
:class:`~snaptail.Agent`, grouped in chat turns like those of a production agent runtime
(see the event mix below). The same seed always gives the same commands, so every
system a benchmark compares is fed exactly the same traffic::

    from snaptail import Agent, AgentStore
    from snaptail.workload import Workload

    store = AgentStore(":memory:")
    agent = Agent(name="support-thread")
    Workload(seed=7).drive(agent, events=1_000, save=store.save, batch=100)

Event mix (approximate shares of turns; every turn is 8-40 events):

* chat turn (65%, 8-15 events): a chat webhook (a JSON envelope of 1.5-5 KB, with an
  idempotency key; about 2% are large, 20-200 KB), the user's message, metadata,
  one to three LLM requests (started, finished with :class:`~snaptail.TokenUsage`,
  reasoning, assistant message).
* tool turn (30%, 20-40 events): as above, plus several rounds of tool calls whose
  outputs are log-normally distributed (median about 2.5 KB, long tail capped at
  256 KB), some behind a human approval, about 5% failing.
* housekeeping turn (5%, 8-15 events): participants joining and leaving, pause and
  resume, model options, labels, an internal error with a stack trace, a context
  compaction, and a webhook retry that is de-duplicated (records nothing).

:func:`plain_events` gives the same traffic as plain ``(event type, payload)`` records
for systems that do not use snaptail's ``Agent``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

from snaptail.domain.agent import Agent
from snaptail.domain.values import Participant, TokenUsage

#: Share of turns of each kind (chat, tool, housekeeping).
TURN_WEIGHTS: dict[str, float] = {"chat": 0.65, "tools": 0.30, "housekeeping": 0.05}
#: Events per turn, by kind (inclusive bounds).
TURN_EVENTS: dict[str, tuple[int, int]] = {
    "chat": (8, 15),
    "tools": (20, 40),
    "housekeeping": (8, 15),
}
#: Webhook envelope size (bytes), ordinary and large.
WEBHOOK_BYTES = (1_500, 5_000)
LARGE_WEBHOOK_BYTES = (20_000, 200_000)
LARGE_WEBHOOK_SHARE = 0.02
#: Tool outputs: log-normal with this median (bytes) and sigma, capped.
TOOL_OUTPUT_MEDIAN = 2_500
TOOL_OUTPUT_SIGMA = 1.1
TOOL_OUTPUT_MAX = 256 * 1024
TOOL_ERROR_SHARE = 0.05

_TOOLS = ("web_search", "fetch_page", "run_python", "read_file", "sql_query", "send_email")
_APPROVAL_TOOLS = frozenset({"send_email", "run_python"})
_WORD_TEXT = (
    "agent thread deploy the a of to and build failed retry database snapshot version "
    "customer invoice query latency error stack trace please could you check why our "
    "pipeline summary report migration index cache memory budget user channel message "
    "tool result output token cost model request approved rejected schedule reminder "
    "webhook event log page search fetch python install config staging production"
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class Command:
    """One call of an ``Agent`` command: the method's name and its keyword arguments.

    ``events`` is how many events the call records (0 for a de-duplicated retry).
    """

    method: str
    kwargs: dict[str, Any]
    events: int = 1

    def apply(self, agent: Agent) -> None:
        getattr(agent, self.method)(**self.kwargs)


@dataclass
class _Thread:
    """What the generator remembers to keep its commands valid."""

    participants: list[str] = field(default_factory=list)
    webhook_keys: list[str] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    version: int = 1  # the agent's version after the commands generated so far


class Workload:
    """An endless, seeded stream of realistic commands for one agent.

    The agent must be new (version 1: only its creation event) or have been driven
    only by this workload; the commands are generated ahead of time from the seed
    alone, never from the agent's state.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = random.Random(seed)
        self._corpus = _corpus(self._rng)
        self._thread = _Thread()
        self._turn = 0
        self._pending: list[Command] = []

    # -- the public API ---------------------------------------------------------

    def next_turn(self) -> list[Command]:
        """Generate the next chat turn's commands (consumes them from the stream)."""
        if self._pending:
            turn, self._pending = self._pending, []
            return turn
        return self._generate_turn()

    def turn(self, agent: Agent) -> int:
        """Apply one chat turn (or the rest of one started by :meth:`drive`) to
        ``agent``; returns how many events it recorded."""
        added = 0
        for command in self.next_turn():
            command.apply(agent)
            added += command.events
        return added

    def drive(
        self,
        agent: Agent,
        events: int,
        save: Callable[[Agent], Any] | None = None,
        batch: int = 100,
        progress: Callable[[int], Any] | None = None,
    ) -> int:
        """Record exactly ``events`` more events on ``agent``.

        With ``save``, calls ``save(agent)`` each time ``batch`` events are pending
        and once at the end; ``progress(n)`` is called after each save with the
        number of events saved by it. A turn cut short is resumed by the next call.
        Returns the number of events recorded (``events``).
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        done = 0
        unsaved = 0
        turn = self.next_turn()
        while done < events:
            if not turn:
                turn = self.next_turn()
                continue
            command = turn.pop(0)
            command.apply(agent)
            done += command.events
            unsaved += command.events
            if save is not None and unsaved >= batch:
                save(agent)
                if progress is not None:
                    progress(unsaved)
                unsaved = 0
        self._pending = turn
        if save is not None and unsaved:
            save(agent)
            if progress is not None:
                progress(unsaved)
        return done

    # -- turns ------------------------------------------------------------------

    def _generate_turn(self) -> list[Command]:
        rng = self._rng
        self._turn += 1
        kind = rng.choices(list(TURN_WEIGHTS), weights=list(TURN_WEIGHTS.values()))[0]
        low, high = TURN_EVENTS[kind]
        target = rng.randint(low, high)
        if kind == "chat":
            commands = self._chat_turn(target)
        elif kind == "tools":
            commands = self._tool_turn(target)
        else:
            commands = self._housekeeping_turn(target)
        self._thread.version += sum(c.events for c in commands)
        return commands

    def _opening(self) -> list[Command]:
        rng = self._rng
        user = self._user()
        commands = [self._webhook(user), Command("add_input", self._user_input(user))]
        if rng.random() < 0.5:
            commands.append(Command("set_metadata", {"key": "last_user", "value": user}))
        return commands

    def _chat_turn(self, target: int) -> list[Command]:
        commands = self._opening()
        while len(commands) + 4 <= target:
            commands.extend(self._llm_round(final=True))
        commands.extend(self._fillers(target - len(commands)))
        return commands

    def _tool_turn(self, target: int) -> list[Command]:
        commands = self._opening()
        final = 4  # the answer: start, finish, reasoning, assistant message
        while len(commands) + final + 4 <= target:
            round_ = self._llm_round(final=False)
            for _ in range(self._rng.randint(1, 4)):
                room = target - final - len(commands) - len(round_)
                if room < 2:
                    break
                round_.extend(self._tool_call(room))
            commands.extend(round_)
        commands.extend(self._llm_round(final=True))
        commands.extend(self._fillers(target - len(commands)))
        return commands

    def _housekeeping_turn(self, target: int) -> list[Command]:
        rng = self._rng
        thread = self._thread
        commands: list[Command] = []
        user = f"U{rng.randrange(10**8):08d}"
        commands.append(Command("join", {"participant": self._participant(user)}))
        thread.participants.append(user)
        if len(thread.participants) > 20:
            gone = thread.participants.pop(0)
            commands.append(Command("leave", {"user_id": gone}))
        commands.append(Command("pause", {"reason": "rate limited by the model provider"}))
        commands.append(Command("resume", {}))
        commands.append(
            Command(
                "record_error",
                {"message": "tool server disconnected", "stack": self._text(800, 3_000)},
            )
        )
        commands.append(
            Command(
                "set_model_options",
                {
                    "model": rng.choice(("gpt-4.1", "claude-sonnet", "o4-mini")),
                    "options": {"temperature": round(rng.random(), 2), "max_tokens": 4096},
                },
            )
        )
        label = f"topic-{rng.randrange(200)}"
        new = label not in thread.labels
        thread.labels.add(label)
        commands.append(Command("add_label", {"label": label}, events=int(new)))
        if thread.webhook_keys:
            key = rng.choice(thread.webhook_keys[-50:])
            envelope = self._envelope(user, key, rng.randint(*WEBHOOK_BYTES))
            commands.append(
                Command(
                    "receive_webhook",
                    {"source": "slack", "payload": envelope, "idempotency_key": key},
                    events=0,
                )
            )
        version = thread.version + sum(c.events for c in commands)
        commands.append(
            Command(
                "compact_context",
                {"summary": self._text(300, 1_500), "through_version": max(1, version - 10)},
            )
        )
        commands.extend(self._fillers(target - sum(c.events for c in commands)))
        return commands

    # -- pieces -----------------------------------------------------------------

    def _llm_round(self, final: bool) -> list[Command]:
        rng = self._rng
        request_id = UUID(int=rng.getrandbits(128), version=4)
        input_tokens = rng.randint(2_000, 60_000)
        output_tokens = rng.randint(50, 2_000)
        usage = TokenUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=rng.randint(0, input_tokens),
            cost_usd=Decimal(input_tokens * 3 + output_tokens * 15) / Decimal(1_000_000),
        )
        commands = [
            Command("start_llm_request", {"request_id": request_id}),
            Command(
                "finish_llm_request",
                {
                    "request_id": request_id,
                    "usage": usage,
                    "stop_reason": "stop" if final else "tool_calls",
                },
            ),
        ]
        if final:
            commands.append(
                Command("add_output", {"kind": "reasoning", "text": self._text(100, 1_200)})
            )
            commands.append(
                Command(
                    "add_output",
                    {"kind": "assistant_message", "text": self._text(200, 2_500)},
                )
            )
        return commands

    def _tool_call(self, room: int) -> list[Command]:
        rng = self._rng
        tool = rng.choice(_TOOLS)
        call_id = f"call_{rng.getrandbits(64):016x}"
        arguments = {"query": self._text(20, 200), "limit": rng.randint(1, 50)}
        commands: list[Command] = []
        if tool in _APPROVAL_TOOLS and room >= 4:
            key = f"approval-{call_id}"
            commands.append(
                Command("request_approval", {"key": key, "tool": tool, "arguments": arguments})
            )
            commands.append(
                Command(
                    "decide_approval",
                    {"key": key, "approved": rng.random() < 0.9, "decided_by": self._user()},
                )
            )
        commands.append(
            Command("request_tool_call", {"call_id": call_id, "tool": tool, "arguments": arguments})
        )
        duration = int(rng.lognormvariate(math.log(400), 1.0))
        if rng.random() < TOOL_ERROR_SHARE:
            outcome: dict[str, Any] = {"error": f"{tool} timed out after {duration} ms"}
        else:
            size = int(rng.lognormvariate(math.log(TOOL_OUTPUT_MEDIAN), TOOL_OUTPUT_SIGMA))
            outcome = {"output": self._text(0, 0, min(max(size, 16), TOOL_OUTPUT_MAX))}
        commands.append(
            Command("complete_tool_call", {"call_id": call_id, "duration_ms": duration, **outcome})
        )
        return commands

    def _fillers(self, count: int) -> list[Command]:
        """Small bookkeeping events that pad a turn to its drawn length."""
        rng = self._rng
        commands = []
        for i in range(max(count, 0)):
            if i % 2 == 0:
                commands.append(
                    Command(
                        "set_metadata",
                        {"key": f"k{rng.randrange(40)}", "value": self._text(5, 80)},
                    )
                )
            else:
                commands.append(
                    Command("add_input", {"kind": "developer", "text": self._text(40, 400)})
                )
        return commands

    def _webhook(self, user: str) -> Command:
        rng = self._rng
        key = f"Ev{rng.getrandbits(48):012X}"
        keys = self._thread.webhook_keys
        keys.append(key)
        if len(keys) > 100:
            del keys[:-50]
        if rng.random() < LARGE_WEBHOOK_SHARE:
            size = rng.randint(*LARGE_WEBHOOK_BYTES)
        else:
            size = rng.randint(*WEBHOOK_BYTES)
        return Command(
            "receive_webhook",
            {"source": "slack", "payload": self._envelope(user, key, size), "idempotency_key": key},
        )

    def _envelope(self, user: str, key: str, size: int) -> bytes:
        """A chat-platform webhook body of about ``size`` bytes."""
        rng = self._rng
        body: dict[str, Any] = {
            "token": f"{rng.getrandbits(96):024x}",
            "team_id": "T0001",
            "api_app_id": "A0001",
            "type": "event_callback",
            "event_id": key,
            "event_time": 1_700_000_000 + self._turn * 37,
            "event": {
                "type": "app_mention" if rng.random() < 0.3 else "message",
                "user": user,
                "channel": "C0001",
                "thread_ts": "1700000000.000100",
                "text": self._text(40, 600),
                "blocks": [],
            },
        }
        head = len(msgspec.json.encode(body))
        filler = self._text(0, 0, max(size - head - 40, 0))
        body["event"]["blocks"] = [{"type": "rich_text", "text": filler}]
        return msgspec.json.encode(body)

    def _user_input(self, user: str) -> dict[str, Any]:
        rng = self._rng
        if rng.random() < 0.08:
            return {
                "kind": "file",
                "text": f"shared a file: report-{rng.randrange(1000)}.pdf",
                "author": user,
                "file_ref": f"F{rng.getrandbits(40):010X}",
            }
        return {"kind": "user", "text": self._text(50, 600), "author": user}

    def _participant(self, user: str) -> Participant:
        rng = self._rng
        name = rng.choice(_WORDS).title()
        return Participant(
            user_id=user,
            display_name=name,
            email=f"{name.lower()}@example.com",
            role=rng.choice(("member", "admin", "guest")),
            profile={"tz": "Europe/Paris", "title": self._text(5, 40)},
        )

    def _user(self) -> str:
        participants = self._thread.participants
        if participants and self._rng.random() < 0.7:
            return self._rng.choice(participants)
        return f"U{self._rng.randrange(20):08d}"

    def _text(self, low: int, high: int, exact: int | None = None) -> str:
        """A slice of the corpus: ``exact`` characters, or between ``low`` and ``high``."""
        size = exact if exact is not None else self._rng.randint(low, high)
        corpus = self._corpus
        out = []
        while size > 0:
            start = self._rng.randrange(len(corpus) - 1)
            piece = corpus[start : start + size]
            out.append(piece)
            size -= len(piece)
        return "".join(out)


def _corpus(rng: random.Random, size: int = 64 * 1024) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def event_payload(event: Any) -> dict[str, Any]:
    """An event's payload as plain data (no envelope fields, no timestamp)."""
    skip = {"originator_id", "originator_version", "timestamp"}
    payload = {k: v for k, v in vars(event).items() if k not in skip}
    return msgspec.to_builtins(payload, builtin_types=(bytes,))  # type: ignore[no-any-return]


def plain_events(
    seed: int, events: int, name: str = "agent"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The traffic of ``Workload(seed)`` on a new agent, as ``(event type, payload)``.

    Includes the creation event (``Created``), then exactly ``events`` more. Payloads
    are plain data (str, int, float, bool, None, bytes, lists, dicts); ``timestamp``
    and the agent's id and version are left out (they are not part of the traffic).
    Same seed and arguments, same records.
    """
    agent = Agent(name=name)
    workload = Workload(seed)
    yield from _drain(agent)
    done = 0
    while done < events:
        chunk = min(1_000, events - done)
        workload.drive(agent, chunk)
        done += chunk
        yield from _drain(agent)


def _drain(agent: Agent) -> Iterator[tuple[str, dict[str, Any]]]:
    pending = agent.collect_events()
    for event in pending:
        yield type(event).__name__, event_payload(event)

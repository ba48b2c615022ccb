"""Immutable value objects recorded in events and held in derived state."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

InputKind = Literal["user", "developer", "file", "agent_message"]
OutputKind = Literal["assistant_message", "reasoning", "web_search"]


@dataclass(frozen=True, slots=True)
class Participant:
    """Someone taking part in the agent's conversation (a chat-platform user)."""

    user_id: str
    display_name: str = ""
    email: str = ""
    role: str = "member"
    profile: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InputItem:
    """One item of input: a message, a shared file (by reference), an agent's message."""

    kind: InputKind
    text: str
    author: str = ""
    file_ref: str | None = None


@dataclass(frozen=True, slots=True)
class OutputItem:
    """One item the model produced."""

    kind: OutputKind
    text: str


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts and cost reported for one LLM request."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the model asked for and that has not completed yet."""

    call_id: str
    tool: str
    arguments: dict[str, object]
    requested_version: int


@dataclass(frozen=True, slots=True)
class Approval:
    """A tool call waiting for a human's decision."""

    key: str
    tool: str
    arguments: dict[str, object]
    requested_version: int


@dataclass(frozen=True, slots=True)
class WindowItem:
    """One item of the conversation window: a reference (version) and its text."""

    version: int
    role: str
    text: str

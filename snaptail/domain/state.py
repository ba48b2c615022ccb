"""The built-in agent's derived state: everything it keeps in memory, all of it bounded."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from snaptail.domain.values import Approval, Participant, ToolCall
from snaptail.domain.window import ConversationWindow


@dataclass
class Usage:
    """Running counters: tokens, cost, requests, tool calls, errors."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    llm_requests: int = 0
    llm_cancelled: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    approvals_decided: int = 0
    errors: int = 0
    webhooks: int = 0


@dataclass
class AgentState:
    """Derived state of an :class:`~snaptail.Agent`.

    Subclass it (as a dataclass whose fields all have defaults) to add state to your
    own agent type, and point your agent's ``State`` class attribute at it. The
    snapshot codec encodes exactly these fields, with their declared types.
    """

    name: str = ""
    system_prompt: str = ""
    model: str = ""
    model_options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    participants: dict[str, Participant] = field(default_factory=dict)
    paused: bool = False
    pause_reason: str = ""
    llm_request: UUID | None = None
    pending_tool_calls: dict[str, ToolCall] = field(default_factory=dict)
    pending_approvals: dict[str, Approval] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    last_error: str = ""
    window: ConversationWindow = field(default_factory=ConversationWindow)
    idempotency_keys: list[str] = field(default_factory=list)

"""The domain: the Agent aggregate, its events, values and bounded derived state.

Nothing here knows how or where events are stored.
"""

from snaptail.domain.agent import Agent
from snaptail.domain.memory import MemoryUsage, format_bytes, parse_size
from snaptail.domain.recent import RecentEvents
from snaptail.domain.state import AgentState, Usage
from snaptail.domain.values import (
    Approval,
    InputItem,
    OutputItem,
    Participant,
    TokenUsage,
    ToolCall,
    WindowItem,
)
from snaptail.domain.window import ConversationWindow

__all__ = [
    "Agent",
    "AgentState",
    "Approval",
    "ConversationWindow",
    "InputItem",
    "MemoryUsage",
    "OutputItem",
    "Participant",
    "RecentEvents",
    "TokenUsage",
    "ToolCall",
    "Usage",
    "WindowItem",
    "format_bytes",
    "parse_size",
]

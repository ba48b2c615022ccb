"""A user-defined agent type: a chat-platform agent that handles webhooks.

It adds its own state (the threads it is in, who mentioned it last) and its own
events (joining a thread, being mentioned) to the built-in Agent. Snapshots, the
recent-event cache and history() work for it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from snaptail import Agent, AgentState, event


@dataclass
class ChatState(AgentState):
    """The built-in state plus what a chat-platform agent tracks (bounded)."""

    threads: dict[str, str] = field(default_factory=dict)  # thread id -> channel
    mentions: int = 0
    last_mentioned_by: str = ""


class SlackMessage(msgspec.Struct):
    """The part of a chat webhook's envelope this agent reads."""

    type: str
    channel: str
    thread_ts: str
    user: str
    text: str = ""
    event_id: str = ""


_decode_message = msgspec.json.Decoder(SlackMessage).decode


class ChatPlatformAgent(Agent):
    """An agent living in a chat workspace: one per thread, fed by webhooks."""

    State = ChatState
    max_threads = 100
    # Read by an event handler: it shapes the state, so snapshots depend on it.
    snapshot_settings = ("max_threads",)
    if TYPE_CHECKING:  # a class-level annotation would make eventsourcing build a dataclass
        state: ChatState

    def handle_webhook(self, body: bytes) -> bool:
        """Record a webhook and what it means. Returns False for a retried delivery."""
        message = _decode_message(body)
        if not self.receive_webhook("slack", body, idempotency_key=message.event_id or None):
            return False
        if message.thread_ts not in self.state.threads:
            self._thread_joined(thread=message.thread_ts, channel=message.channel)
        if message.type == "app_mention":
            self._mentioned(user=message.user)
        self.add_input("user", message.text, author=message.user)
        return True

    @event("ThreadJoined")
    def _thread_joined(self, thread: str, channel: str) -> None:
        threads = self.state.threads
        threads[thread] = channel
        while len(threads) > type(self).max_threads:
            del threads[next(iter(threads))]

    @event("Mentioned")
    def _mentioned(self, user: str) -> None:
        self.state.mentions += 1
        self.state.last_mentioned_by = user

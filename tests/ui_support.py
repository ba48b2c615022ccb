"""Shared by the console tests: a small, varied fleet on any backend."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from examples.chat_agent import ChatPlatformAgent
from snaptail import Agent, AgentStore
from snaptail.integrations.openai_agents import ItemLog
from snaptail.projections import AgentStats, ProjectionWorker
from snaptail.workload import Workload

XSS_NAME = "<script>alert(1)</script>"
HTML_MESSAGE = '<img src=x onerror="alert(2)"><b>bold</b>'


@dataclass
class Fleet:
    url: str
    big: UUID  # the most events, built-in Agent, named XSS_NAME
    chat: UUID  # a user-defined agent type
    session: UUID  # an OpenAI Agents session (the integration's aggregate)
    small: UUID  # few events: no snapshot
    names: dict[UUID, str]


def seed_fleet(url: str, catch_up: bool = True) -> Fleet:
    """Four agents of three types; AgentStats caught up unless ``catch_up`` is False."""
    with AgentStore(url) as store:
        big = Agent(XSS_NAME)
        Workload(seed=1).drive(big, events=260, save=store.save, batch=50)
        big.add_input("user", HTML_MESSAGE)
        big.record_error("boom")
        store.save(big)
        chat = ChatPlatformAgent("support-bot")
        Workload(seed=2).drive(chat, events=130, save=store.save, batch=50)
        session = ItemLog(name="openai-session-7")
        for i in range(3):
            session.add([{"role": "user", "content": f"hello {i}"}])
        store.save(session)
        small = Agent("tiny helper")
        small.add_input("user", "hi")
        small.pause("lunch")
        store.save(small)
    if catch_up:
        with ProjectionWorker(AgentStats, url) as worker:
            worker.catch_up()
    names = {
        big.id: XSS_NAME,
        chat.id: "support-bot",
        session.id: "openai-session-7",
        small.id: "tiny helper",
    }
    return Fleet(url, big.id, chat.id, session.id, small.id, names)

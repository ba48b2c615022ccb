"""A Google ADK agent whose sessions are stored in snaptail.

The model is scripted (no network, no API key): each turn it reads the conversation
ADK gives it and answers with the turn number and how many user messages it saw;
every third turn it first calls a tool that counts notes in ``user:`` state. Run it
twice with the same URL: the second run continues the session the first one stored.

    python examples/adk_agent.py --turns 3 --url sqlite:///adk-sessions.db
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import BaseSessionService
from google.adk.tools.tool_context import ToolContext
from google.genai import types

from snaptail.integrations.adk import SnaptailSessionService

APP = "notes_app"


class ScriptedModel(BaseLlm):
    """Answers from what the request holds; calls ``take_note`` on every third turn."""

    model: str = "scripted"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        contents = llm_request.contents or []
        users = [c for c in contents if c.role == "user" and c.parts and c.parts[0].text]
        last = contents[-1] if contents else None
        answered_tool = bool(last and last.parts and last.parts[0].function_response)
        heard = users[-1].parts[0].text if users and users[-1].parts else ""
        if len(users) % 3 == 0 and not answered_tool:
            call = types.FunctionCall(name="take_note", args={"note": heard or ""})
            yield LlmResponse(
                content=types.Content(role="model", parts=[types.Part(function_call=call)])
            )
            return
        text = f"turn {len(users)}: heard {heard!r} (saw {len(users)} user messages)"
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))


def take_note(note: str, tool_context: ToolContext) -> dict[str, Any]:
    """Counts a note in the user's state (shared by all of the user's sessions)."""
    count = int(tool_context.state.get("user:notes", 0)) + 1
    tool_context.state["user:notes"] = count
    tool_context.state["app:notes_taken"] = int(tool_context.state.get("app:notes_taken", 0)) + 1
    tool_context.state["temp:scratch"] = note  # never stored
    return {"notes": count}


def build_agent() -> LlmAgent:
    return LlmAgent(
        name="note_taker",
        model=ScriptedModel(),
        instruction="Answer briefly.",
        tools=[take_note],
        output_key="last_reply",
    )


async def run_turns(
    service: BaseSessionService, user_id: str, session_id: str, first: int, last: int
) -> list[str]:
    """Turns ``first .. last-1`` of the session (created if missing); the replies."""
    runner = Runner(app_name=APP, agent=build_agent(), session_service=service)
    if await service.get_session(app_name=APP, user_id=user_id, session_id=session_id) is None:
        await service.create_session(
            app_name=APP, user_id=user_id, session_id=session_id, state={"topic": "notes"}
        )
    replies: list[str] = []
    for turn in range(first, last):
        message = types.Content(role="user", parts=[types.Part(text=f"message {turn}")])
        async for event in runner.run_async(
            user_id=user_id, session_id=session_id, new_message=message
        ):
            if event.is_final_response() and event.content and event.content.parts:
                replies.append(event.content.parts[0].text or "")
    return replies


async def main(url: str, turns: int) -> None:
    async with SnaptailSessionService(url) as service:
        session = await service.get_session(app_name=APP, user_id="ada", session_id="s1")
        done = len(session.events) if session else 0
        first = sum(1 for e in (session.events if session else []) if e.author == "user")
        for reply in await run_turns(service, "ada", "s1", first, first + turns):
            print(reply)
        session = await service.get_session(app_name=APP, user_id="ada", session_id="s1")
        assert session is not None
        print(
            f"{len(session.events)} events stored ({done} before this run);"
            f" user:notes={session.state.get('user:notes')}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="sqlite:///adk-sessions.db")
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.turns))

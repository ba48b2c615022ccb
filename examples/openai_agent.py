"""An OpenAI Agents SDK agent whose conversation is stored in snaptail.

The model is scripted (no network, no API key): it answers each turn with what it
heard and how many items of history it was given, so a run shows that the session
really fed the whole conversation back. Run it twice: the second run continues the
conversation the first one stored.

    python examples/openai_agent.py --turns 3 --url sqlite:///openai-session.db
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, Model, ModelResponse, ModelSettings, RunConfig, Runner, Usage
from agents.models.interface import ModelTracing
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

from snaptail import AsyncAgentStore
from snaptail.integrations.openai_agents import SnaptailSession


def _text(item: Any) -> str:
    """The text of a user message item (a string or a list of text parts)."""
    content = item.get("content", "") if isinstance(item, dict) else ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


class EchoModel(Model):
    """A scripted model: replies ``"<n>: heard <last user text> (saw <k> items)"``."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[Any],
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        self.calls += 1
        items = [{"role": "user", "content": input}] if isinstance(input, str) else input
        reply = f"{self.calls}: heard {_text(items[-1])!r} (saw {len(items)} items)"
        message = ResponseOutputMessage(
            id=f"msg_{self.calls}",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=reply, annotations=[])],
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("EchoModel does not stream")


async def chat(url: str, session_id: str, turns: int, first: int = 1) -> list[str]:
    """Run ``turns`` turns of a conversation stored at ``url``; returns the replies."""
    agent = Agent(name="echo", instructions="Repeat what you hear.", model=EchoModel())
    config = RunConfig(tracing_disabled=True)
    replies: list[str] = []
    async with AsyncAgentStore(url) as store:
        session = SnaptailSession(session_id, store)
        for turn in range(first, first + turns):
            result = await Runner.run(agent, f"message {turn}", session=session, run_config=config)
            replies.append(str(result.final_output))
    return replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="sqlite:///openai-session.db")
    parser.add_argument("--session", default="demo")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--first", type=int, default=1, help="number of the first turn")
    args = parser.parse_args()
    for reply in asyncio.run(chat(args.url, args.session, args.turns, args.first)):
        print(reply)


if __name__ == "__main__":
    main()

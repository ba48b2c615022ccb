"""A LangGraph chat on snaptail: many turns, an approval interrupt resumed by a second
run of this script, and a fork from an earlier checkpoint.

    python -m examples.langgraph_chat --db chat.db --turns 200      # stops at the approval
    python -m examples.langgraph_chat --db chat.db --approve yes    # resumes, then forks

The model is scripted (no network): swap ``reply`` for your LLM call.
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

from snaptail.integrations.langgraph import SnaptailSaver

THREAD = {"configurable": {"thread_id": "shop-assistant"}}


def reply(state: MessagesState) -> dict[str, list[BaseMessage]]:
    """A scripted assistant that asks a human before it refunds anything."""
    asked = str(state["messages"][-1].content)
    if asked.startswith("refund"):
        answer = interrupt({"approve": asked})
        return {"messages": [AIMessage(f"refund {'done' if answer == 'yes' else 'declined'}")]}
    return {"messages": [AIMessage(f"turn {len(state['messages'])}: noted '{asked[:40]}'")]}


def build(saver: SnaptailSaver) -> Any:
    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


def chat(graph: Any, turns: int) -> None:
    for turn in range(turns):
        graph.invoke({"messages": [HumanMessage(f"question {turn}: " + "details " * 60)]}, THREAD)
    out = graph.invoke({"messages": [HumanMessage("refund order 1234")]}, THREAD)
    print(f"{turns} turns stored; waiting for approval: {out['__interrupt__'][0].value}")


def resume(graph: Any, answer: str) -> None:
    state = graph.get_state(THREAD)
    print(f"resuming a thread of {len(state.values['messages'])} messages at {state.next}")
    out = graph.invoke(Command(resume=answer), THREAD)
    print(f"assistant: {out['messages'][-1].content}")
    earlier = next(s for s in graph.get_state_history(THREAD) if s.next == ("reply",))
    forked = graph.invoke({"messages": [HumanMessage("what about order 99?")]}, earlier.config)
    print(
        f"forked from a checkpoint of {len(earlier.values['messages'])} messages: "
        f"the fork has {len(forked['messages'])}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="langgraph_chat.db", help="SQLite file")
    parser.add_argument("--url", help="a database URL instead of --db (postgresql://...)")
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--approve", help="resume the waiting approval with this answer")
    args = parser.parse_args(argv)
    with SnaptailSaver(args.url or f"sqlite:///{args.db}") as saver:
        graph = build(saver)
        if args.approve is None:
            chat(graph, args.turns)
        else:
            resume(graph, args.approve)


if __name__ == "__main__":
    main()

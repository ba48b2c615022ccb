"""``snaptail bench langgraph``: one LangGraph chat thread checkpointed by SnaptailSaver
and, side by side in the same run, by LangGraph's own SqliteSaver (and PostgresSaver
when PostgreSQL is up): storage bytes, time per step and ``get_state`` latency as the
thread grows.

A step is one ``invoke``: a human message in, a scripted AI reply out (two messages of
``message_chars`` characters; no model, no network). Needs the ``langgraph`` extra plus
``langgraph-checkpoint-sqlite`` / ``langgraph-checkpoint-postgres`` for the baselines.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import interrupt

WORDS = (
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "this",
    "be",
    "are",
    "by",
    "at",
    "from",
    "or",
    "an",
    "have",
    "not",
    "agent",
    "thread",
    "message",
    "state",
    "tool",
    "call",
    "result",
    "token",
    "window",
    "snapshot",
    "event",
    "store",
    "load",
    "replay",
    "budget",
    "memory",
    "graph",
    "node",
    "edge",
    "channel",
    "checkpoint",
    "version",
    "reply",
    "user",
    "model",
    "prompt",
    "context",
    "search",
    "page",
    "answer",
    "question",
    "draft",
    "review",
    "plan",
    "step",
    "customer",
    "order",
    "invoice",
    "shipping",
    "refund",
    "account",
    "password",
    "email",
    "meeting",
    "schedule",
    "report",
    "summary",
    "analysis",
    "data",
    "table",
    "query",
    "error",
    "retry",
    "timeout",
    "request",
    "response",
    "server",
    "client",
    "database",
    "python",
    "function",
    "class",
    "module",
    "import",
    "return",
    "value",
    "list",
    "dict",
    "string",
    "number",
    "date",
    "time",
    "week",
    "month",
    "year",
    "please",
    "thanks",
    "could",
    "would",
    "should",
    "will",
    "can",
    "may",
    "might",
    "need",
    "want",
    "know",
    "think",
    "see",
    "look",
    "find",
    "make",
    "take",
    "give",
    "because",
    "however",
    "therefore",
    "although",
    "while",
    "before",
    "after",
    "during",
    "between",
    "within",
    "without",
    "about",
    "into",
    "over",
)

DEFAULT_MARKS = (100, 1000, 3000)
QUICK_MARKS = (10, 30)
APPROVE = "APPROVE"


def text(seed: int, chars: int) -> str:
    """Deterministic prose-like text of exactly ``chars`` characters."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size <= chars:  # the joined text is size - 1 characters
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:chars]


def human(turn: int, chars: int = 600, *, with_id: bool = True) -> HumanMessage:
    """The human message of ``turn`` (its id fixed, or left to ``add_messages``)."""
    return HumanMessage(text(2 * turn, chars), id=f"human-{turn}" if with_id else None)


def chat_graph(checkpointer: Any, chars: int = 600) -> Any:
    """START -> chat -> END over ``MessagesState``; ``chat`` replies with scripted text.

    A human message starting with ``APPROVE`` makes ``chat`` wait for a human answer
    (``interrupt``) and put it in its reply.
    """

    def chat(state: MessagesState) -> dict[str, list[BaseMessage]]:
        messages = state["messages"]
        last = messages[-1]
        turn = len(messages)
        reply = text(2 * turn + 1, chars)
        if isinstance(last.content, str) and last.content.startswith(APPROVE):
            answer = interrupt({"question": "approve?", "turn": turn})
            reply = f"{answer}: {reply}"[:chars]
        return {"messages": [AIMessage(reply, id=f"ai-{turn}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    return builder.compile(checkpointer=checkpointer)


def thread_config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


# -- the benchmark --------------------------------------------------------------------


@dataclass(frozen=True)
class LangGraphRow:
    """One saver at one thread length."""

    saver: str
    steps: int
    storage_bytes: int
    message_bytes: int
    ms_per_step: float
    get_state_ms: float
    get_state_cold_ms: float | None  # None: the saver keeps nothing to reopen

    @property
    def storage_ratio(self) -> float:
        return self.storage_bytes / self.message_bytes if self.message_bytes else 0.0


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[], Any]  # a context manager yielding a checkpointer
    storage: Callable[[], int]
    max_steps: int | None = None
    persistent: bool = True


@contextmanager
def _snaptail(url: str) -> Iterator[Any]:
    from snaptail.integrations.langgraph import SnaptailSaver

    with SnaptailSaver(url) as saver:
        yield saver


@contextmanager
def _in_memory() -> Iterator[Any]:
    from langgraph.checkpoint.memory import InMemorySaver

    yield InMemorySaver()


@contextmanager
def _sqlite_saver(path: Path) -> Iterator[Any]:
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


@contextmanager
def _postgres_saver(url: str) -> Iterator[Any]:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        yield saver


def _pg_schema_bytes(url: str, schema: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def _pg_url(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


def postgres_up(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return True
    except Exception:
        return False


def sqlite_bytes(path: Path) -> int:
    """The database file's size after its write-ahead log is folded into it."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def backends(workdir: Path, postgres_url: str | None, baseline_max: int | None) -> list[Backend]:
    snap_db, lg_db = workdir / "snaptail.db", workdir / "langgraph.db"
    out = [
        # LangGraph's in-memory saver: no disk, but it serializes every changed
        # channel's full value at every step, as the SQL savers do.
        Backend("InMemorySaver (no disk)", _in_memory, lambda: 0, baseline_max, False),
        Backend(
            "snaptail (SQLite)",
            lambda: _snaptail(f"sqlite:///{snap_db}"),
            lambda: sqlite_bytes(snap_db),
        ),
        Backend(
            "SqliteSaver",
            lambda: _sqlite_saver(lg_db),
            lambda: sqlite_bytes(lg_db),
            baseline_max,
        ),
    ]
    if postgres_url is not None:
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for schema in ("bench_snaptail", "bench_langgraph"):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                conn.execute(f"CREATE SCHEMA {schema}")
        snap_url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema=bench_snaptail"
        out.append(
            Backend(
                "snaptail (PostgreSQL)",
                lambda: _snaptail(snap_url),
                lambda: _pg_schema_bytes(postgres_url, "bench_snaptail"),
            )
        )
        out.append(
            Backend(
                "PostgresSaver",
                lambda: _postgres_saver(_pg_url(postgres_url, "bench_langgraph")),
                lambda: _pg_schema_bytes(postgres_url, "bench_langgraph"),
                baseline_max,
            )
        )
    return out


def message_bytes(messages: list[BaseMessage]) -> int:
    return sum(len(str(m.content).encode()) for m in messages)


def run_backend(
    backend: Backend,
    marks: list[int],
    chars: int,
    on_row: Callable[[LangGraphRow], None] | None = None,
) -> list[LangGraphRow]:
    """Run one thread to each mark in turn; measure at each mark."""
    rows: list[LangGraphRow] = []
    config = thread_config(f"bench-{uuid.uuid4().hex[:8]}")
    done = 0
    limit = backend.max_steps
    with backend.open() as saver:
        graph = chat_graph(saver, chars)
        for mark in marks:
            if limit is not None and mark > limit:
                break
            window = max(1, min(50, mark - done))
            times: list[float] = []
            for turn in range(done, mark):
                started = time.perf_counter()
                graph.invoke({"messages": [human(turn, chars)]}, config)
                if turn >= mark - window:
                    times.append(time.perf_counter() - started)
            done = mark
            warm = []
            for _ in range(5):
                started = time.perf_counter()
                state = graph.get_state(config)
                warm.append(time.perf_counter() - started)
            cold = None
            if backend.persistent:
                with backend.open() as cold_saver:
                    started = time.perf_counter()
                    chat_graph(cold_saver, chars).get_state(config)
                    cold = (time.perf_counter() - started) * 1000
            row = LangGraphRow(
                saver=backend.name,
                steps=mark,
                storage_bytes=backend.storage(),
                message_bytes=message_bytes(state.values["messages"]),
                ms_per_step=statistics.mean(times) * 1000,
                get_state_ms=statistics.median(warm) * 1000,
                get_state_cold_ms=cold,
            )
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def run_langgraph_bench(
    marks: list[int],
    chars: int = 600,
    postgres_url: str | None = None,
    baseline_max: int | None = 1000,
    on_row: Callable[[LangGraphRow], None] | None = None,
) -> list[LangGraphRow]:
    """Every backend, one after the other, in one temporary directory."""
    workdir = Path(tempfile.mkdtemp(prefix="snaptail-langgraph-"))
    try:
        rows: list[LangGraphRow] = []
        for backend in backends(workdir, postgres_url, baseline_max):
            rows.extend(run_backend(backend, marks, chars, on_row))
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

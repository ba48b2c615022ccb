"""SnaptailSaver against LangGraph's own checkpointer conformance suite, on SQLite and
PostgreSQL: every base capability and the extended ones (copy_thread, delete_for_runs,
prune)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from snaptail.integrations.langgraph import SnaptailSaver


def test_conformance_all_capabilities(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    @checkpointer_test(name=f"SnaptailSaver[{database_url.split(':')[0]}]")
    async def snaptail_saver() -> AsyncIterator[SnaptailSaver]:
        saver = SnaptailSaver(database_url)
        try:
            yield saver
        finally:
            saver.close()

    report = asyncio.run(validate(snaptail_saver))
    report.print_report()
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(printed)
    failures = {
        name: result.failures for name, result in report.results.items() if not result.passed
    }
    assert set(report.results) == {c.value for c in ALL_CAPABILITIES}
    assert not failures, failures
    assert report.passed_all()

"""Issue 24 items 1 and 3: one ``SnaptailSession`` used from several threads, each with its
own event loop; sessions on one URL share one store and its connections."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from typing import Any, cast

import pytest

pytest.importorskip("agents")

from snaptail.integrations.openai_agents import SnaptailSession
from snaptail.integrations.shared import leased_urls, wait_closed


def test_one_session_from_threads_each_with_its_own_loop(database_url: str) -> None:
    session = SnaptailSession("s", database_url)
    errors: list[BaseException] = []

    def add(i: int) -> None:
        async def main() -> None:
            await session.add_items([{"role": "user", "content": str(i)}])
            await session.get_items(2)

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not [t for t in threads if t.is_alive()], "a thread hung"
    assert errors == []
    items = asyncio.run(session.get_items())
    contents = sorted(str(cast(Any, item)["content"]) for item in items)
    assert contents == [str(i) for i in range(8)]
    asyncio.run(session.close())


def test_sessions_on_one_url_share_one_store(database_url: str) -> None:
    sessions = [SnaptailSession(f"s{i}", database_url) for i in range(50)]
    assert all(s.store is sessions[0].store for s in sessions)
    assert leased_urls()[sessions[0].store.url] == 50

    async def use(some: list[SnaptailSession]) -> None:
        for s in some:
            await s.add_items([{"role": "user", "content": "hi"}])

    asyncio.run(use(sessions[:5]))
    url = sessions[0].store.url
    for s in sessions[:10]:
        asyncio.run(s.close())
    assert leased_urls()[url] == 40
    del sessions
    gc.collect()
    assert url not in leased_urls(), "collected sessions give their hold back"
    wait_closed()


def _connections(application_name: str) -> int:
    import psycopg

    from tests.conftest import POSTGRES_URL

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_200_sessions_hold_no_more_connections_than_one(postgres_url: str) -> None:
    name = f"snaptail_sessions_{uuid.uuid4().hex[:8]}"
    url = f"{postgres_url}&application_name={name}"

    async def one_turn(session: Any, i: int) -> None:
        await session.add_items([{"role": "user", "content": f"turn {i}"}])
        assert len(await session.get_items()) == 1

    first = SnaptailSession("conversation-0", url)
    asyncio.run(one_turn(first, 0))
    one = _connections(name)
    assert one >= 1
    sessions = [first] + [SnaptailSession(f"conversation-{i}", url) for i in range(1, 200)]

    async def one_after_another() -> None:
        for i, s in enumerate(sessions):
            if i:
                await one_turn(s, i)

    asyncio.run(one_after_another())
    assert _connections(name) == one, "200 sessions hold what one holds"

    async def all_at_once() -> None:
        await asyncio.gather(*(s.get_items() for s in sessions))

    asyncio.run(all_at_once())
    # At once they may open the pools' overflow (pool_size 2 + max_overflow 8, for the
    # sync and the async pool): bounded by the pools, not by the number of sessions.
    assert _connections(name) <= 2 * (2 + 8)
    for s in sessions:
        asyncio.run(s.close())
    wait_closed()
    for _ in range(50):  # the server ends a closed connection's backend soon after
        if _connections(name) == 0:
            break
        time.sleep(0.1)
    assert _connections(name) == 0, "the last close closes the pool"


# Objects holding leases are often in reference cycles (a session and its bound
# methods, a framework's runner), so the cyclic collector runs their finalizers: at
# any allocation, on any thread, including one inside the registry's own locked code.
_COLLECTED_INSIDE_THE_REGISTRY = """
import faulthandler, gc, sys, threading
from snaptail.integrations.shared import lease_store, leased_urls, wait_closed

faulthandler.dump_traceback_later(40, exit=True)  # a deadlock says where, then exits
url = sys.argv[1]


class Owner:
    pass


def churn() -> None:
    for _ in range(3000):
        owner = Owner()
        owner.me = owner  # only the cyclic collector frees it
        lease_store(url).release_with(owner)
        del owner


gc.set_threshold(5, 1, 1)  # collections at most allocations, inside the registry too
threads = [threading.Thread(target=churn) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
gc.collect()
assert url not in leased_urls(), leased_urls()
wait_closed()
print("ok")
"""


def test_owners_collected_inside_the_registry_release_without_deadlock(sqlite_url: str) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _COLLECTED_INSIDE_THE_REGISTRY, sqlite_url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-4000:]

"""One store per database URL for the integrations of a process (sessions, savers, services).

A framework's own pattern is one object per conversation or thread (an Agents SDK
session per conversation, a saver per graph, an ADK service per app). Each opening a
store of its own would hold a connection pool each: a server with a hundred live
conversations on PostgreSQL runs out of connections. So the integrations made with a
URL lease the process's one :class:`~snaptail.AsyncAgentStore` for that URL from this
registry (an object given an explicit store uses that store instead):

* the store is opened on first lease and closed when its last lease is released
  (``close()`` on the object, or the object being garbage-collected);
* it lives on one background event loop (a daemon thread, :func:`home_loop`), so it
  serves callers on any thread and any event loop, including loops that end before
  it does (``asyncio.run`` per request); async callers await it with
  :func:`call_on_home`, sync callers (LangGraph's saver) use its ``sync_store``, the
  very :class:`~snaptail.AgentStore` whose logic the async store runs, and thus its
  connection pool.

The store allows events of up to :data:`SHARED_MAX_EVENT_BYTES`; each agent type's own
``max_event_bytes`` still bounds what its commands make.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from snaptail.application.async_store import AsyncAgentStore
from snaptail.application.drivers import outlast_cancellation
from snaptail.application.store import AgentStore
from snaptail.infrastructure.urls import resolve_url
from snaptail.integrations.langgraph_thread import THREAD_MAX_EVENT_BYTES

T = TypeVar("T")

# The largest event a shared store accepts (a LangGraph fork can carry a whole thread's
# message list in one event); agent types bound their own events below it.
SHARED_MAX_EVENT_BYTES = THREAD_MAX_EVENT_BYTES

__all__ = [
    "SHARED_MAX_EVENT_BYTES",
    "StoreLease",
    "call_on_home",
    "home_loop",
    "lease_store",
    "leased_urls",
]


class _HomeLoop:
    """A daemon thread running one event loop, started on first use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def running(self) -> asyncio.AbstractEventLoop | None:
        """The loop if it was started (no lock taken: safe in a finalizer)."""
        loop = self._loop
        return loop if loop is not None and not loop.is_closed() else None

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self.running()
        if loop is not None:
            return loop
        with self._guard:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                threading.Thread(target=run, name="snaptail-shared-stores", daemon=True).start()
                started.wait()
                self._loop = loop
            return self._loop


_home = _HomeLoop()


def home_loop() -> asyncio.AbstractEventLoop:
    """The event loop shared stores live on (a daemon thread's)."""
    return _home.get()


async def call_on_home(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the home loop from any event loop. If the caller is cancelled
    meanwhile, the operation still runs to its end (a save that commits is never
    reported as failed) and the cancellation is raised after it."""
    loop = home_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    future = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
    cancelled = await outlast_cancellation(future)
    if cancelled is not None:
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller sees
        raise cancelled
    return future.result()


def run_on_home(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the home loop and block the calling thread until it ends."""
    return asyncio.run_coroutine_threadsafe(coro, home_loop()).result()


@dataclass
class _Entry:
    store: AsyncAgentStore
    leases: int = 0


_registry: dict[str, _Entry] = {}
_registry_guard = threading.Lock()
# Leases whose owners were garbage-collected, not yet given back. A finalizer runs at
# any allocation, on any thread, including one inside the registry's locked code, so it
# never waits for the lock: it leaves its lease here, and whoever holds the lock gives
# these back when it lets go (_registry_released).
_orphans: collections.deque[StoreLease] = collections.deque()


@contextlib.contextmanager
def _registry_locked() -> Iterator[None]:
    try:
        with _registry_guard:
            yield
    finally:
        _registry_released()


def _registry_released() -> None:
    """Give back the orphaned leases, unless another thread holds the lock (it does so
    when it lets go: an orphan is queued before the lock is tried, and the queue is
    looked at after the lock is released, so none is left behind)."""
    while _orphans:
        if not _registry_guard.acquire(blocking=False):
            return
        try:
            closing = []
            while _orphans:
                store = _orphans.popleft()._give_back()
                if store is not None:
                    closing.append(store)
        finally:
            _registry_guard.release()
        for store in closing:
            _close_soon(store)


class StoreLease:
    """A hold on the shared store of one URL; :meth:`release` it (once) when done.
    An object holding a lease should also call :meth:`release_with` so that its
    garbage collection releases the lease."""

    def __init__(self, url: str, entry: _Entry) -> None:
        self.url = url
        self.store = entry.store
        self._released = False  # under _registry_guard

    @property
    def sync_store(self) -> AgentStore:
        """The shared store's sync :class:`~snaptail.AgentStore` (opened if need be)."""
        try:
            return self.store.sync_store
        except RuntimeError:  # not open yet
            run_on_home(self.store.open())
            return self.store.sync_store

    def release_with(self, owner: object) -> None:
        """Release this lease when ``owner`` is garbage-collected."""
        weakref.finalize(owner, self._orphaned)

    def _orphaned(self) -> None:
        _orphans.append(self)
        _registry_released()

    def release(self) -> None:
        """Give the lease back; the last one closes the store (on the home loop, without
        waiting for it). A collected owner's lease is given back by ``_orphaned``."""
        with _registry_locked():
            store = self._give_back()
        if store is not None:
            _close_soon(store)

    def _give_back(self) -> AsyncAgentStore | None:
        """Under the lock: count this lease out; the store if it was the last one."""
        if self._released:
            return None
        self._released = True
        entry = _registry.get(self.url)
        if entry is None or entry.store is not self.store:
            return None
        entry.leases -= 1
        if entry.leases > 0:
            return None
        del _registry[self.url]
        return self.store


def _close_soon(store: AsyncAgentStore) -> None:
    loop = _home.running()
    if loop is None:  # never started: a shared store is opened only on it
        return
    future = asyncio.run_coroutine_threadsafe(store.close(), loop)
    _closing.add(future)
    future.add_done_callback(_closing.discard)


_closing: set[concurrent.futures.Future[None]] = set()


def lease_store(url: str | None = None) -> StoreLease:
    """A lease on the process's shared store for ``url`` (the default URL if None),
    opening it on first use (the database is opened at the first operation)."""
    resolved = resolve_url(url)
    with _registry_locked():
        entry = _registry.get(resolved)
        if entry is None:
            entry = _registry[resolved] = _Entry(
                AsyncAgentStore(resolved, max_event_bytes=SHARED_MAX_EVENT_BYTES)
            )
        entry.leases += 1
        return StoreLease(resolved, entry)


def async_store_for(
    owner: object, store: AsyncAgentStore | str | None
) -> tuple[AsyncAgentStore, StoreLease | None]:
    """The store an integration object (``owner``) works on: ``store`` itself when it
    is one (the caller keeps it, and closes it), else a lease on the shared store of
    the URL ``store`` names, released when ``owner`` is released or collected."""
    if isinstance(store, AsyncAgentStore):
        return store, None
    lease = lease_store(store)
    lease.release_with(owner)
    return lease.store, lease


def sync_store_for(
    owner: object, store: AgentStore | str | None
) -> tuple[AgentStore, StoreLease | None]:
    """As :func:`async_store_for`, for an integration that works on a sync store."""
    if isinstance(store, AgentStore):
        return store, None
    lease = lease_store(store)
    lease.release_with(owner)
    return lease.sync_store, lease


def leased_urls() -> dict[str, int]:
    """The URLs with a shared store open, and how many leases each has (diagnostics)."""
    with _registry_locked():
        return {url: entry.leases for url, entry in _registry.items()}


def wait_closed(timeout: float = 10.0) -> None:
    """Wait until stores whose last lease was released are closed (tests, shutdown)."""
    _registry_released()
    for future in list(_closing):
        with contextlib.suppress(Exception):  # closing is best effort here
            future.result(timeout)


@atexit.register
def _close_all() -> None:
    with _registry_locked():
        entries = list(_registry.values())
        _registry.clear()
    if not entries:
        return
    for entry in entries:
        _close_soon(entry.store)
    wait_closed(5.0)

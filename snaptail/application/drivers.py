"""The I/O of the store's steps (see :mod:`snaptail.application.engine`): each
:class:`Request` is one recorder call, typed on both recorder interfaces, and the
two drivers that run steps: :func:`drive` (blocking) and :func:`drive_async`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from snaptail.application.retry import RetryPolicy
from snaptail.errors import SaveOutcomeUnknown, storage_error
from snaptail.infrastructure.async_recorder import AsyncAgentRecorder
from snaptail.infrastructure.recorder import AgentRecorder, StoredSnapshot

T = TypeVar("T")


# -- requests: the I/O a step needs ------------------------------------------------


class Request:
    """One recorder call a step needs, made by :meth:`run` on the sync recorder or by
    :meth:`run_async` on the async one (each subclass calls its method by name in
    code, so mypy checks both). ``write``: the call commits (the async driver never
    abandons it halfway). Plain classes with slots: a load builds one or two.

    The drivers are the recorder boundary: a database error a request raises reaches
    the steps (and the caller) as a :class:`~snaptail.errors.StorageError` naming
    :meth:`doing`."""

    __slots__ = ()
    write: ClassVar[bool] = False
    # A read the drivers try again by the retry policy (a write's retries, and the
    # save-id checks of the ambiguous-commit rule, are the steps' own).
    retried: ClassVar[bool] = True

    def doing(self) -> str:
        """What the store was doing, for an error message."""
        agent_id = getattr(self, "agent_id", None)
        what = type(self).__name__
        return what if agent_id is None else f"{what} of agent {agent_id}"

    def run(self, recorder: AgentRecorder) -> Any:
        raise NotImplementedError

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        raise NotImplementedError


class ReadForLoad(Request):
    __slots__ = ("agent_id", "lte", "recent", "snapshot_lte")

    def __init__(
        self, agent_id: UUID, lte: int | None, recent: int, snapshot_lte: int | None = None
    ) -> None:
        self.agent_id, self.lte, self.recent, self.snapshot_lte = (
            agent_id, lte, recent, snapshot_lte,
        )  # fmt: skip

    def doing(self) -> str:
        return f"loading agent {self.agent_id}"

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.select_for_load(
            self.agent_id, lte=self.lte, recent=self.recent, snapshot_lte=self.snapshot_lte
        )

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.select_for_load(
            self.agent_id, lte=self.lte, recent=self.recent, snapshot_lte=self.snapshot_lte
        )


class ReadManyForLoad(Request):
    """The rows of the latest versions of several agents, in one read transaction."""

    __slots__ = ("agent_ids", "known", "recent")

    def __init__(self, agent_ids: Sequence[UUID], recent: int, known: Mapping[UUID, int]) -> None:
        self.agent_ids, self.recent, self.known = agent_ids, recent, known

    def doing(self) -> str:
        return f"loading {len(self.agent_ids)} agents"

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.select_many_for_load(self.agent_ids, recent=self.recent, known=self.known)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.select_many_for_load(
            self.agent_ids, recent=self.recent, known=self.known
        )


class ReadSnapshot(Request):
    __slots__ = ("agent_id", "lte")

    def __init__(self, agent_id: UUID, lte: int) -> None:
        self.agent_id, self.lte = agent_id, lte

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.select_snapshot(self.agent_id, lte=self.lte)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.select_snapshot(self.agent_id, lte=self.lte)


class ReadPage(Request):
    __slots__ = ("agent_id", "desc", "gt", "limit", "lt", "topics")

    def __init__(
        self,
        agent_id: UUID,
        gt: int | None = None,
        lt: int | None = None,
        desc: bool = False,
        limit: int = 500,
        topics: Sequence[str] = (),
    ) -> None:
        self.agent_id, self.gt, self.lt = agent_id, gt, lt
        self.desc, self.limit, self.topics = desc, limit, topics

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.select_page(
            self.agent_id, gt=self.gt, lt=self.lt, desc=self.desc, limit=self.limit,
            topics=self.topics,
        )  # fmt: skip

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.select_page(
            self.agent_id, gt=self.gt, lt=self.lt, desc=self.desc, limit=self.limit,
            topics=self.topics,
        )  # fmt: skip


class ReadHead(Request):
    __slots__ = ("agent_id",)

    def __init__(self, agent_id: UUID) -> None:
        self.agent_id = agent_id

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.max_version(self.agent_id)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.max_version(self.agent_id)


class ReadSnapshotInfos(Request):
    __slots__ = ("agent_id",)

    def __init__(self, agent_id: UUID) -> None:
        self.agent_id = agent_id

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.select_snapshot_infos(self.agent_id)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.select_snapshot_infos(self.agent_id)


class ReadAgentIds(Request):
    __slots__ = ("after", "limit")

    def __init__(self, after: UUID | None, limit: int) -> None:
        self.after, self.limit = after, limit

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.originator_ids(after=self.after, limit=self.limit)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.originator_ids(after=self.after, limit=self.limit)


class ReadNewestNotification(Request):
    __slots__ = ()

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.max_notification_id()

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.max_notification_id()


class ReadSaveCommitted(Request):
    __slots__ = ("save_id",)
    retried = False

    def __init__(self, save_id: UUID) -> None:
        self.save_id = save_id

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.save_committed(self.save_id)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.save_committed(self.save_id)


class InsertEvents(Request):
    __slots__ = ("keep", "save_id", "snapshots", "stored")
    write = True

    def __init__(
        self,
        stored: Sequence[StoredEvent],
        snapshots: Sequence[StoredSnapshot],
        keep: int | None,
        save_id: UUID,
    ) -> None:
        self.stored, self.snapshots, self.keep, self.save_id = stored, snapshots, keep, save_id

    def doing(self) -> str:
        ids = dict.fromkeys(str(e.originator_id) for e in self.stored)
        return f"saving agent(s) {', '.join(ids)} (save id {self.save_id})"

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.insert_events(
            self.stored, snapshots=self.snapshots, keep_snapshots=self.keep, save_id=self.save_id
        )

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.insert_events(
            self.stored, snapshots=self.snapshots, keep_snapshots=self.keep, save_id=self.save_id
        )


class InsertSnapshot(Request):
    __slots__ = ("keep", "snapshot")
    write = True

    def __init__(self, snapshot: StoredSnapshot, keep: int | None) -> None:
        self.snapshot, self.keep = snapshot, keep

    def doing(self) -> str:
        s = self.snapshot
        return f"storing a snapshot of agent {s.originator_id} at version {s.originator_version}"

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.insert_snapshot(self.snapshot, keep_snapshots=self.keep)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.insert_snapshot(self.snapshot, keep_snapshots=self.keep)


class DeleteSnapshots(Request):
    __slots__ = ("agent_id", "keep", "versions")
    write = True

    def __init__(self, agent_id: UUID, keep: int, versions: Sequence[int] = ()) -> None:
        self.agent_id, self.keep, self.versions = agent_id, keep, versions

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.delete_snapshots(self.agent_id, keep=self.keep, versions=self.versions)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.delete_snapshots(
            self.agent_id, keep=self.keep, versions=self.versions
        )


class PruneSaves(Request):
    __slots__ = ("before", "limit")
    write = True

    def __init__(self, before: UUID, limit: int) -> None:
        self.before, self.limit = before, limit

    def doing(self) -> str:
        return "pruning old save ids"

    def run(self, recorder: AgentRecorder) -> Any:
        return recorder.prune_saves(self.before, self.limit)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        return await recorder.prune_saves(self.before, self.limit)


class Pause(Request):
    """Wait ``seconds`` (a retry's backoff): ``time.sleep`` or ``asyncio.sleep``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self, recorder: AgentRecorder) -> Any:
        time.sleep(self.seconds)

    async def run_async(self, recorder: AsyncAgentRecorder) -> Any:
        await asyncio.sleep(self.seconds)


# The logic of a store operation: yields the I/O it needs, is sent each result (or
# has the error thrown in), returns the operation's result.
Steps = Generator[Request, Any, T]


# -- the two drivers ------------------------------------------------------------------


def drive(steps: Steps[T], recorder: AgentRecorder, retry: RetryPolicy) -> T:
    """Run ``steps`` with blocking calls on ``recorder``; a read that fails with a
    retryable error is tried again by ``retry`` (a write's failure goes back to the
    steps: only they know whether trying again is safe)."""
    send, throw = steps.send, steps.throw
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            request = send(result) if error is None else throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            result = request.run(recorder)
            error = None
        except Exception as exc:
            result, error = None, storage_error(request.doing(), exc)
            if request.retried and not request.write:
                try:
                    result, error = retry.again(exc, request.run, recorder), None
                except Exception as final:
                    error = storage_error(request.doing(), final)


async def drive_async(steps: Steps[T], recorder: AsyncAgentRecorder, retry: RetryPolicy) -> T:
    """Run ``steps`` awaiting ``recorder`` (reads retried by ``retry``, as
    :func:`drive`). A call that commits is awaited to its end even if the caller is
    cancelled meanwhile, and the steps after it (the store's bookkeeping) run:
    then, if the operation completed, its result is returned (it is the truth: the
    cancellation came too late to stop it); if it failed, the cancellation is
    raised (or :class:`~snaptail.SaveOutcomeUnknown`, which says more)."""
    send, throw = steps.send, steps.throw
    result: Any = None
    error: Exception | None = None
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            request = send(result) if error is None else throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except SaveOutcomeUnknown:
            raise
        except Exception:
            if cancelled is not None:
                raise cancelled from None
            raise
        result, error = None, None
        try:
            if request.write:
                call = asyncio.ensure_future(request.run_async(recorder))
                cancelled = await outlast_cancellation(call) or cancelled
                result = call.result()
            else:
                try:
                    result = await request.run_async(recorder)
                except Exception as exc:
                    if not request.retried:
                        raise
                    result = await retry.again_async(exc, request.run_async, recorder)
        except Exception as exc:
            error = storage_error(request.doing(), exc)


async def outlast_cancellation(task: asyncio.Future[Any]) -> asyncio.CancelledError | None:
    """Wait for ``task`` to end even if the caller is cancelled meanwhile; returns the
    cancellation (to raise if the operation does not complete) or None."""
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    return cancelled

"""``snaptail worker run`` and ``snaptail stats`` (registered on the main Typer app)."""

from __future__ import annotations

import logging
import os
import pkgutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from snaptail.cli.databases import keys_option
from snaptail.domain.memory import format_bytes

worker_app = typer.Typer(help="Projection workers: build read models from the event log.")
err = Console(stderr=True, soft_wrap=True)  # log lines stay whole (grep-able)

DB_HELP = "Event database URL (default: $SNAPTAIL_DATABASE_URL or sqlite:///snaptail.db)."
VIEW_HELP = "View database URL (default: the event database)."


class EventsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s", style="cyan")


def load_projection(target: str) -> type[Any]:
    """``module:Class`` or ``module.Class`` -> the projection class (cwd importable)."""
    from snaptail.projections.base import Projection

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = pkgutil.resolve_name(target)
    except ValueError:
        raise typer.BadParameter(f"{target!r}: expected MODULE:ProjectionClass") from None
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot load {target!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Projection)):
        raise typer.BadParameter(f"{target!r} is not a snaptail Projection class")
    return found


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        EventsPerSecond(),
        TimeElapsedColumn(),
        console=err,
        disable=not enabled,
    )


class _Bar:
    """The catch-up progress bar, fed by the worker's ``on_batch`` callback. Its total
    is an estimate: events stored minus events already processed."""

    def __init__(self, worker: Any, show: bool) -> None:
        self._worker = worker
        self._progress = _progress(show)
        self._done = worker.view.processed(worker.name)
        self._completed = 0
        self._task = self._progress.add_task(
            f"{worker.name} catching up", total=max(worker.head() - self._done, 0)
        )
        self._progress.start()

    def advanced(self, applied: int) -> None:
        self._completed += applied
        total = self._progress.tasks[0].total or 0
        if self._completed > total:
            head = self._worker.head() - self._done
            self._progress.update(self._task, total=max(head, self._completed))
        self._progress.update(self._task, completed=self._completed)

    def stop(self) -> None:
        self._progress.stop()


class _Following:
    """While following on a terminal: one live line with the position and the events
    applied since the worker caught up."""

    def __init__(self, worker: Any) -> None:
        self._worker = worker
        self._applied = 0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), EventsPerSecond(), console=err,
            transient=True,
        )  # fmt: skip
        self._task = self._progress.add_task(self._text(), total=None)
        self._progress.start()

    def _text(self) -> str:
        return (
            f"{self._worker.name} following: position {self._worker.position}, "
            f"{self._applied:,} events since caught up"
        )

    def advanced(self, applied: int) -> None:
        self._applied += applied
        self._progress.update(self._task, advance=applied, description=self._text())

    def stop(self) -> None:
        self._progress.stop()


class _StderrHandler(logging.Handler):
    """The worker's log lines (lock, standby, reconnects, failures) on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(record.getMessage(), markup=False, highlight=False)


def _log_to_stderr() -> None:
    log = logging.getLogger("snaptail.projections")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())
    log.setLevel(logging.INFO)
    log.propagate = False


def _failed(exc: Exception, worker: Any) -> typer.Exit:
    """Print why the worker stopped (no traceback); the exit status to stop with."""
    from snaptail.errors import ProjectionFailed

    if isinstance(exc, ProjectionFailed):
        err.print(
            f"error: {exc}; the view is committed up to notification {worker.position}; a restart "
            "stops at the same event. Fix the projection, or run with --skip-failed to "
            "record the event as a dead letter and go on.",
            markup=False,
            highlight=False,
        )
        return typer.Exit(3)
    err.print(f"error: worker stopped: {exc}", markup=False, highlight=False)
    return typer.Exit(4)


@worker_app.command("run")
def run(
    target: str = typer.Argument(
        ..., help="MODULE:ProjectionClass, e.g. snaptail.projections:AgentStats"
    ),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    view_db: str = typer.Option(None, "--view-db", help=VIEW_HELP),
    batch_size: int = typer.Option(1000, help="Events per view transaction."),
    poll_interval: float = typer.Option(0.05, help="Seconds between polls for new events."),
    catch_up_only: bool = typer.Option(False, "--catch-up-only", help="Exit once caught up."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    give_up_after: float = typer.Option(
        60.0,
        "--give-up-after",
        min=0.1,
        help="Seconds to keep reconnecting after a lost connection before exiting 4.",
    ),
    skip_failed: bool = typer.Option(
        False,
        "--skip-failed",
        help="Record an event the projection raises on as a dead letter and go on "
        "(default: stop, exit 3).",
    ),
    partitions: int = typer.Option(
        1,
        "--partitions",
        min=1,
        help="Split the agents into N slices (by a hash of the agent id), each with its "
        "own position and lock. Without --partition: run N worker processes, one per "
        "slice.",
    ),
    partition: int = typer.Option(
        None, "--partition", min=0, help="Run only slice K of --partitions N (0-based)."
    ),
    keys: str | None = keys_option(),
) -> None:
    """Run a projection: catch up, then follow new events. SIGTERM/SIGINT finish the
    batch in hand and exit 0; after SIGKILL a restart continues exactly where the
    view's committed position says. A lost connection is re-opened with backoff
    (exit 4 after --give-up-after seconds); a projection that raises on an event
    stops the worker with exit 3 after committing every event before it.

    With --partitions N, each slice is run by whichever worker holds its lock; a
    worker whose slice is taken stands by and takes over, from the slice's stored
    position, when the holder stops or dies."""
    from snaptail.cli.databases import database_url
    from snaptail.errors import DatabaseUnreachable, ProjectionFailed, WorkerGaveUp
    from snaptail.infrastructure.recorder import Partition
    from snaptail.projections.worker import ProjectionWorker

    if partition is not None and partition >= partitions:
        raise typer.BadParameter(f"--partition must be below --partitions ({partitions})")
    db = database_url(db)
    view_db = database_url(view_db, "--view-db") if view_db else view_db
    projection = load_projection(target)
    if partitions > 1 and not projection.partitionable:
        raise typer.BadParameter(
            f"{target} is not partitionable (it does not set partitionable = True)"
        )
    if partitions > 1 and partition is None:
        _check_split(projection, db, view_db, partitions)  # once, before N children
        options = [target, "--batch-size", str(batch_size), "--poll-interval",
                   str(poll_interval), "--give-up-after", str(give_up_after), "--no-progress",
                   "--partitions", str(partitions)]  # fmt: skip
        options += ["--db", db] if db else []
        options += ["--view-db", view_db] if view_db else []
        options += ["--keys", keys] if keys else []
        options += ["--catch-up-only"] if catch_up_only else []
        options += ["--skip-failed"] if skip_failed else []
        raise typer.Exit(_supervise([[*options, "--partition", str(k)] for k in range(partitions)]))
    stop = threading.Event()

    def request_stop(signum: int, _: object) -> None:
        if not stop.is_set():
            err.print(f"{signal.Signals(signum).name}: finishing the batch in hand")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    _log_to_stderr()
    try:
        started = ProjectionWorker(
            projection,
            db,
            view_db,
            batch_size=batch_size,
            poll_interval=poll_interval,
            give_up_after=give_up_after,
            skip_failed=skip_failed,
            partition=None if partition is None else Partition(partition, partitions),
            keys=keys,
        )
    except DatabaseUnreachable as exc:
        err.print(f"error: worker not started: {exc}", markup=False, highlight=False)
        raise typer.Exit(4) from None
    with started as worker:
        err.print(f"worker {worker.name}: position {worker.position}, lock {worker.lock.where}")
        bar: _Bar | None = None
        following: _Following | None = None
        caught_up = threading.Event()
        show = progress and err.is_terminal

        def on_batch(applied: int) -> None:
            nonlocal bar
            if following is not None:
                following.advanced(applied)
                return
            if bar is None and not caught_up.is_set():
                bar = _Bar(worker, show)
            if bar is not None:
                bar.advanced(applied)

        def on_caught_up(applied: int, seconds: float) -> None:
            nonlocal bar, following
            if bar is not None:
                bar.stop()
                bar = None
            rate = applied / seconds if seconds > 0 else 0.0
            done = f"{applied} events in {seconds:.2f}s ({rate:,.0f} events/s)"
            if stop.is_set():  # stopped during the catch-up: not caught up
                left = max(worker.head() - worker.position.notification_id, 0)
                err.print(
                    f"interrupted during catch-up: {done}, position {worker.position}; about"
                    f" {left:,} events left (a restart continues from here)"
                )
                return
            caught_up.set()
            err.print(f"caught up: {done}, position {worker.position}")
            if not catch_up_only:
                err.print("following new events (SIGTERM or Ctrl-C to stop)")
                if show:
                    following = _Following(worker)

        try:
            worker.run(
                stop, follow=not catch_up_only, on_batch=on_batch, on_caught_up=on_caught_up
            )
        except (ProjectionFailed, WorkerGaveUp) as exc:
            raise _failed(exc, worker) from None
        finally:
            if bar is not None:
                bar.stop()
            if following is not None:
                following.stop()
        err.print(f"stopped at position {worker.position}")


def _check_split(projection: Any, db: str, view_db: str | None, partitions: int) -> None:
    """Refuse (one usage error) a split other than the one the view was built with."""
    from snaptail.infrastructure.recorder import Partition
    from snaptail.projections.view import open_view
    from snaptail.projections.worker import check_partitioning

    view = open_view(view_db or db)
    try:
        view.setup()
        check_partitioning(view, projection.name, Partition(0, partitions))
    finally:
        view.close()


def _supervise(runs: list[list[str]]) -> int:
    """Run ``snaptail worker run`` once per argument list, as child processes sharing
    this one's stderr. SIGTERM/SIGINT are passed on; when a child fails, the others
    are stopped. Returns the first non-zero exit status (0 if none)."""
    command = [sys.executable, "-m", "snaptail.cli", "worker", "run"]
    children = [subprocess.Popen([*command, *args]) for args in runs]

    def forward(signum: int, _: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    running = list(children)
    while running:
        for child in list(running):
            code = child.poll()
            if code is None:
                continue
            running.remove(child)
            if code != 0 and status == 0:
                status = code
                err.print(f"a partition worker exited with status {code}: stopping the others")
                forward(signal.SIGTERM, None)
        time.sleep(0.05)
    return status


STATS_DROP_ORDER = ("last at (UTC)", "last event", "type", "errs", "tools", "tok out",
                    "tok in", "tail", "name")  # fmt: skip


def stats(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    view_db: str = typer.Option(None, "--view-db", help=VIEW_HELP),
    top: int = typer.Option(20, "--top", min=0, help="How many agents to show (0: all)."),
    sort: str = typer.Option("events", "--sort", help="events, bytes or tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects."),
    update: bool = typer.Option(
        True, "--update/--no-update", help="Catch AgentStats up first (unless a worker runs it)."
    ),
) -> None:
    """Per-agent events, bytes, tokens, tool calls, errors and snapshot version,
    read from the AgentStats view; no agent is loaded. Each agent is shown by its
    full id and name, both of which `snaptail inspect` accepts.

    Never creates a database: a missing one is "no such database". A read-only
    database is shown as its view stands (as with --no-update). On a narrow terminal
    whole columns are left out, in this order: last at, last event, type, errs,
    tools, tok out, tok in, tail, name (the id and the figures stay whole)."""
    from snaptail.projections.agent_stats import SORTS

    if sort not in SORTS:
        raise typer.BadParameter(
            f"must be one of {', '.join(SORTS)}, got {sort!r}", param_hint="--sort"
        )
    from snaptail.cli.databases import database_url, existing_database, writable

    url = existing_database(db)
    view_url = database_url(view_db, "--view-db") if view_db else None
    if update and not (writable(url) and (view_url is None or writable(view_url))):
        err.print("read-only database: showing the AgentStats view as it stands (no catch-up)")
        update = False
    if update:
        rows, position, names = _stats_caught_up(url, view_url, sort, top)
    else:
        rows, position, names = _stats_as_they_stand(url, view_url, sort, top)
    if as_json:
        records = [{**row.__dict__, "name": names[row.agent_id], "tail": row.tail}
                   for row in rows]  # fmt: skip
        sys.stdout.write(msgspec.json.encode(records).decode() + "\n")
        return
    console = Console()
    console.print(_stats_table(console, rows, names, f"top {len(rows)} by {sort}, {position}"))


def _stats_caught_up(
    url: str, view_url: str | None, sort: str, top: int
) -> tuple[list[Any], str, dict[str, str]]:
    """Catch AgentStats up (each slice of a partitioned one in turn), then read it."""
    from uuid import UUID

    from snaptail.application.directory import agent_name
    from snaptail.errors import ProjectionBusy, ProjectionFailed, WorkerGaveUp
    from snaptail.infrastructure.recorder import Partition
    from snaptail.projections.agent_stats import AgentStats, read_agent_stats
    from snaptail.projections.view import open_view
    from snaptail.projections.worker import ProjectionWorker, stored_partitions

    view = open_view(view_url or url)
    try:
        view.setup()
        count = stored_partitions(view, AgentStats.name) or 1
    finally:
        view.close()
    rows: list[Any] = []
    names: dict[str, str] = {}
    where: object = 0
    for k in range(count):  # each slice of a partitioned AgentStats in turn
        part = Partition(k, count) if count > 1 else None
        with ProjectionWorker(AgentStats, url, view_url, partition=part) as worker:
            bar = _Bar(worker, err.is_terminal)
            try:
                worker.catch_up(on_batch=bar.advanced)
            except ProjectionBusy:
                err.print(f"a worker is running {worker.name}: showing its view as it is")
            except (ProjectionFailed, WorkerGaveUp) as exc:
                raise _failed(exc, worker) from None
            finally:
                bar.stop()
            _print_dead_letters(worker.view, worker.name)
            if k == count - 1:
                rows = read_agent_stats(
                    worker.view, sort=sort, top=top or None, store=worker.store  # type: ignore[arg-type]
                )
                names = {r.agent_id: agent_name(worker.store, UUID(r.agent_id)) for r in rows}
                where = worker.view.position(worker.name)
    return rows, f"{count} partitions" if count > 1 else f"position {where}", names


def _stats_as_they_stand(
    url: str, view_url: str | None, sort: str, top: int
) -> tuple[list[Any], str, dict[str, str]]:
    """Read AgentStats as it stands, opening both databases read-only."""
    from uuid import UUID

    from snaptail.application.directory import agent_name
    from snaptail.application.store import AgentStore
    from snaptail.projections.agent_stats import AgentStats, read_agent_stats
    from snaptail.projections.view import TRACKING_TABLE, open_view
    from snaptail.projections.worker import stored_partitions

    with AgentStore(url, read_only=True) as store:
        view = open_view(view_url or url, read_only=True)
        try:
            tracked = view.has_table(TRACKING_TABLE)
            count = (stored_partitions(view, AgentStats.name) if tracked else None) or 1
            rows = read_agent_stats(view, sort=sort, top=top or None, store=store)  # type: ignore[arg-type]
            names = {r.agent_id: agent_name(store, UUID(r.agent_id)) for r in rows}
            if count > 1:
                position = f"{count} partitions"
            else:
                position = f"position {view.position(AgentStats.name) if tracked else 0}"
            if tracked:
                _print_dead_letters(view, AgentStats.name)
        finally:
            view.close()
    return rows, f"{position}, not caught up", names


def _print_dead_letters(view: Any, name: str) -> None:
    for letter in view.dead_letters(name):
        err.print(
            f"dead letter: {name} skipped notification {letter.notification_id} "
            f"(agent {letter.agent_id}, version {letter.version}, event "
            f"{letter.event_type}) at {letter.skipped_at}: {letter.error}",
            markup=False,
            highlight=False,
        )


def _stats_table(console: Console, rows: list[Any], names: dict[str, str], title: str) -> Table:
    """The stats table, fitted to the console (columns dropped in STATS_DROP_ORDER)."""
    from snaptail.cli.tables import fit

    cells = [
        {
            "agent": row.agent_id,
            "name": names.get(row.agent_id, ""),
            "type": row.agent_type.rpartition(":")[2],
            "events": f"{row.events:,}",
            "bytes": format_bytes(row.bytes),
            "tok in": f"{row.tokens_in:,}",
            "tok out": f"{row.tokens_out:,}",
            "tools": f"{row.tool_calls:,}",
            "errs": f"{row.errors:,}",
            "snap": str(row.snapshot_version),
            "tail": str(row.tail),
            "last event": row.last_event_type,
            "last at (UTC)": (row.last_event_at or "")[:19].replace("T", " "),
        }
        for row in rows
    ]
    headers = ["agent", "name", "type", "events", "bytes", "tok in", "tok out", "tools",
               "errs", "snap", "tail", "last event", "last at (UTC)"]  # fmt: skip

    def build(kept: Sequence[str]) -> Table:
        table = Table(
            title=f"AgentStats: {title}", box=box.SIMPLE_HEAD, pad_edge=False,
            collapse_padding=True, title_justify="left",
        )  # fmt: skip
        for header in kept:
            text = header in {"agent", "name", "type", "last event"}
            table.add_column(
                header,
                justify="left" if text else "right",
                no_wrap=True,
            )
        for cell in cells:
            table.add_row(*(cell[h] for h in kept))
        return table

    return fit(console, headers, STATS_DROP_ORDER, build)

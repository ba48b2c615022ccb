"""``snaptail worker run`` and ``snaptail stats`` (registered on the main Typer app)."""

from __future__ import annotations

import logging
import os
import pkgutil
import signal
import sys
import threading
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
    """The catch-up progress bar, fed by the worker's ``on_batch`` callback."""

    def __init__(self, worker: Any, show: bool) -> None:
        self._worker = worker
        self._progress = _progress(show)
        self._start = worker.position
        self._head = max(worker.head(), self._start)
        self._task = self._progress.add_task(
            f"{worker.name} catching up", total=self._head - self._start
        )
        self._progress.start()

    def advanced(self, _: int) -> None:
        position = self._worker.position
        if position > self._head:
            self._head = self._worker.head()
            self._progress.update(self._task, total=self._head - self._start)
        self._progress.update(self._task, completed=position - self._start)

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
            f"{exc}\nthe view is committed up to notification {worker.position}; a restart "
            "stops at the same event. Fix the projection, or run with --skip-failed to "
            "record the event as a dead letter and go on.",
            markup=False,
            highlight=False,
        )
        return typer.Exit(3)
    err.print(f"worker stopped: {exc}", markup=False, highlight=False)
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
) -> None:
    """Run a projection: catch up, then follow new events. SIGTERM/SIGINT finish the
    batch in hand and exit 0; after SIGKILL a restart continues exactly where the
    view's committed position says. A lost connection is re-opened with backoff
    (exit 4 after --give-up-after seconds); a projection that raises on an event
    stops the worker with exit 3 after committing every event before it."""
    from snaptail.errors import DatabaseUnreachable, ProjectionFailed, WorkerGaveUp
    from snaptail.projections.worker import ProjectionWorker

    stop = threading.Event()

    def request_stop(signum: int, _: object) -> None:
        if not stop.is_set():
            err.print(f"{signal.Signals(signum).name}: finishing the batch in hand")
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    projection = load_projection(target)
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
        )
    except DatabaseUnreachable as exc:
        err.print(f"worker not started: {exc}", markup=False, highlight=False)
        raise typer.Exit(4) from None
    with started as worker:
        err.print(f"worker {worker.name}: position {worker.position}, lock {worker.lock.where}")
        bar: _Bar | None = None
        caught_up = threading.Event()

        def on_batch(applied: int) -> None:
            nonlocal bar
            if bar is None and not caught_up.is_set():
                bar = _Bar(worker, progress and err.is_terminal)
            if bar is not None:
                bar.advanced(applied)

        def on_caught_up(applied: int, seconds: float) -> None:
            nonlocal bar
            if bar is not None:
                bar.stop()
                bar = None
            caught_up.set()
            rate = applied / seconds if seconds > 0 else 0.0
            err.print(
                f"caught up: {applied} events in {seconds:.2f}s ({rate:,.0f} events/s), "
                f"position {worker.position}"
            )
            if not catch_up_only and not stop.is_set():
                err.print("following new events (SIGTERM or Ctrl-C to stop)")

        try:
            worker.run(
                stop, follow=not catch_up_only, on_batch=on_batch, on_caught_up=on_caught_up
            )
        except (ProjectionFailed, WorkerGaveUp) as exc:
            raise _failed(exc, worker) from None
        finally:
            if bar is not None:
                bar.stop()
        err.print(f"stopped at position {worker.position}")


def stats(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    view_db: str = typer.Option(None, "--view-db", help=VIEW_HELP),
    top: int = typer.Option(20, "--top", help="How many agents to show (0: all)."),
    sort: str = typer.Option("events", "--sort", help="events, bytes or tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects."),
    update: bool = typer.Option(
        True, "--update/--no-update", help="Catch AgentStats up first (unless a worker runs it)."
    ),
) -> None:
    """Per-agent events, bytes, tokens, tool calls, errors and snapshot version,
    read from the AgentStats view; no agent is loaded."""
    from snaptail.projections.agent_stats import SORTS, AgentStats, read_agent_stats
    from snaptail.projections.worker import ProjectionWorker

    if sort not in SORTS:
        raise typer.BadParameter(f"--sort must be one of {', '.join(SORTS)}, got {sort!r}")
    if top < 0:
        raise typer.BadParameter(f"--top must be >= 0, got {top}")
    from snaptail.errors import ProjectionBusy, ProjectionFailed, WorkerGaveUp

    with ProjectionWorker(AgentStats, db, view_db) as worker:
        if update:
            bar = _Bar(worker, err.is_terminal)
            try:
                worker.catch_up(on_batch=bar.advanced)
            except ProjectionBusy:
                err.print("a worker is running AgentStats: showing its view as it is")
            except (ProjectionFailed, WorkerGaveUp) as exc:
                raise _failed(exc, worker) from None
            finally:
                bar.stop()
        for letter in worker.view.dead_letters(worker.name):
            err.print(
                f"dead letter: AgentStats skipped notification {letter.notification_id} "
                f"(agent {letter.agent_id}, version {letter.version}, event "
                f"{letter.event_type}) at {letter.skipped_at}: {letter.error}",
                markup=False,
                highlight=False,
            )
        rows = read_agent_stats(
            worker.view, sort=sort, top=top or None, recorder=worker.recorder  # type: ignore[arg-type]
        )
        position = worker.view.position(worker.name)
    if as_json:
        records = [{**row.__dict__, "tail": row.tail} for row in rows]
        sys.stdout.write(msgspec.json.encode(records).decode() + "\n")
        return
    console = Console()
    wide = console.width >= 120  # narrow terminals: the figures only
    table = Table(
        title=f"AgentStats: top {len(rows)} by {sort}, position {position}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for row in rows:
        cells = {
            "agent": row.agent_id[:8],
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
        if not wide:
            for column in ("type", "last event", "last at (UTC)"):
                del cells[column]
        if not table.columns:
            for header in cells:
                justify = "left" if header in {"agent", "type", "last event"} else "right"
                table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        table.add_row(*cells.values())
    console.print(table)

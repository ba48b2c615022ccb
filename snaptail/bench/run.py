"""What a benchmark run shares: where results go (JSON lines) and progress.

No Typer or Rich here: the command line (``snaptail.cli.bench``) passes in a Rich
progress bar (anything with :class:`BenchProgress`'s methods does).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from snaptail.bench.measure import deep_size, peak_memory, percentile, time_runs
from snaptail.domain.agent import Agent
from snaptail.workload import Workload

Record = dict[str, Any]


class BenchProgress(Protocol):
    """Progress bars of a run (the methods of ``rich.progress.Progress`` it uses)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def add_task(self, description: str, *, total: float | None = ...) -> Any: ...
    def remove_task(self, task_id: Any) -> None: ...
    def update(self, task_id: Any, *, description: str | None = ...) -> None: ...
    def advance(self, task_id: Any, advance: float = ...) -> None: ...


class NoProgress:
    """Shows nothing."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def add_task(self, description: str, *, total: float | None = None) -> Any:
        return 0

    def remove_task(self, task_id: Any) -> None:
        pass

    def update(self, task_id: Any, *, description: str | None = None) -> None:
        pass

    def advance(self, task_id: Any, advance: float = 1) -> None:
        pass


class BenchRun:
    """Collects result records; prints them as JSON lines (``json_lines``) and shows
    ``progress`` while the benchmark runs; ``note`` prints a message.

    Scratch databases live in ``data_dir`` (a temporary directory, removed at the
    end, unless one is given).
    """

    def __init__(
        self,
        progress: BenchProgress | None = None,
        *,
        note: Callable[[str], Any] | None = None,
        json_lines: bool = False,
        data_dir: Path | None = None,
        out: Callable[[str], Any] | None = None,
    ) -> None:
        self.progress: BenchProgress = progress or NoProgress()
        self._note = note or (lambda message: print(message, file=sys.stderr))
        self.json_lines = json_lines
        self.records: list[Record] = []
        self._out = out or (lambda line: print(line, file=sys.stdout, flush=True))
        self._own_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="snaptail-bench-")) if data_dir is None else data_dir
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def emit(self, record: Record) -> Record:
        """Keep one result (printed at once as a JSON line if asked)."""
        self.records.append(record)
        if self.json_lines:
            self._out(json.dumps(record, sort_keys=True))
        return record

    def note(self, message: str) -> None:
        self._note(message)

    def fresh_db(self, name: str) -> Path:
        path = self.data_dir / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return path

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Any]:
        task = self.progress.add_task(description, total=total)
        try:
            yield task
        finally:
            self.progress.remove_task(task)


class TimedWriter:
    """Drives one agent with a workload into one system, timing only the saves."""

    def __init__(self, save: Callable[[Agent], Any], seed: int, batch: int) -> None:
        self._save = save
        self.workload = Workload(seed)
        self.agent = Agent(name="bench-agent")
        self.batch = batch
        self.saves = 0
        self.save_seconds = 0.0
        self.events = 1  # the creation event

    def save(self, agent: Agent) -> None:
        started = time.perf_counter()
        self._save(agent)
        self.save_seconds += time.perf_counter() - started
        self.saves += 1

    def write_to(
        self,
        events: int,
        on_progress: Callable[[int], Any] | None = None,
        after_save: Callable[[Agent], Any] | None = None,
        batch: int | None = None,
    ) -> tuple[int, float]:
        """Add events until the agent has ``events`` of them (after its creation),
        saving every ``batch`` (default: the writer's) events; returns
        ``(events written, seconds spent in save)``."""
        before = self.save_seconds
        todo = events + 1 - self.events
        if todo <= 0:
            return 0, 0.0

        def save(agent: Agent) -> None:
            self.save(agent)
            if after_save is not None:
                after_save(agent)

        self.workload.drive(
            self.agent, todo, save=save, batch=batch or self.batch, progress=on_progress
        )
        self.events += todo
        return todo, self.save_seconds - before


def file_bytes(path: Path) -> int:
    """Bytes on disk of a SQLite database (main file and WAL)."""
    return sum(
        Path(f"{path}{suffix}").stat().st_size
        for suffix in ("", "-wal")
        if Path(f"{path}{suffix}").exists()
    )


@dataclass
class CycleResult:
    """Loads measured at several heads spread over one snapshot cycle."""

    per_position_ms: dict[str, list[float]] = field(default_factory=dict)
    peaks: dict[str, list[int]] = field(default_factory=dict)
    single_p95_ms: dict[str, float] = field(default_factory=dict)
    resident_bytes: dict[str, int] = field(default_factory=dict)
    positions: int = 0
    repeats: int = 0

    def p50(self, name: str) -> float:
        return statistics.median(self.per_position_ms[name])

    def p95(self, name: str) -> float:
        if self.positions == 1:  # one head: the spread of its runs
            return self.single_p95_ms[name]
        return percentile(self.per_position_ms[name], 0.95)

    def peak_median(self, name: str) -> int:
        return int(statistics.median(self.peaks[name]))

    def peak_max(self, name: str) -> int:
        return max(self.peaks[name])


def sample_cycle(
    writers: Sequence[TimedWriter],
    loaders: dict[str, Callable[[], Any]],
    cycle: int,
    positions: int,
    repeats: int = 5,
    after_save: Callable[[Agent], Any] | None = None,
) -> CycleResult:
    """Measure each loader at ``positions`` heads spread over ``cycle`` events.

    A load's cost depends on where the head is in the snapshot cycle (the tail after
    the newest snapshot is 0 to interval - 1 events long), so each loader is timed
    ``repeats`` times at each head (median kept), then every writer adds
    ``cycle / positions`` events in one save, and so on. Also keeps each loader's
    tracemalloc peak at every head and the deep size of what it loaded at the last head.
    """
    result = CycleResult(positions=positions, repeats=repeats)
    step = max(1, cycle // positions)
    for position in range(positions):
        for name, load in loaders.items():
            timing = time_runs(load, budget_s=0, min_runs=repeats, max_runs=repeats)
            result.per_position_ms.setdefault(name, []).append(timing.p50_ms)
            result.single_p95_ms[name] = timing.p95_ms
            peak, loaded = peak_memory(load)
            result.peaks.setdefault(name, []).append(peak)
            if position == positions - 1:
                result.resident_bytes[name] = deep_size(loaded)
            del loaded
        if position < positions - 1:
            for writer in writers:
                writer.write_to(writer.events - 1 + step, batch=step, after_save=after_save)
    return result

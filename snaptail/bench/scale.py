"""``snaptail bench scale``: load time and memory against log length, side by side.

(a) snaptail; (b) stock ``eventsourcing`` with the same snapshot interval (JSON);
(c) stock ``eventsourcing`` replaying the full log; (d) the seed's load-everything
design; (e) the floor: the rows snaptail reads, plain ``sqlite3`` + msgspec.
(a), (d) and (e) read the same snaptail database; (b) and (c) the same stock one.
(a') and (e') are (a) and (e) without the recent-event cache (``recent_events=0``).
Appends are timed for snaptail, stock and two floors (plain ``sqlite3`` inserts of the
same rows, and of the event rows alone, no snapshots), and loads of an agent with a
tiny state for (a') and (e').
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

from snaptail.bench.measure import (
    Timing,
    deep_size,
    peak_memory,
    percentile,
    time_once,
    time_runs,
)
from snaptail.bench.run import (
    BenchRun,
    CycleResult,
    Record,
    TimedWriter,
    file_bytes,
    sample_cycle,
)
from snaptail.bench.systems import (
    Floor,
    FloorWriter,
    SnaptailSystem,
    StockSystem,
    connect,
    load_everything,
    tiny_agent,
)

DEFAULT_LENGTHS = (1_000, 10_000, 100_000, 1_000_000)
QUICK_LENGTHS = (1_000, 10_000)

SYSTEMS: dict[str, str] = {
    "snaptail": "(a) snaptail",
    "snaptail-no-recent": "(a') snaptail, recent_events=0",
    "stock": "(b) eventsourcing, same interval",
    "stock-full": "(c) eventsourcing, full replay",
    "load-everything": "(d) load everything (seed)",
    "floor": "(e) floor: sqlite3 + msgspec",
    "floor-no-recent": "(e') floor, recent_events=0",
}
TINY_SYSTEMS = ("snaptail-no-recent", "floor-no-recent")


@dataclass(frozen=True)
class ScaleConfig:
    lengths: Sequence[int] = DEFAULT_LENGTHS
    interval: int = 100
    batch: int = 100
    seed: int = 42
    limit_s: float = 60.0  # a system whose one load passes this is not run further
    memory_limit_s: float = 30.0  # above this, one load is not re-run under tracemalloc
    load_budget_s: float = 1.5
    chunk: int = 5_000  # systems take turns writing this many events
    positions: int = 20  # heads per snapshot cycle at which snapshot loads are timed
    tiny_rounds: int = 20  # tiny-state loads: rounds of the systems taking turns
    tiny_runs: int = 50  # loads per system per round


def run_scale(config: ScaleConfig, run: BenchRun) -> list[Record]:
    lengths = sorted(set(config.lengths))
    ours_path = run.fresh_db("scale-snaptail")
    stock_path = run.fresh_db("scale-stock")
    ours = SnaptailSystem(ours_path, config.interval)
    ours_no_recent = SnaptailSystem(ours_path, config.interval, recent_events=0)
    stock = StockSystem(stock_path, config.interval)
    floor_path = run.fresh_db("scale-floor")
    floor_writer = FloorWriter(floor_path, config.interval)
    events_floor_path = run.fresh_db("scale-floor-events")
    events_floor_writer = FloorWriter(events_floor_path, None)
    connection = connect(ours_path)
    floor = Floor(connection)
    floor_no_recent = Floor(connection, recent_events=0)
    writers = {
        "snaptail": TimedWriter(ours.save, config.seed, config.batch),
        "stock": TimedWriter(stock.save, config.seed, config.batch),
        "floor": TimedWriter(floor_writer.save, config.seed, config.batch),
        "floor-events": TimedWriter(events_floor_writer.save, config.seed, config.batch),
    }
    paths = {
        "snaptail": ours_path,
        "stock": stock_path,
        "floor": floor_path,
        "floor-events": events_floor_path,
    }
    stopped: dict[str, str] = {}
    records: list[Record] = []
    try:
        for length in lengths:
            written_by, seconds_by = _write_interleaved(writers, length, config.chunk, run)
            for name in writers:
                written, seconds = written_by[name], seconds_by[name]
                records.append(
                    run.emit(
                        {
                            "bench": "scale",
                            "kind": "append",
                            "system": name,
                            "events": length,
                            "interval": config.interval,
                            "batch": config.batch,
                            "append_events": written,
                            "append_events_per_s": written / seconds if seconds > 0 else None,
                            "storage_bytes": file_bytes(paths[name]),
                        }
                    )
                )
            ours_id = writers["snaptail"].agent.id
            stock_id = writers["stock"].agent.id
            cyclic: dict[str, Callable[[], Any]] = {
                "snaptail": _bind(ours.load, ours_id),
                "snaptail-no-recent": _bind(ours_no_recent.load, ours_id),
                "stock": _bind(stock.load, stock_id),
                "floor": _bind(floor.load, ours_id),
                "floor-no-recent": _bind(floor_no_recent.load, ours_id),
            }
            full: dict[str, Callable[[], Any]] = {
                "stock-full": _bind(stock.load_full, stock_id),
                "load-everything": partial(load_everything, connection, ours_id),
            }
            with run.task(f"loading at {length:,} events", total=len(full) + 1) as task:
                run.progress.update(
                    task, description=f"loading at {length:,}: {config.positions} heads"
                )
                cycle = sample_cycle(
                    list(writers.values()), cyclic, config.interval, config.positions
                )
                for name in cyclic:
                    records.append(run.emit(_cycle_record(name, cycle, length, config)))
                run.progress.advance(task)
                for name, load in full.items():
                    run.progress.update(task, description=f"loading at {length:,}: {name}")
                    record = _measure_load(name, load, length, config, stopped)
                    records.append(run.emit(record))
                    if record["stopped"]:
                        run.note(f"[yellow]{SYSTEMS[name]}: {record['note']}[/]")
                    run.progress.advance(task)
        tiny = tiny_agent(ours.store)
        tiny_loads = {
            "snaptail-no-recent": _bind(ours_no_recent.load, tiny.id),
            "floor-no-recent": _bind(floor_no_recent.load, tiny.id),
        }
        for name, timing in _tiny_timings(tiny_loads, config).items():
            records.append(
                run.emit(
                    {
                        "bench": "scale",
                        "kind": "tiny-load",
                        "system": name,
                        "label": SYSTEMS[name],
                        "events": tiny.version,
                        "load_ms_p50": timing.p50_ms,
                        "load_ms_p95": timing.p95_ms,
                        "load_runs": timing.runs,
                    }
                )
            )
    finally:
        connection.close()
        floor_writer.close()
        events_floor_writer.close()
        ours.close()
        ours_no_recent.close()
        stock.close()
    return records


def _write_interleaved(
    writers: dict[str, TimedWriter], length: int, chunk: int, run: BenchRun
) -> tuple[dict[str, int], dict[str, float]]:
    """Bring every writer to ``length`` events, taking turns ``chunk`` events at a time,
    so that all systems write under the same conditions (a shared, noisy machine)."""
    written = dict.fromkeys(writers, 0)
    seconds = dict.fromkeys(writers, 0.0)
    start = min(w.events - 1 for w in writers.values())
    total = max(length - start, 0) * len(writers)
    with run.task(f"writing to {length:,} events", total=total) as task:
        step = start
        while step < length:
            step = min(step + chunk, length)
            for name, writer in writers.items():
                run.progress.update(task, description=f"writing to {length:,} events: {name}")
                n, s = writer.write_to(step, on_progress=partial(run.progress.advance, task))
                written[name] += n
                seconds[name] += s
    return written, seconds


def _tiny_timings(loads: dict[str, Callable[[], Any]], config: ScaleConfig) -> dict[str, Timing]:
    """Time each load ``tiny_runs`` times per round, the systems taking turns each round
    (these loads take tens of microseconds: turns spread the machine's noise evenly)."""
    samples: dict[str, list[float]] = {name: [] for name in loads}
    for _ in range(config.tiny_rounds):
        for name, load in loads.items():
            for _ in range(config.tiny_runs):
                started = time.perf_counter()
                load()
                samples[name].append((time.perf_counter() - started) * 1000)
    return {
        name: Timing(len(ms), statistics.median(ms), percentile(ms, 0.95))
        for name, ms in samples.items()
    }


def _bind(load: Callable[[UUID], Any], agent_id: UUID) -> Callable[[], Any]:
    return lambda: load(agent_id)


def _base_record(name: str, length: int, config: ScaleConfig) -> Record:
    return {
        "bench": "scale",
        "kind": "load",
        "system": name,
        "label": SYSTEMS[name],
        "events": length,
        "interval": None if name in ("stock-full", "load-everything") else config.interval,
        "load_ms_p50": None,
        "load_ms_p95": None,
        "load_runs": 0,
        "heads": 1,
        "load_peak_bytes": None,
        "load_peak_bytes_max": None,
        "resident_bytes": None,
        "stopped": False,
        "note": "",
    }


def _cycle_record(name: str, cycle: CycleResult, length: int, config: ScaleConfig) -> Record:
    record = _base_record(name, length, config)
    record.update(
        load_ms_p50=cycle.p50(name),
        load_ms_p95=cycle.p95(name),
        load_runs=cycle.positions * cycle.repeats,
        heads=cycle.positions,
        load_peak_bytes=cycle.peak_median(name),
        load_peak_bytes_max=cycle.peak_max(name),
        resident_bytes=cycle.resident_bytes[name],
    )
    return record


def _measure_load(
    name: str,
    load: Callable[[], Any],
    length: int,
    config: ScaleConfig,
    stopped: dict[str, str],
) -> Record:
    record = _base_record(name, length, config)
    record.update(stopped=name in stopped, note=stopped.get(name, ""))
    if name in stopped:
        return record
    first = time_once(load)
    if first / 1000 > config.limit_s:
        reason = (
            f"one load of {length:,} events took {first / 1000:.1f} s"
            f" (> {config.limit_s:.0f} s): not run at longer logs"
        )
        stopped[name] = f"not run: {reason}"
        record.update(load_ms_p50=first, load_ms_p95=first, load_runs=1, note=reason)
        return record
    timing = time_runs(
        load,
        budget_s=max(config.load_budget_s - first / 1000, 0),
        min_runs=3 if first < 2_000 else 1,
        first_ms=first,
    )
    record.update(load_ms_p50=timing.p50_ms, load_ms_p95=timing.p95_ms, load_runs=timing.runs)
    if first / 1000 <= config.memory_limit_s:
        peak, result = peak_memory(load)
        record.update(
            load_peak_bytes=peak, load_peak_bytes_max=peak, resident_bytes=deep_size(result)
        )
        del result
    else:
        record["note"] = (
            f"memory not measured: one load took {first / 1000:.0f} s"
            f" (> {config.memory_limit_s:.0f} s)"
        )
    return record


def targets(records: Sequence[Record]) -> list[Record]:
    """Check the issue's targets against one run's records (ratios)."""
    loads = {(r["system"], r["events"]): r for r in records if r["kind"] == "load"}
    appends = {(r["system"], r["events"]): r for r in records if r["kind"] == "append"}
    lengths = sorted({e for _, e in loads})
    out: list[Record] = []
    if not lengths:
        return out
    small, large = lengths[0], lengths[-1]

    def value(system: str, events: int, key: str) -> float | None:
        r = loads.get((system, events))
        v = r.get(key) if r else None
        return float(v) if v else None

    def target(name: str, measured: float | None, limit: float, higher: bool, how: str) -> None:
        met = None if measured is None else (measured >= limit if higher else measured <= limit)
        out.append(
            {
                "bench": "scale",
                "kind": "target",
                "target": name,
                "measured": measured,
                "limit": limit,
                "comparison": ">=" if higher else "<=",
                "met": met,
                "how": how,
            }
        )

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    target(
        f"snaptail load({large:,}) / load({small:,})",
        ratio(value("snaptail", large, "load_ms_p50"), value("snaptail", small, "load_ms_p50")),
        1.5,
        False,
        "p50 load times",
    )
    target(
        f"snaptail peak memory loading {large:,} / loading {small:,}",
        ratio(
            value("snaptail", large, "load_peak_bytes"),
            value("snaptail", small, "load_peak_bytes"),
        ),
        1.2,
        False,
        "tracemalloc peaks (median over the heads of one snapshot cycle)",
    )
    speedups = [
        ratio(value("stock", n, "load_ms_p50"), value("snaptail", n, "load_ms_p50"))
        for n in lengths
    ]
    known = [s for s in speedups if s is not None]
    target(
        "eventsourcing (b) load / snaptail load, same interval (worst length)",
        min(known) if known else None,
        3.0,
        True,
        "p50 load times at each length; the smallest ratio",
    )
    def worst_ratio(ours: str, floor: str) -> float | None:
        known = [
            r
            for n in lengths
            if (r := ratio(value(ours, n, "load_ms_p50"), value(floor, n, "load_ms_p50")))
            is not None
        ]
        return max(known) if known else None

    target(
        "snaptail load (a') / floor (e'), recent_events=0 (worst length)",
        worst_ratio("snaptail-no-recent", "floor-no-recent"),
        2.0,
        False,
        "p50 load times at each length; the largest ratio",
    )
    target(
        "snaptail load (a), default cache / floor (e), same rows (worst length)",
        worst_ratio("snaptail", "floor"),
        2.5,
        False,
        "p50 load times at each length; the largest ratio",
    )
    tiny = {r["system"]: r for r in records if r["kind"] == "tiny-load"}
    if tiny:
        target(
            "tiny state: snaptail load (a') / floor (e'), recent_events=0",
            ratio(
                tiny.get("snaptail-no-recent", {}).get("load_ms_p50"),
                tiny.get("floor-no-recent", {}).get("load_ms_p50"),
            ),
            2.0,
            False,
            "median of many loads of a 5-event agent (snapshot + 2 events), in turns",
        )
    ours_rate = _total_rate(appends, "snaptail")
    stock_rate = _total_rate(appends, "stock")
    target(
        "snaptail append / eventsourcing (b) append, 100 events per save",
        ratio(ours_rate, stock_rate),
        3.0,
        True,
        "events per second spent in save(), all lengths",
    )
    for floor, rows in (("floor", "same rows"), ("floor-events", "event rows only")):
        floor_rate = _total_rate(appends, floor)
        if floor_rate is not None:
            target(
                f"{floor} append ({rows}) / snaptail append, 100 events per save",
                ratio(floor_rate, ours_rate),
                2.0,
                False,
                "events per second spent in save(), all lengths",
            )
    return out


def _total_rate(appends: dict[tuple[str, int], Record], system: str) -> float | None:
    events = 0.0
    seconds = 0.0
    for (name, _), r in appends.items():
        if name == system and r["append_events_per_s"]:
            events += r["append_events"]
            seconds += r["append_events"] / r["append_events_per_s"]
    return events / seconds if seconds else None

"""``snaptail bench intervals``: what a snapshot interval costs (appends, storage) and
buys (load time, memory), over log lengths; then an interval recommended for a target.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from snaptail.bench.run import BenchRun, Record, TimedWriter, file_bytes, sample_cycle
from snaptail.bench.systems import SnaptailSystem
from snaptail.domain.agent import Agent
from snaptail.infrastructure.recorder import StoredSnapshot
from snaptail.snapshots import checksum, encode_state

DEFAULT_INTERVALS: tuple[int | None, ...] = (None, 10, 50, 100, 250, 1000)
DEFAULT_BATCH = 10  # about one chat turn per save
DEFAULT_LENGTHS = (1_000, 10_000, 100_000)
QUICK_LENGTHS = (1_000, 5_000)
# Candidate intervals for the recommendation, largest first.
NICE_INTERVALS = (10_000, 5_000, 2_000, 1_000, 500, 250, 200, 100, 50, 25, 20, 10, 5, 2, 1)


@dataclass(frozen=True)
class IntervalsConfig:
    intervals: Sequence[int | None] = DEFAULT_INTERVALS
    lengths: Sequence[int] = DEFAULT_LENGTHS
    batch: int = DEFAULT_BATCH
    seed: int = 42
    target_ms: float = 5.0
    positions: int = 20  # heads per snapshot cycle at which loads are timed
    repeats: int = 5  # timed loads at each head (median kept)


def interval_label(interval: int | None) -> str:
    return "none" if interval is None else str(interval)


def run_intervals(config: IntervalsConfig, run: BenchRun) -> list[Record]:
    """Measure every interval at every log length; returns the records (one per
    measurement) followed by one recommendation record."""
    lengths = sorted(set(config.lengths))
    measurements: list[Record] = []
    for interval in config.intervals:
        measurements.extend(_sweep_one(interval, lengths, config, run))
    recommendation = recommend(measurements, config.target_ms, config.batch)
    if recommendation is not None:
        run.emit(recommendation)
    return measurements


def _sweep_one(
    interval: int | None, lengths: list[int], config: IntervalsConfig, run: BenchRun
) -> list[Record]:
    label = interval_label(interval)
    path = run.fresh_db(f"intervals-{label}")
    system = SnaptailSystem(path, interval)
    writer = TimedWriter(system.save, config.seed, config.batch)
    snapshots = {"written": 0, "newest": 0}

    def count_snapshot(_: Any) -> None:
        newest = system.newest_snapshot(writer.agent.id)
        if newest != snapshots["newest"]:
            snapshots["written"] += 1
            snapshots["newest"] = newest

    records: list[Record] = []
    try:
        with run.task(f"interval {label}: writing", total=lengths[-1]) as task:
            for length in lengths:
                run.progress.update(task, description=f"interval {label}: writing {length:,}")
                written, seconds = writer.write_to(
                    length,
                    on_progress=lambda n: run.progress.advance(task, n),
                    after_save=count_snapshot,
                )
                run.progress.update(task, description=f"interval {label}: loading {length:,}")
                agent_id = writer.agent.id

                def load(agent_id: UUID = agent_id) -> Any:
                    return system.load(agent_id)

                cycle = sample_cycle(
                    [writer],
                    {"snaptail": load},
                    cycle=interval or 1,
                    positions=config.positions if interval else 1,
                    repeats=config.repeats if interval else 3,
                    after_save=count_snapshot,
                )
                agent = load()
                write_ms = (
                    snapshot_write_ms(system, agent) if interval and length == lengths[-1] else None
                )
                record = run.emit(
                    {
                        "bench": "intervals",
                        "kind": "measurement",
                        "system": "snaptail",
                        "interval": interval,
                        "events": length,
                        "batch": config.batch,
                        "append_events": written,
                        "append_events_per_s": written / seconds if seconds > 0 else None,
                        "load_ms_p50": cycle.p50("snaptail"),
                        "load_ms_p95": cycle.p95("snaptail"),
                        "load_runs": cycle.positions * cycle.repeats,
                        "heads": cycle.positions,
                        "load_peak_bytes": cycle.peak_median("snaptail"),
                        "load_peak_bytes_max": cycle.peak_max("snaptail"),
                        "resident_bytes": cycle.resident_bytes["snaptail"],
                        "snapshot_bytes": len(encode_state(agent)),
                        "snapshot_write_ms": write_ms,
                        "storage_bytes": file_bytes(path),
                        "snapshots_written": snapshots["written"],
                        "snapshots_kept": system.snapshots_kept(agent_id),
                        "snapshot_version": snapshots["newest"],
                    }
                )
                del agent
                records.append(record)
    finally:
        system.close()
    return records


def recommend(measurements: Sequence[Record], target_ms: float, batch: int) -> Record | None:
    """Choose the largest interval whose worst-case load stays within ``target_ms``,
    from measured costs at the longest log.

    * fold cost per tail event and base cost: a least-squares line through the load
      p50 of each snapshot interval against its median tail (``(n - 1) / 2`` events,
      0 when every save snapshots); the intercept is the base cost (queries, snapshot
      decode, recent-event cache). With fewer than two intervals, the slope of the
      full-replay loads (no snapshots) against log length is used instead;
    * worst-case load for interval ``n``: base + fold x (n - 1) (the longest tail);
    * never an interval at or above the smallest one whose measured p95 load at the
      longest log missed the target (the table would contradict the advice);
    * snapshot write cost: encoding the state plus inserting the row in a transaction
      of its own (the median over the intervals).
    """
    longest = max((r["events"] for r in measurements), default=0)
    at_longest = [r for r in measurements if r["events"] == longest]
    snapshotted = [r for r in at_longest if r["interval"] is not None]
    unsnapshotted = sorted(
        (r for r in measurements if r["interval"] is None), key=lambda r: r["events"]
    )
    points = [
        ((r["interval"] - 1) / 2 if r["interval"] > batch else 0.0, r["load_ms_p50"])
        for r in snapshotted
    ]
    fit = _line(points)
    if fit is not None:
        base_ms, fold_ms = fit
        source = "tails"
    elif len(unsnapshotted) >= 2 and snapshotted:
        first, last = unsnapshotted[0], unsnapshotted[-1]
        fold_ms = (last["load_ms_p50"] - first["load_ms_p50"]) / (last["events"] - first["events"])
        base_ms = min(r["load_ms_p50"] for r in snapshotted)
        source = "full replays"
    else:
        return None
    fold_ms = max(fold_ms, 1e-6)
    base_ms = max(base_ms, min(r["load_ms_p50"] for r in snapshotted) / 2)
    none_rate = next((r["append_events_per_s"] for r in at_longest if r["interval"] is None), None)
    write_costs = sorted(
        r["snapshot_write_ms"] for r in snapshotted if r.get("snapshot_write_ms") is not None
    )
    snapshot_write_ms = write_costs[len(write_costs) // 2] if write_costs else None
    # Never an interval at or past one this run measured missing the target (its
    # p95 over it): the prediction is a fit, the table is what was seen.
    missed = [
        r["interval"]
        for r in snapshotted
        if r.get("load_ms_p95") is not None and r["load_ms_p95"] > target_ms
    ]
    ceiling = min(missed) if missed else None
    chosen = None
    for n in NICE_INTERVALS:
        if ceiling is not None and n >= ceiling:
            continue
        if base_ms + fold_ms * (n - 1) <= target_ms:
            chosen = n
            break
    reachable = chosen is not None
    if chosen is None:
        chosen = NICE_INTERVALS[-1]
    per_event_save_ms = 1000 / none_rate if none_rate else None
    overhead = (
        (snapshot_write_ms / chosen) / per_event_save_ms
        if snapshot_write_ms is not None and per_event_save_ms
        else None
    )
    return {
        "bench": "intervals",
        "kind": "recommendation",
        "target_ms": target_ms,
        "recommended_interval": chosen,
        "target_reachable": reachable,
        "predicted_worst_load_ms": base_ms + fold_ms * (chosen - 1),
        "fold_ms_per_event": fold_ms,
        "fold_measured_from": source,
        "base_load_ms": base_ms,
        "snapshot_write_ms": snapshot_write_ms,
        "append_overhead": overhead,
        "events": longest,
        # the smallest interval measured missing the target (None: none missed it)
        "missed_at_interval": ceiling,
    }


def snapshot_write_ms(system: SnaptailSystem, agent: Agent, runs: int = 15) -> float:
    """What one snapshot adds to a save, in milliseconds: encoding ``agent``'s state
    (median of ``runs``), plus what inserting its bytes costs over inserting an empty
    row (medians; a save writes its snapshot inside the transaction of its events, so
    the transaction's fixed cost, mostly the commit's fsync, is not the snapshot's).
    Rows go to scratch agent ids of the same database and are deleted afterwards.
    """
    real_id, empty_id = uuid4(), uuid4()
    encode: list[float] = []
    real: list[float] = []
    empty: list[float] = []
    for version in range(1, runs + 1):
        started = time.perf_counter()
        data = encode_state(agent)
        encode.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        _insert_scratch(system, real_id, version, data)
        real.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        _insert_scratch(system, empty_id, version, b"")
        empty.append((time.perf_counter() - started) * 1000)
    for scratch in (real_id, empty_id):
        system.store.prune_snapshots(scratch, 0)
    extra_bytes_ms = max(statistics.median(real) - statistics.median(empty), 0.0)
    return statistics.median(encode) + extra_bytes_ms


def _insert_scratch(system: SnaptailSystem, agent_id: UUID, version: int, data: bytes) -> None:
    system.store.put_snapshot(
        StoredSnapshot(
            originator_id=agent_id,
            originator_version=version,
            topic="bench:scratch",
            fingerprint="",
            checksum=checksum(data),
            state=data,
        ),
        keep=1,
    )


def _line(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares ``(intercept, slope)`` through ``points``; None if x never varies."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return mean_y - slope * mean_x, slope

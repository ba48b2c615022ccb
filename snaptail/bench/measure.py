"""Measuring helpers: repeated timings (p50/p95), peak traced memory, deep object size."""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from types import BuiltinFunctionType, CodeType, FunctionType, MethodType, ModuleType
from typing import Any

_NOT_OWNED = (type, ModuleType, FunctionType, BuiltinFunctionType, MethodType, CodeType)


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated runs of one operation, in milliseconds."""

    runs: int
    p50_ms: float
    p95_ms: float


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, interpolated linearly."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def time_runs(
    operation: Callable[[], Any],
    *,
    budget_s: float,
    min_runs: int = 3,
    max_runs: int = 50,
    first_ms: float | None = None,
) -> Timing:
    """Run ``operation`` repeatedly (at least ``min_runs``, then until ``budget_s``
    seconds are spent or ``max_runs`` are done) and return its p50 and p95.

    ``first_ms``, if given, is a time already measured for one run and counts as one.
    """
    samples: list[float] = [] if first_ms is None else [first_ms]
    started = time.perf_counter()
    while len(samples) < max_runs:
        if len(samples) >= min_runs and time.perf_counter() - started >= budget_s:
            break
        t0 = time.perf_counter()
        result = operation()
        samples.append((time.perf_counter() - t0) * 1000)
        del result
    return Timing(len(samples), statistics.median(samples), percentile(samples, 0.95))


def time_once(operation: Callable[[], Any]) -> float:
    """Milliseconds taken by one run of ``operation`` (its result is dropped)."""
    gc.collect()
    t0 = time.perf_counter()
    result = operation()
    elapsed = (time.perf_counter() - t0) * 1000
    del result
    return elapsed


def peak_memory(operation: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes allocated at the peak of one run of ``operation`` (tracemalloc), above
    what was allocated before it started; also returns the operation's result."""
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = operation()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(peak - before, 0), result


def deep_size(root: object) -> int:
    """Bytes held by ``root`` and everything it references (each object once),
    excluding classes, functions and modules (shared, not owned).

    Not ``domain.memory.deep_sizeof``: the benchmark measures other systems' objects
    too, so it walks ``gc.get_referents`` of anything, the same way for every system."""
    seen: set[int] = set()
    stack: list[object] = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _NOT_OWNED):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, str | bytes | bytearray | int | float | bool):
            continue
        stack.extend(gc.get_referents(obj))
    return total

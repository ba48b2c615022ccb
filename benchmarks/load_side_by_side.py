"""Loads of one database by two checkouts of snaptail, side by side, in turns.

    python -m benchmarks.load_side_by_side OLD_DIR [NEW_DIR] [--rounds 30] [--runs 100]

``OLD_DIR`` and ``NEW_DIR`` each hold a ``snaptail`` package (for the code of a
commit: ``git archive COMMIT snaptail | tar -x -C OLD_DIR``; ``NEW_DIR`` defaults to
this checkout). One worker process per checkout loads the same agents from the same
SQLite file; each round every case runs ``--runs`` loads in each worker, the workers
taking turns (the order alternating by round). Prints the median of all loads per
case and checkout (ms), their ratio, and each against the floor (plain ``sqlite3`` +
msgspec, ``snaptail.bench.systems.Floor``) measured in the same turns. All this is
done ``--processes`` times with fresh workers, each pair with its own hash seed and
both of a pair pinned to one core (the pairs going round the cores): one
process's memory layout alone moved a checkout's median by 6-40% on a quiet machine,
so the median of the pairs' ratios, with their range, is printed too.

Cases: a 1,050-event agent of the bench workload (head 50 past its snapshot at
1,000) with ``recent_events=0`` and with the default cache; the tiny agent of
``snaptail bench scale`` (snapshot at 3, two-event tail) with ``recent_events=0``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

HERE = Path(__file__).resolve().parent.parent
CASES = ("big-no-recent", "big-default", "tiny-no-recent")
FLOORS = {"big-no-recent": "floor-big-no-recent", "big-default": "floor-big",
          "tiny-no-recent": "floor-tiny"}  # fmt: skip


def seed(path: Path) -> dict[str, str]:
    """Write the two agents into a fresh database at ``path``; their ids."""
    from snaptail import AgentStore
    from snaptail.bench.run import TimedWriter
    from snaptail.bench.systems import tiny_agent

    with AgentStore(f"sqlite:///{path}", snapshot_every=100) as store:
        writer = TimedWriter(store.save, 42, 100)
        writer.write_to(1_000 - 1)
        writer.write_to(1_050 - 1, batch=1)
        big = writer.agent
        infos = store.snapshot_infos(big.id)
        print(f"big agent: version {big.version}, snapshot at {infos[0].originator_version}")
        tiny = tiny_agent(store)
    return {"big": str(big.id), "tiny": str(tiny.id)}


def worker(path: str, ids: dict[str, str]) -> None:
    """Serve ``CASE RUNS`` lines on stdin: run the loads, answer their times (ms)."""
    import snaptail
    from snaptail import AgentStore

    print(f"worker: {Path(snaptail.__file__).parent}", file=sys.stderr)
    if os.environ.get("SIDE_BY_SIDE_GC") == "off":  # to see what collection costs
        import gc

        gc.disable()
    from snaptail.bench.systems import Floor, connect

    big, tiny = UUID(ids["big"]), UUID(ids["tiny"])
    default = AgentStore(f"sqlite:///{path}")
    no_recent = AgentStore(f"sqlite:///{path}", recent_events=0)
    connection = connect(Path(path))
    floor, floor_no_recent = Floor(connection), Floor(connection, recent_events=0)
    loads: dict[str, Any] = {
        "big-no-recent": lambda: no_recent.get(big),
        "big-default": lambda: default.get(big),
        "tiny-no-recent": lambda: no_recent.get(tiny),
        "floor-big-no-recent": lambda: floor_no_recent.load(big),
        "floor-big": lambda: floor.load(big),
        "floor-tiny": lambda: floor_no_recent.load(tiny),
    }
    clock = time.perf_counter
    for line in sys.stdin:
        case, runs = line.split()
        load = loads[case]
        times = []
        for _ in range(int(runs)):
            started = clock()
            load()
            times.append((clock() - started) * 1000)
        print(json.dumps(times), flush=True)


def start_workers(
    old: str, new: str, path: Path, ids: dict[str, str], tmp: str, seed_: int, cpu: int
) -> dict[str, subprocess.Popen[str]]:
    """One worker process per checkout, both with hash seed ``seed_``, both on ``cpu``."""
    workers = {}
    for name, root in (("old", old), ("new", new)):
        env = dict(os.environ, PYTHONPATH=f"{Path(root).resolve()}{os.pathsep}{HERE}",
                   PYTHONHASHSEED=str(seed_))  # fmt: skip
        workers[name] = subprocess.Popen(
            [sys.executable, "-c",
             # An editable install's import hook would win over PYTHONPATH: drop it.
             "import sys, json; sys.meta_path[:] = [f for f in sys.meta_path"
             " if 'editable' not in getattr(f, '__module__', '').lower()];"
             " from benchmarks.load_side_by_side import worker;"
             f" worker({str(path)!r}, json.loads({json.dumps(ids)!r}))"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp,
        )  # fmt: skip
        if hasattr(os, "sched_setaffinity"):  # both on one core: cores differ here
            os.sched_setaffinity(workers[name].pid, {cpu})
    return workers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default=str(HERE))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument(
        "--processes", type=int, default=5,
        help="fresh worker pairs, one after another, each with its own hash seed: one"
        " process's memory layout moves its loads by up to 40%% (seen 2026-12-04)",
    )  # fmt: skip
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    args = parser.parse_args()
    cases = [*args.cases, *(FLOORS[case] for case in args.cases)]
    times: dict[tuple[str, str], list[float]] = {}
    pair_ratios: dict[str, list[float]] = {case: [] for case in args.cases}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "side-by-side.db"
        ids = seed(path)
        for process_pair in range(args.processes):
            cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
            workers = start_workers(
                args.old, args.new, path, ids, tmp, process_pair + 1,
                cpus[process_pair % len(cpus)],
            )  # fmt: skip

            def turn(name: str, case: str, runs: int, workers: Any = workers) -> list[float]:
                process = workers[name]
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(f"{case} {runs}\n")
                process.stdin.flush()
                return list(json.loads(process.stdout.readline()))

            for name in workers:  # warm up
                for case in cases:
                    turn(name, case, 50)
            mine: dict[tuple[str, str], list[float]] = {}
            for round_ in range(args.rounds):
                order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
                for case in cases:
                    for name in order:
                        mine.setdefault((name, case), []).extend(turn(name, case, args.runs))
            for process in workers.values():
                assert process.stdin is not None
                process.stdin.close()
                process.wait()
            for key, values in mine.items():
                times.setdefault(key, []).extend(values)
            for case in args.cases:
                ratio = statistics.median(mine[("new", case)]) / statistics.median(
                    mine[("old", case)]
                )
                pair_ratios[case].append(ratio)
            print(f"pair {process_pair + 1}: new/old "
                  + ", ".join(f"{case} {pair_ratios[case][-1]:.3f}" for case in args.cases),
                  flush=True)  # fmt: skip
    median = {key: statistics.median(values) for key, values in times.items()}
    print(
        f"{args.processes} worker pairs x {args.rounds} rounds x {args.runs} loads per case"
        " and checkout; medians in ms"
    )
    print("case            old      new   new/old  old/floor new/floor  pairs' new/old (min-max)")
    for case in args.cases:
        old, new = median[("old", case)], median[("new", case)]
        floor = statistics.median(times[("old", FLOORS[case])] + times[("new", FLOORS[case])])
        ratios = pair_ratios[case]
        print(
            f"{case:14} {old:7.4f} {new:7.4f}  {new / old:6.3f}   {old / floor:6.2f}"
            f"   {new / floor:6.2f}   {statistics.median(ratios):.3f}"
            f" ({min(ratios):.3f}-{max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()

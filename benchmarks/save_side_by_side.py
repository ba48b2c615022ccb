"""One-event saves by two checkouts of snaptail, side by side, in turns.

    python -m benchmarks.save_side_by_side OLD_DIR [NEW_DIR] [--rounds 10] [--saves 3000]
        [--url :memory:]

``OLD_DIR`` and ``NEW_DIR`` each hold a ``snaptail`` package (for a commit: ``git
archive COMMIT snaptail | tar -x -C OLD_DIR``; ``NEW_DIR`` defaults to this checkout).
Each round runs one child process per checkout (the order alternating by round); a
child saves one agent 200 times to warm up, then times ``--saves`` saves of one event
each. Prints each checkout's median microseconds per save and their ratio (NEW/OLD).
Written for issue 19's save-id retention (time-ordered save ids, a prune check per
save): the save path's cost beside the code before it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from snaptail import Agent, AgentStore
with AgentStore(sys.argv[3]) as store:
    agent = Agent("bench")
    store.save(agent)
    for _ in range(200):
        agent.add_input("user", "warm")
        store.save(agent)
    n = int(sys.argv[2])
    started = time.perf_counter()
    for _ in range(n):
        agent.add_input("user", "hello")
        store.save(agent)
    print((time.perf_counter() - started) / n * 1e6)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default=str(HERE))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--saves", type=int, default=3000)
    parser.add_argument("--url", default=":memory:", help="or 'file' for a fresh SQLite file")
    args = parser.parse_args()
    trees = {"old": args.old, "new": args.new}
    times: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for name in order:
                url = args.url
                if url == "file":
                    url = f"sqlite:///{tmp}/{name}-{r}.db"
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, trees[name], str(args.saves), url],
                    capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
                times[name].append(float(out))
    for name, values in times.items():
        shown = " ".join(f"{v:.0f}" for v in values)
        print(f"{name:>4} {trees[name]}: median {statistics.median(values):.1f} us/save ({shown})")
    ratio = statistics.median(times["new"]) / statistics.median(times["old"])
    print(f"new/old: {ratio:.3f}")


if __name__ == "__main__":
    main()

"""Where a LangGraph step's time goes as a SnaptailSaver thread grows: the saver's
methods (lock waits included), the garbage collector, and the step as a whole.

    python -m benchmarks.langgraph_profile --steps 3000 --every 500

One thread of the ``snaptail bench langgraph`` chat graph on SQLite (a temporary file).
"""

from __future__ import annotations

import argparse
import collections
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from snaptail.bench.langgraph import chat_graph, human, thread_config
from snaptail.integrations.langgraph import SnaptailSaver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        saver = SnaptailSaver(f"sqlite:///{Path(tmp) / 'profile.db'}")
        spent: dict[str, float] = collections.defaultdict(float)
        for name in ("put", "put_writes", "get_tuple"):
            method = getattr(saver, name)

            def timed(*a: Any, _method: Any = method, _name: str = name, **k: Any) -> Any:
                started = time.perf_counter()
                try:
                    return _method(*a, **k)
                finally:
                    spent[_name] += time.perf_counter() - started

            setattr(saver, name, timed)
        collecting: dict[str, float] = {"ms": 0.0, "full": 0.0, "since": 0.0}

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                collecting["since"] = time.perf_counter()
                return
            collecting["ms"] += (time.perf_counter() - collecting["since"]) * 1000
            collecting["full"] += 1.0 if info["generation"] == 2 else 0.0

        gc.callbacks.append(on_gc)
        config = thread_config("profile")
        graph = chat_graph(saver)
        started = time.perf_counter()
        for step in range(1, args.steps + 1):
            graph.invoke({"messages": [human(step)]}, config)
            if step % args.every == 0:
                n = args.every
                per_step = (time.perf_counter() - started) * 1000 / n
                methods = ", ".join(f"{k} {v * 1000 / n:.1f}" for k, v in sorted(spent.items()))
                print(
                    f"{step} steps: {per_step:.1f} ms/step; saver ms/step: {methods};"
                    f" gc {collecting['ms'] / n:.1f} ms/step ({collecting['full']:.0f} full)",
                    flush=True,
                )
                spent.clear()
                collecting.update(ms=0.0, full=0)
                started = time.perf_counter()
        gc.disable()
        started = time.perf_counter()
        for step in range(args.steps + 1, args.steps + 21):
            graph.invoke({"messages": [human(step)]}, config)
        print(f"20 more steps, collector off: {(time.perf_counter() - started) * 50:.1f} ms/step")
        gc.enable()
        saver.close()


if __name__ == "__main__":
    main()

"""Encryption on against off, side by side in one run (issue 20; goal: at most 1.3x).

    python -m benchmarks.encryption [--rounds 10] [--runs 50] [--appends 2000] [--json FILE]

Two SQLite files in one temporary directory hold the same workload (``Workload`` seed
42): one written by a store without a key store, one by a store with a key store
(its own SQLite file) whose agents have a data subject, so every event payload and
snapshot is sealed with AES-256-GCM. Each round, in alternating order:

- **load**: ``--runs`` loads (``store.get``, default ``recent_events=100``) of the
  1,050-event agent (snapshot at 1,000, a 50-event tail), then of a 20-event agent
  (snapshot at 20: the snapshot alone);
- **batched append**: a new agent gets ``--appends`` events of the workload, saved
  100 at a time (only the saves are timed; the workload is generated the same way).

Prints the median load (ms) and append rate (events/s) of each side, and their ratio
(on/off: the cost of encryption). In the same rounds, **cipher calls alone**: the
``AESGCM.decrypt`` calls a load of the 1,050-event agent makes (its snapshot and
each tail row: nonce, ciphertext and associated data sliced beforehand), with its
data key from the key store, timed as ``--runs`` loads are: the floor of what
encryption adds to that load, given one sealed value per row. Printed as its median
time, the off-side load plus it over the off-side load (the lowest ratio one call per
row allows), and the time encryption adds that is not those calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from snaptail import Agent, AgentStore
from snaptail.bench.run import TimedWriter
from snaptail.privacy import is_sealed

MASTER = os.urandom(32)


def open_store(directory: Path, encrypted: bool) -> AgentStore:
    name = "on" if encrypted else "off"
    keys = f"sqlite:///{directory / 'keys.db'}" if encrypted else None
    return AgentStore(
        f"sqlite:///{directory / f'{name}.db'}", snapshot_every=100, keys=keys, master_key=MASTER
    )


def writer(store: AgentStore, seed: int, subject: str | None) -> TimedWriter:
    timed = TimedWriter(store.save, seed, 100)
    if subject is not None:
        store.add_subject(timed.agent, subject)
    return timed


def seed(store: AgentStore, encrypted: bool) -> dict[str, UUID]:
    subject = "user-bench" if encrypted else None
    big = writer(store, 42, subject)
    big.write_to(1_000 - 1)
    big.write_to(1_050 - 1, batch=1)
    small = writer(store, 7, subject)
    small.write_to(20 - 1)
    store.snapshot(small.agent.id)
    sealed = is_sealed(store.read_rows(big.agent.id, limit=1)[0].state)
    assert sealed == encrypted, "the encrypted side must store sealed payloads"
    return {"big": big.agent.id, "small": small.agent.id}


def time_loads(store: AgentStore, agent_id: UUID, runs: int) -> list[tuple[float, float]]:
    """(wall ms, CPU ms of this process) of each load."""
    times = []
    wall, cpu = time.perf_counter, time.process_time
    for _ in range(runs):
        started, started_cpu = wall(), cpu()
        store.get(agent_id)
        times.append(((wall() - started) * 1000, (cpu() - started_cpu) * 1000))
    return times


def time_opening(store: AgentStore, agent_id: UUID, runs: int) -> list[float]:
    """Wall ms spent opening sealed bytes (``open_rows`` for the tail,
    ``open_snapshot``) inside each of ``runs`` loads: the decrypt calls as a load makes
    them, with their slicing; timed by wrapping the store's cipher for these loads
    only (not those :func:`time_loads` times)."""
    cipher = store.mapper.payload_cipher
    assert cipher is not None
    spent = [0.0]
    wall = time.perf_counter

    def timed(method: Any) -> Any:
        def call(*args: Any) -> Any:
            started = wall()
            try:
                return method(*args)
            finally:
                spent[0] += wall() - started

        return call

    cipher.open_rows = timed(cipher.open_rows)  # type: ignore[method-assign]
    cipher.open_snapshot = timed(cipher.open_snapshot)  # type: ignore[method-assign]
    times = []
    try:
        for _ in range(runs):
            spent[0] = 0.0
            store.get(agent_id)
            times.append(spent[0] * 1000)
    finally:
        del cipher.open_rows, cipher.open_snapshot
    return times


def cipher_calls(store: AgentStore, agent_id: UUID) -> list[tuple[Any, ...]]:
    """The arguments of each ``decrypt`` a load of ``agent_id`` makes (its latest
    snapshot, then each row after it), sliced as the sealed layout says:
    ``0xC1 0x01 nonce(12) ciphertext+tag``, associated data kind + agent id + version."""
    snapshot = store.recorder.select_snapshot(agent_id, lte=2**62)
    assert snapshot is not None
    rows = store.read_rows(agent_id, after=snapshot.originator_version, limit=10_000)
    sealed = [(b"s", snapshot.originator_version, snapshot.state)]
    sealed += [(b"e", row.originator_version, row.state) for row in rows]
    prefix = agent_id.bytes
    return [
        (data[2:14], data[14:], kind + prefix + version.to_bytes(8, "big"))
        for kind, version, data in sealed
    ]


def time_calls(decrypt: Any, calls: list[tuple[Any, ...]], runs: int) -> list[tuple[float, float]]:
    """(wall ms, CPU ms) of each run of ``calls``, as :func:`time_loads`."""
    times = []
    wall, cpu = time.perf_counter, time.process_time
    for _ in range(runs):
        started, started_cpu = wall(), cpu()
        for nonce, data, aad in calls:
            decrypt(nonce, data, aad)
        times.append(((wall() - started) * 1000, (cpu() - started_cpu) * 1000))
    return times


def time_append(
    store: AgentStore, encrypted: bool, events: int, round_: int
) -> tuple[float, float]:
    """(events per second of wall time in save(), and of this process's CPU time)."""
    timed = writer(store, 1000 + round_, f"user-append-{round_}" if encrypted else None)
    cpu_seconds = 0.0
    save = timed.save

    def counted(agent: Agent) -> None:
        nonlocal cpu_seconds
        started = time.process_time()
        save(agent)
        cpu_seconds += time.process_time() - started

    timed.save = counted  # type: ignore[method-assign]
    written, seconds = timed.write_to(events)
    return written / seconds, written / cpu_seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    loads: dict[tuple[str, str], list[tuple[float, float]]] = {}
    rates: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"off": open_store(Path(tmp), False), "on": open_store(Path(tmp), True)}
        ids = {side: seed(store, side == "on") for side, store in stores.items()}
        keys = stores["on"].keys
        assert keys is not None
        key = keys.agent_key(ids["on"]["big"])
        assert isinstance(key, bytes)
        decrypt = AESGCM(key).decrypt
        calls = cipher_calls(stores["on"], ids["on"]["big"])
        call_times: list[tuple[float, float]] = []
        opening: list[float] = []
        for side, store in stores.items():  # warm up
            for agent_id in ids[side].values():
                time_loads(store, agent_id, 10)
        for round_ in range(args.rounds):
            order = ["off", "on"] if round_ % 2 == 0 else ["on", "off"]
            for case in ("big", "small"):
                for side in order:
                    times = time_loads(stores[side], ids[side][case], args.runs)
                    loads.setdefault((side, case), []).extend(times)
                if case == "big":
                    call_times.extend(time_calls(decrypt, calls, args.runs))
                    opening.extend(time_opening(stores["on"], ids["on"]["big"], args.runs))
            for side in order:
                rates[side].append(time_append(stores[side], side == "on", args.appends, round_))
        for store in stores.values():
            store.close()
    result: dict[str, Any] = {"rounds": args.rounds, "runs": args.runs, "appends": args.appends}
    print(f"{args.rounds} rounds; loads: {args.runs} per case and side (median ms);"
          f" appends: {args.appends} events per round, 100 per save (median events/s)")  # fmt: skip
    print(f"{'case':<34}{'off':>10}{'on':>10}{'on/off':>9}{'CPU on/off':>12}")
    for case, label in (
        ("big", "load 1,050 events (snapshot+50)"),
        ("small", "load 20 events (snapshot only)"),
    ):
        off, on, cpu_off, cpu_on = (
            statistics.median(t[i] for t in loads[(side, case)])
            for i, side in ((0, "off"), (0, "on"), (1, "off"), (1, "on"))
        )
        result[f"load_{case}_ms"] = {
            "off": off, "on": on, "ratio": on / off, "cpu_ratio": cpu_on / cpu_off,
        }  # fmt: skip
        print(f"{label:<34}{off:>10.3f}{on:>10.3f}{on / off:>9.2f}{cpu_on / cpu_off:>12.2f}")
        if case == "big":
            alone, cpu_alone = (statistics.median(t[i] for t in call_times) for i in (0, 1))
            result["cipher_calls_alone_ms"] = {
                "calls": len(calls), "ms": alone, "cpu_ms": cpu_alone,
                "floor_ratio": (off + alone) / off,
                "cpu_floor_ratio": (cpu_off + cpu_alone) / cpu_off,
            }  # fmt: skip
            print(f"{'  its ' + str(len(calls)) + ' decrypt calls alone':<34}{'':>10}"
                  f"{alone:>10.3f}{(off + alone) / off:>9.2f}"
                  f"{(cpu_off + cpu_alone) / cpu_off:>12.2f}  (off + calls) / off")  # fmt: skip
            in_load = statistics.median(opening)
            result["cipher_calls_alone_ms"]["in_load_ms"] = in_load
            print(f"{'  the same, inside the load':<34}{'':>10}{in_load:>10.3f}"
                  f"{(off + in_load) / off:>9.2f}{'':>12}  (with slicing)")  # fmt: skip
            print(f"{'  added by encryption, not those':<34}{'':>10}{on - off - in_load:>10.3f}"
                  f"  (per call: {alone * 1000 / len(calls):.2f} us alone,"
                  f" {in_load * 1000 / len(calls):.2f} us in the load,"
                  f" {(on - off - in_load) * 1000 / len(calls):.2f} us the rest)")  # fmt: skip
    off, on, cpu_off, cpu_on = (
        statistics.median(r[i] for r in rates[side])
        for i, side in ((0, "off"), (0, "on"), (1, "off"), (1, "on"))
    )
    result["append_events_per_s"] = {
        "off": off, "on": on, "ratio": off / on, "cpu_ratio": cpu_off / cpu_on,
    }  # fmt: skip
    print(f"{'batched append (events/s)':<34}{off:>10.0f}{on:>10.0f}{off / on:>9.2f}"
          f"{cpu_off / cpu_on:>12.2f}  (time ratios: on/off)")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

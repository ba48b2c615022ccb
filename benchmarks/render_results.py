"""Render `snaptail bench ... --json` output as the Markdown tables of RESULTS.md.

    python benchmarks/render_results.py benchmarks/results/scale.jsonl \
        benchmarks/results/intervals.jsonl [--write benchmarks/RESULTS.md]

Prints the tables; with ``--write``, replaces the text between the
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers of that file (NAME is
``targets``, ``scale`` or ``intervals``) and leaves everything else alone.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from snaptail.bench.cells import mib_cell, ms_cell, rate_cell

Record = dict[str, Any]

SYSTEM_ORDER = (
    "snaptail",
    "snaptail-no-recent",
    "stock",
    "stock-full",
    "load-everything",
    "floor",
    "floor-no-recent",
)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def scale_markdown(records: list[Record]) -> str:
    loads = [r for r in records if r.get("kind") == "load"]
    lengths = sorted({r["events"] for r in loads})
    labels = {r["system"]: r["label"] for r in loads}
    systems = [s for s in SYSTEM_ORDER if s in labels]
    by = {(r["system"], r["events"]): r for r in loads}

    def cell(system: str, events: int, fmt: str) -> str:
        r = by.get((system, events))
        if r is None:
            return ""
        if r["load_ms_p50"] is None:
            return "not run"
        if fmt == "time":
            return f"{ms_cell(r['load_ms_p50'])} ({ms_cell(r['load_ms_p95'])})"
        if fmt == "peak":
            return mib_cell(r["load_peak_bytes"])
        return mib_cell(r["resident_bytes"])

    header = ["system"] + [f"{n:,} events" for n in lengths]
    parts = ["**Load time, ms: p50 (p95)**", ""]
    parts.append(
        _table(header, [[labels[s]] + [cell(s, n, "time") for n in lengths] for s in systems])
    )
    parts += ["", "**Peak memory while loading (tracemalloc), MiB**", ""]
    parts.append(
        _table(header, [[labels[s]] + [cell(s, n, "peak") for n in lengths] for s in systems])
    )
    parts += ["", "**Memory held by what was loaded (deep size), MiB**", ""]
    parts.append(
        _table(header, [[labels[s]] + [cell(s, n, "held") for n in lengths] for s in systems])
    )
    notes = sorted({f"{labels[r['system']]}: {r['note']}" for r in loads if r.get("note")})
    if notes:
        parts += [""] + [f"- {note}" for note in notes]
    appends = [r for r in records if r.get("kind") == "append"]
    if appends:
        parts += ["", "**Appends** (events per second spent in `save()`; disk = file + WAL)", ""]
        rows = []
        for r in sorted(appends, key=lambda r: (r["events"], r["system"])):
            rate = r["append_events_per_s"]
            rows.append(
                [
                    f"{r['events']:,}",
                    r["system"],
                    str(r["batch"]),
                    f"{r['append_events']:,}",
                    rate_cell(rate),
                    mib_cell(r["storage_bytes"]),
                ]
            )
        header = ["log length", "system", "events/save", "events written", "events/s", "disk MiB"]
        parts.append(_table(header, rows))
    tiny = [r for r in records if r.get("kind") == "tiny-load"]
    if tiny:
        parts += ["", "**An agent with a tiny state** (5 short events, snapshot at 3)", ""]
        rows = [
            [
                r["label"],
                f"{r['load_ms_p50']:.4f}",
                f"{r['load_ms_p95']:.4f}",
                f"{r['load_runs']:,}",
            ]
            for r in tiny
        ]
        parts.append(_table(["system", "p50 ms", "p95 ms", "loads"], rows))
    return "\n".join(parts)


def targets_markdown(records: list[Record]) -> str:
    rows = []
    for r in records:
        if r.get("kind") != "target":
            continue
        measured = "-" if r["measured"] is None else f"{r['measured']:.2f}"
        met = "?" if r["met"] is None else "**met**" if r["met"] else "**missed**"
        rows.append([r["target"], f"{r['comparison']} {r['limit']:g}", measured, met, r["how"]])
    return _table(["target", "limit", "measured", "result", "how"], rows)


def intervals_markdown(records: list[Record]) -> str:
    rows = []
    for r in records:
        if r.get("kind") != "measurement":
            continue
        rate = r["append_events_per_s"]
        rows.append(
            [
                "none" if r["interval"] is None else str(r["interval"]),
                f"{r['events']:,}",
                rate_cell(rate),
                ms_cell(r["load_ms_p50"]),
                ms_cell(r["load_ms_p95"]),
                mib_cell(r["load_peak_bytes"]),
                mib_cell(r["resident_bytes"]),
                f"{r['snapshot_bytes'] / 1024:,.1f}",
                mib_cell(r["storage_bytes"]),
                f"{r['snapshots_written']:,} / {r['snapshots_kept']}",
            ]
        )
    header = [
        "interval",
        "events",
        "append ev/s",
        "load p50 ms",
        "load p95 ms",
        "load peak MiB",
        "agent MiB",
        "snapshot KiB",
        "disk MiB",
        "snapshots written / kept",
    ]
    parts = [_table(header, rows)]
    for r in records:
        if r.get("kind") == "recommendation":
            write = r["snapshot_write_ms"]
            parts += [
                "",
                f"Recommended for a {r['target_ms']:g} ms load target: **snapshot every "
                f"{r['recommended_interval']} events** (predicted worst-case load "
                f"{r['predicted_worst_load_ms']:.2f} ms = base {r['base_load_ms']:.2f} ms + "
                f"{r['recommended_interval'] - 1} tail events x "
                f"{r['fold_ms_per_event'] * 1000:.1f} us fold cost per tail event (a line "
                "fitted through the p50 of each interval against its median tail)"
                + (f"; one snapshot write costs {write:.2f} ms" if write is not None else "")
                + ").",
            ]
    return "\n".join(parts)


def read(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def replace_section(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(\n<!-- /bench:{name} -->)", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"markers for {name!r} not found")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    records = [r for path in args.files for r in read(path)]
    sections: dict[str, str] = {}
    if any(r.get("bench") == "scale" for r in records):
        scale = [r for r in records if r.get("bench") == "scale"]
        sections["targets"] = targets_markdown(scale)
        sections["scale"] = scale_markdown(scale)
    if any(r.get("bench") == "intervals" for r in records):
        sections["intervals"] = intervals_markdown(
            [r for r in records if r.get("bench") == "intervals"]
        )
    if args.write is None:
        for name, body in sections.items():
            print(f"<!-- {name} -->\n{body}\n")
        return
    text = args.write.read_text()
    for name, body in sections.items():
        text = replace_section(text, name, body)
    args.write.write_text(text)


if __name__ == "__main__":
    main()

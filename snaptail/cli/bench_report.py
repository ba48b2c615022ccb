"""Rich tables and matplotlib plots of benchmark records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from snaptail.bench.cells import mib_cell, ms_cell, rate_cell
from snaptail.bench.run import Record
from snaptail.domain.memory import MIB


def intervals_table(records: Sequence[Record]) -> Table:
    table = Table(title="snaptail bench intervals", title_justify="left")
    for column in (
        "interval",
        "events",
        "append/s",
        "p50 ms",
        "p95 ms",
        "peak MiB",
        "held MiB",
        "snap KiB",
        "disk MiB",
        "snaps",
    ):
        table.add_column(column, justify="right")
    for r in records:
        if r["kind"] != "measurement":
            continue
        table.add_row(
            "none" if r["interval"] is None else str(r["interval"]),
            f"{r['events']:,}",
            rate_cell(r["append_events_per_s"]),
            ms_cell(r["load_ms_p50"]),
            ms_cell(r["load_ms_p95"]),
            mib_cell(r["load_peak_bytes"]),
            mib_cell(r["resident_bytes"]),
            f"{r['snapshot_bytes'] / 1024:,.1f}",
            mib_cell(r["storage_bytes"]),
            f"{r['snapshots_written']:,}/{r['snapshots_kept']}",
        )
    return table


def recommendation_text(record: Record) -> str:
    interval = record["recommended_interval"]
    lines = [
        f"Recommended snapshot interval for a {record['target_ms']:g} ms load target: "
        f"every {interval} events",
        f"  predicted worst-case load {record['predicted_worst_load_ms']:.2f} ms = base "
        f"{record['base_load_ms']:.2f} ms + {interval - 1} tail events x "
        f"{record['fold_ms_per_event'] * 1000:.1f} us (fold cost per event, measured from "
        f"{record.get('fold_measured_from', 'tails')})",
    ]
    if record["snapshot_write_ms"] is not None:
        overhead = record["append_overhead"]
        lines.append(
            f"  a snapshot write costs about {record['snapshot_write_ms']:.2f} ms"
            + (f": +{overhead:.0%} on append time at this interval" if overhead else "")
        )
    if not record["target_reachable"]:
        lines.append("  the target is below the base load cost: no interval meets it")
    return "\n".join(lines)


def scale_tables(records: Sequence[Record]) -> list[Table]:
    loads = Table(title="snaptail bench scale: loads", title_justify="left")
    for column in ("events", "system", "p50 ms", "p95 ms", "peak MiB", "held MiB"):
        loads.add_column(column, justify="left" if column == "system" else "right")
    for r in sorted(
        (r for r in records if r["kind"] == "load"), key=lambda r: (r["events"], r["label"])
    ):
        if r["stopped"] and r["load_ms_p50"] is None:
            loads.add_row(f"{r['events']:,}", r["label"], "not run", "", "", "")
            continue
        loads.add_row(
            f"{r['events']:,}",
            r["label"],
            ms_cell(r["load_ms_p50"]),
            ms_cell(r["load_ms_p95"]),
            mib_cell(r["load_peak_bytes"]),
            mib_cell(r["resident_bytes"]),
        )
    appends = Table(title="snaptail bench scale: appends", title_justify="left")
    for column in ("events", "system", "batch", "append/s", "disk MiB"):
        appends.add_column(column, justify="left" if column == "system" else "right")
    for r in records:
        if r["kind"] == "append":
            appends.add_row(
                f"{r['events']:,}",
                r["system"],
                str(r["batch"]),
                rate_cell(r["append_events_per_s"]),
                mib_cell(r["storage_bytes"]),
            )
    tiny = Table(title="snaptail bench scale: an agent with a tiny state", title_justify="left")
    for column in ("events", "system", "p50 ms", "p95 ms", "loads"):
        tiny.add_column(column, justify="left" if column == "system" else "right")
    for r in records:
        if r["kind"] == "tiny-load":
            tiny.add_row(
                f"{r['events']:,}",
                r["label"],
                f"{r['load_ms_p50']:.4f}",
                f"{r['load_ms_p95']:.4f}",
                f"{r['load_runs']:,}",
            )
    return [loads, appends, tiny] if tiny.row_count else [loads, appends]


def targets_table(records: Sequence[Record]) -> Table:
    table = Table(title="targets (ratios in this run)", title_justify="left")
    for column in ("target", "measured", "limit", "met"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for r in records:
        measured = "-" if r["measured"] is None else f"{r['measured']:.2f}"
        met = "?" if r["met"] is None else "[green]met[/]" if r["met"] else "[red]missed[/]"
        table.add_row(r["target"], measured, f"{r['comparison']} {r['limit']:g}", met)
    return table


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'snaptail[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_intervals(records: Sequence[Record], path: Path) -> None:
    """Append throughput and load time (p50) against the snapshot interval, one line
    per log length."""
    plt = _pyplot()
    rows = [r for r in records if r["kind"] == "measurement"]
    intervals: list[int | None] = []
    for r in rows:
        if r["interval"] not in intervals:
            intervals.append(r["interval"])
    labels = ["none" if i is None else str(i) for i in intervals]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for length in sorted({r["events"] for r in rows}):
        by = {r["interval"]: r for r in rows if r["events"] == length}
        xs = [labels[k] for k, i in enumerate(intervals) if i in by]
        left.plot(
            xs,
            [by[i]["append_events_per_s"] or 0 for i in intervals if i in by],
            marker="o",
            label=f"{length:,} events",
        )
        right.plot(
            xs,
            [by[i]["load_ms_p50"] for i in intervals if i in by],
            marker="o",
            label=f"{length:,} events",
        )
    left.set(title="append throughput", xlabel="snapshot interval", ylabel="events/s")
    right.set(title="load time (p50)", xlabel="snapshot interval", ylabel="ms", yscale="log")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_scale(records: Sequence[Record], path: Path) -> None:
    """Load time and peak memory against log length, log-log, one line per system."""
    plt = _pyplot()
    rows = [r for r in records if r["kind"] == "load" and r["load_ms_p50"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["events"])
        label = mine[0]["label"]
        left.plot(
            [r["events"] for r in mine], [r["load_ms_p50"] for r in mine], marker="o", label=label
        )
        with_memory = [r for r in mine if r["load_peak_bytes"]]
        right.plot(
            [r["events"] for r in with_memory],
            [r["load_peak_bytes"] / MIB for r in with_memory],
            marker="o",
            label=label,
        )
    left.set(
        title="load time (p50)", xlabel="events in the log", ylabel="ms", xscale="log", yscale="log"
    )
    right.set(
        title="peak memory while loading",
        xlabel="events in the log",
        ylabel="MiB",
        xscale="log",
        yscale="log",
    )
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def langgraph_table(rows: Sequence[Any]) -> Table:
    """``snaptail bench langgraph`` rows (``LangGraphRow``) as one table."""
    table = Table(title="snaptail bench langgraph: one chat thread", title_justify="left")
    for name in (
        "saver",
        "steps",
        "storage MiB",
        "messages MiB",
        "storage / messages",
        "ms per step",
        "get_state ms",
        "get_state ms (new saver)",
    ):
        table.add_column(name, justify="left" if name == "saver" else "right")
    for row in rows:
        table.add_row(
            row.saver,
            f"{row.steps:,}",
            mib_cell(row.storage_bytes),
            mib_cell(row.message_bytes),
            f"{row.storage_ratio:,.2f}x" if row.storage_bytes else "-",
            ms_cell(row.ms_per_step),
            ms_cell(row.get_state_ms),
            ms_cell(row.get_state_cold_ms),  # "-" when None
        )
    return table

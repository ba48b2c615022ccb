"""Rich tables and matplotlib plots of benchmark records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from snaptail.bench.cells import mib_cell, ms_cell, rate_cell
from snaptail.bench.run import Record
from snaptail.cli.tables import fit
from snaptail.domain.memory import MIB

INTERVALS_DROP_ORDER = ("snaps", "disk MiB", "snap KiB", "held MiB", "peak MiB", "append/s")


def intervals_table(records: Sequence[Record], console: Console | None = None) -> Table:
    """The measurements as a table; with ``console``, fitted to its width (whole
    columns left out in :data:`INTERVALS_DROP_ORDER`, numbers never cut)."""
    headers = ["interval", "events", "append/s", "p50 ms", "p95 ms", "peak MiB", "held MiB",
               "snap KiB", "disk MiB", "snaps"]  # fmt: skip
    cells = [
        dict(
            zip(
                headers,
                (
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
                ),
                strict=True,
            )
        )
        for r in records
        if r["kind"] == "measurement"
    ]

    def build(kept: Sequence[str]) -> Table:
        table = Table(title="snaptail bench intervals", title_justify="left")
        for column in kept:
            table.add_column(column, justify="right", no_wrap=True)
        for cell in cells:
            table.add_row(*(cell[c] for c in kept))
        return table

    if console is None:
        return build(headers)
    return fit(console, headers, INTERVALS_DROP_ORDER, build)


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
    missed = record.get("missed_at_interval")
    if missed is not None:
        lines.append(
            f"  kept below every {missed} events: the table shows that interval's p95 load"
            f" over the target at {record['events']:,} events"
        )
    if not record["target_reachable"]:
        lines.append("  no interval meets the target (it is below the base load cost, or every"
                     " interval measured missed it)")  # fmt: skip
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
    """Write :func:`intervals_figure` to ``path`` (PNG)."""
    plt = _pyplot()
    fig = intervals_figure(records)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# Lines told apart without colour: each series gets its own marker and dash pattern.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DASHES = ("-", "--", "-.", ":")


def _style(k: int) -> dict[str, Any]:
    return {"marker": _MARKERS[k % len(_MARKERS)], "linestyle": _DASHES[k % len(_DASHES)]}


def intervals_figure(records: Sequence[Record]) -> Any:
    """Append throughput and load time (p50) against the snapshot interval (log
    scale), one line per log length; a full replay ("none") is a flat dotted line.
    The load panel marks the target and the recommended interval."""
    plt = _pyplot()
    rows = [r for r in records if r["kind"] == "measurement"]
    recommendation = next((r for r in records if r["kind"] == "recommendation"), None)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for k, length in enumerate(sorted({r["events"] for r in rows})):
        mine = sorted(
            (r for r in rows if r["events"] == length and r["interval"] is not None),
            key=lambda r: r["interval"],
        )
        style = _style(k)
        label = f"{length:,} events"
        lines = left.plot(
            [r["interval"] for r in mine],
            [r["append_events_per_s"] or 0 for r in mine],
            label=label,
            **style,
        )
        right.plot(
            [r["interval"] for r in mine], [r["load_ms_p50"] for r in mine], label=label, **style
        )
        for r in rows:
            if r["events"] == length and r["interval"] is None:
                color = lines[0].get_color()
                left.axhline(r["append_events_per_s"] or 0, color=color, linestyle=":",
                             label=f"{label}, no snapshots")  # fmt: skip
                right.axhline(r["load_ms_p50"], color=color, linestyle=":",
                              label=f"{label}, no snapshots (full replay)")  # fmt: skip
    if recommendation is not None:
        right.axhline(recommendation["target_ms"], color="red", linewidth=1.5,
                      label=f"target {recommendation['target_ms']:g} ms")  # fmt: skip
        every = recommendation["recommended_interval"]
        reached = "" if recommendation["target_reachable"] else " (target not met)"
        for ax in (left, right):
            ax.axvline(every, color="green", linewidth=1.5, linestyle="--",
                       label=f"recommended: every {every}{reached}")  # fmt: skip
    left.set(title="append throughput", xlabel="snapshot interval (events)",
             ylabel="events/s", xscale="log")  # fmt: skip
    right.set(title="load time (p50)", xlabel="snapshot interval (events)", ylabel="ms",
              xscale="log", yscale="log")  # fmt: skip
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_scale(records: Sequence[Record], path: Path) -> None:
    """Write :func:`scale_figure` to ``path`` (PNG)."""
    plt = _pyplot()
    fig = scale_figure(records)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def scale_figure(records: Sequence[Record]) -> Any:
    """Load time and peak memory against log length, log-log, one line per system,
    each with its own marker and dash pattern; a legend on each panel."""
    plt = _pyplot()
    rows = [r for r in records if r["kind"] == "load" and r["load_ms_p50"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for k, system in enumerate(dict.fromkeys(r["system"] for r in rows)):
        mine = sorted((r for r in rows if r["system"] == system), key=lambda r: r["events"])
        label = mine[0]["label"]
        style = _style(k)
        left.plot([r["events"] for r in mine], [r["load_ms_p50"] for r in mine], label=label,
                  **style)  # fmt: skip
        with_memory = [r for r in mine if r["load_peak_bytes"]]
        right.plot(
            [r["events"] for r in with_memory],
            [r["load_peak_bytes"] / MIB for r in with_memory],
            label=label,
            **style,
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
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


LANGGRAPH_DROP_ORDER = ("get_state ms (new saver)", "messages MiB", "storage / messages")


def langgraph_table(rows: Sequence[Any], console: Console | None = None) -> Table:
    """``snaptail bench langgraph`` rows (``LangGraphRow``) as one table; with
    ``console``, fitted to its width (columns left out in :data:`LANGGRAPH_DROP_ORDER`)."""
    headers = ["saver", "steps", "storage MiB", "messages MiB", "storage / messages",
               "ms per step", "get_state ms", "get_state ms (new saver)"]  # fmt: skip
    cells = [
        dict(
            zip(
                headers,
                (
                    row.saver,
                    f"{row.steps:,}",
                    mib_cell(row.storage_bytes),
                    mib_cell(row.message_bytes),
                    f"{row.storage_ratio:,.2f}x" if row.storage_bytes else "-",
                    ms_cell(row.ms_per_step),
                    ms_cell(row.get_state_ms),
                    ms_cell(row.get_state_cold_ms),  # "-" when None
                ),
                strict=True,
            )
        )
        for row in rows
    ]

    def build(kept: Sequence[str]) -> Table:
        table = Table(title="snaptail bench langgraph: one chat thread", title_justify="left")
        for name in kept:
            table.add_column(name, justify="left" if name == "saver" else "right", no_wrap=True)
        for cell in cells:
            table.add_row(*(cell[h] for h in kept))
        return table

    if console is None:
        return build(headers)
    return fit(console, headers, LANGGRAPH_DROP_ORDER, build)

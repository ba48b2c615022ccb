"""Tables that fit the terminal: numbers and ids are never cut or wrapped; when the
table is wider than the terminal, whole columns are dropped in a stated order (the
command's help and caption say which), and free text wraps."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

Build = Callable[[Sequence[str]], Table]


def fit(console: Console, columns: Sequence[str], drop_order: Sequence[str], build: Build) -> Table:
    """``build(kept)`` with the most columns that fit ``console.width``: columns are
    dropped in ``drop_order`` until the table's narrowest rendering fits (the last
    try is returned even if it does not: every droppable column gone)."""
    kept = list(columns)
    table = build(kept)
    for column in drop_order:
        if _width(console, table) <= console.width:
            break
        if column in kept:
            kept.remove(column)
            table = build(kept)
    dropped = [c for c in columns if c not in kept]
    if dropped:
        note = f"columns left out to fit {console.width} columns: {', '.join(dropped)}"
        table.caption = f"{table.caption}\n{note}" if table.caption else note
    return table


def natural_width(table: Table) -> int:
    """The width ``table`` takes when nothing in it is wrapped or cut (its widest
    line, rendered on a console wide enough for all of it)."""
    wide = Console(width=10_000, file=io.StringIO(), color_system=None, legacy_windows=False)
    title, caption = table.title, table.caption
    table.title = table.caption = None  # they wrap to the table's width
    try:
        with wide.capture() as captured:
            wide.print(table)
    finally:
        table.title, table.caption = title, caption
    return max((len(line.rstrip()) for line in captured.get().splitlines()), default=0)


def _width(console: Console, table: Table) -> int:
    return natural_width(table)

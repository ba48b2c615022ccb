"""Table cells of benchmark figures, the same in the terminal and in RESULTS.md."""

from __future__ import annotations

from snaptail.domain.memory import MIB


def ms_cell(value: float | None) -> str:
    """Milliseconds with the digits that matter: ``1,234``, ``12.34``, ``0.123``."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def mib_cell(value: float | None) -> str:
    """Bytes as MiB with two decimals (a column of one unit)."""
    return "-" if value is None else f"{value / MIB:,.2f}"


def rate_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"

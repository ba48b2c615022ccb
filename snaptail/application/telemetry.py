"""What every load reports: a structured log line (key=value) and, if enabled, metrics.

A load logs at DEBUG level. It logs at WARNING when it read more than
``WARN_EVENTS`` events or took longer than the store's ``slow_load_ms``; the
``warn=`` field says which.
"""

from __future__ import annotations

import logging

from snaptail.application import metrics
from snaptail.application.loading import LoadStats
from snaptail.domain.agent import Agent

logger = logging.getLogger("snaptail.store")

# A load reading more events than this logs a warning; so does a save each time an
# agent accumulates this many more events since its last snapshot. Neither warns
# while those events weigh less than the snapshot they follow (a large state under
# GrowWithState: its tail is meant to be long in events, and light beside its state).
WARN_EVENTS = 1000


def tail_outweighs(tail_bytes: int, snapshot_bytes: int) -> bool:
    """Whether a tail of ``tail_bytes`` is worth a warning beside its snapshot."""
    return tail_bytes >= snapshot_bytes


def load_warnings(
    stats: LoadStats, slow_load_ms: float | None, warn_events: int = WARN_EVENTS
) -> list[str]:
    """Why a load deserves a warning (empty: it does not)."""
    reasons = []
    if stats.events_read > warn_events and tail_outweighs(
        stats.bytes_read - stats.snapshot_bytes, stats.snapshot_bytes
    ):
        reasons.append(f"events_read>{warn_events}")
    if slow_load_ms is not None and stats.ms > slow_load_ms:
        reasons.append(f"ms>{slow_load_ms:g}")
    return reasons


def report_load(agent: Agent, stats: LoadStats, slow_load_ms: float | None) -> None:
    """Log a load (DEBUG, or WARNING when it was too long) and record its metrics."""
    # (The reasons are looked for only when a limit is passed: every load comes here.)
    if stats.events_read > WARN_EVENTS or (slow_load_ms is not None and stats.ms > slow_load_ms):
        reasons = load_warnings(stats, slow_load_ms)
        level = logging.WARNING if reasons else logging.DEBUG
    else:
        reasons, level = [], logging.DEBUG
    agent_type = type(agent).__qualname__
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "agent loaded: agent=%s type=%s version=%s snapshot_version=%s tail=%s "
            "events_read=%s bytes_read=%s ms=%.2f%s",
            agent.id,
            agent_type,
            agent.version,
            stats.snapshot_version,
            stats.tail,
            stats.events_read,
            stats.bytes_read,
            stats.ms,
            f" warn={','.join(reasons)}" if reasons else "",
        )
    active = metrics.active()
    if active is not None:
        active.observe_load(agent_type, stats.ms / 1000, stats.events_read, stats.tail)

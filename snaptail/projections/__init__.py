"""Projection workers and read models (``snaptail worker run``, ``snaptail stats``)."""

from snaptail.errors import ProjectionBusy, ProjectionFailed, WorkerGaveUp
from snaptail.projections.agent_stats import AgentStats, AgentStatsRow, read_agent_stats
from snaptail.projections.base import Projection, agent_type, decode, event_name
from snaptail.projections.view import (
    DeadLetter,
    ViewCursor,
    ViewDatabase,
    open_view,
    read_dead_letters,
)
from snaptail.projections.worker import ProjectionWorker

__all__ = [
    "AgentStats",
    "AgentStatsRow",
    "DeadLetter",
    "Projection",
    "ProjectionBusy",
    "ProjectionFailed",
    "ProjectionWorker",
    "ViewCursor",
    "ViewDatabase",
    "WorkerGaveUp",
    "agent_type",
    "decode",
    "event_name",
    "open_view",
    "read_agent_stats",
    "read_dead_letters",
]

"""Finding agents the way people name them: a full id, a unique id prefix, or the
name an agent was created with. Reads rows only (no agent is loaded, no stored topic
is imported): names come from each agent's first event, decoded as plain data."""

from __future__ import annotations

from uuid import UUID

import msgspec

from snaptail.application.maintenance import agent_ids
from snaptail.application.store import AgentStore
from snaptail.errors import InvalidArgument

# How many candidates an ambiguous prefix or name lists.
SHOWN = 10


class _Named(msgspec.Struct):
    name: object = ""


def agent_name(store: AgentStore, agent_id: UUID) -> str:
    """The name the agent was created with ("" if its first event has none)."""
    page = store.read_rows(agent_id, before=2, limit=1)
    if not page:
        return ""
    try:
        name = msgspec.msgpack.decode(page[0].state, type=_Named).name
    except (msgspec.MsgspecError, ValueError, TypeError):
        return ""
    return name if isinstance(name, str) else ""


def _hex(text: str) -> str:
    return text.replace("-", "").strip().lower()


def find_agent(store: AgentStore, text: str, argument: str = "AGENT") -> UUID:
    """The one agent ``text`` names: its id (a UUID), a prefix of its id that no
    other agent shares, or its name when no id starts with ``text`` and one agent
    has that name. No match, or several (listed), is an :class:`InvalidArgument`."""
    text = text.strip()
    if not text:
        raise InvalidArgument(argument, "give an agent id, a prefix of one, or a name")
    try:
        return UUID(text)
    except ValueError:
        pass
    prefix = _hex(text)
    matches: list[UUID] = []
    if prefix and all(c in "0123456789abcdef" for c in prefix):
        matches = [a for a in agent_ids(store) if a.hex.startswith(prefix)]
    if not matches:
        matches = [a for a in agent_ids(store) if agent_name(store, a) == text]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise InvalidArgument(
            argument,
            f"no agent has an id starting with {text!r} or the name {text!r}; `snaptail"
            " stats` lists agents with their ids and names",
        )
    shown = ", ".join(
        f"{a} ({agent_name(store, a) or 'no name'})" for a in matches[:SHOWN]
    )
    more = f" and {len(matches) - SHOWN} more" if len(matches) > SHOWN else ""
    raise InvalidArgument(
        argument,
        f"{text!r} matches {len(matches)} agents: {shown}{more}; give a longer id prefix",
    )


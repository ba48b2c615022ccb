"""``undeclared_attributes`` (run on every snapshot a save takes) finds every attribute
that is not a declared dataclass field, anywhere in the state, depth first; a cycle
ends in RecursionError, as the recursive walk did, never in a hang."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from snaptail.domain.guard import undeclared_attributes


@dataclass
class Leaf:
    n: int = 0


@dataclass
class Node:
    children: list[Any] = field(default_factory=list)
    table: dict[Any, Any] = field(default_factory=dict)


def test_every_undeclared_attribute_is_found_with_its_path() -> None:
    hidden = Leaf()
    hidden.__dict__["secret"] = 1
    inner = Node(children=[Leaf(), (hidden,)], table={"k": [hidden], 7: "text"})
    root = Node(children=[inner], table={"leaf": Leaf(), ".odd key": hidden})
    root.__dict__["extra"] = 2
    found = list(undeclared_attributes(root))
    assert found[0] == "state.extra"  # the object's own, before anything inside it
    assert sorted(found) == sorted(
        [
            "state.extra",
            "state.children[0].children[1][0].secret",
            "state.children[0].table['k'][0].secret",
            "state.table['.odd key'].secret",
        ]
    )
    assert list(undeclared_attributes(Node(children=[Leaf()], table={1: Leaf()}))) == []
    assert list(undeclared_attributes(hidden, "x")) == ["x.secret"]


@pytest.mark.timeout(20)
def test_a_cycle_raises_instead_of_walking_forever() -> None:
    node = Node()
    node.children.append(node)
    with pytest.raises(RecursionError, match="nested more than"):
        list(undeclared_attributes(node))

"""The public surface: ``__all__`` is what the README documents; every error is a
``SnaptailError``; a database error reaches a caller translated (issue 19)."""

from __future__ import annotations

import importlib
import inspect
import re
import sqlite3
from pathlib import Path

import pytest
from eventsourcing.persistence import OperationalError

import snaptail
from snaptail import Agent, AgentStore, errors

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_api() -> dict[str, set[str]]:
    """The README's "Public API" section: ``module``: `name`, `name`, ... per line."""
    text = README.read_text()
    section = text.split("## Public API", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for line in section.splitlines():
        match = re.match(r"- `(snaptail[\w.]*)`: (.*)", line)
        if match:
            found[match.group(1)] = set(re.findall(r"`(\w+)`", match.group(2)))
    return found


def test_every_public_module_s_all_is_what_the_readme_documents() -> None:
    documented = documented_api()
    assert documented, "README has no Public API section"
    for module_name, names in documented.items():
        module = importlib.import_module(module_name)
        exported = set(getattr(module, "__all__", ()))
        assert exported == names, (
            f"{module_name}: __all__ and README differ: only in __all__"
            f" {sorted(exported - names)}, only in README {sorted(names - exported)}"
        )
        for name in exported:
            assert hasattr(module, name), f"{module_name}.__all__ names missing {name}"


@pytest.mark.parametrize(
    "module_name",
    ["snaptail", "snaptail.errors", "snaptail.testing", "snaptail.application.store",
     "snaptail.application.async_store", "snaptail.application.retry"],
)  # fmt: skip
def test_public_modules_declare_all_and_are_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    assert module_name in documented_api(), f"{module_name} is not in README's Public API"


def test_every_error_snaptail_defines_is_a_snaptail_error() -> None:
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == "snaptail.errors"
    ]
    assert len(classes) >= 25
    for cls in classes:
        assert issubclass(cls, errors.SnaptailError), cls
    for name in ("SnapshotDecodeError", "SnapshotEncodeError"):
        assert issubclass(getattr(snaptail.snapshots.codec, name), errors.SnaptailError)
    from snaptail.projections.view import PositionConflict

    assert issubclass(PositionConflict, errors.SnaptailError)


def test_the_errors_module_opens_with_the_tree() -> None:
    doc = errors.__doc__ or ""
    assert "SnaptailError\n    ├──" in doc
    for name in errors.__all__:
        if name != "SnaptailError":
            assert f" {name}" in doc, f"{name} is missing from the tree in errors.py"


def test_a_database_error_reaches_the_caller_translated(sqlite_url: str) -> None:
    with AgentStore(sqlite_url) as store:
        agent = Agent("translated")
        store.save(agent)
        path = sqlite_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TABLE snaptail_snapshots")
        with pytest.raises(errors.StorageError) as raised:
            store.get(agent.id)
        assert isinstance(raised.value, errors.SnaptailError)
        assert isinstance(raised.value, OperationalError), "still eventsourcing's error"
        assert str(agent.id) in str(raised.value) and "loading" in str(raised.value)

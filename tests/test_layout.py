"""The layout rules of README's "How the code is laid out", checked on the source.

Every import statement counts: at module level, inside functions and under
``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import snaptail

ROOT = Path(snaptail.__file__).parent

# Lower ranks are imported by higher ones, never the other way round. Modules of the
# same rank may import each other, except as EXCLUDED says.
RANKS = {
    "snaptail.errors": 0,
    "snaptail.domain": 1,
    "snaptail.snapshots": 2,
    "snaptail.workload": 2,
    "snaptail.infrastructure": 3,
    "snaptail.application": 3,
    "snaptail.archive": 3,
    "snaptail.privacy": 3,
    "snaptail.projections": 4,
    "snaptail.integrations": 4,
    "snaptail.bench": 4,
    "snaptail.testing": 4,
    "snaptail.metrics": 4,  # the public name of snaptail.application.metrics
    "snaptail": 4,  # __init__: the public names
    "snaptail.cli": 5,
    "snaptail.ui": 5,  # the web console: imported by the cli only inside `snaptail ui`
}
# (importer, imported): same rank, but the dependency must not exist.
EXCLUDED = {
    ("snaptail.infrastructure", "snaptail.application"),
    ("snaptail.infrastructure", "snaptail.archive"),
    ("snaptail.archive", "snaptail.application"),
    ("snaptail.privacy", "snaptail.application"),
}
UI_LIBRARIES = {"typer", "rich"}
WEB_LIBRARIES = {"starlette", "jinja2", "uvicorn"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def area(name: str) -> str:
    """The RANKS key a module belongs to (its longest matching prefix)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in RANKS:
            return prefix
    raise AssertionError(f"{name}: not placed in RANKS (add it to the layout)")


def imports(name: str) -> list[tuple[str, tuple[str, ...], int]]:
    """(module imported, names taken from it, line) for every import in ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, tuple[str, ...], int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, (), node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = tuple(alias.name for alias in node.names)
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            found.extend((sub, (), node.lineno) for sub in submodules)
            rest = tuple(n for n in names if f"{base}.{n}" not in MODULES)
            if rest or not submodules:
                found.append((base, rest, node.lineno))
    return found


def internal_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for target, _, _ in imports(name):
            if target in MODULES and target != name:
                edges[name].add(target)
    return edges


def test_every_module_has_a_place_in_the_layers() -> None:
    for name in MODULES:
        area(name)


def test_dependencies_point_one_way() -> None:
    wrong = []
    for name in MODULES:
        source = area(name)
        for target, _, line in imports(name):
            if target not in MODULES:
                continue
            dest = area(target)
            if RANKS[dest] > RANKS[source] or (source, dest) in EXCLUDED:
                wrong.append(f"{name}:{line} imports {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = internal_edges()
    # Tarjan's strongly connected components; any component of 2+ modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_names_imported_from_another_package() -> None:
    wrong = []
    for name in MODULES:
        home = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
        for target, names, line in imports(name):
            if not target.startswith("snaptail"):
                continue
            target_home = target if MODULES.get(target, Path()).name == "__init__.py" else (
                target.rpartition(".")[0]
            )
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target_home != home:
                wrong.append(f"{name}:{line} imports {private} from {target}")
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_imports_typer_or_rich() -> None:
    wrong = [
        f"{name}:{line} imports {target}"
        for name in MODULES
        if area(name) != "snaptail.cli"
        for target, _, line in imports(name)
        if target.split(".")[0] in UI_LIBRARIES
    ]
    assert not wrong, "\n".join(wrong)


def test_only_the_console_imports_web_libraries() -> None:
    wrong = [
        f"{name}:{line} imports {target}"
        for name in MODULES
        if area(name) != "snaptail.ui"
        for target, _, line in imports(name)
        if target.split(".")[0] in WEB_LIBRARIES
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_a_violation() -> None:
    """The import walker finds function-level and TYPE_CHECKING imports."""
    names = {target for target, _, _ in imports("snaptail.application.metrics")}
    assert "prometheus_client" in names  # imported under TYPE_CHECKING and in functions
    with pytest.raises(AssertionError):
        area("elsewhere.module")


@pytest.mark.parametrize("module", ["snaptail", "snaptail.projections", "snaptail.bench.scale"])
def test_importing_the_library_loads_no_command_line_or_plotting(module: str) -> None:
    heavy = ("typer", "rich", "matplotlib", "langgraph", "agents")
    code = (
        f"import sys, {module}\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", f"import {module} loaded {out.strip()}"


# Private attributes of other objects that may be used: eventsourcing's Aggregate
# fields the replay fast path sets directly, namedtuple's public ``_replace``, and
# the field Google ADK's own session services set on its Session (its contract).
FOREIGN_PRIVATE_ALLOWED = {
    "_version", "_modified_on", "_replace", "_asdict", "_fields", "_storage_update_marker",
}  # fmt: skip


def test_no_private_attribute_access_across_objects() -> None:
    """``obj._name`` only on ``self``/``cls``/``super()``: a module reaches another's
    state through its public names (a private name is free to change)."""
    wrong = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        # Private names the module itself defines (its classes' methods and attributes)
        # may be used anywhere in that module.
        own = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        } | {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            attr, value = node.attr, node.value
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            if attr in FOREIGN_PRIVATE_ALLOWED or attr in own:
                continue
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if isinstance(value, ast.Call) and ast.unparse(value.func) == "super":
                continue
            wrong.append(f"{name}:{node.lineno} reads {ast.unparse(value)}.{attr}")
    assert not wrong, "private attributes of other objects:\n" + "\n".join(wrong)


def test_no_store_internals_outside_the_application() -> None:
    """Only ``snaptail.application`` (and the recorders themselves) touch a store's
    recorder; everything else uses the store's public methods."""
    wrong = []
    for name, path in MODULES.items():
        if area(name) in ("snaptail.application", "snaptail.infrastructure"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("recorder", "_recorder", "_engine")
                and "store" in ast.unparse(node.value).lower()
            ):
                wrong.append(f"{name}:{node.lineno} uses {ast.unparse(node)}")
    assert not wrong, "store internals outside snaptail.application:\n" + "\n".join(wrong)


# Above the store (rank 4 and up: projections, integrations, bench, testing, cli, ui)
# code holds stores, never recorders: no recorder opened, imported or reached.
RECORDER_OPENERS = {"open_recorder", "open_async_recorder", "open_postgres", "open_sqlite"}
RECORDER_TYPES = {
    "AgentRecorder", "AsyncAgentRecorder", "SQLiteAgentRecorder", "PostgresAgentRecorder",
    "AsyncPostgresRecorder", "ThreadedRecorder",
}  # fmt: skip


def recorder_uses(name: str) -> list[str]:
    """Where module ``name`` opens, imports or reaches a recorder."""
    path = MODULES[name]
    found = [
        f"{name}:{line} imports {target}"
        for target, names, line in imports(name)
        if target == "snaptail.infrastructure.backends"
        or set(names) & (RECORDER_OPENERS | RECORDER_TYPES)
    ]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in RECORDER_OPENERS or called in RECORDER_TYPES:
                found.append(f"{name}:{node.lineno} calls {ast.unparse(func)}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in ("recorder", "_recorder")
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")
        ):
            found.append(f"{name}:{node.lineno} uses {ast.unparse(node)}")
    return found


def test_above_the_store_nothing_opens_or_reaches_a_recorder() -> None:
    """The store is the only door: the worker, integrations, bench, testing, the CLI
    and the console read through store methods (``events_after``, ``read_rows``, ...)."""
    wrong = [
        use
        for name in MODULES
        if RANKS[area(name)] >= RANKS["snaptail.projections"]
        for use in recorder_uses(name)
    ]
    assert not wrong, "recorders above the store:\n" + "\n".join(wrong)


def test_the_recorder_check_sees_a_violation(tmp_path: Path) -> None:
    """The check finds an opener call, a recorder import and ``x.recorder``."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from snaptail.infrastructure.backends import open_recorder\n"
        "from snaptail.infrastructure.recorder import AgentRecorder\n"
        "def f(worker):\n"
        "    r: AgentRecorder = open_recorder('sqlite:///x.db')\n"
        "    return worker.recorder, r, self.recorder\n"
    )
    MODULES["snaptail.cli.probe"] = probe
    try:
        uses = recorder_uses("snaptail.cli.probe")
    finally:
        del MODULES["snaptail.cli.probe"]
    assert uses == [
        "snaptail.cli.probe:1 imports snaptail.infrastructure.backends",
        "snaptail.cli.probe:2 imports snaptail.infrastructure.recorder",
        "snaptail.cli.probe:4 calls open_recorder",
        "snaptail.cli.probe:5 uses worker.recorder",
    ], uses


def test_the_store_logic_is_written_once() -> None:
    """One load path: the steps live in engine.py, the two drivers in drivers.py; no
    recorder method is called by a name held in a string."""
    application = ROOT / "application"
    for path in sorted(application.glob("*.py")) + sorted((ROOT / "projections").glob("*.py")):
        source = path.read_text()
        assert "getattr(recorder" not in source and "getattr(self.recorder" not in source, path
        assert "__wrapped__" not in source, path
    drivers = [
        node.name
        for path in application.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("drive")
    ]
    assert sorted(drivers) == ["drive", "drive_async"], drivers


# The view databases of the projections, one class per backend: outside their own
# module a view is used through ViewDatabase's methods, never asked which it is.
VIEW_TYPES = {"SQLiteView", "PostgresView"}
VIEW_MODULE = "snaptail.projections.view"


def backend_reach(name: str) -> list[str]:
    """Where module ``name`` reaches past a typed backend interface: a recorder's
    ``.datastore`` (its driver's connections and settings), or an ``isinstance`` /
    ``issubclass`` test against a recorder class or (outside their own module) a view
    database class: dispatch by backend."""
    dispatched = RECORDER_TYPES if name == VIEW_MODULE else RECORDER_TYPES | VIEW_TYPES
    found = []
    path = MODULES[name]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "datastore":
            found.append(f"{name}:{node.lineno} uses {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
        ):
            kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            named = {
                kind.attr if isinstance(kind, ast.Attribute) else getattr(kind, "id", "")
                for kind in kinds
            }
            if named & dispatched:
                found.append(f"{name}:{node.lineno} dispatches on {ast.unparse(node)}")
    return found


def test_only_the_recorders_and_views_know_their_backend() -> None:
    """Issue 19: outside ``snaptail.infrastructure`` a recorder is used through the
    methods its interface declares (the archive's SQL included: ``direct_sql()``),
    never its datastore, never by asking which backend it is; outside
    ``snaptail.projections.view`` a view database likewise (its worker lock included:
    ``worker_lock()``)."""
    wrong = [
        use
        for name in MODULES
        if area(name) != "snaptail.infrastructure"
        for use in backend_reach(name)
    ]
    assert not wrong, "reaches past the recorder or view interface:\n" + "\n".join(wrong)


def test_the_backend_check_sees_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f(recorder, SQLiteAgentRecorder, infra):\n"
        "    if isinstance(recorder, SQLiteAgentRecorder):\n"
        "        return recorder.datastore.schema\n"
        "    return isinstance(recorder, (int, infra.PostgresAgentRecorder))\n"
    )
    MODULES["snaptail.archive.probe"] = probe
    try:
        uses = backend_reach("snaptail.archive.probe")
    finally:
        del MODULES["snaptail.archive.probe"]
    assert sorted(uses) == [
        "snaptail.archive.probe:2 dispatches on isinstance(recorder, SQLiteAgentRecorder)",
        "snaptail.archive.probe:3 uses recorder.datastore",
        "snaptail.archive.probe:4 dispatches on"
        " isinstance(recorder, (int, infra.PostgresAgentRecorder))",
    ], uses


def test_the_view_check_sees_a_violation(tmp_path: Path) -> None:
    """``isinstance``/``issubclass`` against a view database class is dispatch by
    backend anywhere but in the view classes' own module."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f(view, kind, PostgresView, views):\n"
        "    if isinstance(view, PostgresView):\n"
        "        return issubclass(kind, (int, views.SQLiteView))\n"
        "    return isinstance(view, views.ViewDatabase)\n"
    )
    real = MODULES[VIEW_MODULE]
    MODULES["snaptail.projections.probe"] = probe
    try:
        uses = backend_reach("snaptail.projections.probe")
        MODULES[VIEW_MODULE] = probe
        own = backend_reach(VIEW_MODULE)
    finally:
        del MODULES["snaptail.projections.probe"]
        MODULES[VIEW_MODULE] = real
    assert sorted(uses) == [
        "snaptail.projections.probe:2 dispatches on isinstance(view, PostgresView)",
        "snaptail.projections.probe:3 dispatches on issubclass(kind, (int, views.SQLiteView))",
    ], uses
    assert own == [], own

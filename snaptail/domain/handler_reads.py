"""What an agent type's event handlers read besides the event and the state: the class
attributes and module globals (plain values) that shape derived state, found from the
handlers' own bytecode.

A handler that keeps the newest ``self.max_tickets`` tickets makes the state depend
on ``max_tickets``: a snapshot written under 20 is not the replay under 3. So the
snapshot fingerprint covers every plain value the handlers read (see
``snaptail.snapshots.fingerprint``): change one and older snapshots are passed over.

Read, in each handler (the ``@event`` methods, an event class's own ``apply`` and the
type's ``__init__``, which applies its created event)
and, transitively, in the methods of the agent type and the module functions it
calls: ``self.NAME`` / ``type(self).NAME`` / ``cls.NAME`` (any attribute load whose
name is a class attribute of the type holding a plain value), global names (a module
global holding a plain value), ``module.NAME`` of an imported application module (not
the standard library's) and closure variables. Plain values: None, bool, int,
float, complex, str, bytes, Decimal, Enum members, and tuples, lists, sets, frozensets
and dicts of them. A name listed in the type's ``snapshot_ignore`` (a class attribute
or a global the handlers read that does not shape state) is left out.
"""

from __future__ import annotations

import dis
import enum
import inspect
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from types import CodeType, FunctionType, ModuleType
from typing import Any

from eventsourcing.domain import decorated_funcs

_SCALARS = (type(None), bool, int, float, complex, str, bytes, Decimal, enum.Enum)
_ATTRIBUTE_LOADS = frozenset({"LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR"})
_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_FREE_LOADS = frozenset({"LOAD_DEREF", "LOAD_CLASSDEREF"})
# Library code a handler may call that reads nothing of the agent type.
_SKIPPED_MODULES = ("eventsourcing", "msgspec", "typing", "builtins")


def is_plain(value: object, depth: int = 0) -> bool:
    """True for a value whose repr says all there is (see the module's docstring)."""
    if isinstance(value, _SCALARS):
        return True
    if depth > 4:
        return False
    if isinstance(value, tuple | list | set | frozenset):
        return all(is_plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(is_plain(k, depth + 1) and is_plain(v, depth + 1) for k, v in value.items())
    return False


def event_handlers(agent_class: type[Any]) -> Iterator[tuple[str, Callable[..., Any]]]:
    """``(event class name, handler)`` for each event class of ``agent_class`` (an
    attribute of it), sorted by name: the ``@event`` method, else the ``apply`` (or
    ``mutate``) the event class defines itself; event classes with neither are left
    out."""
    for name in sorted(dir(agent_class)):
        value = getattr(agent_class, name, None)
        if not isinstance(value, type):
            continue
        func = next((decorated_funcs[k] for k in value.__mro__ if k in decorated_funcs), None)
        if func is None:
            func = own_apply(value)
        if func is not None:
            yield name, func


def own_apply(event_class: type[Any]) -> Any:
    """The ``apply`` (or ``mutate``) an event class defines itself, or inherits from
    a class that is not ``eventsourcing``'s (None if there is none)."""
    for klass in event_class.__mro__:
        if klass.__module__.split(".")[0] == "eventsourcing":
            continue
        for method in ("apply", "mutate"):
            func = vars(klass).get(method)
            if hasattr(func, "__code__"):
                return func
    return None


class HandlerReads:
    """The class attributes (``attributes``: names) and globals and closure variables
    (``others``: label -> reader of its current value) the handlers read."""

    def __init__(self) -> None:
        self.attributes: set[str] = set()
        self.others: dict[str, Callable[[], object]] = {}
        # functions (qualified names) that read an attribute of ``self``/``cls`` by a
        # computed name (``getattr(self, name)``): what they read cannot be found
        self.computed: list[str] = []


def handler_reads(agent_class: type[Any]) -> HandlerReads:
    """What the handlers of ``agent_class`` read (every name, plain or not at the time
    of the call, whose value is plain now; ``snapshot_ignore`` not applied)."""
    found = HandlerReads()
    seen: set[CodeType] = set()
    # The created event is applied by calling the type's __init__.
    handlers = [func for _, func in event_handlers(agent_class)]
    for func in [vars(k)["__init__"] for k in agent_class.__mro__ if "__init__" in vars(k)][:1]:
        handlers.append(func)
    for func in handlers:
        _visit(agent_class, func, found, seen)
    return found


def ignored_names(agent_class: type[Any]) -> frozenset[str]:
    """The names the type and its bases list in ``snapshot_ignore``."""
    names: set[str] = set()
    for klass in agent_class.__mro__:
        declared = vars(klass).get("snapshot_ignore", ())
        if isinstance(declared, str) or not all(isinstance(n, str) for n in declared):
            raise TypeError(
                f"{klass.__qualname__}.snapshot_ignore must be a tuple of names, got {declared!r}"
            )
        names.update(declared)
    return frozenset(names)


def _visit(
    agent_class: type[Any], func: Callable[..., Any], found: HandlerReads, seen: set[CodeType]
) -> None:
    func = getattr(func, "decorated_func", func)  # an @event-decorated method
    func = inspect.unwrap(getattr(func, "__func__", func))
    code = getattr(func, "__code__", None)
    if not isinstance(code, CodeType) or code in seen:
        return
    module = getattr(func, "__module__", None) or ""
    if module.split(".")[0] in _SKIPPED_MODULES:
        return
    seen.add(code)
    namespace: dict[str, Any] = getattr(func, "__globals__", {})
    cells = dict(zip(code.co_freevars, getattr(func, "__closure__", None) or (), strict=False))
    attributes, globals_, free, computed = _loads(code)
    if computed:
        found.computed.append(func.__qualname__)
    for name in attributes:
        value = getattr(agent_class, name, _MISSING)
        if value is _MISSING:
            continue
        if is_plain(value):
            found.attributes.add(name)
        elif isinstance(value, property):  # what its getter reads
            if value.fget is not None:
                _visit(agent_class, value.fget, found, seen)
        elif callable(value):
            _visit(agent_class, value, found, seen)
    for name in globals_:
        if name not in namespace or name[:2] == "__":
            continue
        value = namespace[name]
        if is_plain(value):
            label = f"{namespace.get('__name__', '?')}.{name}"
            found.others[label] = _global_reader(namespace, name)
        elif isinstance(value, FunctionType):
            _visit(agent_class, value, found, seen)
        elif isinstance(value, ModuleType) and _own_module(value):
            # ``helpers.LIMIT`` or ``helpers.trim(...)``: the attribute names this code
            # loads, looked up on the module
            for attribute in attributes:
                inner = getattr(value, attribute, _MISSING)
                if inner is _MISSING or attribute[:2] == "__":
                    continue
                if is_plain(inner):
                    label = f"{value.__name__}.{attribute}"
                    found.others[label] = _module_reader(value, attribute)
                elif isinstance(inner, FunctionType):
                    _visit(agent_class, inner, found, seen)
    for name in free:
        if name not in cells:
            continue
        cell = cells[name]
        try:
            value = cell.cell_contents
        except ValueError:  # not yet bound
            continue
        if is_plain(value):
            found.others[f"{func.__qualname__}.<closure>.{name}"] = _cell_reader(cell)
        elif isinstance(value, FunctionType):
            _visit(agent_class, value, found, seen)


# code object -> the names it (and the code nested in it) loads as attributes, as
# globals and as closure variables, and whether it reads an attribute of self by a
# computed name: the bytecode is read once per function.
_Loads = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], bool]
_scanned: dict[CodeType, _Loads] = {}


def _loads(code: CodeType) -> _Loads:
    found = _scanned.get(code)
    if found is not None:
        return found
    attributes: dict[str, None] = {}
    globals_: dict[str, None] = {}
    free: dict[str, None] = {}
    computed = False
    for inner in _code_objects(code):
        instructions = list(dis.get_instructions(inner))
        for index, ins in enumerate(instructions):
            if ins.opname in _GLOBAL_LOADS and ins.argval == "getattr":
                name = _getattr_of_self(instructions, index + 1)
                if name is _COMPUTED:
                    computed = True
                elif isinstance(name, str):
                    attributes[name] = None
        for ins in instructions:
            name = ins.argval
            if not isinstance(name, str):
                continue
            if ins.opname in _ATTRIBUTE_LOADS:
                attributes[name] = None
            elif ins.opname in _GLOBAL_LOADS:
                globals_[name] = None
            elif ins.opname in _FREE_LOADS:
                free[name] = None
    found = _scanned[code] = (tuple(attributes), tuple(globals_), tuple(free), computed)
    return found


_SELF = frozenset({"self", "cls"})
_COMPUTED = object()
_CALLS = frozenset({"PRECALL", "CALL"})


def _getattr_of_self(instructions: list[dis.Instruction], at: int) -> object:
    """For a call of ``getattr`` whose arguments start at ``instructions[at]``: the
    attribute name when it reads ``self``/``cls``/``type(self)`` by a constant name,
    ``_COMPUTED`` when by a computed one, else None (another object: not the type's)."""
    if at >= len(instructions):
        return None
    first = instructions[at]
    if first.opname == "LOAD_FAST_LOAD_FAST":  # Python 3.13: getattr(self, name)
        pair = first.argval
        return _COMPUTED if isinstance(pair, tuple) and pair[0] in _SELF else None
    if first.opname in _GLOBAL_LOADS and first.argval == "type":  # getattr(type(self), ...)
        at += 1
        if at >= len(instructions) or instructions[at].argval not in _SELF:
            return None
        at += 1
        while at < len(instructions) and instructions[at].opname in _CALLS:
            at += 1
        at -= 1
    elif not (first.opname.startswith("LOAD_") and first.argval in _SELF):
        return None
    following = instructions[at + 1] if at + 1 < len(instructions) else None
    if following is None or following.opname in _ATTRIBUTE_LOADS or following.opname in _CALLS:
        return None  # getattr(self.state, ...): an attribute of self, not self
    if following.opname == "LOAD_CONST" and isinstance(following.argval, str):
        return following.argval
    return _COMPUTED


_MISSING = object()


def _own_module(module: ModuleType) -> bool:
    """True for a module of the application (not the standard library's, nor one of
    the libraries in ``_SKIPPED_MODULES``)."""
    top = module.__name__.split(".")[0]
    return top not in sys.stdlib_module_names and top not in _SKIPPED_MODULES


def _module_reader(module: ModuleType, name: str) -> Callable[[], object]:
    return lambda: getattr(module, name, _MISSING)


def _code_objects(code: CodeType) -> Iterator[CodeType]:
    """``code`` and the code objects nested in it (comprehensions, lambdas)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_objects(const)


def _global_reader(namespace: dict[str, Any], name: str) -> Callable[[], object]:
    return lambda: namespace.get(name, _MISSING)


def _cell_reader(cell: Any) -> Callable[[], object]:
    def read() -> object:
        try:
            return cell.cell_contents
        except ValueError:
            return _MISSING

    return read

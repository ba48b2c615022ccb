"""Every error a ``snaptail`` command meets, as one line on stderr and an exit status.

The root group of the ``snaptail`` app (:class:`OneLineGroup`) runs each command
with this module's handler around it: a usage error (a bad option, argument or URL)
exits 2, a runtime failure (a database that cannot be reached or read, a damaged
log, a full disk) exits 1, and the traceback is shown only with ``--verbose`` or
``SNAPTAIL_VERBOSE=1``. Commands keep their own documented statuses (``inspect`` 3
over budget, ``worker run`` 3 and 4) by raising ``typer.Exit``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from snaptail.errors import InvalidArgument, SnaptailError

USAGE = 2
RUNTIME = 1
INTERRUPTED = 130

VERBOSE_ENV = "SNAPTAIL_VERBOSE"

EXIT_CODES = (
    "Exit status: 0 success; 1 a runtime failure (database unreachable, unreadable or "
    "damaged; a snapshot that fails verification; an agent that does not load); 2 a "
    "usage error (bad option, argument or database URL); 3 inspect: an agent over its "
    "memory budget, worker run: a projection raised on an event; 4 worker run: the "
    "database stayed unreachable; 130 interrupted (Ctrl-C). Errors are one line on "
    "stderr; --verbose or SNAPTAIL_VERBOSE=1 adds the traceback."
)

_verbose = False
_database = ""  # the database the command opened (named in database errors)


def set_verbose(value: bool) -> None:
    """Show tracebacks (the root ``--verbose`` option)."""
    global _verbose
    _verbose = value


def set_database(url: str) -> None:
    """Name ``url`` in the message of a database error from here on."""
    global _database
    from snaptail.infrastructure.urls import redact

    _database = redact(url)


def verbose() -> bool:
    return _verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false", "no")


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of blanks folded into single spaces."""
    return re.sub(r"\s+", " ", text).strip()


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message for ``exc``."""
    if isinstance(exc, typer.TyperException):  # click's exceptions, as Typer ships them
        code = getattr(exc, "exit_code", RUNTIME)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if code == USAGE:  # a usage error: say where the usage is
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "snaptail"
            message = f"{message} (see: {where} --help)"
        return code, message
    if isinstance(exc, typer.Abort):
        return RUNTIME, "aborted"
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    if isinstance(exc, InvalidArgument):
        return USAGE, str(exc)
    if isinstance(exc, SnaptailError):
        return RUNTIME, str(exc)
    if isinstance(exc, (sqlite3.Error, *_persistence_errors())):
        where = f" on {_database}" if _database else ""
        return RUNTIME, f"database error{where}: {exc} (run with --verbose for the traceback)"
    if isinstance(exc, OSError):
        return RUNTIME, f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, MemoryError):
        return RUNTIME, "out of memory"
    name = type(exc).__name__
    return RUNTIME, f"{name}: {exc} (run with --verbose for the traceback)"


def _persistence_errors() -> tuple[type[BaseException], ...]:
    from eventsourcing.persistence import PersistenceError

    errors: list[type[BaseException]] = [PersistenceError]
    if "psycopg" in sys.modules:
        errors.append(sys.modules["psycopg"].Error)
    return tuple(errors)


def report(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr (its traceback first when verbose); its
    exit status."""
    try:
        code, message = describe(exc)
    except Exception:  # never let the report itself end in a traceback
        code, message = RUNTIME, f"{type(exc).__name__}: {exc}"
    if verbose() and not (isinstance(exc, typer.TyperException) and code == USAGE):
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()
    return code


class OneLineGroup(TyperGroup):
    """The root ``snaptail`` group: every error ends in one line and an exit status."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        set_verbose(False)
        set_database("")
        try:
            result = super().main(
                args, prog_name, complete_var, standalone_mode=False, **extra
            )
            code = result if isinstance(result, int) else 0
        except typer.Exit as exit_:
            code = exit_.exit_code
        except (Exception, KeyboardInterrupt) as exc:
            code = report(exc)
        if standalone_mode:
            sys.exit(code)
        return code

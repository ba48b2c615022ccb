"""The files of a SQLite database: created private, opened read-only without creating
anything, and what an error opening one means, in words naming the file.

File modes: a new database file is created with mode 0600 (owner read/write only;
agent logs hold people's conversations), unless ``file_mode`` says otherwise (a
keyword of ``AgentStore``/``open_recorder`` or ``?file_mode=0640`` in the URL).
SQLite gives the WAL and shared-memory files the mode of the database file, and the
projection lock files are created with the same mode. An existing file's mode is
never changed.
"""

from __future__ import annotations

import os
import sqlite3
from urllib.parse import quote

from snaptail.errors import DatabaseUnusable, InvalidArgument, NoSuchDatabase

DEFAULT_FILE_MODE = 0o600


def is_file_path(path: str) -> bool:
    """True for a path naming a file on disk (not ``:memory:`` or a ``file:`` URI)."""
    return bool(path) and path != ":memory:" and not path.startswith("file:")


def file_mode(value: object) -> int:
    """A file mode from ``0o640``, ``"0640"`` or ``"640"`` (octal); refused by name."""
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and value.strip():
        try:
            mode = int(value.strip().removeprefix("0o"), 8)
        except ValueError:
            mode = -1
    else:
        mode = -1
    if not 0 <= mode <= 0o777 or not mode & 0o600 == 0o600:
        raise InvalidArgument(
            "file_mode",
            f"must be an octal file mode that lets the owner read and write, such as 0600"
            f" (the default) or 0640, got {value!r}",
        )
    return mode


def describe_directory(path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    return directory


def prepare(path: str, mode: int = DEFAULT_FILE_MODE) -> None:
    """Make sure the database file ``path`` exists, creating it empty with ``mode``
    if not (SQLite then writes its header); a missing directory or a location that
    cannot be written is a :class:`DatabaseUnusable` naming it."""
    if not is_file_path(path):
        return
    directory = describe_directory(path)
    if not os.path.isdir(directory):
        raise DatabaseUnusable(
            f"SQLite database {path}",
            f"its directory {directory} does not exist; create it first or give another path",
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseUnusable(
            f"SQLite database {path}",
            f"cannot be created ({exc.strerror}): {directory} is not writable; give a"
            " writable location",
        ) from None
    os.close(fd)


def open_private(path: str, mode: int = DEFAULT_FILE_MODE) -> int:
    """``os.open`` for a lock file beside a database: created with ``mode``."""
    return os.open(path, os.O_RDWR | os.O_CREAT, mode)


def require_existing(path: str) -> None:
    """Raise :class:`NoSuchDatabase` unless ``path`` is an existing file."""
    if not is_file_path(path):
        return
    if not os.path.exists(path):
        directory = describe_directory(path)
        detail = "" if os.path.isdir(directory) else f"directory {directory} does not exist"
        raise NoSuchDatabase(path, detail)
    if not os.path.isfile(path):
        raise DatabaseUnusable(f"SQLite database {path}", "is not a file")


def read_only_name(path: str) -> str:
    """The SQLite URI opening ``path`` read-only: nothing is created. In a directory
    this process cannot write (where SQLite could not make its shared-memory file)
    the file is opened as immutable."""
    if not is_file_path(path):
        return path
    absolute = os.path.abspath(path)
    uri = f"file:{quote(absolute)}?mode=ro"
    if not os.access(os.path.dirname(absolute), os.W_OK) and not os.path.exists(
        absolute + "-shm"
    ):
        uri += "&immutable=1"
    return uri


def explain(path: str, exc: BaseException) -> DatabaseUnusable | None:
    """A :class:`DatabaseUnusable` naming ``path`` for a SQLite error ``exc`` that
    is about the file (None for any other error)."""
    cause = exc.__cause__ if isinstance(exc.__cause__, sqlite3.Error) else exc
    text = str(cause).lower()
    where = f"SQLite database {path}"
    if "file is not a database" in text or "malformed" in text:
        return DatabaseUnusable(
            where, f"is not a SQLite database, or is damaged ({cause}); check the path"
        )
    if "readonly" in text or "read-only" in text:
        return DatabaseUnusable(
            where,
            "is read-only (the file or its directory): writing needs a writable location;"
            " read-only commands (stats --no-update, inspect, snapshots verify) can read it",
        )
    if "disk is full" in text or "database or disk is full" in text:
        return DatabaseUnusable(where, f"the disk is full ({cause}); free space and retry")
    if "unable to open" in text:
        directory = describe_directory(path)
        if not os.path.isdir(directory):
            return DatabaseUnusable(where, f"its directory {directory} does not exist")
        return DatabaseUnusable(
            where,
            f"cannot be opened ({cause}): check that {path} and {directory} can be read"
            " (and written, to save)",
        )
    return None

"""Where archive segments are kept: a local directory, or any fsspec URL.

A plain path (or ``file://``) is a directory written with ``os`` calls: each segment
goes to a temporary name, is fsynced, renamed into place, and its directory fsynced,
so a crash leaves either the whole file or none under its name. Any other URL
(``s3://bucket/prefix``, ``gs://``, ``memory://``...) goes through fsspec (install
``fsspec`` and the filesystem's own package, e.g. ``s3fs``); object stores make a
file visible only once its upload completes.
"""

from __future__ import annotations

import contextlib
import glob
import os
from pathlib import Path
from typing import Any, BinaryIO


class Location:
    """A directory of segment files, local or remote."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") or url
        self._fs: Any = None
        self._root = ""
        if "://" in url and not url.startswith("file://"):
            try:
                import fsspec  # type: ignore[import-untyped]
            except ImportError:
                raise ImportError(
                    f"archive location {url!r} needs fsspec (and the filesystem's package,"
                    " e.g. s3fs for s3://): pip install 'snaptail[archive]' s3fs"
                ) from None
            self._fs, self._root = fsspec.core.url_to_fs(url)
        else:
            self._root = str(Path(url.removeprefix("file://")).absolute())

    @property
    def local(self) -> bool:
        return self._fs is None

    def path(self, name: str) -> str:
        """The full path of segment ``name`` (as error messages show it)."""
        if self._fs is None:
            return os.path.join(self._root, name)
        return f"{self.url}/{name}"

    def _fs_path(self, name: str) -> str:
        return f"{self._root.rstrip('/')}/{name}"

    def write(self, name: str, data: bytes, crash: Any = None) -> None:
        """Write segment ``name`` durably (replacing an older file of that name).
        ``crash`` (tests) is called with the step name after half the bytes."""
        if self._fs is not None:
            path = self._fs_path(name)
            self._fs.makedirs(path.rpartition("/")[0], exist_ok=True)
            with self._fs.open(path, "wb") as out:
                out.write(data)
            return
        path = self.path(name)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        temporary = f"{path}.tmp-{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            half = len(data) // 2
            os.write(fd, data[:half])
            if crash is not None:
                crash("segment-partial")
            view = memoryview(data)[half:]
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        for stale in glob.glob(glob.escape(path) + ".tmp-*"):  # of a run killed mid-write
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def open(self, name: str) -> tuple[BinaryIO, int]:
        """Segment ``name`` open for reading, and its size in bytes. Raises
        FileNotFoundError if it is missing."""
        if self._fs is None:
            file = open(self.path(name), "rb")  # noqa: SIM115 - the caller closes it
            return file, os.fstat(file.fileno()).st_size
        path = self._fs_path(name)
        size = int(self._fs.size(path))
        return self._fs.open(path, "rb"), size

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self._fs is None:
                os.remove(self.path(name))
            else:
                self._fs.rm(self._fs_path(name))

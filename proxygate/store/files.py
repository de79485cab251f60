"""Files on disk, private and whole: directories 0700, files 0600, writes atomic.

A half-written file is impossible: a write goes to a temp file in the same directory, is
fsync'd, then renamed over the target, and the directory is fsync'd so the rename survives a
crash. Every layer that persists something to a file (the pool, the tokens, the store) uses these.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, and any missing parents too; tighten it if it exists.

    ``Path.mkdir(parents=True)`` gives parents the umask's mode, so a new ``~/.proxygate``
    would be world-readable: each missing level is made here instead.
    """
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(path))
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(OSError):
        path.chmod(0o700)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` with mode 0600: temp file, fsync, rename, fsync dir."""
    write_bytes_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` with mode 0600 in a private directory, whole or not at all."""
    ensure_private_dir(path.parent)
    write_chunks_atomic(path, (payload,))


def write_chunks_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` (0600): temp file beside it, fsync, rename, fsync dir.

    The chunks are written as they come, so a large file is never held whole in memory. The
    directory must exist and keeps its mode: callers that own it make it private first.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.writelines(chunks)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

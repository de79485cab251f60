"""Capture files: a writer thread that appends JSONL records, and the reader that exports them.

The one idea: the event loop only ever hands an item to a bounded queue; turning it into a record
(decoding, normalising, hashing) and writing it happen on one thread, so the answer is never
delayed by capture. Each batch is appended with a single ``write`` as soon as it is rendered, so a
record is on disk (in the OS) well within a second; ``close()`` drains the queue and fsyncs.

Files are ``capture-<UTC time>-<n>.jsonl`` (``.jsonl.gz`` with ``gzip``), 0600 in a 0700
directory. A gzip file is a series of gzip members, one per batch (RFC 1952 §2.2 allows
concatenated members and ``gzip.open`` reads them all), so it is valid after every batch. A file
past ``max_bytes`` is closed and the next batch starts a new one.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from proxygate.store.files import ensure_private_dir, write_chunks_atomic

log = logging.getLogger("proxygate.capture")

T = TypeVar("T")

MAX_QUEUED = 2048
"Turns waiting to be written; past this the writer is far behind (a stuck disk) and turns are dropped."
MAX_BATCH = 256
"Records rendered per write: one syscall (and one gzip member) for a burst."
FILE_NAME = re.compile(r"^capture-\d{8}T\d{6}Z-\d{3,}\.jsonl(\.gz)?$")
_STOP = object()


class CaptureWriter(Generic[T]):
    """Renders queued items to records on one thread and appends them as JSONL lines."""

    def __init__(
        self,
        directory: Path,
        render: Callable[[T], dict[str, Any] | None],
        *,
        compress: bool = False,
        max_bytes: int = 100 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.render = render
        self.compress = compress
        self.max_bytes = max(max_bytes, 1)
        self.clock = clock
        self.written = 0
        "Records written since start."
        self._queue: queue.Queue[object] = queue.Queue(MAX_QUEUED)
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._warned: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="proxygate-capture", daemon=True)
        self._thread.start()

    @property
    def is_running(self) -> bool:
        """The writer thread runs (until ``close()``)."""
        return self._thread.is_alive()

    @property
    def path(self) -> Path | None:
        """The file being written (None before the first record)."""
        return self._path

    def put(self, item: T) -> None:
        """Queue ``item`` (never blocks: when the writer is far behind, the item is dropped)."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.warn_once("full", "capture: %d turns waiting to be written; dropping turns", MAX_QUEUED)

    def close(self) -> None:
        """Write everything queued, then close the file (blocking: call it off the event loop)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def warn_once(self, reason: str, message: str, *args: object) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning(message, *args)

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines: list[bytes] = []
            for item in batch:
                if item is _STOP:
                    stop = True
                    continue
                line = self._line(item)  # type: ignore[arg-type]
                if line is not None:
                    lines.append(line)
            if lines:
                self._write(b"".join(lines), len(lines))
        self._close_file()

    def _line(self, item: T) -> bytes | None:
        try:
            record = self.render(item)
            return None if record is None else orjson.dumps(record) + b"\n"
        except Exception as exc:  # one bad turn never stops capture
            self.warn_once(
                f"render:{type(exc).__name__}",
                "capture: a turn could not be recorded (%s: %s)",
                type(exc).__name__,
                exc,
            )
            return None

    def _write(self, data: bytes, count: int) -> None:
        payload = gzip.compress(data, mtime=0) if self.compress else data
        try:
            if self._fd is not None and self._size and self._size + len(payload) > self.max_bytes:
                self._close_file()
            if self._fd is None:
                self._open_file()
            assert self._fd is not None
            view = memoryview(payload)
            while view:
                view = view[os.write(self._fd, view) :]
            self._size += len(payload)
            self.written += count
        except OSError as exc:  # a full disk, a removed directory: these turns are lost, not the server
            self.warn_once("write", "capture: cannot write to %s (%s); turns are lost", self.directory, exc)
            self._close_file()

    def _open_file(self) -> None:
        ensure_private_dir(self.directory)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        suffix = ".jsonl.gz" if self.compress else ".jsonl"
        for n in range(1, 10_000):
            path = self.directory / f"capture-{stamp}-{n:03d}{suffix}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            except FileExistsError:
                continue
            os.fchmod(fd, 0o600)  # whatever the umask
            self._fd, self._path, self._size = fd, path, 0
            return
        raise FileExistsError(f"no free capture file name for {stamp} in {self.directory}")

    def _close_file(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.fsync(fd)
            os.close(fd)


# --------------------------------------------------------------------------- reading


@dataclass(slots=True)
class ExportReport:
    """What reading and rebuilding met besides whole conversations."""

    files: int = 0
    bad_lines: int = 0
    damaged_files: list[str] = field(default_factory=list)
    incomplete: int = 0
    "Chains whose beginning is not in the files (removed files): left out."


def capture_files(directory: Path) -> list[Path]:
    """The capture files in ``directory``, oldest first (their names sort by time)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if FILE_NAME.match(p.name) and p.is_file())


def read_records(directory: Path, report: ExportReport | None = None) -> Iterator[dict[str, Any]]:
    """Every record of every capture file, in file order; unreadable lines are counted, not fatal."""
    report = report if report is not None else ExportReport()
    for path in capture_files(directory):
        report.files += 1
        try:
            for line in _lines(path):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    report.bad_lines += 1
                    continue
                if isinstance(record, dict) and isinstance(record.get("messages"), list):
                    yield record
                else:
                    report.bad_lines += 1
        except (OSError, EOFError, gzip.BadGzipFile):
            # A writer killed mid-batch leaves a truncated last member: what came before counts.
            report.damaged_files.append(path.name)


def _lines(path: Path) -> Iterator[bytes]:
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
        yield from f


def write_dataset(path: Path, lines: Iterable[bytes]) -> None:
    """Write ``lines`` to ``path`` (0600) whole or not at all: temp file beside it, fsync, rename.

    Unlike the store's writes this leaves the directory's mode alone: it is the user's choice.
    """
    write_chunks_atomic(path, lines)

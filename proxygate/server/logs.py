"""The server's log: one handler set on the root logger, so every logger (ours, aiohttp's,
asyncio's, ``warnings``) goes through the same formatter and the same escaping.

    text   ``2026-12-05T10:00:00 INFO    proxygate.request: pg_… anthropic …``
    json   one JSON object a line: ``ts``, ``level``, ``logger``, ``message``, and
           ``request_id`` when the line is about a request, ``exc`` for a traceback

What a client or a file chose (model names, ids, session keys, paths) reaches log messages
as it came. A CR/LF in it must not forge a log line (issue 10 §5), so the formatter, not
each call site, makes every record exactly one line start: in text, control characters
(C0, DEL, C1) and lone surrogates are written as ``\\xNN``/``\\uNNNN`` and a traceback's
lines are indented; in json, orjson escapes them.
"""

from __future__ import annotations

import asyncio
import io
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import orjson

from proxygate.features.metrics import REQUEST_SCOPE

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"

# C0 controls, DEL, C1 controls, and lone surrogates (undecodable bytes of a header kept by
# surrogateescape): none belongs in a log line, and surrogates cannot even be written.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_REQUEST_ID = re.compile(r"\bpg_[0-9a-f]{24}\b")  # call.new_request_id()
_CONTINUATION = "\n    "


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``a\\r\\nb`` → ``a\\x0d\\x0ab``: printable, one line, whatever the input."""
    if text.isprintable():  # nearly every line; a C loop, where the regex costs ~1 µs
        return text
    return _UNSAFE.sub(_escape_char, text)


def request_id_of(record: logging.LogRecord, message: str) -> str:
    """The id of the request a record is about: given as ``extra``, the current task's, or named in it."""
    given = getattr(record, "request_id", None)
    if isinstance(given, str) and given:
        return given
    scope = REQUEST_SCOPE.get()
    if scope is not None and scope.request_id:
        return scope.request_id
    found = _REQUEST_ID.search(message)
    return found.group() if found else ""


class TextFormatter(logging.Formatter):
    """The classic line, its message escaped; traceback lines indented under it."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, DATE_FORMAT)
        self._second = -1
        self._asctime = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # A server writes many lines a second: the time is formatted once a second.
        second = int(record.created)
        if second != self._second:
            self._second, self._asctime = second, super().formatTime(record, datefmt)
        return self._asctime

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info or record.exc_text or record.stack_info):
            # TEXT_FORMAT written out: the generic path (a dict of the record's fields, a
            # cache check, three more calls) was half of a request's log line.
            message = escape_control(record.getMessage())
            return f"{self.formatTime(record, self.datefmt)} {record.levelname:<7} {record.name}: {message}"
        line = super().format(record)
        if "\n" in line:  # exc_info / stack_info: only a real record starts at column 0
            head, _, rest = line.partition("\n")
            line = head + _CONTINUATION + _CONTINUATION.join(escape_control(x) for x in rest.split("\n"))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line (orjson escapes control characters)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        if request_id := request_id_of(record, message):
            entry["request_id"] = request_id
            scope = REQUEST_SCOPE.get()
            if scope is not None and scope.tenant is not None:  # authenticated: who asked (issue 14)
                entry["tenant"] = scope.tenant
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry).decode()
        except TypeError:  # a lone surrogate: orjson refuses strings that are not UTF-8
            return orjson.dumps({k: _utf8(v) for k, v in entry.items()}).decode()


def _utf8(value: Any) -> Any:
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value


def _iso_utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class TurnStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` whose lines written on an event loop leave together at the end of
    the loop's turn: one write for all the requests that finished in it, not one each (a
    write is a system call, a fifth of what a request's log line costs). Off a loop (other
    threads, start-up, shutdown) a line is written at once, after any still pending."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:  # under self.lock (Handler.handle)
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        pending = self._pending
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            pending.append(line)
            self._write_pending()
            return
        if not pending:
            loop.call_soon(self.flush)
        pending.append(line)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write_pending()

    def close(self) -> None:
        self.flush()
        super().close()

    def _write_pending(self) -> None:
        lines, self._pending = "".join(self._pending), []
        try:
            if lines:
                self.stream.write(lines)
            if hasattr(self.stream, "flush"):
                self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: logging must not stop the server
            pass


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated log file created 0600 in a 0700 directory (it names accounts and models)."""

    def _open(self) -> io.TextIOWrapper:
        path = Path(self.baseFilename)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # an existing file from an older run keeps no wider mode
        return io.TextIOWrapper(open(fd, "ab"), encoding=self.encoding or "utf-8", errors=self.errors)


class LogLines(io.TextIOBase):
    """A text stream whose every line becomes a log record: what a command prints to stderr
    after ``setup`` (its one-line error) is then formatted like every other line."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        super().__init__()
        self.logger, self.level = logger, level
        self._pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self.logger.log(self.level, "%s", line)
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self.logger.log(self.level, "%s", self._pending)
        self._pending = ""


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def setup(
    level: str,
    log_format: LogFormat = "text",
    *,
    log_file: Path | None = None,
    log_file_max_mb: float = 10.0,
    log_file_count: int = 5,
    stream: IO[str] | None = None,
) -> list[logging.Handler]:
    """Route every logger, ``warnings`` and uncaught exceptions through our handlers.

    Returns the handlers installed on the root logger (stderr, then the file when set).
    """
    formatter = formatter_for(log_format)
    handlers: list[logging.Handler] = [TurnStreamHandler(stream or sys.stderr)]
    if log_file is not None:
        handlers.append(
            PrivateRotatingFileHandler(
                log_file,
                maxBytes=max(int(log_file_max_mb * 1024 * 1024), 1024),
                backupCount=max(log_file_count, 1),
                encoding="utf-8",
                delay=False,
            )
        )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(LEVELS[level])
    # No format here names the caller's file, thread or process: a record need not look them up
    # (the logging docs' "Optimization" knobs; finding the caller is a stack walk a line).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn → logger "py.warnings", formatted like the rest
    sys.excepthook = _log_uncaught
    return handlers


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("proxygate").critical("uncaught exception", exc_info=(kind, exc, tb))


# -- reading the running server's log (``proxygate logs``) -------------------------------------

UNIT = "proxygate"
"The service name the units in packaging/ install (systemd: proxygate.service)."

_USER_UNIT_DIRS = ("/etc/systemd/user", "/usr/lib/systemd/user", "/usr/local/lib/systemd/user")
_SYSTEM_UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")


@dataclass(frozen=True, slots=True)
class LogSource:
    """Where the server's log can be read: a file, the journal, or nowhere (``where`` says why)."""

    kind: Literal["file", "journal", "none"]
    path: Path | None = None
    journal_args: tuple[str, ...] = ()
    "``journalctl`` arguments selecting the unit."
    where: str = ""


def find_log_source(
    log_file: Path | None,
    data_dir: Path,
    *,
    home: Path,
    environ: Mapping[str, str],
    proc: Path = Path("/proc"),
) -> LogSource:
    """The log file when configured; else the systemd journal when a unit exists; else the
    running server's stderr when it is a file; else a sentence saying where the output goes."""
    if log_file is not None:
        return LogSource("file", log_file)
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    unit = f"{UNIT}.service"
    if any((Path(d) / unit).is_file() for d in (config_home / "systemd" / "user", *_USER_UNIT_DIRS)):
        return LogSource("journal", journal_args=("--user", "-u", UNIT))
    if any((Path(d) / unit).is_file() for d in _SYSTEM_UNIT_DIRS):
        return LogSource("journal", journal_args=("-u", UNIT))
    pid = _running_pid(data_dir)
    if pid is None:
        return LogSource(
            "none",
            where="no server is running, no log_file is set and there is no systemd unit: "
            "`proxygate serve` writes its log to the stderr of whatever starts it; "
            'set log_file = "~/.proxygate/proxygate.log" in config.toml to keep it in a file',
        )
    try:
        target = os.readlink(proc / str(pid) / "fd" / "2")
    except OSError:
        target = ""
    if target.startswith("/") and Path(target).is_file():
        return LogSource("file", Path(target))
    told = f"to {escape_control(target)}" if target else "to the stderr it was started with"
    return LogSource(
        "none",
        where=f"the server (pid {pid}) writes its log {told}; no log_file is set and there is no "
        'systemd unit; set log_file = "~/.proxygate/proxygate.log" in config.toml to keep it in a file',
    )


def _running_pid(data_dir: Path) -> int | None:
    """The pid in ``<data_dir>/server.json`` when that process is alive."""
    try:
        pid = int(orjson.loads((data_dir / "server.json").read_bytes())["pid"])
        os.kill(pid, 0)
    except PermissionError:
        return pid
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
        return None
    return pid


TAIL_BLOCK = 64 * 1024


def last_lines(path: Path, n: int) -> tuple[list[str], int]:
    """The last ``n`` whole lines of a file, read backwards from its end (log files grow large),
    and the offset just after them, where ``follow_lines`` picks up without a gap or a repeat."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        end = pos = f.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    whole, _, partial = data.rpartition(b"\n")  # a line still being written is followed, not cut
    lines = whole.decode("utf-8", "replace").splitlines() if data.count(b"\n") else []
    return (lines[-n:] if n > 0 else []), end - len(partial)


def follow_lines(
    path: Path,
    *,
    offset: int | None = None,
    poll_s: float = 0.25,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Lines appended to ``path`` after ``offset`` (default: its end now), across rotation (a new
    inode, or a shorter file)."""
    f = path.open("rb")
    size = f.seek(0, os.SEEK_END)
    if offset is not None and offset <= size:
        f.seek(offset)
    inode = os.fstat(f.fileno()).st_ino
    pending = b""
    try:
        while True:
            chunk = f.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    yield raw.decode("utf-8", "replace")
                continue
            try:
                current = path.stat()
            except FileNotFoundError:  # between the rename and the new file
                sleep(poll_s)
                continue
            if current.st_ino != inode or current.st_size < f.tell():
                f.close()
                f = path.open("rb")
                inode = os.fstat(f.fileno()).st_ino
                continue
            sleep(poll_s)
    finally:
        f.close()


__all__ = [
    "JsonFormatter",
    "LogLines",
    "LogSource",
    "PrivateRotatingFileHandler",
    "TextFormatter",
    "TurnStreamHandler",
    "escape_control",
    "find_log_source",
    "follow_lines",
    "formatter_for",
    "last_lines",
    "request_id_of",
    "setup",
]

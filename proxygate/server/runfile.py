"""``<data_dir>/server.json``: where the running server listens, so the CLI talks to it.

    {"addr": "127.0.0.1:19527", "pid": 4242, "started_at": 1800000000, "version": "0.1.0"}

Written (0600, atomically) once the socket listens, with the real bound address (also for
``--addr HOST:0``); removed on a clean stop. A file left by a killed server names a pid that is
gone: ``is_alive`` tells. A wildcard ``addr`` (``0.0.0.0``, ``[::]``) means every interface.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from proxygate.store.files import write_json_atomic

RUNFILE = "server.json"


@dataclass(frozen=True, slots=True)
class RunningServer:
    addr: str
    pid: int
    started_at: int
    "Unix seconds."
    version: str

    def to_json(self) -> dict[str, Any]:
        return {"addr": self.addr, "pid": self.pid, "started_at": self.started_at, "version": self.version}

    def is_alive(self) -> bool:
        """The process named by ``pid`` still exists (it may not be this server's, after a reboot)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def runfile_path(data_dir: Path) -> Path:
    return data_dir / RUNFILE


def write_runfile(data_dir: Path, server: RunningServer) -> None:
    write_json_atomic(runfile_path(data_dir), server.to_json())


def read_runfile(data_dir: Path) -> RunningServer | None:
    """The server the file names, or None when there is no file or it is not one of ours."""
    try:
        data = orjson.loads(runfile_path(data_dir).read_bytes())
        return RunningServer(
            addr=str(data["addr"]),
            pid=int(data["pid"]),
            started_at=int(data["started_at"]),
            version=str(data["version"]),
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def remove_runfile(data_dir: Path, pid: int) -> None:
    """Remove the file if it still names ``pid``: a server started since keeps its own."""
    current = read_runfile(data_dir)
    if current is None or current.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            runfile_path(data_dir).unlink()

"""Finding the server the user started, and asking its admin API.

One idea first: the CLI must talk to the server that actually runs, not to the one the config
describes. ``serve --addr`` (or ``--port 0``) listens elsewhere, so the server writes
``<data_dir>/server.json`` once it listens: ``{"addr", "pid", "started_at", "version"}``. A client
command looks, in order, at ``--addr``, that file (its pid alive and ``/healthz`` answering),
then the configured ``addr``. The admin API always needs a token: ``admin_token`` from the
settings, else ``<data_dir>/admin.token``, which the server generates when none is set.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from proxygate.config import Settings
from proxygate.errors import PoolError

SERVER_FILE = "server.json"
TOKEN_FILE = "admin.token"

# /healthz answers at once on a live server; a short wait keeps offline commands quick.
PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class RunningServer:
    addr: str
    "HOST:PORT as the server listens (or as --addr named it)."
    base_url: str
    token: str = ""


def _base_url(addr: str) -> str:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: loopback reaches it
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # alive, run by someone else
        return True
    except (OSError, OverflowError):
        return False
    return True


def _server_file_addr(data_dir: Path) -> str | None:
    """The addr in ``server.json`` when its process is alive; None otherwise."""
    try:
        data = orjson.loads((data_dir / SERVER_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("addr"), str):
        return None
    pid = data.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not _pid_alive(pid):
        return None  # a stale file from a server that was killed
    return str(data["addr"])


def admin_token(settings: Settings) -> str:
    """``admin_token`` from the settings, else the one the server generated in the data dir."""
    if settings.admin_token:
        return settings.admin_token
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return (settings.data_dir / TOKEN_FILE).read_text().strip()
    return ""


def _answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=PROBE_TIMEOUT_S) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def find_server(settings: Settings, addr: str | None = None) -> RunningServer | None:
    """The running server: ``addr`` if given, else server.json, else the configured addr."""
    candidates = [addr] if addr else [a for a in (_server_file_addr(settings.data_dir), settings.addr) if a]
    for candidate in dict.fromkeys(candidates):
        base_url = _base_url(candidate)
        if _answers(base_url):
            return RunningServer(candidate, base_url, admin_token(settings))
    return None


def call(
    server: RunningServer, path: str, *, method: str = "GET", body: Any = None, timeout_s: float = 5.0
) -> Any:
    """One admin API call; ``PoolError`` when the server refuses or cannot be reached."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(f"{server.base_url}{path}", data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if server.token:
        request.add_header("authorization", f"Bearer {server.token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise PoolError(f"the server at {server.addr} refused: {_refusal(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PoolError(f"the server at {server.addr} did not answer: {exc}") from None
    except orjson.JSONDecodeError:
        raise PoolError(f"the server at {server.addr} answered something that is not JSON") from None


def _refusal(exc: urllib.error.HTTPError) -> str:
    """``HTTP 401: missing or wrong admin token``: the status and the server's own message."""
    message = ""
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        data = orjson.loads(exc.read()[:4096])
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            error = error.get("message")
        message = str(error or "")
    if exc.code == 401 and not message:
        message = "missing or wrong admin token"
    return f"HTTP {exc.code}" + (f": {message}" if message else "")

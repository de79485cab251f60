"""A real ``redis-server`` (Debian's /usr/bin/redis-server) on a free loopback port, for tests.

No persistence (``--save "" --appendonly no``), its files in a temp dir. ``stop()`` and
``start()`` take the same server away and bring it back on the same port, empty (a restart
without persistence), so a test can watch the store go degraded and recover.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0


def redis_server_path() -> str | None:
    """``$PROXYGATE_REDIS_SERVER``, else Debian's, else the first on PATH."""
    for candidate in (os.environ.get("PROXYGATE_REDIS_SERVER", ""), REDIS_SERVER):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("redis-server")


def require_redis_server() -> str:
    """The program, or skip; under ``CI=true`` a missing redis-server fails instead (.ci/run installs it)."""
    path = redis_server_path()
    if path is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the Redis tests must run; .ci/run installs redis-server)")
        pytest.skip(reason)
    return path


class RedisServer:
    def __init__(self, program: str, port: int, directory: Path) -> None:
        self.program = program
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again) and wait until it answers PING."""
        assert self._process is None, "already running"
        log = (self.directory / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [
                self.program,
                "--save", "",
                "--appendonly", "no",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if self._process.poll() is not None or time.monotonic() > deadline:
                    output = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}:\n{output}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s); its data is gone (no persistence)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    @property
    def is_running(self) -> bool:
        return self._process is not None

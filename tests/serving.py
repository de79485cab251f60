"""A real ``proxygate serve`` process for tests: its config, start, readiness, admin token, stop.

Tests that need the command as a user runs it (signals, server.json, the token file, the log on
stderr) start it here; tests of the app alone use ``start_proxy`` in conftest.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import free_port

PROXYGATE = (sys.executable, "-m", "proxygate")
STOP_TIMEOUT_S = 20


def write_config(root: Path, addr: str | None, extra: str = "") -> Path:
    """``<root>/config.toml`` with the pool and data dirs under ``root`` (and ``addr`` unless None)."""
    listen = f'addr = "{addr}"\n' if addr is not None else ""
    path = root / "config.toml"
    path.write_text(f'{listen}pool_dir = "pool"\ndata_dir = "data"\n{extra}')
    return path


async def spawn_serve(
    config: Path | None,
    *args: str,
    stdout: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    **options: Any,
) -> asyncio.subprocess.Process:
    """``proxygate serve [--config CONFIG] ARGS`` started, not waited for; unbuffered output by default."""
    with_config = ("--config", str(config)) if config is not None else ()
    return await asyncio.create_subprocess_exec(
        *PROXYGATE,
        "serve",
        *with_config,
        *args,
        stdout=stdout,
        stderr=stderr,
        env=env if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"},
        **options,
    )


async def wait_healthy(proc: asyncio.subprocess.Process, url: str, attempts: int = 200) -> None:
    """Poll ``url``/healthz until it answers 200; kill the process and fail if it never does."""
    async with aiohttp.ClientSession() as client:
        for _ in range(attempts):
            try:
                async with client.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("proxygate serve did not come up")


async def wait_for_file(path: Path, proc: asyncio.subprocess.Process, attempts: int = 200) -> None:
    """Wait until ``path`` exists or the process has exited (the caller's assertions then say which)."""
    for _ in range(attempts):
        if proc.returncode is not None or await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class ServeProcess:
    """A running ``proxygate serve`` on loopback and the data dir it writes."""

    proc: asyncio.subprocess.Process
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> tuple[str, str]:
        """SIGTERM, then everything it printed (stdout, stderr) once it has exited."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout_s)
        return (out or b"").decode(), (err or b"").decode()


async def start_serve(
    root: Path,
    extra: str = "",
    *args: str,
    stdout: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.DEVNULL,
    attempts: int = 200,
    **options: Any,
) -> ServeProcess:
    """``proxygate serve`` with ``<root>/config.toml`` (a free loopback port, ``extra`` appended), up."""
    port = free_port()
    config = write_config(root, f"127.0.0.1:{port}", extra)
    proc = await spawn_serve(config, *args, stdout=stdout, stderr=stderr, **options)
    served = ServeProcess(proc, port, root / "data")
    await wait_healthy(proc, served.url, attempts)
    return served


async def read_until(stream: asyncio.StreamReader, needle: str) -> str:
    """What the process printed up to the line holding ``needle``."""
    seen = ""
    while needle not in seen:
        line = await asyncio.wait_for(stream.readline(), 20)
        if not line:
            raise AssertionError(f"output ended before {needle!r}:\n{seen}")
        seen += line.decode()
    return seen


async def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 30
) -> tuple[int, str, str]:
    """``proxygate ARGS`` to its end: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *PROXYGATE,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()

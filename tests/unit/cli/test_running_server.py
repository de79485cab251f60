"""Client commands reach the server the user started, wherever it listens (issue 10 §8).

A real ``proxygate serve --addr`` on a free port and the CLI as real processes, with only
HOME set: the CLI finds the server through ``<data_dir>/server.json``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

import proxygate
from tests.conftest import free_port, write_account
from tests.serving import run_cli, spawn_serve, wait_for_file, wait_healthy
from tests.upstream import ScriptedUpstream, status

NOT_RUNNING = " (no server running; applies when the server starts)"


# The proxygate under test, whatever the cwd: the processes run in the fake HOME.
SOURCE_ROOT = str(Path(proxygate.__file__).resolve().parent.parent)


def home_env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": SOURCE_ROOT,
        "COLUMNS": "200",
    }


async def cli(home: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli(*args, cwd=home, env=home_env(home))


async def cli_json(home: Path, *args: str) -> Any:
    code, out, err = await cli(home, *args, "--json")
    assert code == 0, err
    return orjson.loads(out)


async def serve(home: Path, port: int) -> asyncio.subprocess.Process:
    proc = await spawn_serve(None, "--addr", f"127.0.0.1:{port}", cwd=home, env=home_env(home))
    await wait_healthy(proc, f"http://127.0.0.1:{port}", attempts=300)
    server_file = home / ".proxygate" / "data" / "server.json"
    await wait_for_file(server_file, proc, attempts=40)
    if not server_file.exists():
        proc.kill()
        raise AssertionError("proxygate serve wrote no server.json")
    return proc


async def account_entry(home: Path, account_id: str) -> dict[str, Any]:
    data = await cli_json(home, "status")
    return next(a for a in data["accounts"] if a["id"] == account_id)


async def eventually(home: Path, account_id: str, check: Any, within_s: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        entry = await account_entry(home, account_id)
        if check(entry) or time.monotonic() > deadline:
            return entry
        await asyncio.sleep(0.1)


async def test_status_reset_and_disable_reach_a_server_started_with_addr(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    home = tmp_path
    key = {"provider": "anthropic", "api_key": "sk-ant-0000-1111", "base_url": upstream.url}
    write_account(home / ".proxygate" / "pool", "apikeys", "a", key)
    port = free_port()
    proc = await serve(home, port)
    try:
        data = await cli_json(home, "status")
        assert (data["running"], data["addr"]) == (True, f"127.0.0.1:{port}")
        # the admin API needs a token: the CLI found the one the server generated
        assert (home / ".proxygate" / "data" / "admin.token").stat().st_mode & 0o777 == 0o600

        # one request, answered 429 with a long Retry-After: the account cools down live
        upstream.push(status(429, headers={"retry-after": "600"}))
        body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        async with (
            aiohttp.ClientSession() as client,
            client.post(f"http://127.0.0.1:{port}/v1/messages", json=body) as resp,
        ):
            assert resp.status == 429
        assert (await account_entry(home, "a"))["state"] != "ready"
        [listed] = await cli_json(home, "list")
        assert listed["today"]["requests"] == 1

        code, out, err = await cli(home, "reset", "a")
        assert (code, out.strip(), err) == (0, "reset a", "")
        assert (await eventually(home, "a", lambda e: e["state"] == "ready"))["state"] == "ready"

        code, out, err = await cli(home, "disable", "a")
        assert (code, out.strip(), err) == (0, "disabled a", "")
        entry = await eventually(home, "a", lambda e: not e["enabled"])
        assert (entry["enabled"], entry["state"]) == (False, "disabled")

        code, out, _ = await cli(home, "enable", "a", "--addr", f"127.0.0.1:{port}")
        assert (code, out.strip()) == (0, "enabled a")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)

    # stopped: the CLI says so, and changes are kept for the next start
    data = await cli_json(home, "status")
    assert data["running"] is False
    code, out, _ = await cli(home, "disable", "a")
    assert (code, out.strip()) == (0, "disabled a" + NOT_RUNNING)
    code, out, _ = await cli(home, "reset", "a")
    assert (code, out.strip()) == (0, "reset a" + NOT_RUNNING)


async def test_a_stale_server_file_is_ignored(tmp_path: Path) -> None:
    """server.json left by a killed server (its pid gone) does not make the CLI think one runs."""
    data_dir = tmp_path / ".proxygate" / "data"
    data_dir.mkdir(parents=True)
    configured = f"127.0.0.1:{free_port()}"
    (tmp_path / ".proxygate" / "config.toml").write_text(f'addr = "{configured}"\n')
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    (data_dir / "server.json").write_bytes(
        orjson.dumps({"addr": f"127.0.0.1:{free_port()}", "pid": dead.pid, "started_at": 0, "version": "x"})
    )
    code, out, _ = await cli(tmp_path, "status")
    assert code == 0
    assert out.splitlines()[0] == f"proxygate not running on http://{configured}"

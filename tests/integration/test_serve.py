"""``proxygate serve`` as a process: startup message, exposure check, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from proxygate.store import LMDBStore, today
from tests.conftest import free_port, write_account
from tests.upstream import anthropic_sse


async def start_serve(tmp_path: Path, extra: str = "") -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    (tmp_path / "config.toml").write_text(
        f'addr = "127.0.0.1:{port}"\npool_dir = "pool"\ndata_dir = "data"\n{extra}'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxygate",
        "serve",
        "--config",
        str(tmp_path / "config.toml"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    async with aiohttp.ClientSession() as client:
        for _ in range(200):
            try:
                async with client.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return proc, port
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError("proxygate serve did not come up")


async def test_empty_pool_starts_and_says_how_to_add_an_account(tmp_path: Path) -> None:
    proc, _ = await start_serve(tmp_path)
    proc.send_signal(signal.SIGTERM)
    out = (await asyncio.wait_for(proc.communicate(), 20))[0].decode()
    assert proc.returncode == 0
    assert "is empty: add an API key with `proxygate add-key --provider anthropic`" in out
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700


async def test_sigterm_lets_a_stream_in_flight_finish_and_flushes_its_usage(tmp_path: Path, upstream) -> None:
    payload = anthropic_sse("slow")
    events = payload.split(b"\n\n")[:-1]

    async def paced(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        for event in events:
            await out.write(event + b"\n\n")
            await asyncio.sleep(0.15)
        return out

    upstream.push(paced)
    write_account(
        tmp_path / "pool",
        "apikeys",
        "a",
        {"provider": "anthropic", "api_key": "sk-ant-0000-1111", "base_url": upstream.url},
    )
    proc, port = await start_serve(tmp_path)
    body = {
        "model": "claude-x",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with aiohttp.ClientSession() as client:
        async with client.post(f"http://127.0.0.1:{port}/v1/messages", json=body) as resp:
            first = await resp.content.readany()
            proc.send_signal(signal.SIGTERM)
            rest = await resp.read()
        assert first + rest == payload
        await asyncio.sleep(0.2)
        try:  # no longer accepting
            async with client.get(f"http://127.0.0.1:{port}/healthz") as late:
                assert late.status != 200
        except aiohttp.ClientConnectionError:
            pass
    await asyncio.wait_for(proc.wait(), 20)
    assert proc.returncode == 0
    store = LMDBStore(tmp_path / "data")
    [row] = store.usage(today())
    store.close()
    assert (row.account_id, row.totals.requests, row.totals.output_tokens) == ("a", 1, 3)

"""``proxygate serve`` as a process: startup message, exposure check, a taken port, server.json, SIGTERM drain."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
from pathlib import Path

import aiohttp
import orjson

from proxygate import __version__
from proxygate.store import LMDBStore, today
from tests.conftest import write_account
from tests.serving import ServeProcess, read_until, spawn_serve, start_serve, wait_for_file, write_config
from tests.upstream import ScriptedUpstream, anthropic_sse, paced_events

STREAM_ASK = {
    "model": "claude-x",
    "max_tokens": 5,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
SLOW_ANSWER = "a slow answer of many words to keep the stream open"


async def serve_a_paced_stream(
    tmp_path: Path, upstream: ScriptedUpstream, text: str, pause_s: float, extra: str = ""
) -> tuple[ServeProcess, bytes]:
    """``serve`` over one key whose upstream streams ``text`` one event per ``pause_s``; the bytes it sends."""
    payload = anthropic_sse(text)
    upstream.push(paced_events(payload, pause_s))
    write_account(
        tmp_path / "pool",
        "apikeys",
        "a",
        {"provider": "anthropic", "api_key": "sk-ant-0000-1111", "base_url": upstream.url},
    )
    served = await start_serve(
        tmp_path, extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    return served, payload


async def test_empty_pool_starts_and_says_how_to_add_an_account(tmp_path: Path) -> None:
    served = await start_serve(tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await served.stop()
    assert served.proc.returncode == 0
    assert "is empty: add an API key with `proxygate add-key --provider anthropic`" in out
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700


async def test_sigterm_lets_a_stream_in_flight_finish_and_flushes_its_usage(tmp_path: Path, upstream) -> None:
    served, payload = await serve_a_paced_stream(tmp_path, upstream, "slow", 0.15)
    proc, port = served.proc, served.port
    async with aiohttp.ClientSession() as client:
        async with client.post(f"http://127.0.0.1:{port}/v1/messages", json=STREAM_ASK) as resp:
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


def lines_apart_from_log_records(text: str) -> list[str]:
    return [line for line in text.splitlines() if not re.match(r"^(\d{4}-\d\d-\d\dT|\{)", line)]


async def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path, None)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = await spawn_serve(
            config,
            "--addr",
            f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert lines_apart_from_log_records(err.decode()) == [
        f"error: 127.0.0.1:{port} is in use (another proxygate?); try --addr HOST:PORT"
    ]
    assert out == b""
    assert not (tmp_path / "data" / "server.json").exists()


async def test_server_json_names_the_running_server_and_goes_when_it_stops(tmp_path: Path) -> None:
    served = await start_serve(tmp_path)
    proc, port = served.proc, served.port
    runfile = tmp_path / "data" / "server.json"
    assert orjson.loads(runfile.read_bytes()) == {
        "addr": f"127.0.0.1:{port}",
        "pid": proc.pid,
        "started_at": orjson.loads(runfile.read_bytes())["started_at"],
        "version": __version__,
    }
    assert abs(orjson.loads(runfile.read_bytes())["started_at"] - time.time()) < 60
    assert runfile.stat().st_mode & 0o777 == 0o600
    await served.stop()
    assert proc.returncode == 0
    assert not runfile.exists()


async def test_port_0_is_listed_in_server_json_with_the_port_it_got(tmp_path: Path) -> None:
    proc = await spawn_serve(write_config(tmp_path, "127.0.0.1:0"))
    runfile = tmp_path / "data" / "server.json"
    await wait_for_file(runfile, proc)
    addr = orjson.loads(runfile.read_bytes())["addr"]
    try:
        assert addr.startswith("127.0.0.1:") and addr != "127.0.0.1:0"
        async with aiohttp.ClientSession() as client, client.get(f"http://{addr}/healthz") as resp:
            assert (resp.status, await resp.json()) == (200, {"ok": True, "pid": proc.pid})
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    assert not runfile.exists()


async def test_sigterm_says_how_many_streams_drain_and_a_second_one_cuts_them(
    tmp_path: Path, upstream
) -> None:
    served, payload = await serve_a_paced_stream(tmp_path, upstream, SLOW_ANSWER, 1)
    proc, port = served.proc, served.port
    assert proc.stdout is not None
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"http://127.0.0.1:{port}/v1/messages", json=STREAM_ASK) as resp,
    ):
        first = await resp.content.readany()
        proc.send_signal(signal.SIGTERM)
        assert "draining 1 streams (up to 30s)…" in await read_until(proc.stdout, "draining")
        proc.send_signal(signal.SIGTERM)
        said = await read_until(proc.stdout, "second signal")
        assert "second signal: cut 1 requests still in flight; stopping now" in said
        with contextlib.suppress(aiohttp.ClientPayloadError):
            first += await resp.read()
    await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    assert first != payload and payload.startswith(first)
    assert not (tmp_path / "data" / "server.json").exists()


async def test_a_stream_outlasting_drain_timeout_s_is_cut_and_counted(tmp_path: Path, upstream) -> None:
    served, _ = await serve_a_paced_stream(tmp_path, upstream, SLOW_ANSWER, 1, "drain_timeout_s = 1\n")
    proc, port = served.proc, served.port
    assert proc.stdout is not None
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"http://127.0.0.1:{port}/v1/messages", json=STREAM_ASK) as resp,
    ):
        await resp.content.readany()
        proc.send_signal(signal.SIGTERM)
        said = await read_until(proc.stdout, "drain_timeout_s")
        with contextlib.suppress(aiohttp.ClientPayloadError):
            await resp.read()
    assert "draining 1 streams (up to 1s)…" in said
    assert "drain_timeout_s=1 passed: cutting 1 requests still in flight" in said
    await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0


async def test_serve_listens_on_ipv6_loopback_without_a_token(tmp_path: Path) -> None:
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as probe:
        port = probe.getsockname()[1]
    proc = await spawn_serve(write_config(tmp_path, f"[::1]:{port}"), stderr=asyncio.subprocess.PIPE)
    runfile = tmp_path / "data" / "server.json"
    await wait_for_file(runfile, proc)
    try:
        assert orjson.loads(runfile.read_bytes())["addr"] == f"[::1]:{port}"
        async with aiohttp.ClientSession() as client, client.get(f"http://[::1]:{port}/healthz") as resp:
            assert (resp.status, await resp.json()) == (200, {"ok": True, "pid": proc.pid})
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0

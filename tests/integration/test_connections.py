"""Slow or hostile connections against the real server on 127.0.0.1 (issue 10 §6).

The server runs as ``serve`` runs it (``lifecycle.listening``: header deadline, body deadline,
connection cap), with short deadlines so a stall shows in about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from proxygate.config import load_settings
from proxygate.server.app import create_app
from proxygate.server.connections import open_listener, raise_open_file_limit
from proxygate.server.lifecycle import listening
from tests.conftest import write_account
from tests.serving import start_serve

HANG_GUARD_S = 15.0
"Only so a broken server fails the test instead of hanging it; never a speed assertion."


@asynccontextmanager
async def serving(tmp_path: Path, config: str = "") -> AsyncIterator[int]:
    (tmp_path / "config.toml").write_text(f'pool_dir = "pool"\ndata_dir = "data"\n{config}')
    settings = load_settings(tmp_path / "config.toml", {})
    sock = open_listener("127.0.0.1", 0)
    try:
        async with listening(create_app(settings), settings, sock):
            yield sock.getsockname()[1]
    finally:
        sock.close()


def head(port: int, *, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [
        "POST /v1/messages HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[str, dict[str, Any]]:
    """The status line and JSON body of one answer."""
    status = (await reader.readline()).decode().strip()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, orjson.loads(await reader.readexactly(length))


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), HANG_GUARD_S) == b""
    except ConnectionResetError:
        return True


STALLED = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "request body stalled: 5 of 100 bytes arrived before the body deadline "
        "(header_timeout_s=1, body_min_bytes_per_s=65536)",
    },
}


async def test_a_body_that_stalls_gets_408_in_the_client_format_and_the_connection_closes(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, "header_timeout_s = 1\n") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head(port, length=100) + b'{"mod')
        status, body = await asyncio.wait_for(read_answer(reader), HANG_GUARD_S)
        assert status == "HTTP/1.1 408 Request Timeout"
        assert body == {**STALLED, "request_id": body["request_id"]}
        assert await closed_by_server(reader)
        writer.close()


async def test_a_chunked_body_dripping_below_the_minimum_rate_is_cut(tmp_path: Path) -> None:
    async with serving(tmp_path, "header_timeout_s = 1\nbody_min_bytes_per_s = 1000\n") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head(port, chunked=True))

        async def drip() -> None:
            for byte in b'{"model": "claude-x", "messages": []}':
                writer.write(b"1\r\n" + bytes([byte]) + b"\r\n")
                await asyncio.sleep(0.1)

        dripping = asyncio.ensure_future(drip())
        status, body = await asyncio.wait_for(read_answer(reader), HANG_GUARD_S)
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dripping
        assert status == "HTTP/1.1 408 Request Timeout"
        assert body["error"]["message"].startswith("request body stalled: ")
        assert await closed_by_server(reader)
        writer.close()


async def test_a_body_that_keeps_pace_is_read_whole(tmp_path: Path, upstream) -> None:
    write_account(
        tmp_path / "pool",
        "apikeys",
        "a",
        {"provider": "anthropic", "api_key": "sk-ant-0000-1111", "base_url": upstream.url},
    )
    body = orjson.dumps(
        {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    )
    async with serving(tmp_path, "header_timeout_s = 1\n") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head(port, length=len(body)) + body[:10])
        await asyncio.sleep(0.6)  # inside the 1 s grace
        writer.write(body[10:])
        status, answer = await asyncio.wait_for(read_answer(reader), HANG_GUARD_S)
        writer.close()
    assert (status, answer["content"]) == ("HTTP/1.1 200 OK", [{"type": "text", "text": "pong"}])
    assert [r.body for r in upstream.requests] == [orjson.loads(body)]


async def test_a_request_head_not_finished_in_time_is_closed_without_an_answer(tmp_path: Path) -> None:
    async with serving(tmp_path, "header_timeout_s = 1\n") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())  # no blank line
        assert await closed_by_server(reader)
        writer.close()


async def test_a_keep_alive_connection_gets_the_same_deadline_for_its_next_request(tmp_path: Path) -> None:
    async with serving(tmp_path, "header_timeout_s = 1\n") as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        status, body = await asyncio.wait_for(read_answer(reader), HANG_GUARD_S)
        assert (status, body["ok"]) == ("HTTP/1.1 200 OK", True)
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # the next head never ends
        assert await closed_by_server(reader)
        writer.close()


async def test_connections_past_max_connections_are_closed_at_once_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxygate")
    async with serving(tmp_path, "max_connections = 3\n") as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0.1)  # the server has accepted all three
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert await closed_by_server(reader)
            writer.close()
        held[0][1].close()
        await asyncio.sleep(0.1)  # the server has seen it go
        async with aiohttp.ClientSession() as client, client.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
        for _, writer in held[1:]:
            writer.close()
    refusals = [r.getMessage() for r in caplog.records if "closing new connections" in r.getMessage()]
    assert refusals == ["max_connections=3 reached (3 open): closing new connections at once"]


IDLE_CONNECTIONS = 1100


def _lower_soft_open_files(limit: int) -> Callable[[], None]:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    return lower


async def test_with_1100_idle_connections_open_healthz_still_answers_within_a_second(tmp_path: Path) -> None:
    """A real `serve` started with the usual soft limit of 1,024 open files raises it itself."""
    if raise_open_file_limit() < IDLE_CONNECTIONS + 200:
        pytest.skip("this process may not open 1,100 sockets")
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < IDLE_CONNECTIONS + 200:
        pytest.skip("the hard open-file limit is below what the server needs")
    served = await start_serve(tmp_path, preexec_fn=_lower_soft_open_files(1024))
    port = served.port
    idle: list[socket.socket] = []
    try:

        def open_idle() -> None:
            for _ in range(IDLE_CONNECTIONS):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S))

        await asyncio.to_thread(open_idle)
        await asyncio.sleep(0.5)  # let the server accept what the kernel queued
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as fresh:
            started = time.monotonic()
            async with fresh.get(
                f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=HANG_GUARD_S)
            ) as resp:
                assert (resp.status, (await resp.json())["ok"]) == (200, True)
            elapsed_s = time.monotonic() - started
        assert elapsed_s < 1.0, f"/healthz took {elapsed_s:.2f} s with {IDLE_CONNECTIONS} idle connections"
    finally:
        for sock in idle:
            sock.close()
        await served.stop(timeout_s=30)


async def test_the_admin_api_reads_its_body_within_the_same_deadline(tmp_path: Path) -> None:
    async with serving(tmp_path, "header_timeout_s = 1\n") as port:
        token = (tmp_path / "data" / "admin.token").read_text().strip()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            (
                f"POST /admin/api/route HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            ).encode()
            + b'{"na'
        )
        status, body = await asyncio.wait_for(read_answer(reader), HANG_GUARD_S)
        assert (status, body) == (
            "HTTP/1.1 408 Request Timeout",
            {
                "error": "request body stalled: 4 of 100 bytes arrived before the body deadline "
                "(header_timeout_s=1, body_min_bytes_per_s=65536)"
            },
        )
        assert await closed_by_server(reader)
        writer.close()

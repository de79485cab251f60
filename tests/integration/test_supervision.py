"""Background tasks restart after a fault, and nothing a client sends stops the bookkeeping (issue 10 §2)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxygate.server.keys import STORE
from proxygate.server.tasks import supervise
from tests.conftest import FakeClock
from tests.upstream import anthropic_message, ok_json


class Flaky:
    """A real background job: fails ``failures`` times (each run lasting ``run_s`` on the clock), then idles."""

    def __init__(self, clock: FakeClock, failures: list[float]) -> None:
        self.clock = clock
        self.failures = failures
        self.runs = 0
        self.idle = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.failures:
            self.clock.advance(self.failures.pop(0))
            raise RuntimeError(f"run {self.runs} broke")
        self.idle.set()
        await asyncio.Event().wait()  # runs until cancelled


async def test_a_failing_task_is_logged_and_restarted_with_a_doubling_backoff_reset_when_healthy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    job = Flaky(clock, [0.0] * 8 + [61.0, 0.0])  # eight quick failures, one after a healthy minute, one more
    delays: list[float] = []

    async def sleep(delay_s: float) -> None:
        delays.append(delay_s)

    with caplog.at_level(logging.ERROR, logger="proxygate.tasks"):
        task = asyncio.create_task(supervise("job", lambda: job(), clock=clock, sleep=sleep))  # noqa: TID251
        await asyncio.wait_for(job.idle.wait(), 5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 1, 2]
    assert job.runs == 11
    assert [r.getMessage() for r in caplog.records][:2] == [
        "background task 'job' failed; restarting in 1 s",
        "background task 'job' failed; restarting in 2 s",
    ]
    assert all(r.exc_info and "RuntimeError: run" in caplog.text for r in caplog.records)
    assert len(caplog.records) == 10


async def test_a_task_that_returns_is_not_restarted() -> None:
    runs: list[int] = []

    async def once() -> None:
        runs.append(1)

    await asyncio.wait_for(supervise("once", once), 5)
    assert runs == [1]


async def raw_request(url: str, head: bytes, body: bytes) -> bytes:
    """Send bytes aiohttp's client refuses to send (a non-UTF-8 header value)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_poisoned_requests_leave_the_server_serving_and_the_next_request_recorded(
    upstream, start_proxy
) -> None:
    """A non-UTF-8 session header and a 240-byte model name once ended the committer, and the server."""
    proxy = await start_proxy(
        {"ant": {"provider": "anthropic", "api_key": "sk-ant-0000-1111", "base_url": upstream.url}}
    )
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    answer = await raw_request(
        proxy.url,
        b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"session_id: abc\xff\xfe\r\n",
        orjson.dumps(body),
    )
    assert answer.startswith(b"HTTP/1.1 200")
    async with aiohttp.ClientSession() as client:
        long_model = {**body, "model": "claude-" + "é" * 116}  # 239 bytes: under ingress's cap, over a key's
        async with client.post(f"{proxy.url}/v1/messages", json=long_model) as resp:
            assert resp.status == 200
        await asyncio.sleep(0.3)  # past a commit: the poisoned writes are in the committer's hands
        async with client.get(f"{proxy.url}/healthz") as resp:
            assert resp.status == 200
        async with client.post(f"{proxy.url}/v1/messages", json=body) as resp:
            assert resp.status == 200
            request_id = resp.headers["x-proxygate-request-id"]
    store = proxy.app[STORE]
    for _ in range(100):  # committed by the committer itself, no flush
        if any(e["request_id"] == request_id for e in store.requests(5)):
            break
        await asyncio.sleep(0.05)
    entries = store.requests(5)
    assert entries[0]["request_id"] == request_id
    assert len(entries) == 3
    assert store.commit_failures == 0


async def test_an_upstreams_absurd_token_counts_leave_the_days_usage_row_writable(
    upstream, start_proxy
) -> None:
    """Counts past 64 bits once made the day's usage row unstorable: every later record of
    that account and model was dropped until midnight."""
    proxy = await start_proxy(
        {"ant": {"provider": "anthropic", "api_key": "sk-ant-0000-1111", "base_url": upstream.url}}
    )
    absurd = {"input_tokens": 2**64 - 1, "output_tokens": 2**64 - 1, "cache_read_input_tokens": -5}
    for usage in (absurd, absurd, {"input_tokens": 11, "output_tokens": 3}):
        upstream.push(ok_json(anthropic_message(usage=usage)))
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    ids = []
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            async with client.post(f"{proxy.url}/v1/messages", json=body) as resp:
                assert resp.status == 200
                ids.append(resp.headers["x-proxygate-request-id"])
    store = proxy.app[STORE]
    for _ in range(100):  # committed by the committer itself
        if {e["request_id"] for e in store.requests(5)} == set(ids):
            break
        await asyncio.sleep(0.05)
    assert {e["request_id"] for e in store.requests(5)} == set(ids)
    rows = store.usage_rows(0, time.time() + 86400)
    totals = [
        (r.totals.requests, r.totals.input_tokens, r.totals.output_tokens, r.totals.cache_read_tokens)
        for r in rows
    ]
    assert totals == [(3, 11, 3, 0)]
    assert store.commit_failures == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB filesystem of its own, to fill up (root only: it is a tmpfs mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(disk)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(path: Path) -> None:
    with path.open("wb") as f, contextlib.suppress(OSError):  # ENOSPC: the disk is full
        while True:
            f.write(b"\0" * 65536)
            f.flush()


async def test_a_full_disk_fails_the_committer_which_backs_off_and_saves_everything_once_there_is_room(
    small_disk: Path, upstream, start_proxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(
        {"ant": {"provider": "anthropic", "api_key": "sk-ant-0000-1111", "base_url": upstream.url}},
        env={"PROXYGATE_DATA_DIR": str(small_disk / "data")},
    )
    store = proxy.app[STORE]
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    ids: list[str] = []

    async def send(client: aiohttp.ClientSession) -> None:
        async with client.post(f"{proxy.url}/v1/messages", json=body) as resp:
            assert resp.status == 200
            ids.append(resp.headers["x-proxygate-request-id"])

    async def recorded() -> set[str]:
        return {e["request_id"] for e in await asyncio.to_thread(store.requests, 1000)}

    fill(small_disk / "filler")
    with caplog.at_level(logging.ERROR, logger="proxygate.tasks"):
        async with aiohttp.ClientSession() as client:
            for _ in range(10):
                await asyncio.gather(*(send(client) for _ in range(20)))
                if store.commit_failures:
                    break
            for _ in range(100):  # the requests may all be in before the committer's next tick
                if store.commit_failures:
                    break
                await asyncio.sleep(0.05)
            assert store.commit_failures >= 1  # the disk refused the commit itself
            async with client.get(f"{proxy.url}/healthz") as resp:
                assert resp.status == 200
            await send(client)  # still serving
            assert store.queue_depth > 0
        failures = [r for r in caplog.records if r.name == "proxygate.tasks"]
        assert failures and failures[0].getMessage().startswith("background task 'store committer' failed;")
        assert failures[0].exc_info and "the disk refused a commit" in caplog.text
    (small_disk / "filler").unlink()
    for _ in range(200):  # the committer's next try after its backoff (1 s, 2 s, …)
        if set(ids) <= await recorded():
            break
        await asyncio.sleep(0.05)
    assert set(ids) - await recorded() == set()


async def test_a_stop_ends_a_backoff_at_once() -> None:
    """A clean shutdown never waits out the backoff of a task that failed."""
    stop = asyncio.Event()
    failed = asyncio.Event()

    async def broken() -> None:
        failed.set()
        raise RuntimeError("broken")

    task = asyncio.create_task(supervise("broken", broken, stop=stop, backoff_min_s=3600))  # noqa: TID251
    await asyncio.wait_for(failed.wait(), 5)
    stop.set()
    await asyncio.wait_for(task, 5)  # returns, not after an hour

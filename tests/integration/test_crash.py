"""``kill -9`` under load: every request answered more than ~100 ms before the kill is in the store."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp

from proxygate.store import LMDBStore
from tests.conftest import write_account
from tests.serving import start_serve

WORKERS = 8
LOAD_S = 1.5
MARGIN_S = 0.2
"The issue's bound: what was answered this long before the kill must have been committed."


async def test_kill_9_under_load_loses_nothing_answered_before_the_last_commit(
    tmp_path: Path, upstream
) -> None:
    write_account(
        tmp_path / "pool",
        "apikeys",
        "a",
        {"provider": "anthropic", "api_key": "sk-ant-0000-1111", "base_url": upstream.url},
    )
    served = await start_serve(tmp_path)
    proc, url = served.proc, served.url
    answered: list[tuple[str, float]] = []  # (request id, when its answer was complete)
    killed = asyncio.Event()
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}

    async def client_loop(client: aiohttp.ClientSession) -> None:
        while not killed.is_set():
            try:
                async with client.post(f"{url}/v1/messages", json=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        answered.append((resp.headers["x-proxygate-request-id"], time.monotonic()))
            except aiohttp.ClientError:
                return  # the server is gone

    async with aiohttp.ClientSession() as client, asyncio.TaskGroup() as tasks:
        for _ in range(WORKERS):
            tasks.create_task(client_loop(client))
        await asyncio.sleep(LOAD_S)
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        killed.set()
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = LMDBStore(tmp_path / "data")
    recorded = {e["request_id"] for e in store.requests(len(answered) + 100)}
    store.close()
    due = [request_id for request_id, at in answered if at <= killed_at - MARGIN_S]
    assert len(due) > 50  # there was load
    assert [request_id for request_id in due if request_id not in recorded] == []
    late = [request_id for request_id, at in answered if at > killed_at - MARGIN_S]
    print(
        f"answered {len(answered)}, due {len(due)} all recorded; of the last {MARGIN_S}s: "
        f"{sum(r in recorded for r in late)}/{len(late)} recorded"
    )

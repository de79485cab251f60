"""LMDB's change feed: processes on one data dir (``serve --workers N``) see each other's state writes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from proxygate.server.tasks import supervise
from proxygate.store import COOLDOWNS, PINS, LMDBStore

WRITER = """
import sys
from pathlib import Path
from proxygate.server.tasks import supervise
from proxygate.store import COOLDOWNS, PINS, LMDBStore
store = LMDBStore(Path(sys.argv[1]))
store.put_state(COOLDOWNS, "acct-a", {"until": 123.0})
store.put_state(PINS, "conv-1", {"account": "acct-a"})
store.put_state(PINS, "conv-1", None)
store.close()
"""


def _write_from_another_process(data_dir: Path) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(data_dir)], check=True, timeout=30)


async def test_another_process_write_reaches_listener_within_a_second(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    seen: list[tuple[str, str, dict[str, Any] | None]] = []
    both = asyncio.Event()

    def listener(namespace: str, key: str, value: dict[str, Any] | None) -> None:
        seen.append((namespace, key, value))
        if len(seen) == 2:
            both.set()

    store.on_change(listener)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(supervise("store change feed", store.tasks(stop)["store change feed"], stop=stop))
        await asyncio.to_thread(_write_from_another_process, tmp_path)
        await asyncio.wait_for(both.wait(), 1.0)
        stop.set()
    assert sorted(seen, key=lambda c: c[0]) == [
        (COOLDOWNS, "acct-a", {"until": 123.0}),
        (PINS, "conv-1", None),
    ]
    assert store.get_states(COOLDOWNS) == {"acct-a": {"until": 123.0}}
    await asyncio.to_thread(store.close)


def test_own_writes_are_not_echoed(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    store.put_state(COOLDOWNS, "acct-a", {"until": 1.0})
    store.flush()
    assert store.read_changes() == []
    _write_from_another_process(tmp_path)
    assert store.read_changes() == [(COOLDOWNS, "acct-a", {"until": 123.0}), (PINS, "conv-1", None)]
    assert store.read_changes() == []
    store.close()


def test_changes_before_start_are_not_replayed(tmp_path: Path) -> None:
    _write_from_another_process(tmp_path)
    store = LMDBStore(tmp_path)
    assert store.read_changes() == []
    store.close()


async def test_write_state_and_read_state_go_through_the_environment(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    await store.write_state(COOLDOWNS, "acct-b", {"until": 5.0})
    other = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", READER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert other.stdout.strip() == "{'until': 5.0}"
    store.put_state(COOLDOWNS, "acct-b", None)
    assert await store.read_state(COOLDOWNS, "acct-b") is None
    await asyncio.to_thread(store.close)


READER = """
import sys
from pathlib import Path
from proxygate.store import COOLDOWNS, LMDBStore
store = LMDBStore(Path(sys.argv[1]))
print(store.get_states(COOLDOWNS).get("acct-b"))
store.close()
"""


async def test_hit_lock_unlock_within_one_process(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path)
    assert [await store.hit("tenant:a", 2, 60.0) for _ in range(2)] == [0.0, 0.0]
    assert 59.0 < await store.hit("tenant:a", 2, 60.0) <= 60.0
    token = await store.lock("refresh:acct-a", 30.0)
    assert token
    assert await store.lock("refresh:acct-a", 30.0) is None
    await store.unlock("refresh:acct-a", "not-the-token")
    assert await store.lock("refresh:acct-a", 30.0) is None
    await store.unlock("refresh:acct-a", token)
    assert await store.lock("refresh:acct-a", 30.0)
    assert store.degraded == "" and store.peer_leases() == {}
    await asyncio.to_thread(store.close)

"""RedisStore against a real redis-server: two instances share state, usage, limits, locks and leases."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from proxygate.config import StoreSettings, UsageSettings
from proxygate.server.tasks import supervise
from proxygate.store import COOLDOWNS, PINS, TOKENS, LMDBStore, StoreUnavailable, UsageRecord, UsageRow
from proxygate.store.redis_store import RedisStore
from tests.redis_server import RedisServer

Change = tuple[str, str, dict[str, Any] | None]


class Watched:
    """A started RedisStore with its background tasks running and its listener's calls kept."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.changes: list[Change] = []
        self._changed = asyncio.Event()
        store.on_change(self._listen)

    def _listen(self, namespace: str, key: str, value: dict[str, Any] | None) -> None:
        self.changes.append((namespace, key, value))
        self._changed.set()

    async def wait_for(self, check: Callable[[], bool], timeout_s: float) -> None:
        """Until ``check()`` holds (re-checked on every change and every 50 ms), at most ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while not check():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)


@contextlib.asynccontextmanager
async def running(
    url: str, prefix: str = "proxygate", usage: UsageSettings | None = None
) -> AsyncIterator[Watched]:
    store = RedisStore(StoreSettings(backend="redis", redis_url=url, key_prefix=prefix), usage)
    watched = Watched(store)
    await store.start()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        for name, run in store.tasks(stop).items():
            tasks.create_task(supervise(name, run, stop=stop))
        try:
            yield watched
        finally:
            stop.set()
            store.wake()
    await asyncio.to_thread(store.close)


async def test_a_write_reaches_the_other_instance_and_is_not_echoed(redis_url: str) -> None:
    async with running(redis_url) as a, running(redis_url) as b:
        a.store.put_state(COOLDOWNS, "acct-1", {"until": 42.0})
        a.store.put_state(PINS, "conv-1", {"account": "acct-1"})
        await b.wait_for(lambda: len(b.changes) >= 2, 1.0)
        assert b.store.get_states(PINS) == {"conv-1": {"account": "acct-1"}}
        a.store.put_state(PINS, "conv-1", None)
        await b.wait_for(lambda: len(b.changes) >= 3, 1.0)
        assert b.changes == [
            (COOLDOWNS, "acct-1", {"until": 42.0}),
            (PINS, "conv-1", {"account": "acct-1"}),
            (PINS, "conv-1", None),
        ]
        assert b.store.get_states(COOLDOWNS) == {"acct-1": {"until": 42.0}}
        assert b.store.get_states(PINS) == {}
        await asyncio.sleep(0.3)
        assert a.changes == []


async def test_write_state_is_committed_when_it_returns(redis_url: str) -> None:
    async with running(redis_url) as a, running(redis_url) as b:
        await a.store.write_state(TOKENS, "acct-1", {"sealed": "v1"})
        assert await b.store.read_state(TOKENS, "acct-1") == {"sealed": "v1"}
        await b.wait_for(lambda: b.changes == [(TOKENS, "acct-1", {"sealed": "v1"})], 1.0)
        await a.store.write_state(TOKENS, "acct-1", None)
        assert await b.store.read_state(TOKENS, "acct-1") is None
        assert a.store.get_states(TOKENS) == {}


async def test_a_new_instance_loads_the_state_at_start(redis_url: str) -> None:
    async with running(redis_url) as a:
        await a.store.write_state(COOLDOWNS, "acct-1", {"until": 1.0})
        async with running(redis_url) as b:
            assert b.store.get_states(COOLDOWNS) == {"acct-1": {"until": 1.0}}
        async with running(redis_url, prefix="other") as c:
            assert c.store.get_states(COOLDOWNS) == {}


def _records(now: float) -> list[UsageRecord]:
    base: dict[str, Any] = {"client_format": "anthropic", "upstream_format": "anthropic", "route": "default"}
    return [
        UsageRecord("r1", now - 7200, "acct-1", "claude-sonnet", status=200, input_tokens=10, output_tokens=5,
                    cost_usd=0.5, **base),
        UsageRecord("r2", now - 3600, "acct-1", "claude-sonnet", status=429, error_class="rate_limited", **base),
        UsageRecord("r3", now, "acct-2", "claude-opus", status=200, input_tokens=7, cache_read_tokens=3,
                    tenant="team-a", **base),
        UsageRecord("r4", now, "acct-1", "claude-sonnet", status=200, input_tokens=1, output_tokens=1,
                    cost_usd=0.25, **base),
        UsageRecord("r5", now, "acct-1", "m" * 300, status=502, **base),
    ]  # fmt: skip


async def test_usage_rows_and_request_log_match_lmdb(redis_url: str, tmp_path: Path) -> None:
    now = time.time()
    lmdb = LMDBStore(tmp_path)
    async with running(redis_url) as a, running(redis_url) as b:
        for n, rec in enumerate(_records(now)):  # the log is in the order instances send it: in turn
            lmdb.record(rec)
            writer = (a if n % 2 else b).store
            writer.record(rec)
            await asyncio.to_thread(writer.flush)
        lmdb.flush()
        for hourly in (False, True):
            rows = await asyncio.to_thread(a.store.usage_rows, now - 86400, now, hourly=hourly)
            assert rows == lmdb.usage_rows(now - 86400, now, hourly=hourly)
            assert len(rows) >= 3
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        assert sorted(a.store.usage(day), key=_row_order) == sorted(lmdb.usage(day), key=_row_order)
        assert b.store.requests(10) == lmdb.requests(10)
        assert [e["request_id"] for e in b.store.requests(10)] == ["r5", "r4", "r3", "r2", "r1"]
        assert b.store.requests(2, before="r4") == lmdb.requests(2, before="r4")
        assert b.store.requests(10, status="4xx") == lmdb.requests(10, status="4xx")
        assert b.store.requests(10, account="acct-2") == lmdb.requests(10, account="acct-2")
        assert b.store.requests(10, before="unknown") == []
        assert b.store.recent_requests(1) == lmdb.recent_requests(1)
        with pytest.raises(
            ValueError, match=r"^status filter '4': expected three digits or x, like 429 or 5xx$"
        ):
            b.store.requests(10, status="4")
    lmdb.close()


def _row_order(row: UsageRow) -> tuple[str, str]:
    return (row.account_id, row.model)


async def test_usage_is_kept_per_retention(redis_url: str) -> None:
    usage = UsageSettings(retention_days=3, hourly_retention_days=1, request_log_max_rows=2)
    now = time.time()
    async with running(redis_url, usage=usage) as a:
        for rec in _records(now):
            a.store.record(rec)
        await asyncio.to_thread(a.store.flush)
        assert [e["request_id"] for e in a.store.requests(10)] == ["r5", "r4"]
    client = redis.Redis.from_url(redis_url)
    day_key = f"proxygate:usage:day:{time.strftime('%Y-%m-%d', time.gmtime(now))}"
    hour_key = f"proxygate:usage:hour:{time.strftime('%Y-%m-%dT%H', time.gmtime(now))}"
    assert 3 * 86400 < client.ttl(day_key) <= 4 * 86400
    assert 86400 < client.ttl(hour_key) <= 86400 + 3600
    client.close()


async def test_hit_admits_exactly_the_limit_across_instances(redis_url: str) -> None:
    async with running(redis_url) as a, running(redis_url) as b:
        waits = await asyncio.gather(*(s.store.hit("tenant:t1", 5, 60.0) for _ in range(6) for s in (a, b)))
        assert sorted(waits)[:5] == [0.0] * 5
        assert all(59.0 < w <= 60.0 for w in sorted(waits)[5:])
        assert await a.store.hit("tenant:t2", 1, 60.0) == 0.0


async def test_lock_is_exclusive_and_only_its_token_unlocks_it(redis_url: str) -> None:
    async with running(redis_url) as a, running(redis_url) as b:
        token = await a.store.lock("refresh:acct-1", 30.0)
        assert token
        assert await b.store.lock("refresh:acct-1", 30.0) is None
        await b.store.unlock("refresh:acct-1", "wrong-token")
        assert await b.store.lock("refresh:acct-1", 30.0) is None
        await a.store.unlock("refresh:acct-1", token)
        assert await b.store.lock("refresh:acct-1", 30.0)
        short = await a.store.lock("short", 0.1)
        await asyncio.sleep(0.2)
        assert short and await b.store.lock("short", 30.0)


LEASE_HOLDER = """
import asyncio, sys
from proxygate.config import StoreSettings
from proxygate.store.redis_store import RedisStore

async def main() -> None:
    store = RedisStore(StoreSettings(backend="redis", redis_url=sys.argv[1]))
    store.report_leases(lambda: {"acct-1": 2, "acct-2": 0})
    await store.start()
    stop = asyncio.Event()
    beat = asyncio.ensure_future(store.heartbeat(stop))
    await asyncio.sleep(1.5)
    print("ready", flush=True)
    await beat

asyncio.run(main())
"""


async def test_leases_of_an_instance_that_dies_vanish_within_the_ttl(redis_url: str) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LEASE_HOLDER, redis_url, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"ready\n"
        async with running(redis_url) as b:
            b.store.report_leases(lambda: {"acct-1": 1})
            await b.wait_for(lambda: b.store.peer_leases() == {"acct-1": 2}, 3.0)
            holder.kill()  # no goodbye: only the TTL removes its leases
            await b.wait_for(lambda: b.store.peer_leases() == {}, 5.0)
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()


async def test_redis_going_away_and_coming_back(redis_server: RedisServer) -> None:
    url = redis_server.url
    async with running(url) as a, running(url) as b:
        a.store.put_state(COOLDOWNS, "acct-1", {"until": 1.0})
        await b.wait_for(lambda: len(b.changes) == 1, 1.0)
        redis_server.stop()
        a.store.put_state(COOLDOWNS, "acct-2", {"until": 2.0})  # queued while Redis is away
        b.store.put_state(PINS, "conv-1", {"account": "acct-2"})
        a.store.record(_records(time.time())[0])
        await a.wait_for(lambda: bool(a.store.degraded and b.store.degraded), 5.0)
        assert a.store.degraded.startswith("redis unreachable since ")
        assert a.store.get_states(COOLDOWNS) == {"acct-1": {"until": 1.0}, "acct-2": {"until": 2.0}}
        assert b.store.get_states(COOLDOWNS) == {"acct-1": {"until": 1.0}}
        assert await a.store.read_state(COOLDOWNS, "acct-1") is None
        with pytest.raises(StoreUnavailable, match=r"^shared store: cannot write tokens/acct-1: "):
            await a.store.write_state(TOKENS, "acct-1", {"sealed": "x"})
        assert await a.store.hit("tenant:t1", 1, 60.0) == 0.0  # per process meanwhile
        assert await a.store.hit("tenant:t1", 1, 60.0) > 0.0
        with pytest.raises(StoreUnavailable):
            await asyncio.to_thread(a.store.usage_rows, 0, time.time())
        redis_server.start()  # empty: it kept nothing
        await a.wait_for(lambda: not a.store.degraded and not b.store.degraded, 15.0)
        await b.wait_for(lambda: (COOLDOWNS, "acct-2", {"until": 2.0}) in b.changes, 2.0)
        await a.wait_for(lambda: (PINS, "conv-1", {"account": "acct-2"}) in a.changes, 2.0)
        # Redis kept nothing, but the first instance back put its mirror in again: acct-1 stays.
        assert b.store.get_states(COOLDOWNS) == {"acct-1": {"until": 1.0}, "acct-2": {"until": 2.0}}
        assert (COOLDOWNS, "acct-1", None) not in b.changes
        assert a.store.get_states(PINS) == {"conv-1": {"account": "acct-2"}}
        await a.wait_for(lambda: a.store.queue_depth == 0, 2.0)
        assert [r.totals.requests for r in await asyncio.to_thread(b.store.usage_rows, 0, time.time())] == [1]


async def test_a_store_that_was_not_started_reads_and_writes_directly(redis_url: str) -> None:
    """As a CLI command uses it: no loop tasks, ``get_states`` loads once, ``close`` sends the queue."""
    settings = StoreSettings(backend="redis", redis_url=redis_url)
    first = RedisStore(settings)
    first.put_state(COOLDOWNS, "acct-1", {"until": 3.0})
    await first.write_state(TOKENS, "acct-1", {"sealed": "t"})
    await asyncio.to_thread(first.close)
    second = RedisStore(settings)
    second.put_state(PINS, "conv-1", {"account": "acct-1"})
    assert second.get_states(COOLDOWNS) == {"acct-1": {"until": 3.0}}
    assert second.get_states(PINS) == {"conv-1": {"account": "acct-1"}}
    assert await second.read_state(TOKENS, "acct-1") == {"sealed": "t"}
    await asyncio.to_thread(second.close)


async def test_instances_writing_one_key_at_once_agree_with_redis(redis_url: str) -> None:
    """Whatever order Redis applied them in, both mirrors end with the value Redis kept."""
    async with running(redis_url) as a, running(redis_url) as b:
        for n in range(20):
            a.store.put_state(PINS, f"conv-{n % 4}", {"by": "a", "n": n})
            b.store.put_state(PINS, f"conv-{n % 4}", {"by": "b", "n": n})
            await asyncio.sleep(0.01 * (n % 3))
        client = redis.Redis.from_url(redis_url)

        def in_redis() -> dict[str, Any]:
            raw: dict[bytes, bytes] = client.hgetall("proxygate:state:pins")  # type: ignore[assignment]
            return {k.decode(): orjson.loads(v) for k, v in raw.items()}

        await a.wait_for(
            lambda: (
                a.store.queue_depth == 0 == b.store.queue_depth
                and a.store.get_states(PINS) == b.store.get_states(PINS) == in_redis()
            ),
            3.0,
        )
        assert len(in_redis()) == 4
        client.close()


def test_what_stays_queued_while_redis_is_away_is_bounded() -> None:
    """Records are summed per usage row; only the log entries beyond MAX_QUEUED_LOG are dropped (counted)."""
    from proxygate.store.redis_store import MAX_QUEUED_LOG, MAX_UNFOLDED
    from tests.conftest import free_port

    store = RedisStore(StoreSettings(backend="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    now = time.time()
    for n in range(MAX_UNFOLDED + 5000):
        store.record(UsageRecord(f"r{n}", now, "acct-1", "m", "chat", "chat", 200, input_tokens=1))
    store.fold()
    assert store.queue_depth == 1 + MAX_QUEUED_LOG  # one usage row, the newest log entries
    assert store.commit_failures == MAX_UNFOLDED + 5000 - MAX_QUEUED_LOG
    with pytest.raises(StoreUnavailable, match=r"^shared store: redis unreachable \(10001 writes kept\): "):
        store.flush()
    assert store.degraded.startswith("redis unreachable since ")
    store.close()


async def test_what_another_program_wrote_into_redis_is_skipped_not_served(redis_url: str) -> None:
    """Redis is a peer: values that are not our JSON objects never reach the mirror or a report."""
    raw = redis.Redis.from_url(redis_url)
    raw.hset(
        "proxygate:state:cooldowns", mapping={"good": b'{"until": 1.0}', "list": b"[1, 2]", "junk": b"\xff{"}
    )
    raw.lpush("proxygate:requests", b"not json", b"[]")
    async with running(redis_url) as a:
        assert a.store.get_states(COOLDOWNS) == {"good": {"until": 1.0}}
        assert await a.store.read_state(COOLDOWNS, "list") is None
        ready = b'{"i": "x", "n": "pins", "k": "ready", "v": {"account": "a"}}'
        while not a.changes:  # the change feed subscribes in its own task
            raw.publish("proxygate:changes", ready)
            await asyncio.sleep(0.02)
        a.changes.clear()
        for message in (b"\xff", b"[]", b'{"i": "x", "n": "cooldowns", "k": "k", "v": [1]}',
                        b'{"i": "x", "n": "cooldowns", "k": 7, "v": {"until": 2.0}}'):  # fmt: skip
            raw.publish("proxygate:changes", message)
        raw.publish("proxygate:changes", b'{"i": "x", "n": "pins", "k": "conv", "v": {"account": "a"}}')
        await a.wait_for(lambda: bool(a.changes), 2.0)
        assert a.changes == [(PINS, "conv", {"account": "a"})]  # the valid one, after every invalid one
        assert a.store.get_states(COOLDOWNS) == {"good": {"until": 1.0}}
        assert await asyncio.to_thread(a.store.requests, 10) == []
    raw.close()

"""Coordination between instances on one real Redis (issue 17): refresh, tenant rpm, leases.

Each instance has its own data dir and its own pool dir holding a copy of the same account:
one refresh grant serves both, a tenant's rpm holds across both to ±1, and the leases of an
instance killed with ``kill -9`` vanish from Redis and from the others' view within the
heartbeat's TTL.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from proxygate.server.keys import BROKER, PIPELINE, STORE, TENANT_BOOK
from tests import oauth_fakes
from tests.conftest import Proxy, admin_headers, write_account
from tests.oauth_fakes import FakeAuthServer, oauth_account
from tests.serving import start_serve
from tests.upstream import ScriptedUpstream, anthropic_sse, hold_after

ASK = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC = {"anthropic-version": "2023-06-01"}
LEASE_TTL_S = 3.0
"The heartbeat's TTL on an instance's leases (published every second)."
HEARTBEAT_S = 1.0

auth_server = oauth_fakes.auth_server  # the fake authorization server fixture


def on_redis(url: str) -> dict[str, str]:
    return {"PROXYGATE_STORE_BACKEND": "redis", "PROXYGATE_STORE_REDIS_URL": url}


async def instances(
    start_proxy: Any, tmp_path: Path, redis_url: str, accounts: Callable[[], dict[str, Any]], config: str = ""
) -> list[Proxy]:
    """Instances A and B on one Redis: own data dirs, own pool dirs with copies of ``accounts()``."""
    found = []
    for name in ("A", "B"):
        root = tmp_path / name
        root.mkdir()
        found.append(await start_proxy(accounts(), env=on_redis(redis_url), config=config, root=root))
    return found


async def within(seconds: float, check: Callable[[], Any], what: str) -> float:
    """Wait until ``check()`` holds; how long it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("kind", ["claude", "chatgpt"])
async def test_hundred_requests_through_two_instances_refresh_an_expiring_login_once(
    redis_url: str,
    upstream: ScriptedUpstream,
    start_proxy: Any,
    tmp_path: Path,
    auth_server: FakeAuthServer,
    kind: str,
) -> None:
    def login() -> dict[str, Any]:  # inside the 5-minute refresh margin on both copies
        return {"me": {"_kind": kind, **oauth_account(kind, expires_in_s=60), "base_url": upstream.url}}

    a, b = await instances(start_proxy, tmp_path, redis_url, login, auth_server.config_toml())
    auth_server.delay_s = 0.25  # a grant takes a moment: every request arrives while it runs
    path, body, headers = (
        ("/v1/messages", ASK, ANTHROPIC)
        if kind == "claude"
        else ("/v1/responses", {"model": "gpt-5-codex", "input": "hi", "stream": True}, {})
    )

    async with aiohttp.ClientSession() as http:

        async def ask(proxy: Proxy) -> int:
            async with http.post(f"{proxy.url}{path}", json=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(ask(p) for _ in range(50) for p in (a, b)))
    assert statuses == [200] * 100
    assert [g["refresh_token"] for g in auth_server.refreshes] == ["rt-0"]
    # Every request of both instances carried the new token upstream.
    assert len(upstream.requests) == 100
    assert {r.headers["Authorization"] for r in upstream.requests} == {"Bearer at-1"}
    for proxy in (a, b):  # each copy holds the live tokens (the old refresh token is spent)
        on_disk = orjson.loads((proxy.pool_dir / kind / "me.json").read_bytes())
        assert (on_disk["access_token"], on_disk["refresh_token"]) == ("at-1", "rt-1")


async def test_an_instance_whose_copy_is_not_due_switches_to_the_token_another_one_stored(
    redis_url: str, upstream: ScriptedUpstream, start_proxy: Any, tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    """A refreshes (its copy is due); B, whose copy is not, sends A's new token, not the rotated one."""
    expiries = iter([60, 3000])

    def login() -> dict[str, Any]:
        copy = oauth_account("claude", expires_in_s=next(expiries))
        return {"me": {"_kind": "claude", **copy, "base_url": upstream.url}}

    a, b = await instances(start_proxy, tmp_path, redis_url, login, auth_server.config_toml())
    async with aiohttp.ClientSession() as http:

        async def ask(proxy: Proxy) -> str:
            async with http.post(f"{proxy.url}/v1/messages", json=ASK, headers=ANTHROPIC) as resp:
                assert resp.status == 200
            return upstream.requests[-1].headers["Authorization"]

        assert await ask(b) == "Bearer at-0"  # B's copy is valid as far as B knows
        assert await ask(a) == "Bearer at-1"
        keeper, account = b.app[PIPELINE].keeper, b.app[BROKER].snapshot.by_id["me"]
        await within(1.0, lambda: keeper.current(account).access_token == "at-1", "B hears of A's refresh")
        assert await ask(b) == "Bearer at-1"
    assert len(auth_server.refreshes) == 1


async def test_a_tenant_rpm_holds_across_two_instances(
    redis_url: str, upstream: ScriptedUpstream, start_proxy: Any, tmp_path: Path
) -> None:
    def key() -> dict[str, Any]:
        return {"ant": {"provider": "anthropic", "api_key": "sk-ant-upstream-0000", "base_url": upstream.url}}

    a, b = await instances(start_proxy, tmp_path, redis_url, key)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{a.url}/admin/api/tenants", json={"name": "alice", "rpm": 30}, headers=admin_headers(a.settings)
        ) as resp:
            assert resp.status == 201, await resp.text()
            alice = (await resp.json())["key"]
        await within(2.0, lambda: b.app[TENANT_BOOK].authenticate(alice) == "alice", "B knows A's tenant")

        async def ask(proxy: Proxy) -> tuple[str, int, str, dict[str, Any]]:
            headers = {**ANTHROPIC, "x-api-key": alice}
            async with http.post(f"{proxy.url}/v1/messages", json=ASK, headers=headers) as resp:
                return (
                    proxy.url,
                    resp.status,
                    resp.headers.get("retry-after", ""),
                    orjson.loads(await resp.read()),
                )

        answers = await asyncio.gather(*(ask(p) for _ in range(30) for p in (a, b)))
    accepted = [url for url, code, _, _ in answers if code == 200]
    assert abs(len(accepted) - 30) <= 1
    assert a.url in accepted and b.url in accepted  # both instances served from the one allowance
    refused = [(code, retry, body) for _, code, retry, body in answers if code != 200]
    assert {code for code, _, _ in refused} == {429}
    for _, retry, body in refused:  # Anthropic's format, and a Retry-After that is enough when waited
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert body["error"]["message"] == "tenant 'alice': 30 requests per minute reached (rpm)"
        assert 1 <= int(retry) <= 60


async def test_the_leases_of_an_instance_killed_with_streams_in_flight_vanish_within_the_ttl(
    redis_url: str, upstream: ScriptedUpstream, start_proxy: Any, tmp_path: Path
) -> None:
    """A (a real ``proxygate serve``) holds 3 streams on ``busy``; B routes around them, then
    A dies with ``kill -9``: its leases leave Redis and B's view within the TTL, B serves on."""

    def key(name: str) -> dict[str, Any]:
        return {"provider": "anthropic", "api_key": f"sk-ant-{name}-0000", "base_url": upstream.url}

    write_account(tmp_path / "A" / "pool", "apikeys", "busy", key("busy"))
    store_config = f'[store]\nbackend = "redis"\nredis_url = "{redis_url}"\n'
    killed = await start_serve(tmp_path / "A", store_config)  # the real process, to kill -9
    (tmp_path / "B").mkdir()
    b = await start_proxy(
        {"busy": key("busy"), "idle": key("idle")}, env=on_redis(redis_url), root=tmp_path / "B"
    )
    head = anthropic_sse("held").split(b"event: content_block_delta")[0]
    upstream.push(*(hold_after(head) for _ in range(3)))
    redis = aioredis.from_url(redis_url)

    async def peer_lease_keys() -> list[bytes]:
        mine = f"proxygate:leases:{b.app[STORE].instance_id}".encode()
        return [k for k in await redis.keys("proxygate:leases:*") if k != mine]

    async with aiohttp.ClientSession() as http:

        async def through_b() -> str:
            async with http.post(f"{b.url}/v1/messages", json=ASK, headers=ANTHROPIC) as resp:
                assert resp.status == 200
                return resp.headers["x-proxygate-account"]

        async def stream(started: asyncio.Event) -> None:
            try:
                async with http.post(
                    f"{killed.url}/v1/messages", json={**ASK, "stream": True}, headers=ANTHROPIC
                ) as resp:
                    assert resp.status == 200
                    await resp.content.readany()
                    started.set()
                    await resp.read()  # until the connection dies with its server
            except aiohttp.ClientError:
                pass

        async with asyncio.TaskGroup() as tasks:
            started = [asyncio.Event() for _ in range(3)]
            for event in started:
                tasks.create_task(stream(event))
            await within(5.0, lambda: all(e.is_set() for e in started), "3 streams held on A")
            await within(LEASE_TTL_S, lambda: b.app[STORE].peer_leases() == {"busy": 3}, "B sees A's leases")
            assert [await through_b() for _ in range(4)] == ["idle"] * 4  # B routes around them
            assert b.app[BROKER].state("busy").peer_inflight == 3
            killed.proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await killed.proc.wait()
        while await peer_lease_keys():
            assert time.monotonic() - killed_at <= LEASE_TTL_S + 0.5, "A's leases outlived their TTL in Redis"
            await asyncio.sleep(0.05)
        while b.app[STORE].peer_leases():  # B's snapshot: one heartbeat after the key expired
            assert time.monotonic() - killed_at <= LEASE_TTL_S + HEARTBEAT_S + 0.5, (
                "B still counts A's leases"
            )
            await asyncio.sleep(0.05)
        served = [await through_b() for _ in range(4)]  # B serves on, both accounts again
        assert sorted(served) == ["busy", "busy", "idle", "idle"]
        assert b.app[BROKER].state("busy").peer_inflight == 0
    await redis.aclose()

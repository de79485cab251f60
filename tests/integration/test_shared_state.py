"""Several instances on one store share the broker's state (issue 17).

Two proxies on one real ``redis-server`` (separate data and pool dirs, the same account ids):
a cooldown, a pin, the active route and a reset made through one reach the other within the
contract's 1 s; with Redis stopped both keep answering from their mirror, and once it is back
they converge again. Two processes on one LMDB data dir (the ``serve --workers`` case) share a
cooldown through the store's change feed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from proxygate.server.keys import BROKER
from tests.conftest import Proxy, admin_headers
from tests.serving import start_serve
from tests.upstream import anthropic_message, ok_json, status

ASK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
PRIORITY = '[routing.configs.default]\nstrategy = "priority"\n'
SPREAD = (
    '[routing]\nactive = "default"\n'
    '[routing.configs.default]\nstrategy = "priority"\n'
    '[routing.configs.spread]\nstrategy = "round-robin"\n'
)
PROPAGATION_S = 1.0
"The contract: a change made through one instance applies on the others within 1 s."


def keys(url: str, *, preferred: str = "a") -> dict[str, dict[str, Any]]:
    """Accounts a and b on the scripted upstream; ``preferred`` first under the priority strategy."""
    return {
        name: {
            "provider": "anthropic",
            "api_key": f"sk-ant-{name * 4}-0000",
            "base_url": url,
            "priority": 2 if name == preferred else 1,
        }
        for name in ("a", "b")
    }


def keys_used(upstream: Any) -> list[str]:
    """Which account each upstream request carried (``aaaa`` or ``bbbb``)."""
    return [r.headers["x-api-key"][7:11] for r in upstream.requests]


async def post(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    async with client.post(url + "/v1/messages", json=ASK, headers=headers or {}) as resp:
        await resp.read()
        return resp.status, resp.headers.get("x-proxygate-account", "")


async def within(seconds: float, check: Callable[[], Any], what: str) -> float:
    """Wait until ``check()`` is true (it may be a coroutine function); how long it took."""
    started = time.monotonic()
    while True:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.02)


def cooling(proxy: Proxy, account_id: str) -> float:
    return proxy.app[BROKER].state(account_id).cooling(time.time())


async def pair(
    start_proxy: Any, tmp_path: Path, redis_url: str, upstream_url: str, config: str = PRIORITY, **kwargs: Any
) -> tuple[Proxy, Proxy]:
    """Instances A and B on one Redis, each with its own data dir and its own pool files."""
    env = {"PROXYGATE_STORE_BACKEND": "redis", "PROXYGATE_STORE_REDIS_URL": redis_url}
    found = []
    for name in ("A", "B"):
        root = tmp_path / name
        root.mkdir()
        preferred = kwargs.get(f"preferred_{name}", "a")
        found.append(
            await start_proxy(keys(upstream_url, preferred=preferred), env=env, config=config, root=root)
        )
    return found[0], found[1]


async def admin(client: aiohttp.ClientSession, proxy: Proxy, path: str, body: Any = None) -> dict[str, Any]:
    method = client.get if body is None else client.post
    kwargs = {} if body is None else {"json": body}
    async with method(proxy.url + path, headers=admin_headers(proxy.settings), **kwargs) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def test_two_processes_on_one_lmdb_data_dir_share_a_cooldown(upstream, start_proxy, tmp_path) -> None:
    """The ``serve --workers`` case: a 429 seen by a ``proxygate serve`` process reaches this one."""
    data_dir = tmp_path / "shared-data"
    here = await start_proxy(
        keys(upstream.url),
        env={"PROXYGATE_DATA_DIR": str(data_dir)},
        config=PRIORITY,
        root=_dir(tmp_path / "here"),
    )
    there_root = _dir(tmp_path / "there")
    for name, data in keys(upstream.url).items():
        path = there_root / "pool" / "apikeys" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(data))
        path.chmod(0o600)
    there = await start_serve(there_root, PRIORITY, env={**os.environ, "PROXYGATE_DATA_DIR": str(data_dir)})
    try:
        upstream.push(status(429, headers={"retry-after": "30"}), ok_json(anthropic_message("from b")))
        async with aiohttp.ClientSession() as client:
            assert await post(client, there.url) == (200, "b")
            await within(
                PROPAGATION_S, lambda: cooling(here, "a") > 25, "this process sees the other's cooldown"
            )
            assert await post(client, here.url) == (200, "b")
        assert keys_used(upstream) == ["aaaa", "bbbb", "bbbb"]
    finally:
        await there.stop()


def _dir(path: Path) -> Path:
    path.mkdir()
    return path

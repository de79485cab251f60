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
from typer.testing import CliRunner

from proxygate.broker.pins import conversation_key
from proxygate.cli import app
from proxygate.server.keys import BROKER, STORE
from proxygate.wire.ir import Format
from tests.conftest import Proxy, admin_headers, free_port
from tests.serving import run_cli, start_serve, write_config
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


def keys(url: str, order: str = "ab") -> dict[str, dict[str, Any]]:
    """One API key per letter of ``order`` on the scripted upstream, the first preferred by the priority strategy."""
    return {
        name: {
            "provider": "anthropic",
            "api_key": f"sk-ant-{name * 4}-0000",
            "base_url": url,
            "priority": len(order) - n,
        }
        for n, name in enumerate(order)
    }


def keys_used(upstream: Any) -> list[str]:
    """Which account each upstream request carried (``aaaa``, ``bbbb``, …)."""
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


async def cli(proxy: Proxy, *args: str) -> tuple[int, str, str]:
    """``proxygate ARGS`` as a user runs it beside ``proxy`` (its config; the store in the environment)."""
    env = {
        **os.environ,
        "COLUMNS": "250",
        "PROXYGATE_STORE_BACKEND": proxy.settings.store.backend,
        "PROXYGATE_STORE_REDIS_URL": proxy.settings.store.redis_url,
    }
    return await run_cli(*args, "--config", str(proxy.settings.config_path), env=env)


def cooling(proxy: Proxy, account_id: str) -> float:
    return proxy.app[BROKER].state(account_id).cooling(time.time())


async def pair(
    start_proxy: Any, tmp_path: Path, redis_url: str, upstream_url: str, config: str = PRIORITY, **orders: str
) -> tuple[Proxy, Proxy]:
    """Instances A and B on one Redis, each with its own data dir and pool files (``order_A``, ``order_B``)."""
    env = {"PROXYGATE_STORE_BACKEND": "redis", "PROXYGATE_STORE_REDIS_URL": redis_url}
    found = []
    for name in ("A", "B"):
        accounts = keys(upstream_url, orders.get(f"order_{name}", "ab"))
        found.append(await start_proxy(accounts, env=env, config=config, root=_dir(tmp_path / name)))
    return found[0], found[1]


async def admin(client: aiohttp.ClientSession, proxy: Proxy, path: str, body: Any = None) -> dict[str, Any]:
    method = client.get if body is None else client.post
    kwargs = {} if body is None else {"json": body}
    async with method(proxy.url + path, headers=admin_headers(proxy.settings), **kwargs) as resp:
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def test_a_429_on_one_instance_cools_the_account_on_the_other_and_reset_clears_it(
    upstream, start_proxy, tmp_path, redis_url
) -> None:
    a, b = await pair(start_proxy, tmp_path, redis_url, upstream.url)
    upstream.push(status(429, headers={"retry-after": "30"}))
    async with aiohttp.ClientSession() as client:
        assert await post(client, a.url) == (200, "b")  # failed over on A
        assert keys_used(upstream) == ["aaaa", "bbbb"]
        await within(PROPAGATION_S, lambda: cooling(b, "a") > 25, "B sees A's cooldown on account a")
        assert await post(client, b.url) == (200, "b")  # B skips a without trying it
        assert keys_used(upstream) == ["aaaa", "bbbb", "bbbb"]

        assert await admin(client, a, "/admin/api/accounts/a/reset", {}) == {"reset": "a"}
        await within(PROPAGATION_S, lambda: cooling(b, "a") == 0, "B sees the reset made on A")
        assert await post(client, b.url) == (200, "a")
        assert keys_used(upstream)[-1] == "aaaa"

        upstream.push(status(429, headers={"retry-after": "30"}))  # now the other way round
        assert await post(client, b.url) == (200, "b")
        await within(PROPAGATION_S, lambda: cooling(a, "a") > 25, "A sees B's cooldown")
        nowhere = ("--addr", f"127.0.0.1:{free_port()}")  # no server there: the CLI uses the store itself
        code, out, err = await cli(a, "status", "--json", *nowhere)
        assert code == 0, err
        offline = orjson.loads(out)
        assert (offline["running"], offline["store"]) == (False, {"backend": "redis", "degraded": ""})
        assert [(x["id"], x["state"]) for x in offline["accounts"]] == [("a", "cooling down"), ("b", "ready")]
        code, out, err = await cli(a, "reset", "a", *nowhere)
        assert (code, out) == (
            0,
            "reset a (no server running here; the instances on the shared store apply it at once)\n",
        )
        await within(
            PROPAGATION_S, lambda: cooling(a, "a") == cooling(b, "a") == 0, "both see the CLI's reset"
        )


async def test_a_conversation_pinned_through_one_instance_stays_on_its_account_through_the_other(
    upstream, start_proxy, tmp_path, redis_url
) -> None:
    """B's own strategy picks c; the conversation A pinned (and re-pinned by a failover) is followed."""
    a, b = await pair(start_proxy, tmp_path, redis_url, upstream.url, order_A="abc", order_B="cba")
    session = {"x-claude-code-session-id": "6c1d1f8e-0000-4000-8000-00000000a17b"}
    key = conversation_key(Format.anthropic, session, ASK)

    def pinned_on_b() -> str:
        pin = b.app[BROKER].pins.get(key, time.time())
        return "" if pin is None else pin.account_id

    async with aiohttp.ClientSession() as client:
        assert await post(client, a.url, session) == (200, "a")
        await within(PROPAGATION_S, lambda: pinned_on_b() == "a", "B knows the pin A made")
        assert await post(client, b.url, session) == (200, "a")
        other = {"x-claude-code-session-id": "6c1d1f8e-0000-4000-8000-00000000b0b0"}
        assert await post(client, b.url, other) == (200, "c")  # what B alone would choose

        upstream.push(status(429, headers={"retry-after": "30"}))
        assert await post(client, a.url, session) == (200, "b")  # A fails over and re-pins to b
        await within(PROPAGATION_S, lambda: pinned_on_b() == "b", "B knows the failover's new pin")
        assert await post(client, b.url, session) == (200, "b")
    assert keys_used(upstream) == ["aaaa", "aaaa", "cccc", "aaaa", "bbbb", "bbbb"]


async def test_route_use_on_one_instance_switches_the_other(
    upstream, start_proxy, tmp_path, redis_url
) -> None:
    a, b = await pair(start_proxy, tmp_path, redis_url, upstream.url, config=SPREAD)
    async with aiohttp.ClientSession() as client:
        assert (await admin(client, b, "/admin/api/status"))["route"] == "default/priority"
        assert await admin(client, a, "/admin/api/route", {"name": "spread"}) == {
            "route": "spread/round-robin"
        }

        async def b_route() -> bool:
            return (await admin(client, b, "/admin/api/status"))["route"] == "spread/round-robin"

        await within(PROPAGATION_S, b_route, "B switched to the route chosen on A")


async def test_with_redis_stopped_both_instances_keep_answering_and_converge_once_it_is_back(
    upstream, start_proxy, tmp_path, redis_server
) -> None:
    """0 client-visible errors while Redis is down; a change after its restart reaches B, degraded clears."""
    a, b = await pair(start_proxy, tmp_path, redis_server.url, upstream.url)
    answers: list[int] = []
    stop = asyncio.Event()

    async def load(client: aiohttp.ClientSession, proxy: Proxy) -> None:
        while not stop.is_set():
            answers.append((await post(client, proxy.url))[0])

    async with aiohttp.ClientSession() as client:
        async with asyncio.TaskGroup() as tasks:
            for proxy in (a, b, a, b):
                tasks.create_task(load(client, proxy))
            await asyncio.sleep(0.2)
            await asyncio.to_thread(redis_server.stop)
            await within(10, lambda: a.app[STORE].degraded and b.app[STORE].degraded, "both say degraded")
            report = await admin(client, a, "/admin/api/status")
            assert report["store"]["backend"] == "redis"
            assert report["store"]["degraded"].startswith("redis unreachable since ")
            assert [x["today"] for x in report["accounts"]] == [None, None]  # unknown, not 0
            where = ("--addr", a.url.removeprefix("http://"))
            shown, found = await asyncio.gather(cli(a, "status", *where), cli(a, "doctor", "--json"))
            line = next(line for line in shown[1].splitlines() if line.startswith("shared state:"))
            assert line.startswith("shared state: redis (degraded: redis unreachable since ")
            store_finding = next(f for f in orjson.loads(found[1]) if f["check"] == "store")
            assert store_finding["status"] == "problem"
            assert "unreachable" in store_finding["message"]
            served_while_down = len(answers)
            await within(10, lambda: len(answers) > served_while_down + 20, "requests served with Redis down")
            await asyncio.to_thread(redis_server.start)
            await within(
                15, lambda: not a.app[STORE].degraded and not b.app[STORE].degraded, "degraded clears"
            )
            stop.set()
        assert set(answers) == {200}
        assert len(answers) > served_while_down

        upstream.push(status(429, headers={"retry-after": "30"}))
        assert await post(client, a.url) == (200, "b")
        await within(5, lambda: cooling(b, "a") > 25, "a change made on A after the restart reaches B")
        assert (await admin(client, b, "/admin/api/status"))["store"] == {"backend": "redis", "degraded": ""}


def test_doctor_says_whether_redis_answers_and_never_shows_its_password(tmp_path, redis_server) -> None:
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}")
    url = redis_server.url.replace("redis://", "redis://:hunter2@")  # this Redis has no password: unused
    env = {
        "PROXYGATE_CONFIG": str(config),
        "PROXYGATE_STORE_BACKEND": "redis",
        "PROXYGATE_STORE_REDIS_URL": url,
    }
    shown = redis_server.url.replace("redis://", "redis://:***@")
    found = []
    for _ in ("up", "down"):
        result = CliRunner().invoke(app, ["doctor", "--json"], env=env)
        assert "hunter2" not in result.output
        found.append(next(f for f in orjson.loads(result.output) if f["check"] == "store"))
        redis_server.stop()
    assert found[0] == {
        "check": "store",
        "status": "ok",
        "message": f"store {shown}: reachable (shared state)",
        "fix": "",
    }
    assert (found[1]["status"], found[1]["message"].partition(" (")[0]) == (
        "problem",
        f"store {shown}: unreachable",
    )
    assert (
        found[1]["fix"]
        == "start Redis, or correct [store] redis_url (host, port, password; rediss:// for TLS)"
    )


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


async def test_instances_on_one_redis_agree_on_one_admin_token(
    upstream, start_proxy, tmp_path, redis_url
) -> None:
    a, b = await pair(start_proxy, tmp_path, redis_url, upstream.url)
    assert not a.settings.admin_token and not b.settings.admin_token  # each made its own file first
    token_a = (a.settings.data_dir / "admin.token").read_text().strip()
    assert (b.settings.data_dir / "admin.token").read_text().strip() == token_a
    async with aiohttp.ClientSession() as client:
        for proxy in (a, b):
            async with client.get(
                proxy.url + "/admin/api/status", headers={"authorization": f"Bearer {token_a}"}
            ) as resp:
                assert resp.status == 200

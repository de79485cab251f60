"""The broker through the real server: traffic follows quota headers; pins and spent windows survive a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from proxygate.config import load_settings
from proxygate.server.app import create_app
from proxygate.server.keys import BROKER
from tests.conftest import FakeClock, admin_headers, write_account
from tests.upstream import ScriptedUpstream, anthropic_message

SESSION = {"x-claude-code-session-id": "6c1d1f8e-0000-4000-8000-000000000001"}
ASK = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


class QuotaUpstream(ScriptedUpstream):
    """Answers every request with a message and the unified quota headers it is told to send."""

    def __init__(self) -> None:
        super().__init__()
        self.quota: dict[str, str] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await super().handle(request)
        return web.Response(
            body=orjson.dumps(anthropic_message()), headers=self.quota, content_type="application/json"
        )


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def upstreams(n: int) -> AsyncIterator[list[QuotaUpstream]]:
    made = [QuotaUpstream() for _ in range(n)]
    runners = []
    for up in made:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", up.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        up.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        runners.append(runner)
    try:
        yield made
    finally:
        for runner in runners:
            await runner.cleanup()


def five_hour(utilization: float, resets_at: float) -> dict[str, str]:
    return {
        "anthropic-ratelimit-unified-5h-status": "allowed",
        "anthropic-ratelimit-unified-5h-utilization": str(utilization),
        "anthropic-ratelimit-unified-5h-reset": str(int(resets_at)),
    }


def setup_root(root: Path, ups: list[QuotaUpstream], config: str = "") -> Path:
    (root / "config.toml").write_text(f'pool_dir = "pool"\ndata_dir = "data"\n{config}')
    for name, up in zip(("a", "b"), ups, strict=True):
        write_account(
            root / "pool",
            "apikeys",
            name,
            {"provider": "anthropic", "api_key": f"sk-ant-{name * 4}-0000", "base_url": up.url},
        )
    return root / "config.toml"


async def ask(url: str, headers: dict[str, str] | None = None, body: dict[str, Any] = ASK) -> tuple[str, str]:
    async with (
        aiohttp.ClientSession() as client,
        client.post(url + "/v1/messages", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        return resp.headers["x-proxygate-account"], resp.headers["x-proxygate-route"]


async def test_traffic_follows_the_quota_headers(tmp_path: Path) -> None:
    clock = FakeClock()
    async with upstreams(2) as (up_a, up_b):
        up_a.quota = five_hour(0.6, clock() + 20 * 60)  # 40 % left, gone in 20 minutes: drain it
        up_b.quota = five_hour(0.0, clock() + 5 * 3600)
        settings = load_settings(setup_root(tmp_path, [up_a, up_b]), {})
        async with serving(create_app(settings, clock=clock)) as url:
            served = [(await ask(url))[0] for _ in range(6)]  # unknown ≈ fresh: both get tried
            assert served[-3:] == ["a"] * 3
            up_a.quota = five_hour(0.99, clock() + 20 * 60)  # nearly spent: skipped before a 429
            assert [(await ask(url))[0] for _ in range(4)] == ["a", "b", "b", "b"]


async def test_restart_keeps_pins_spent_windows_and_the_chosen_route(tmp_path: Path) -> None:
    clock = FakeClock()
    config = '[routing.configs.rr]\nstrategy = "round-robin"\n'
    async with upstreams(2) as ups:
        settings = load_settings(setup_root(tmp_path, ups, config), {})
        async with serving(create_app(settings, clock=clock)) as url:
            first, route = await ask(url, SESSION)
            assert route == "default/drain-aware"
            assert [(await ask(url, SESSION))[0] for _ in range(5)] == [first] * 5
            other = "b" if first == "a" else "a"
            ups["ab".index(first)].quota = {
                **five_hour(1.0, clock() + 3600),
                "anthropic-ratelimit-unified-5h-status": "rejected",
            }
            assert await ask(url, SESSION) == (first, "default/drain-aware")  # this answer spends it
            assert [(await ask(url, SESSION))[0] for _ in range(3)] == [other] * 3  # moved once
            async with (
                aiohttp.ClientSession() as client,
                client.post(
                    url + "/admin/api/route", json={"name": "rr"}, headers=admin_headers(settings)
                ) as resp,
            ):
                assert (resp.status, await resp.json()) == (200, {"route": "rr/round-robin"})
            assert await ask(url, SESSION) == (other, "rr/round-robin")
        async with serving(create_app(settings, clock=clock)) as url:  # the restart
            async with (
                aiohttp.ClientSession() as client,
                client.get(url + "/admin/api/status", headers=admin_headers(settings)) as resp,
            ):
                status = await resp.json()
            by_id = {a["id"]: a for a in status["accounts"]}
            assert status["route"] == "rr/round-robin"
            assert (by_id[first]["pins"], by_id[other]["pins"]) == (0, 1)
            assert [(w["window"], w["left_pct"], w["rejected"]) for w in by_id[first]["windows"]] == [
                ("5h", 0.0, True)
            ]
            assert [(await ask(url, SESSION))[0] for _ in range(3)] == [other] * 3
            new = {"x-claude-code-session-id": "6c1d1f8e-0000-4000-8000-000000000002"}
            assert [(await ask(url, new))[0] for _ in range(2)] == [
                other
            ] * 2  # the spent one is not forgotten


async def test_route_list_over_the_admin_api(start_proxy, upstream) -> None:
    proxy = await start_proxy(
        {"a": {"provider": "anthropic", "api_key": "sk-ant-aaaa-0000", "base_url": upstream.url}},
        config='[routing.configs.cheap]\nstrategy = "priority"\ntiers.haiku = { accounts = ["a"], model = "claude-3-5-haiku" }\n',
    )
    async with aiohttp.ClientSession(headers=admin_headers(proxy.settings)) as client:
        async with client.get(proxy.url + "/admin/api/routes") as resp:
            routes = await resp.json()
        async with client.post(proxy.url + "/admin/api/route", json={"name": "nope"}) as resp:
            refused = (resp.status, await resp.json())
    assert routes == {
        "routes": [
            {"name": "cheap", "strategy": "priority", "active": False,
             "tiers": {"haiku": {"accounts": ["a"], "model": "claude-3-5-haiku", "fallback": []}}},
            {"name": "default", "strategy": "drain-aware", "active": True, "tiers": {}},
        ]
    }  # fmt: skip
    assert refused == (404, {"error": "no routing config 'nope' (configs: cheap, default)"})
    assert proxy.app[BROKER].route_label() == "default/drain-aware"

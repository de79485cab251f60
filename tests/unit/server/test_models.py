"""``/v1/models``: a failed upstream listing is asked again soon; models carry a real time."""

from __future__ import annotations

import time

import aiohttp

from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import parse_account
from proxygate.server.models import FAILED_TTL_S, TTL_S, ModelCatalog
from tests.conftest import FakeClock
from tests.upstream import ScriptedUpstream, ok_json, status


async def test_a_failed_listing_is_retried_soon_and_a_good_one_kept(upstream: ScriptedUpstream) -> None:
    account = parse_account(
        {
            "provider": "anthropic",
            "api_key": "sk-ant-0000",
            "base_url": upstream.url,
            "models": ["claude-*", "house"],
        },
        "apikey",
        default_id="a",
    )
    clock = FakeClock()
    upstream.push(status(500), ok_json({"data": [{"id": "claude-a"}, {"id": "gpt-x"}]}))
    async with aiohttp.ClientSession() as session:
        catalog = ModelCatalog(session, lambda: PoolSnapshot.of([account]), {}, clock=clock)
        assert await catalog.names() == ["house"]  # the upstream failed: literal names only
        clock.advance(FAILED_TTL_S - 1)
        assert await catalog.names() == ["house"]  # not asked again at once
        assert len(upstream.requests) == 1
        clock.advance(2)
        assert await catalog.names() == ["claude-a", "house"]
        clock.advance(TTL_S - 1)
        assert await catalog.names() == ["claude-a", "house"]
    assert len(upstream.requests) == 2


async def test_models_carry_a_creation_time_that_is_not_1970(upstream: ScriptedUpstream, start_proxy) -> None:
    upstream.push(ok_json({"data": [{"id": "claude-a"}]}))
    proxy = await start_proxy(
        {"a": {"provider": "anthropic", "api_key": "sk-ant-0000", "base_url": upstream.url}}
    )
    before = int(time.time())
    async with aiohttp.ClientSession() as client, client.get(f"{proxy.url}/v1/models") as resp:
        [model] = (await resp.json())["data"]
    assert model["id"] == "claude-a"
    assert before - 60 <= model["created"] <= before + 60
    assert model["created_at"].startswith(time.strftime("%Y-", time.gmtime(model["created"])))
    assert not model["created_at"].startswith("1970")

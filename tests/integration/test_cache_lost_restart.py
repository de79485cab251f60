"""Prompt cache lost by moves and answers served from overage, through a restart of the real server."""

from __future__ import annotations

import aiohttp

from proxygate.cli.app import console
from proxygate.cli.usage import print_usage
from proxygate.server.keys import BROKER
from tests.conftest import admin_headers
from tests.integration.test_subscriptions import PRIORITY, conversation_turn, two_keys
from tests.upstream import answer_with_headers, status, unified_headers

MOVES_AT_ONCE = "[routing]\nmax_wait_s = 0\n\n" + PRIORITY


async def test_usage_and_status_show_the_cache_lost_and_overage_of_a_previous_run(
    upstream, start_proxy
) -> None:
    upstream.standing["aaaa"] = answer_with_headers(
        lambda: unified_headers(0.5, claim="seven_day_overage_included")
    )
    proxy = await start_proxy(two_keys(upstream.url, overage="allow"), config=MOVES_AT_ONCE)
    assert await conversation_turn(proxy.url, "conversation-x") == "a"  # from overage: counted
    upstream.push(status(429, headers={"retry-after": "1"}))  # another conversation cools a
    assert await conversation_turn(proxy.url, "conversation-y") == "b"
    assert await conversation_turn(proxy.url, "conversation-x") == "b"  # moved off a's cache
    before = proxy.app[BROKER].cache.lost_summary()
    assert before["count"] == 1
    await proxy.runner.cleanup()  # stops the app: the store is flushed

    again = await start_proxy(config=MOVES_AT_ONCE)
    async with (
        aiohttp.ClientSession(headers=admin_headers(again.settings)) as client,
        client.get(again.url + "/admin/api/usage") as usage,
        client.get(again.url + "/admin/api/status") as status_resp,
    ):
        report = await usage.json()
        accounts = {a["id"]: a for a in (await status_resp.json())["accounts"]}
    assert report["cache_lost"] == before
    assert report["cache_lost"]["recent"][0]["from"] == "a"
    assert accounts["a"]["overage_requests"] == 1
    with console.capture() as shown:
        print_usage(report)
    assert "Prompt cache lost by moving conversations: 1 move(s)" in shown.get()

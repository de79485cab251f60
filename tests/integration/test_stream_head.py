"""A streamed answer's headers leave with its first event (one write), and still leave at once
when the upstream's first chunk holds no complete event (relay.py ``send_head``)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.upstream import anthropic_sse, hold_after

ASK = {"model": "claude-x", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
HANG_GUARD_S = 10


def one_key(url: str) -> dict[str, dict[str, Any]]:
    return {"a": {"provider": "anthropic", "api_key": "sk-ant-api03-head-000111", "base_url": url}}


async def test_headers_arrive_while_the_first_event_is_still_incomplete(upstream, start_proxy) -> None:
    sse = anthropic_sse("pong")
    cut = sse.index(b"\n\n") - 10  # inside message_start: nothing the relay may forward yet
    released = asyncio.Event()
    upstream.push(hold_after(sse[:cut], released))
    proxy = await start_proxy(one_key(upstream.url))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HANG_GUARD_S)) as client:
        # The upstream holds until released, so headers reach us only if sent on their own.
        async with asyncio.timeout(HANG_GUARD_S / 2):
            resp = await client.post(proxy.url + "/v1/messages", json=ASK)
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-proxygate-request-id"].startswith("pg_")
        released.set()
        body = await resp.read()
        resp.close()
    # The upstream ended inside its first event: the client gets the error event, no half event.
    assert body.startswith(b"event: error")


async def test_a_whole_stream_comes_through_with_its_headers(upstream, start_proxy) -> None:
    proxy = await start_proxy(one_key(upstream.url))
    timeout = aiohttp.ClientTimeout(total=HANG_GUARD_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as client,
        client.post(proxy.url + "/v1/messages", json=ASK) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["cache-control"] == "no-cache"
        body = await resp.read()
    assert body.startswith(b"event: message_start")
    assert b"event: message_stop" in body

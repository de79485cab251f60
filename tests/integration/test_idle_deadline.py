"""An upstream that goes silent after its first bytes is cut by ``[timeouts] idle_s``.

The upstream request carries no aiohttp ``sock_read`` timer (relay.py ``_send_timeout``): the
relay's own idle deadline in ``Upstream.chunks`` is what bounds every read after the first
byte, for streams (an error event ends the stream) and whole answers (a 504, or failover).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.upstream import anthropic_message, anthropic_sse, hold_after

ASK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
IDLE = "[timeouts]\nidle_s = 0.3\n"
HANG_GUARD_S = 20  # far past idle_s: reached only if nothing cuts the silence


def one_key(url: str) -> dict[str, dict[str, Any]]:
    return {"a": {"provider": "anthropic", "api_key": "sk-ant-api03-idle-000111", "base_url": url}}


def half_json_then_silence(body: bytes) -> Any:
    async def reply(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"content-type": "application/json"})
        await out.prepare(request)
        await out.write(body[: len(body) // 2])
        await asyncio.sleep(3600)
        return out

    return reply


async def test_a_stream_silent_after_its_first_events_ends_with_a_timeout_error_event(
    upstream, start_proxy
) -> None:
    sse = anthropic_sse("")
    upstream.push(hold_after(sse[: sse.index(b"event: content_block_start")]))
    proxy = await start_proxy(one_key(upstream.url), config=IDLE)
    timeout = aiohttp.ClientTimeout(total=HANG_GUARD_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as client,
        client.post(proxy.url + "/v1/messages", json={**ASK, "stream": True}) as resp,
    ):
        assert resp.status == 200
        text = (await resp.read()).decode()
    assert text.startswith("event: message_start")
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: error")
    error = orjson.loads(last.split("data: ", 1)[1])["error"]
    assert error["type"] == "timeout_error"
    assert "silent for" in error["message"]


async def test_a_whole_answer_silent_halfway_is_a_504_in_the_clients_format(upstream, start_proxy) -> None:
    upstream.push(half_json_then_silence(orjson.dumps(anthropic_message())))
    proxy = await start_proxy(one_key(upstream.url), config=IDLE)
    timeout = aiohttp.ClientTimeout(total=HANG_GUARD_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as client,
        client.post(proxy.url + "/v1/messages", json=ASK) as resp,
    ):
        status, body = resp.status, await resp.json()
    assert status == 504
    assert body["type"] == "error"
    assert "silent for" in body["error"]["message"]

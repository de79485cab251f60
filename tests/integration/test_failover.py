"""Failover before the first byte, cooldowns, and errors after it (issue #3 §6)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from multidict import CIMultiDict

from proxygate.server.keys import BROKER
from tests.upstream import (
    anthropic_message,
    anthropic_sse,
    chat_sse,
    cut_after,
    delayed,
    ok_json,
    reset_before_headers,
    status,
)

ASK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def two_keys(url: str) -> dict[str, dict[str, object]]:
    return {
        "a": {"provider": "anthropic", "api_key": "sk-ant-aaaa-0000", "base_url": url, "priority": 2},
        "b": {"provider": "anthropic", "api_key": "sk-ant-bbbb-0000", "base_url": url, "priority": 1},
    }


async def post(
    url: str, body: dict[str, object] = ASK, path: str = "/v1/messages"
) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as client, client.post(url + path, json=body) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


def keys_used(upstream) -> list[str]:
    return [r.headers["x-api-key"][7:11] for r in upstream.requests]


async def test_429_with_retry_after_fails_over_and_cools_for_that_long(upstream, start_proxy, clock) -> None:
    upstream.push(status(429, headers={"retry-after": "30"}), ok_json(anthropic_message("from b")))
    priority = '[routing.configs.default]\nstrategy = "priority"\n'
    proxy = await start_proxy(two_keys(upstream.url), clock=clock, config=priority)
    code, headers, body = await post(proxy.url)
    assert code == 200
    assert orjson.loads(body)["content"][0]["text"] == "from b"
    assert headers["x-proxygate-account"] == "b"
    assert headers["x-proxygate-route"].endswith("+failover")
    assert keys_used(upstream) == ["aaaa", "bbbb"]
    state = proxy.app[BROKER].state("a")
    assert state.cooling(clock()) == 30
    clock.advance(30)
    await post(proxy.url)
    assert keys_used(upstream)[-1] == "aaaa"  # back in rotation after Retry-After


async def test_retry_after_ms_and_http_date(upstream, start_proxy, clock) -> None:
    upstream.push(status(529, headers={"retry-after-ms": "2500"}))
    proxy = await start_proxy(two_keys(upstream.url), clock=clock)
    assert (await post(proxy.url))[0] == 200
    assert proxy.app[BROKER].state("a").cooling(clock()) == 2.5


async def test_500_cooldown_doubles_per_consecutive_failure_up_to_300s(upstream, start_proxy, clock) -> None:
    proxy = await start_proxy({"a": two_keys(upstream.url)["a"]}, clock=clock)
    seen = []
    for _ in range(7):
        upstream.push(status(500))
        code, headers, body = await post(proxy.url)
        seen.append(proxy.app[BROKER].state("a").cooling(clock()))
        clock.advance(seen[-1])
    assert seen == [15, 30, 60, 120, 240, 300, 300]
    assert code == 500
    assert orjson.loads(body)["error"]["type"] == "api_error"
    assert headers["retry-after"] == "300"
    await post(proxy.url)  # a success clears the streak
    assert proxy.app[BROKER].state("a").failures == 0


async def test_all_cooling_gives_429_in_client_format_with_soonest_retry_after(
    upstream, start_proxy, clock
) -> None:
    upstream.push(status(429, headers={"retry-after": "40"}), status(429, headers={"retry-after": "20"}))
    proxy = await start_proxy(two_keys(upstream.url), clock=clock)
    code, headers, body = await post(proxy.url)
    assert code == 429
    assert headers["retry-after"] == "20"
    assert orjson.loads(body)["error"]["type"] == "rate_limit_error"
    # Next request: nobody is tried at all, the client hears when to come back.
    clock.advance(5)
    code, headers, body = await post(proxy.url)
    assert (code, headers["retry-after"]) == (429, "15")
    assert len(upstream.requests) == 2
    assert orjson.loads(body) == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "every account serving 'claude-x' is cooling down; the first is free in 15s",
        },
        "request_id": headers["x-proxygate-request-id"],
    }


async def test_connection_reset_before_headers_fails_over(upstream, start_proxy) -> None:
    upstream.push(reset_before_headers())
    proxy = await start_proxy(two_keys(upstream.url))
    code, headers, _ = await post(proxy.url)
    assert (code, headers["x-proxygate-account"]) == (200, "b")


async def test_slow_first_byte_times_out_and_fails_over(upstream, start_proxy) -> None:
    upstream.push(delayed(2.0, ok_json(anthropic_message("late"))))
    proxy = await start_proxy(two_keys(upstream.url), config="[timeouts]\nfirst_byte_s = 0.3\n")
    code, headers, body = await post(proxy.url)
    assert (code, headers["x-proxygate-account"]) == (200, "b")
    assert orjson.loads(body)["content"][0]["text"] == "pong"


async def test_400_is_the_clients_problem_passed_through_without_failover(upstream, start_proxy) -> None:
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: required"}}
    upstream.push(status(400, error))
    proxy = await start_proxy(two_keys(upstream.url))
    code, _, body = await post(proxy.url)
    assert (code, orjson.loads(body)) == (400, error)
    assert len(upstream.requests) == 1
    assert proxy.app[BROKER].state("a").failures == 0


async def test_401_marks_needs_reauth_and_fails_over(upstream, start_proxy) -> None:
    upstream.push(
        status(
            401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
        )
    )
    proxy = await start_proxy(two_keys(upstream.url))
    assert (await post(proxy.url))[0] == 200
    assert proxy.app[BROKER].state("a").needs_reauth == "401: invalid x-api-key"
    await post(proxy.url)
    assert keys_used(upstream) == ["aaaa", "bbbb", "bbbb"]


async def test_cut_stream_after_first_byte_ends_with_an_anthropic_error_event(upstream, start_proxy) -> None:
    payload = anthropic_sse("hello world")
    upstream.push(cut_after(payload, 400))
    proxy = await start_proxy(two_keys(upstream.url))
    code, _, body = await post(proxy.url, {**ASK, "stream": True})
    assert code == 200
    whole_events = payload[: payload.rindex(b"\n\n", 0, 400) + 2]  # never half an event
    assert body.startswith(whole_events)
    tail = body[len(whole_events) :].decode()
    assert tail.startswith("event: error\ndata: ")
    error = orjson.loads(tail.split("data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "upstream connection lost mid-stream" in error["error"]["message"]
    assert len(upstream.requests) == 1  # too late to fail over: the client has bytes


async def test_stream_without_its_final_event_is_reported_not_ended_silently(upstream, start_proxy) -> None:
    upstream.push(lambda r: _sse_reply(chat_sse("x").replace(b"data: [DONE]\n\n", b"")))
    proxy = await start_proxy(
        {"o": {"provider": "openai", "api_key": "sk-0000-1111", "base_url": upstream.url + "/v1"}}
    )
    code, _, body = await post(
        proxy.url, {"model": "gpt-4o", "stream": True, "messages": []}, "/v1/chat/completions"
    )
    last = body.decode().strip().split("\n\n")[-1]
    assert code == 200
    assert orjson.loads(last[6:])["error"]["message"].startswith(
        "proxygate: upstream stream ended before its final event"
    )


async def _sse_reply(payload: bytes):
    from aiohttp import web

    return web.Response(body=payload, content_type="text/event-stream")


async def test_client_disconnect_cancels_upstream_and_releases_the_lease(upstream, start_proxy) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow_stream(request):
        from aiohttp import web

        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        await out.write(b"event: ping\ndata: {}\n\n")
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return out

    upstream.push(slow_stream)
    proxy = await start_proxy({"a": two_keys(upstream.url)["a"]})
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.url + "/v1/messages", json={**ASK, "stream": True})
        await asyncio.wait_for(started.wait(), 5)
        assert proxy.app[BROKER].state("a").inflight == 1
        resp.close()
    await asyncio.wait_for(cancelled.wait(), 5)
    for _ in range(50):
        if proxy.app[BROKER].state("a").inflight == 0:
            break
        await asyncio.sleep(0.02)
    assert proxy.app[BROKER].state("a").inflight == 0
    assert proxy.app[BROKER].state("a").failures == 0


async def test_client_leaving_while_we_write_does_not_cool_the_account(upstream, start_proxy) -> None:
    """A disconnect seen as a failed write is the client's doing, not the provider's."""

    async def firehose(request):
        from aiohttp import web

        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        delta = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'
            + b"x" * 4000
            + b'"}}\n\n'
        )
        for _ in range(2000):
            await out.write(delta)
            await asyncio.sleep(0)
        return out

    for _ in range(3):
        upstream.push(firehose)
    proxy = await start_proxy({"a": two_keys(upstream.url)["a"]})
    for _ in range(3):
        async with aiohttp.ClientSession() as client:
            resp = await client.post(proxy.url + "/v1/messages", json={**ASK, "stream": True})
            await resp.content.readexactly(10_000)
            resp.close()
        await asyncio.sleep(0.2)
    state = proxy.app[BROKER].state("a")
    assert (state.failures, state.cooling(proxy.app[BROKER].clock()), state.inflight) == (0, 0.0, 0)


async def test_a_huge_error_body_is_read_only_as_far_as_needed(upstream, start_proxy) -> None:
    from aiohttp import web

    async def endless_error(request):
        out = web.StreamResponse(status=500, headers={"content-type": "text/plain"})
        await out.prepare(request)
        for _ in range(100_000):  # 1 GB if anyone read it all
            await out.write(b"x" * 10_000)
        return out

    upstream.push(endless_error)
    proxy = await start_proxy({"a": two_keys(upstream.url)["a"]})
    code, _, body = await asyncio.wait_for(post(proxy.url), 10)
    assert code == 500
    assert orjson.loads(body)["error"]["message"] == "a: HTTP 500: " + "x" * 300

"""The same-format fast path: bytes relayed untouched, usage read on the side, ids returned."""

from __future__ import annotations

import aiohttp
import orjson
from aiohttp import web

from proxygate.server.keys import STORE
from proxygate.store import today
from tests.upstream import anthropic_message, anthropic_sse, chat_sse, ok_json, ok_sse

KEY = "sk-ant-secret-000111"


def one_key(upstream_url: str) -> dict[str, dict[str, str]]:
    return {"ant": {"provider": "anthropic", "api_key": KEY, "base_url": upstream_url}}


async def test_anthropic_json_is_relayed_verbatim_with_request_id(upstream, start_proxy) -> None:
    body = anthropic_message("hello")
    upstream.push(ok_json(body))
    proxy = await start_proxy(one_key(upstream.url))
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{proxy.url}/v1/messages?beta=true",
            json={"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01", "anthropic-beta": "b1"},
        ) as resp,
    ):
        assert resp.status == 200
        assert orjson.loads(await resp.read()) == body
        assert resp.headers["x-proxygate-request-id"].startswith("pg_")
        assert resp.headers["x-proxygate-account"] == "ant"
    sent = upstream.requests[0]
    assert (sent.path, sent.query) == ("/v1/messages", "beta=true")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "b1"
    assert "authorization" not in {k.lower() for k in sent.headers}


async def test_anthropic_stream_bytes_unchanged_and_usage_recorded(upstream, start_proxy) -> None:
    payload = anthropic_sse("hey")
    upstream.push(ok_sse(payload))
    proxy = await start_proxy(one_key(upstream.url))
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{proxy.url}/v1/messages",
            json={
                "model": "claude-x",
                "max_tokens": 10,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert await resp.read() == payload
        request_id = resp.headers["x-proxygate-request-id"]
    store = proxy.app[STORE]
    store.flush()
    [row] = store.usage(today())
    assert (row.account_id, row.model) == ("ant", "claude-x")
    assert row.totals.as_dict() == {
        "requests": 1,
        "errors": 0,
        "input_tokens": 11,
        "output_tokens": 3,
        "cache_read_tokens": 5,
        "cache_write_tokens": 2,
        "cost_usd": 0.0,
        "unpriced_requests": 1,  # claude-x has no price: its cost is unknown, not 0
    }
    assert store.recent_requests(1)[0]["request_id"] == request_id


async def test_chat_stream_without_include_usage_gets_it_upstream_but_not_the_chunk(
    upstream, start_proxy
) -> None:
    upstream.push(ok_sse(chat_sse("ok")))
    proxy = await start_proxy(
        {"oai": {"provider": "openai", "api_key": "sk-secret-000111222", "base_url": upstream.url + "/v1"}}
    )
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as resp,
    ):
        text = (await resp.read()).decode()
    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all('"usage"' not in e for e in events)
    assert len(events) == 5  # role, "o", "k", finish, [DONE]
    store = proxy.app[STORE]
    store.flush()
    [row] = store.usage(today())
    assert (row.totals.input_tokens, row.totals.output_tokens, row.totals.cache_read_tokens) == (12, 4, 8)


async def test_count_tokens_is_forwarded_to_anthropic_and_estimated_for_others(upstream, start_proxy) -> None:
    upstream.push(ok_json({"input_tokens": 1234}))
    proxy = await start_proxy(
        {
            "ant": {
                "provider": "anthropic",
                "api_key": "sk-ant-0000-1111",
                "base_url": upstream.url,
                "models": ["claude-*"],
            },
            "ds": {
                "provider": "deepseek",
                "api_key": "sk-0000-2222",
                "base_url": upstream.url + "/v1",
                "models": ["deepseek-*"],
            },
        }
    )
    body = {
        "model": "claude-x",
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "hello " * 100}],
    }
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{proxy.url}/v1/messages/count_tokens?beta=true", json=body) as resp:
            assert (resp.status, await resp.json()) == (200, {"input_tokens": 1234})
        async with client.post(
            f"{proxy.url}/v1/messages/count_tokens", json={**body, "model": "deepseek-chat"}
        ) as resp:
            estimate = await resp.json()
            assert (resp.status, resp.headers["x-proxygate-estimate"]) == (200, "true")
    assert upstream.paths() == ["/v1/messages/count_tokens"]
    assert 150 < estimate["input_tokens"] < 400  # 600 characters of prose, a system prompt, overhead


async def test_a_stream_trickling_a_few_bytes_at_a_time_arrives_byte_identical(upstream, start_proxy) -> None:
    """Events held until their end (so a cut never leaves half of one) still arrive whole."""
    import asyncio

    from aiohttp import web

    payload = anthropic_sse("trickle " * 20)

    async def trickle(request):
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        for i in range(0, len(payload), 7):
            await out.write(payload[i : i + 7])
            if i % 70 == 0:
                await asyncio.sleep(0.001)
        return out

    upstream.push(trickle)
    proxy = await start_proxy(one_key(upstream.url))
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{proxy.url}/v1/messages",
            json={"model": "claude-x", "max_tokens": 10, "stream": True, "messages": []},
        ) as resp,
    ):
        assert await resp.read() == payload
    store = proxy.app[STORE]
    store.flush()
    assert store.recent_requests(1)[0]["input_tokens"] == 11


async def test_a_providers_cookie_does_not_travel_with_the_next_request(upstream, start_proxy) -> None:
    async def with_cookie(request: web.Request) -> web.StreamResponse:
        response = await ok_json(anthropic_message("hi"))(request)
        response.set_cookie("__cf_bm", "from-account-a", path="/")
        return response

    upstream.push(with_cookie, ok_json(anthropic_message("again")))
    # By name: aiohttp's cookie jar keeps no cookie from a bare IP address.
    proxy = await start_proxy(one_key(upstream.url.replace("127.0.0.1", "localhost")))
    request = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as client:
        for _ in range(2):
            async with client.post(f"{proxy.url}/v1/messages", json=request) as resp:
                assert resp.status == 200
    cookies = [{k.lower(): v for k, v in r.headers.items()}.get("cookie") for r in upstream.requests]
    assert cookies == [None, None]

"""The upstream's faults come back in the client's format, and fail over (issue 10 §3, §5).

Before the first byte reaches the client every upstream fault is a failover; after it, the
stream ends with an error event in the client's format. Caps (max_response_mb, max_stream_s,
the 16 MiB SSE event) answer in the client's format too, and what the upstream says about
itself never carries the account's credentials.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from proxygate.server.keys import BROKER, STORE
from proxygate.store.base import COOLDOWNS
from tests.upstream import (
    anthropic_message,
    anthropic_sse,
    chat_completion,
    chat_sse,
    cut_json_after,
    gzip_reply,
    hold_after,
    ok_json,
    pings_forever,
    status,
    streamed_body,
)

ASK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
CHAT_ASK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
SECRET_A = "sk-ant-api03-SECRETaaaa-000111222333"
SECRET_B = "sk-ant-api03-SECRETbbbb-444555666777"


def two_keys(url: str) -> dict[str, dict[str, Any]]:
    return {
        "a": {"provider": "anthropic", "api_key": SECRET_A, "base_url": url, "priority": 2},
        "b": {"provider": "anthropic", "api_key": SECRET_B, "base_url": url, "priority": 1},
    }


def openai_key(url: str) -> dict[str, dict[str, Any]]:
    return {
        "o": {
            "provider": "openai",
            "api_key": "sk-oai-0000-1111-2222",
            "base_url": url + "/v1",
            "formats": ["chat"],
        }
    }


PRIORITY = '[routing.configs.default]\nstrategy = "priority"\n'


async def post(
    url: str, body: dict[str, Any] = ASK, path: str = "/v1/messages", headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as client, client.post(url + path, json=body, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


def last_event(body: bytes) -> dict[str, Any]:
    data = [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]
    return orjson.loads(data[-1])


# -- 1. a JSON answer cut after its first byte ------------------------------------------------


async def test_cut_json_answer_fails_over_and_cools_the_account(upstream, start_proxy, clock) -> None:
    whole = orjson.dumps(anthropic_message("from a"))
    upstream.push(cut_json_after(whole, 40), ok_json(anthropic_message("from b")))
    proxy = await start_proxy(two_keys(upstream.url), clock=clock, config=PRIORITY)
    code, headers, body = await post(proxy.url)
    assert (code, orjson.loads(body)["content"][0]["text"]) == (200, "from b")
    assert headers["x-proxygate-account"] == "b"
    assert headers["x-proxygate-route"] == "default/priority+failover"
    assert proxy.app[BROKER].state("a").cooling(clock()) == 15
    store = proxy.app[STORE]
    store.flush()
    [record] = store.recent_requests(1)
    assert (record["account_id"], record["status"]) == ("b", 200)


async def test_chunked_json_cut_with_one_account_is_a_502_in_the_clients_format(
    upstream, start_proxy
) -> None:
    whole = orjson.dumps(chat_completion("x" * 200))
    upstream.push(cut_json_after(whole, 60, chunked=True))
    proxy = await start_proxy(openai_key(upstream.url))
    code, headers, body = await post(proxy.url, CHAT_ASK, "/v1/chat/completions")
    assert code == 502
    assert headers["content-type"].startswith("application/json")
    assert headers["x-proxygate-request-id"].startswith("pg_")
    assert orjson.loads(body) == {
        "error": {
            "message": "upstream answer cut: ClientPayloadError",
            "type": "server_error",
            "param": None,
            "code": "server_error",
        }
    }


async def test_json_closed_early_without_a_length_is_a_cut_too(upstream, start_proxy) -> None:
    """No Content-Length, no chunking: only the incomplete JSON shows the cut."""

    async def close_delimited(request):
        from aiohttp import web

        assert request.transport is not None
        request.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
            + orjson.dumps(anthropic_message())[:50]
        )
        await asyncio.sleep(0.05)
        request.transport.close()
        return web.Response()

    upstream.push(close_delimited)
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, headers, _ = await post(proxy.url)
    assert (code, headers["x-proxygate-account"]) == (200, "b")


async def test_cut_json_on_the_converted_path_fails_over(upstream, start_proxy) -> None:
    """A Chat client, an Anthropic account whose answer breaks, then one that answers."""
    whole = orjson.dumps(anthropic_message("from a"))
    upstream.push(cut_json_after(whole, 40), ok_json(anthropic_message("from b")))
    accounts = {name: {**a, "models": ["gpt-*"]} for name, a in two_keys(upstream.url).items()}
    proxy = await start_proxy(accounts, config=PRIORITY)
    code, headers, body = await post(proxy.url, CHAT_ASK, "/v1/chat/completions")
    assert (code, headers["x-proxygate-account"]) == (200, "b")
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "from b"


async def test_cut_stream_collected_for_a_json_client_fails_over(upstream, start_proxy) -> None:
    """An upstream that streams although the client asked for JSON: nothing was sent yet."""
    from tests.upstream import cut_after, ok_sse

    payload = anthropic_sse("from b")
    upstream.push(cut_after(anthropic_sse("from a"), 300), ok_sse(payload))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, headers, body = await post(proxy.url)
    assert (code, headers["x-proxygate-account"]) == (200, "b")
    assert orjson.loads(body)["content"][0]["text"] == "from b"


# -- 2. Chat streams end at [DONE] on both paths -----------------------------------------------


async def test_converted_chat_stream_without_done_ends_in_an_anthropic_error_event(
    upstream, start_proxy
) -> None:
    upstream.push(lambda r: _sse(chat_sse("hi").replace(b"data: [DONE]\n\n", b"")))
    accounts = {"o": {**openai_key(upstream.url)["o"], "models": ["claude-*"]}}
    proxy = await start_proxy(accounts)
    code, _, body = await post(proxy.url, {**ASK, "stream": True})
    assert code == 200
    text = body.decode()
    assert "event: message_stop" not in text
    assert text.endswith("\n\n") and text.split("\n\n")[-2].startswith("event: error\n")
    assert last_event(body)["error"]["message"].startswith(
        "proxygate: chat: stream ended after its finish_reason but before [DONE] (request pg_"
    )


async def _sse(payload: bytes):
    from aiohttp import web

    return web.Response(body=payload, content_type="text/event-stream")


# -- 3. compression --------------------------------------------------------------------------


async def test_identity_is_asked_for_so_a_polite_upstream_answers_plain(upstream, start_proxy) -> None:
    upstream.push(gzip_reply(orjson.dumps(anthropic_message("plain")), always=False))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, _, body = await post(proxy.url)
    assert upstream.requests[0].headers["Accept-Encoding"] == "identity"
    assert (code, orjson.loads(body)["content"][0]["text"]) == (200, "plain")


async def test_an_upstream_that_gzips_anyway_is_inflated_and_usage_read(upstream, start_proxy) -> None:
    upstream.push(
        gzip_reply(orjson.dumps(anthropic_message("zipped"))),
        gzip_reply(anthropic_sse("zz"), "text/event-stream"),
    )
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, headers, body = await post(proxy.url)
    assert (code, orjson.loads(body)["content"][0]["text"]) == (200, "zipped")
    assert "content-encoding" not in headers
    code, _, body = await post(proxy.url, {**ASK, "stream": True})
    assert (code, body) == (200, anthropic_sse("zz"))
    store = proxy.app[STORE]
    store.flush()
    assert [(r["status"], r["input_tokens"]) for r in store.recent_requests(2)] == [(200, 11), (200, 11)]


async def test_an_unknown_content_encoding_fails_over(upstream, start_proxy) -> None:
    from aiohttp import web

    async def brotli(request):
        return web.Response(body=b"\x0b\x02\x80", headers={"content-encoding": "br"})

    upstream.push(brotli)
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, headers, _ = await post(proxy.url)
    assert (code, headers["x-proxygate-account"]) == (200, "b")


# -- 4. caps ---------------------------------------------------------------------------------


async def test_a_json_answer_over_max_response_mb_is_a_502_without_failover(upstream, start_proxy) -> None:
    upstream.push(streamed_body(3 * 16, b" " * 65536, head=b'{"pad":'))
    proxy = await start_proxy(two_keys(upstream.url), config="max_response_mb = 1\n" + PRIORITY)
    code, headers, body = await post(proxy.url)
    assert code == 502
    assert orjson.loads(body) == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream answer larger than 1 MB (max_response_mb)"},
        "request_id": headers["x-proxygate-request-id"],
    }
    assert headers["x-should-retry"] == "false"  # nor would the SDK's retry
    assert len(upstream.requests) == 1  # any account would pass the cap again
    assert proxy.app[BROKER].state("a").failures == 0


async def test_an_sse_event_over_16_mib_ends_the_stream_with_an_error_event(upstream, start_proxy) -> None:
    head = anthropic_sse("")[: anthropic_sse("").index(b"event: content_block_start")]
    huge = b'event: content_block_delta\ndata: {"type":"content_block_delta","text":"'
    upstream.push(streamed_body(17, b"x" * (1024 * 1024), "text/event-stream", head=head + huge))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, _, body = await asyncio.wait_for(post(proxy.url, {**ASK, "stream": True}), 60)
    assert code == 200
    assert body.startswith(head)
    error = last_event(body)
    assert error["type"] == "error"
    assert error["error"]["message"].startswith(
        "proxygate: upstream stream broken: SSE event larger than 16777216 bytes (request pg_"
    )


async def test_a_chat_client_on_the_converted_path_gets_the_16_mib_error_too(upstream, start_proxy) -> None:
    head = anthropic_sse("")[: anthropic_sse("").index(b"event: content_block_start")]
    huge = b'event: content_block_delta\ndata: {"type":"content_block_delta","text":"'
    upstream.push(streamed_body(17, b"x" * (1024 * 1024), "text/event-stream", head=head + huge))
    accounts = {name: {**a, "models": ["gpt-*"]} for name, a in two_keys(upstream.url).items()}
    proxy = await start_proxy(accounts, config=PRIORITY)
    code, _, body = await asyncio.wait_for(
        post(proxy.url, {**CHAT_ASK, "stream": True}, "/v1/chat/completions"), 60
    )
    assert code == 200
    assert last_event(body)["error"]["message"].startswith("proxygate: upstream stream broken: SSE event")


async def test_max_stream_s_ends_a_pinging_stream_with_an_error_event(upstream, start_proxy) -> None:
    head = anthropic_sse("")[: anthropic_sse("").index(b"event: content_block_start")]
    upstream.push(pings_forever(head))
    proxy = await start_proxy(two_keys(upstream.url), config="max_stream_s = 1\n" + PRIORITY)
    code, _, body = await asyncio.wait_for(post(proxy.url, {**ASK, "stream": True}), 30)
    assert code == 200
    assert body.count(b"event: ping") >= 5
    assert last_event(body) == {
        "type": "error",
        "error": {
            "type": "timeout_error",
            "message": last_event(body)["error"]["message"],
        },
    }
    assert last_event(body)["error"]["message"].startswith(
        "proxygate: upstream answer ran past max_stream_s (request pg_"
    )
    assert proxy.app[BROKER].state("a").failures == 0  # our cap, not the account's fault


async def test_max_stream_s_on_the_converted_path(upstream, start_proxy) -> None:
    upstream.push(pings_forever(b": keep-alive\n\n", b": keep-alive\n\n"))
    accounts = {"o": {**openai_key(upstream.url)["o"], "models": ["claude-*"]}}
    proxy = await start_proxy(accounts, config="max_stream_s = 1\n")
    code, _, body = await asyncio.wait_for(post(proxy.url, {**ASK, "stream": True}), 30)
    assert code == 200
    assert last_event(body)["error"]["type"] == "timeout_error"


# -- 5. a client that leaves -----------------------------------------------------------------


async def _leave_after_first_bytes(url: str, body: dict[str, Any], path: str) -> None:
    async with aiohttp.ClientSession() as client:
        resp = await client.post(url + path, json=body)
        await resp.content.readany()
        resp.close()


async def _record(proxy, tries: int = 100) -> dict[str, Any]:
    store = proxy.app[STORE]
    for _ in range(tries):
        store.flush()
        if rows := store.recent_requests(1):
            return rows[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no usage record")


async def test_a_cancelled_stream_records_the_input_tokens_it_saw(upstream, start_proxy) -> None:
    head = anthropic_sse("")[: anthropic_sse("").index(b"event: content_block_start")]
    upstream.push(hold_after(head))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    await _leave_after_first_bytes(proxy.url, {**ASK, "stream": True}, "/v1/messages")
    record = await _record(proxy)
    assert (record["status"], record["input_tokens"], record["cache_read_tokens"]) == (499, 11, 5)


async def test_a_cancelled_converted_stream_records_the_input_tokens_it_saw(upstream, start_proxy) -> None:
    head = anthropic_sse("")[: anthropic_sse("").index(b"event: content_block_start")]
    upstream.push(hold_after(head))
    accounts = {name: {**a, "models": ["gpt-*"]} for name, a in two_keys(upstream.url).items()}
    proxy = await start_proxy(accounts, config=PRIORITY)
    await _leave_after_first_bytes(proxy.url, {**CHAT_ASK, "stream": True}, "/v1/chat/completions")
    record = await _record(proxy)
    assert (record["status"], record["input_tokens"], record["cache_read_tokens"]) == (499, 11, 5)


# -- 6. the all-cooling 429 -----------------------------------------------------------------


async def test_the_all_cooling_429_names_the_route_and_is_logged(
    upstream, start_proxy, clock, caplog
) -> None:
    upstream.push(status(429, headers={"retry-after": "40"}), status(429, headers={"retry-after": "40"}))
    proxy = await start_proxy(two_keys(upstream.url), clock=clock, config=PRIORITY)
    await post(proxy.url)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="proxygate.pipeline"):
        code, headers, _ = await post(proxy.url)
    assert (code, headers["x-proxygate-route"]) == (429, "default/priority")
    request_id = headers["x-proxygate-request-id"]
    assert [r.getMessage() for r in caplog.records if r.name == "proxygate.pipeline"] == [
        f"{request_id} 429: every account serving 'claude-x' is cooling down; the first is free in 40s"
    ]


# -- 7. secrets the upstream echoes ------------------------------------------------------------


async def test_a_key_echoed_in_a_401_is_never_logged_stored_returned_or_shown(
    upstream, start_proxy, caplog
) -> None:
    echo = {
        "type": "error",
        "error": {"type": "authentication_error", "message": f"invalid x-api-key {SECRET_A}"},
    }
    upstream.push(status(401, echo))
    proxy = await start_proxy({"a": two_keys(upstream.url)["a"]})
    with caplog.at_level(logging.DEBUG):
        code, _, body = await post(proxy.url)
    assert code == 401
    assert orjson.loads(body)["error"]["message"] == "a: HTTP 401: invalid x-api-key sk-…2333"
    store = proxy.app[STORE]
    store.flush()
    stored = orjson.dumps(store.get_states(COOLDOWNS))
    assert b"invalid x-api-key sk-\xe2\x80\xa62333" in stored
    admin_token = proxy.settings.data_dir / "admin.token"
    auth = {"authorization": f"Bearer {admin_token.read_text().strip()}"} if admin_token.exists() else {}
    async with (
        aiohttp.ClientSession() as client,
        client.get(proxy.url + "/admin/api/status", headers=auth) as resp,
    ):
        shown = await resp.read()
    assert resp.status == 200 and b"sk-\xe2\x80\xa62333" in shown
    for text in (body, caplog.text.encode(), stored, shown):
        assert SECRET_A.encode() not in text


async def test_a_key_echoed_in_a_400_passed_through_verbatim_is_masked(upstream, start_proxy, caplog) -> None:
    echo = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"bad request for {SECRET_A}"},
    }
    upstream.push(status(400, echo))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    with caplog.at_level(logging.DEBUG):
        code, _, body = await post(proxy.url)
    assert (code, orjson.loads(body)["error"]["message"]) == (400, "bad request for sk-…2333")
    assert SECRET_A not in caplog.text


# -- 8. what never travels upstream --------------------------------------------------------


async def test_browser_and_proxy_headers_are_not_forwarded(upstream, start_proxy) -> None:
    allow = 'allowed_origins = ["http://localhost:3000"]\n'  # the browser guard lets it in
    proxy = await start_proxy(two_keys(upstream.url), config=allow + PRIORITY)
    sent = {
        "x-proxygate-tenant": "t1",
        "X-ProxyGate-Token": "local",
        "Origin": "http://localhost:3000",
        "Referer": "http://localhost:3000/page",
        "Cookie": "session=abc",
        "X-Forwarded-For": "10.0.0.1",
        "X-Forwarded-Host": "example.com",
        "Forwarded": "for=10.0.0.1",
        "anthropic-beta": "b1",
    }
    code, _, _ = await post(proxy.url, headers=sent)
    assert code == 200
    forwarded = {k.lower() for k in upstream.requests[0].headers}
    assert forwarded & {k.lower() for k in sent} == {"anthropic-beta"}


async def test_a_crlf_stream_cut_mid_event_ends_after_a_whole_event(upstream, start_proxy) -> None:
    """The error event follows the last whole event, never half of one (the client's parser
    would fail on the broken JSON first)."""
    from tests.upstream import cut_after

    payload = chat_sse("hello world").replace(b"\n", b"\r\n")
    cut = payload.index(b"data: ", payload.index(b'"content":"w"')) + 30  # inside an event
    upstream.push(cut_after(payload, cut))
    proxy = await start_proxy(openai_key(upstream.url))
    ask = {**CHAT_ASK, "stream": True, "stream_options": {"include_usage": True}}  # bytes verbatim
    code, _, body = await post(proxy.url, ask, "/v1/chat/completions")
    whole = payload[: payload.rindex(b"\r\n\r\n", 0, cut) + 4]
    assert code == 200
    assert body.startswith(whole)
    assert body[len(whole) :].startswith(b'data: {"error":')
    assert last_event(body)["error"]["message"].startswith("proxygate: upstream connection lost mid-stream")

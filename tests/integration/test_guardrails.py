"""Guardrails through the real server: the upstream never receives a corpus positive, and the
client gets back exactly what it sent, in JSON and in streams split at every byte.

The upstream echoes: it answers with the text it received (which must hold no original), so
whatever reaches the client went through the restoring side. It checks every byte it gets.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
from aiohttp import web

from proxygate.features.redaction import KEY_FILE
from proxygate.features.restoration import TOKEN
from proxygate.server.keys import STORE
from tests.corpus.guardrails import all_cases
from tests.upstream import anthropic_message, chat_completion

ON = {"PROXYGATE_GUARDRAILS_ENABLED": "true"}
ANT = {"provider": "anthropic", "api_key": "sk-ant-up-0000-1111", "models": ["*"]}
CHAT = {"provider": "custom", "api_key": "sk-up-0000-1111", "models": ["*"]}

POSITIVES = [case for case in all_cases() if case.is_positive]
VALUES = sorted({case.text[s:e] for case in POSITIVES for s, e in case.values}, key=len, reverse=True)
CORPUS_TEXT = "\n".join(case.text for case in POSITIVES)
# A stream per character over the whole corpus would be slow: two cases of each detector.
SAMPLE_TEXT = "\n".join(
    case.text
    for detector in sorted({c.detector for c in POSITIVES})
    for case in [c for c in POSITIVES if c.detector == detector][:2]
)


def assert_clean(raw: bytes) -> None:
    """No corpus value in the bytes, as is or JSON-escaped. The replacements are left out: their
    random letters may spell a short value by chance (``PG_SSN_toori…`` holds ``toor``)."""
    text = re.sub(TOKEN, "", raw.decode())
    for value in VALUES:
        escaped = orjson.dumps(value).decode()[1:-1]
        assert value not in text and escaped not in text, f"{value!r} reached the upstream"


def user_text(body: dict[str, Any]) -> str:
    if "contents" in body:
        return "".join(part.get("text", "") for part in body["contents"][-1]["parts"])
    if "messages" in body:
        content = body["messages"][-1]["content"]
        if isinstance(content, list):
            return "".join(block.get("text", "") for block in content)
        return str(content)
    return str(body["input"][-1]["content"][0]["text"]) if isinstance(body["input"], list) else body["input"]


def sse(events: list[tuple[str | None, dict[str, Any]]]) -> bytes:
    out = b""
    for name, data in events:
        out += (
            (b"event: " + name.encode() + b"\n" if name else b"") + b"data: " + orjson.dumps(data) + b"\n\n"
        )
    return out


def anthropic_stream(text: str, *, tool_args: str = "") -> bytes:
    events: list[tuple[str | None, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {**anthropic_message(""), "content": []}}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
    ]
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}},
        )
        for c in text
    ]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    if tool_args:
        block = {"type": "tool_use", "id": "toolu_1", "name": "run", "input": {}}
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": block})
        )
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": tool_args[i : i + 3]},
                },
            )
            for i in range(0, len(tool_args), 3)
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 1}))
    events.append(
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return sse(events)


def chat_stream(text: str, *, tool_args: str = "") -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
    ]
    chunks += [
        {**base, "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}]} for c in text
    ]
    if tool_args:
        first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "run", "arguments": ""}}
        chunks.append(
            {**base, "choices": [{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}]}
        )
        chunks += [
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"arguments": tool_args[i : i + 3]}}]
                        },
                        "finish_reason": None,
                    }
                ],
            }
            for i in range(0, len(tool_args), 3)
        ]
    chunks.append(
        {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if tool_args else "stop"}],
        }
    )
    chunks.append(
        {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    )
    return sse([(None, c) for c in chunks]) + b"data: [DONE]\n\n"


def responses_stream(text: str) -> bytes:
    item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip
    resp = {"id": "resp_1", "object": "response", "status": "completed", "model": "m", "output": [item],
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}  # fmt: skip
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**resp, "status": "in_progress", "output": []}}
    ]
    events += [
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": c,
        }
        for c in text
    ]
    events.append(
        {
            "type": "response.output_text.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "text": text,
        }
    )
    events.append({"type": "response.completed", "response": resp})
    return sse([(e["type"], e) for e in events])


def gemini_stream(text: str) -> bytes:
    chunks = [
        {"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": c}]}}]} for c in text
    ]
    chunks.append(
        {
            "candidates": [
                {"index": 0, "content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
        }
    )
    return sse([(None, c) for c in chunks])


class Echo:
    """The upstream: checks every byte it receives, answers with the text it got."""

    def __init__(self, *, tool: bool = False) -> None:
        self.tool = tool
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        assert_clean(raw)
        body = orjson.loads(raw)
        self.bodies.append(body)
        text = user_text(body)
        args = orjson.dumps({"command": text}).decode() if self.tool else ""
        stream = body.get("stream") is True
        if request.path.endswith("/messages"):
            if stream:
                return web.Response(
                    body=anthropic_stream(text, tool_args=args), content_type="text/event-stream"
                )
            message = anthropic_message(text)
            if self.tool:
                message["content"].append(
                    {"type": "tool_use", "id": "toolu_1", "name": "run", "input": {"command": text}}
                )
            return web.json_response(message)
        if request.path.endswith("/count_tokens"):
            return web.json_response({"input_tokens": 7})
        if "generatecontent" in request.path.lower():
            if "stream" in request.path.lower():
                return web.Response(body=gemini_stream(text), content_type="text/event-stream")
            candidate = {
                "index": 0,
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
            }
            return web.json_response({"candidates": [candidate]})
        if request.path.endswith("/chat/completions"):
            if stream:
                return web.Response(body=chat_stream(text, tool_args=args), content_type="text/event-stream")
            return web.json_response(chat_completion(text))
        return web.Response(body=responses_stream(text), content_type="text/event-stream")


async def serve(upstream, start_proxy, account: dict[str, Any], echo: Echo, root=None):  # type: ignore[no-untyped-def]
    upstream.standing["sk-"] = echo
    base = upstream.url + ("/v1" if account["provider"] == "custom" else "")
    return await start_proxy({"a": {**account, "base_url": base}}, env=ON, root=root)


async def test_anthropic_json_same_format_whole_corpus(upstream, start_proxy) -> None:
    echo = Echo(tool=True)
    proxy = await serve(upstream, start_proxy, ANT, echo)
    client = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="client", max_retries=0)
    message = await client.messages.create(
        model="claude-x",
        max_tokens=20,
        system=CORPUS_TEXT,
        messages=[{"role": "user", "content": CORPUS_TEXT}],
    )
    assert message.content[0].text == CORPUS_TEXT
    assert message.content[1].input == {"command": CORPUS_TEXT}
    await client.close()
    assert echo.bodies[0]["system"] != CORPUS_TEXT  # replaced, and the client never saw it


async def test_anthropic_stream_split_at_every_byte_and_tool_arguments(upstream, start_proxy) -> None:
    echo = Echo(tool=True)
    proxy = await serve(upstream, start_proxy, ANT, echo)
    client = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="client", max_retries=0)
    async with client.messages.stream(
        model="claude-x", max_tokens=20, messages=[{"role": "user", "content": SAMPLE_TEXT}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == SAMPLE_TEXT
    assert final.content[1].input == {"command": SAMPLE_TEXT}
    await client.close()


async def test_openai_chat_same_format_json_and_stream(upstream, start_proxy) -> None:
    echo = Echo(tool=True)
    proxy = await serve(upstream, start_proxy, CHAT, echo)
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)
    done = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": CORPUS_TEXT}]
    )
    assert done.choices[0].message.content == CORPUS_TEXT
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": SAMPLE_TEXT}], stream=True
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == SAMPLE_TEXT
    args = "".join(
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or []
        if call.function
    )
    assert orjson.loads(args) == {"command": SAMPLE_TEXT}
    await client.close()


async def test_converted_routes_both_ways(upstream, start_proxy, tmp_path) -> None:
    echo = Echo()
    proxy = await serve(upstream, start_proxy, CHAT, echo)
    ant = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="client", max_retries=0)
    message = await ant.messages.create(
        model="m", max_tokens=20, messages=[{"role": "user", "content": CORPUS_TEXT}]
    )
    assert message.content[0].text == CORPUS_TEXT
    async with ant.messages.stream(
        model="m", max_tokens=20, messages=[{"role": "user", "content": SAMPLE_TEXT}]
    ) as s:
        assert "".join([t async for t in s.text_stream]) == SAMPLE_TEXT
    await ant.close()

    echo2 = Echo()
    (tmp_path / "b").mkdir()
    proxy2 = await serve(upstream, start_proxy, ANT, echo2, root=tmp_path / "b")
    oai = openai.AsyncOpenAI(base_url=proxy2.url + "/v1", api_key="client", max_retries=0)
    done = await oai.chat.completions.create(
        model="claude-x", messages=[{"role": "user", "content": CORPUS_TEXT}]
    )
    assert done.choices[0].message.content == CORPUS_TEXT
    stream = await oai.chat.completions.create(
        model="claude-x", messages=[{"role": "user", "content": SAMPLE_TEXT}], stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == SAMPLE_TEXT
    await oai.close()


async def test_off_by_default_bodies_reach_the_upstream_unchanged(upstream, start_proxy, tmp_path) -> None:
    seen: list[bytes] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(await request.read())
        return web.json_response(anthropic_message("ok"))

    upstream.standing["sk-"] = record
    proxy = await start_proxy({"a": {**ANT, "base_url": upstream.url}})
    raw = orjson.dumps(
        {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": CORPUS_TEXT}]}
    )
    async with aiohttp.ClientSession() as client, client.post(f"{proxy.url}/v1/messages", data=raw) as resp:
        assert resp.status == 200
    assert seen == [raw]
    assert not (proxy.settings.data_dir / KEY_FILE).exists()  # off: not even a key is made


async def test_replacements_are_stable_across_restarts_and_thinking_passes_untouched(
    upstream, start_proxy, tmp_path
) -> None:
    echo = Echo()
    body = {
        "model": "claude-x",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "mail kim.lee@contoso.io"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "kim.lee@contoso.io wrote", "signature": "sig=="},
                    {"type": "text", "text": "ok"},
                ],
            },
            {"role": "user", "content": "again kim.lee@contoso.io"},
        ],
    }
    for _ in range(2):  # a restart: the same key file, so the same replacements
        proxy = await serve(upstream, start_proxy, ANT, echo)
        async with (
            aiohttp.ClientSession() as client,
            client.post(f"{proxy.url}/v1/messages", json=body) as resp,
        ):
            assert (await resp.json())["content"][0]["text"] == "again kim.lee@contoso.io"
        await proxy.runner.cleanup()
    first, second = echo.bodies
    assert first == second  # same key file, same replacement: prompt caches keep hitting
    assert first["messages"][1]["content"][0] == body["messages"][1]["content"][0]  # type: ignore[index]
    fake = first["messages"][0]["content"].removeprefix("mail ")
    assert "@" in fake and fake != "kim.lee@contoso.io"
    assert (tmp_path / "data" / KEY_FILE).stat().st_mode & 0o777 == 0o600


async def test_request_log_and_metrics_count_detectors_never_values(upstream, start_proxy) -> None:
    echo = Echo()
    proxy = await serve(upstream, start_proxy, ANT, echo)
    text = "mail kim.lee@contoso.io and ann.lee@contoso.io, key ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": text}]}
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{proxy.url}/v1/messages", json=body) as resp:
            assert (await resp.json())["content"][0]["text"] == text
        async with client.get(f"{proxy.url}/metrics") as resp:
            metrics = await resp.text()
    assert 'proxygate_guardrail_replacements_total{detector="email"} 2.0' in metrics
    assert 'proxygate_guardrail_replacements_total{detector="api_key"} 1.0' in metrics
    store = proxy.app[STORE]
    store.flush()
    [entry] = store.recent_requests()
    assert entry["guardrails"] == {"email": 2, "api_key": 1}
    assert "contoso" not in orjson.dumps(entry).decode()


async def test_responses_gemini_and_count_tokens(upstream, start_proxy, tmp_path) -> None:
    echo = Echo()
    responses = {**CHAT, "provider": "openai", "formats": ["responses"]}
    proxy = await serve(upstream, start_proxy, responses, echo)
    oai = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)
    stream = await oai.responses.create(
        model="gpt-x",
        input=[{"role": "user", "content": [{"type": "input_text", "text": SAMPLE_TEXT}]}],
        stream=True,
    )
    events = [e async for e in stream]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == SAMPLE_TEXT
    assert [e.response.output_text for e in events if e.type == "response.completed"] == [SAMPLE_TEXT]
    await oai.close()

    echo2 = Echo()
    (tmp_path / "g").mkdir()
    gemini = {"provider": "gemini", "api_key": "sk-gem-0000-1111", "models": ["*"]}
    proxy2 = await serve(upstream, start_proxy, gemini, echo2, root=tmp_path / "g")
    upstream.push(echo2, echo2)  # Gemini keys travel in x-goog-api-key: the scripts answer
    body = {"contents": [{"role": "user", "parts": [{"text": SAMPLE_TEXT}]}]}
    async with aiohttp.ClientSession() as client:
        url = f"{proxy2.url}/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
        async with client.post(url, json=body) as resp:
            raw = await resp.read()
        async with client.post(f"{proxy2.url}/v1beta/models/gemini-x:generateContent", json=body) as resp:
            whole = await resp.json()
    pieces = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    text = "".join(p["text"] for c in pieces for p in c["candidates"][0]["content"]["parts"] if "text" in p)
    assert text == SAMPLE_TEXT
    assert whole["candidates"][0]["content"]["parts"][0]["text"] == SAMPLE_TEXT

    echo3 = Echo()
    (tmp_path / "c").mkdir()
    proxy3 = await serve(upstream, start_proxy, ANT, echo3, root=tmp_path / "c")
    count = {"model": "claude-x", "messages": [{"role": "user", "content": CORPUS_TEXT}]}
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{proxy3.url}/v1/messages/count_tokens", json=count) as resp,
    ):
        assert await resp.json() == {"input_tokens": 7}
    assert echo3.bodies  # the upstream saw it, and Echo found no original in it


async def test_a_stored_conversation_gets_earlier_turns_tokens_restored(upstream, start_proxy) -> None:
    """previous_response_id: the provider holds turn 1, so turn 2's answer may quote its token."""
    echo = Echo()
    responses = {**CHAT, "provider": "openai", "formats": ["responses"]}
    proxy = await serve(upstream, start_proxy, responses, echo)
    secret = "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"
    oai = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)
    first = await oai.responses.create(model="gpt-x", input=f"my token is {secret}")
    assert first.output_text == f"my token is {secret}"
    token = user_text(echo.bodies[0]).removeprefix("my token is ")
    assert token.startswith("PG_API_KEY_")

    async def quote(request: web.Request) -> web.StreamResponse:
        assert_clean(await request.read())
        return web.Response(body=responses_stream(f"you said {token}."), content_type="text/event-stream")

    upstream.push(quote, quote)
    second = await oai.responses.create(model="gpt-x", input="what was it?", previous_response_id="resp_1")
    assert second.output_text == f"you said {secret}."
    stream = await oai.responses.create(
        model="gpt-x", input="again?", previous_response_id="resp_1", stream=True
    )
    deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
    assert "".join(deltas) == f"you said {secret}."
    await oai.close()


async def test_capture_records_the_anonymised_request_and_answer(upstream, start_proxy, tmp_path) -> None:
    upstream.standing["sk-"] = Echo()
    proxy = await start_proxy(
        {"a": {**ANT, "base_url": upstream.url}},
        env=ON,
        config='[capture]\nenabled = true\ndir = "captured"\n',
    )
    secret = "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"
    body = {
        "model": "claude-x",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": f"token {secret}"}],
    }
    async with aiohttp.ClientSession() as client, client.post(f"{proxy.url}/v1/messages", json=body) as resp:
        assert (await resp.json())["content"][0]["text"] == f"token {secret}"
    captured = b""
    for _ in range(100):  # the capture writer is a thread: wait for its line
        captured = b"".join(p.read_bytes() for p in (tmp_path / "captured").glob("*.jsonl"))
        if captured.count(b"PG_API_KEY_") >= 2:
            break
        await asyncio.sleep(0.05)
    assert captured.count(b"PG_API_KEY_") >= 2  # the request and the answer, as the provider saw them
    assert secret.encode() not in captured


SECRET = "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"


class Refuse:
    """The upstream: answers an error that quotes the text it got, and its own account's key."""

    def __init__(self, status: int = 400, *, plain: bool = False) -> None:
        self.status = status
        self.plain = plain

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        assert_clean(raw)
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
            "Bearer "
        )
        message = f"bad prompt: {user_text(orjson.loads(raw))} (key {key})"
        if self.plain:
            return web.Response(status=self.status, text=message)
        if request.path.endswith("/messages"):
            error = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
        else:
            error = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
        return web.json_response(error, status=self.status)


async def post(url: str, body: dict[str, Any]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as client, client.post(url, json=body) as resp:
        return resp.status, await resp.text()


def assert_restored(text: str, api_key: str) -> None:
    assert SECRET in text  # the client's own text, as it sent it
    assert "PG_" not in text  # never a replacement it did not send
    assert api_key not in text and api_key[-4:] in text  # the account's key still masked


async def test_an_upstream_error_quoting_the_request_shows_the_client_its_own_text(
    upstream, start_proxy, tmp_path
) -> None:
    ant = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": f"token {SECRET}"}]}
    chat = {"model": "m", "messages": [{"role": "user", "content": f"token {SECRET}"}]}
    # Same format: the provider's error body passed on, JSON or plain text.
    proxy = await serve(upstream, start_proxy, ANT, Refuse())
    status, text = await post(f"{proxy.url}/v1/messages", ant)
    assert status == 400
    assert_restored(orjson.loads(text)["error"]["message"], ANT["api_key"])
    upstream.push(Refuse(plain=True))
    status, text = await post(f"{proxy.url}/v1/messages", ant)
    assert status == 400
    assert_restored(text, ANT["api_key"])
    # Converted (Chat client, Anthropic account): "upstream: …" in the client's format.
    status, text = await post(f"{proxy.url}/v1/chat/completions", chat)
    assert status == 400
    message = orjson.loads(text)["error"]["message"]
    assert message.startswith("upstream: bad prompt: token ")
    assert_restored(message, ANT["api_key"])
    # Every account failed: the last one's words.
    (tmp_path / "b").mkdir()
    proxy2 = await serve(upstream, start_proxy, CHAT, Refuse(500), root=tmp_path / "b")
    status, text = await post(f"{proxy2.url}/v1/chat/completions", chat)
    assert status >= 500
    assert_restored(orjson.loads(text)["error"]["message"], CHAT["api_key"])


def sse_data(raw: bytes) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[5:])
        for line in raw.splitlines()
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]"
    ]


async def test_a_stream_ending_in_an_error_keeps_the_held_text_and_restores_the_error(
    upstream, start_proxy, tmp_path
) -> None:
    """Text ending in "P" (maybe the start of a replacement) is held back: before this, an
    error event ended the stream with it unsent."""
    said = f"token {SECRET} P"

    async def chat_error(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        assert_clean(raw)
        text = user_text(orjson.loads(raw))
        stream = chat_stream(text).split(b'"finish_reason":"stop"')[0].rsplit(b"\n\n", 1)[0] + b"\n\n"
        error = {"error": {"message": f"overloaded while writing {text}", "type": "server_error"}}
        return web.Response(body=stream + sse([(None, error)]), content_type="text/event-stream")

    async def anthropic_cut(request: web.Request) -> web.StreamResponse:
        """The text's deltas, then the connection reset: the relay stops on an exception."""
        raw = await request.read()
        assert_clean(raw)
        stream = anthropic_stream(user_text(orjson.loads(raw)))
        out = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await out.prepare(request)
        await out.write(stream.split(b"event: content_block_stop")[0])
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return out

    chat = {"model": "m", "stream": True, "messages": [{"role": "user", "content": said}]}
    ant = {
        "model": "claude-x",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": said}],
    }

    # Chat, same format: the upstream's own error event, restored, after the held "P".
    proxy = await serve(upstream, start_proxy, CHAT, Echo())
    upstream.push(chat_error)
    status, text = await post(f"{proxy.url}/v1/chat/completions", chat)
    events = sse_data(text.encode())
    deltas = "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c.get("choices"))
    assert (status, deltas) == (200, said)
    errors = [e["error"]["message"] for e in events if "error" in e]
    assert errors[0] == f"overloaded while writing {said}"  # then ours: no final event came
    assert "PG_" not in text

    # Anthropic client on a Chat account (converted): a truncated stream ends in our error event.
    (tmp_path / "c").mkdir()  # a fresh pool: the failed stream cooled the first account down
    proxy3 = await serve(upstream, start_proxy, CHAT, Echo(), root=tmp_path / "c")
    upstream.push(chat_error)
    status, text = await post(f"{proxy3.url}/v1/messages", ant)
    events = sse_data(text.encode())
    deltas = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert (status, deltas, events[-1]["type"]) == (200, said, "error")
    assert "PG_" not in text

    # A Gemini client on a Chat account: the upstream's error becomes Gemini's error chunk.
    (tmp_path / "g").mkdir()
    proxy4 = await serve(upstream, start_proxy, CHAT, Echo(), root=tmp_path / "g")
    upstream.push(chat_error)
    url = f"{proxy4.url}/v1beta/models/m:streamGenerateContent?alt=sse"
    status, text = await post(url, {"contents": [{"role": "user", "parts": [{"text": said}]}]})
    events = sse_data(text.encode())
    parts = [p for e in events for c in e.get("candidates", []) for p in c["content"].get("parts", [])]
    errors = [e["error"]["message"] for e in events if "error" in e]
    assert (status, "".join(p.get("text", "") for p in parts)) == (200, said)
    assert f"overloaded while writing {said}" in errors[0]
    assert "PG_" not in text

    # Anthropic, same format, connection lost mid-stream: proxygate's own error event ends it.
    (tmp_path / "b").mkdir()
    proxy2 = await serve(upstream, start_proxy, ANT, Echo(), root=tmp_path / "b")
    upstream.push(anthropic_cut)
    status, text = await post(f"{proxy2.url}/v1/messages", ant)
    events = sse_data(text.encode())
    deltas = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert (status, deltas, events[-1]["type"]) == (200, said, "error")
    assert "PG_" not in text

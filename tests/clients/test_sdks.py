"""The official SDKs as clients of the proxy: their own parsers judge our output.

The upstream is the scripted loopback server; the SDKs talk to the real proxy. Plain,
streaming and a tool round trip per API, so SDK-visible shapes (SSE grammar, usage, tool
calls) survive the relay.
"""

from __future__ import annotations

import anthropic
import openai
import orjson
import pytest

from tests.upstream import anthropic_sse, chat_sse, ok_json, ok_sse, responses_sse, sdk_accounts

TOOL_USE = {
    "id": "msg_t",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_marker", "input": {"q": "x"}}],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 2},
}


async def pool(start_proxy, upstream):
    return await start_proxy(sdk_accounts(upstream.url))


async def test_anthropic_sdk_plain_stream_and_tool_round_trip(upstream, start_proxy) -> None:
    proxy = await pool(start_proxy, upstream)
    client = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="client", max_retries=0)
    message = await client.messages.create(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert (message.content[0].text, message.usage.cache_read_input_tokens) == ("pong", 5)

    upstream.push(ok_sse(anthropic_sse("streamed")))
    async with client.messages.stream(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert (text, final.stop_reason, final.usage.output_tokens) == ("streamed", "end_turn", 3)

    upstream.push(ok_json(TOOL_USE))
    tools = [
        {
            "name": "get_marker",
            "description": "d",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    first = await client.messages.create(
        model="claude-x", max_tokens=10, tools=tools, messages=[{"role": "user", "content": "go"}]
    )
    assert first.content[0].type == "tool_use"
    second = await client.messages.create(
        model="claude-x",
        max_tokens=10,
        tools=tools,
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "acceptance-42"}],
            },
        ],
    )
    assert second.content[0].text == "pong"
    assert upstream.requests[-1].body["messages"][2]["content"][0]["tool_use_id"] == "toolu_1"
    await client.close()


async def test_openai_sdk_chat_plain_stream_with_usage_and_tool_calls(upstream, start_proxy) -> None:
    proxy = await pool(start_proxy, upstream)
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)
    done = await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert (done.choices[0].message.content, done.usage.prompt_tokens) == ("pong", 20)

    upstream.push(ok_sse(chat_sse("abc")))
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "abc"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4

    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_marker", "arguments": ""},
    }
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    pieces = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}, "finish_reason": None}
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"q":'}}]},
                    "finish_reason": None,
                }
            ],
        },
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]},
                    "finish_reason": None,
                }
            ],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    upstream.push(
        ok_sse(b"".join(b"data: " + orjson.dumps(p) + b"\n\n" for p in pieces) + b"data: [DONE]\n\n")
    )
    tools = [
        {
            "type": "function",
            "function": {"name": "get_marker", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "go"}], tools=tools, stream=True
    )
    args = "".join(
        [
            c.choices[0].delta.tool_calls[0].function.arguments or ""
            async for c in stream
            if c.choices and c.choices[0].delta.tool_calls
        ]
    )
    assert orjson.loads(args) == {"q": "x"}
    await client.close()


async def test_openai_sdk_responses_stream(upstream, start_proxy) -> None:
    proxy = await pool(start_proxy, upstream)
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)
    upstream.push(ok_sse(responses_sse("hello")))
    stream = await client.responses.create(model="gpt-5", input="hi", stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "hello"
    assert upstream.requests[0].path == "/v1/responses"
    await client.close()


async def test_sdk_reads_our_4xx_and_is_told_not_to_retry(upstream, start_proxy) -> None:
    proxy = await pool(start_proxy, upstream)
    client = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="client", max_retries=2)
    with pytest.raises(anthropic.NotFoundError) as caught:
        await client.messages.create(
            model="nope-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    error = caught.value
    assert error.body["error"]["message"].startswith("no account in the pool serves model 'nope-model'")
    assert error.response.headers["x-should-retry"] == "false"
    assert error.body["request_id"] == error.response.headers["x-proxygate-request-id"]
    await client.close()

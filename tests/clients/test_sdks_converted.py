"""The official SDKs through converted routes: their parsers judge what our codecs produce.

Each client speaks its own format; the only account in the pool speaks another one, so every
request and answer (JSON and stream) goes client → IR → upstream and back.
"""

from __future__ import annotations

import anthropic
import openai

from tests.upstream import anthropic_sse, chat_sse, ok_sse

CHAT_ONLY = {"provider": "custom", "api_key": "sk-up-0000-1111", "models": ["*"]}
ANT_ONLY = {"provider": "anthropic", "api_key": "sk-ant-up-0000-1111", "models": ["*"]}


async def test_anthropic_sdk_over_a_chat_account(upstream, start_proxy) -> None:
    proxy = await start_proxy({"c": {**CHAT_ONLY, "base_url": upstream.url + "/v1"}})
    client = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="client", max_retries=0)
    message = await client.messages.create(
        model="deepseek-chat", max_tokens=20, system="Be terse.", messages=[{"role": "user", "content": "hi"}]
    )
    assert (message.content[0].text, message.stop_reason, message.model) == (
        "pong",
        "end_turn",
        "deepseek-chat",
    )
    assert (
        message.usage.input_tokens,
        message.usage.cache_read_input_tokens,
        message.usage.output_tokens,
    ) == (12, 8, 4)
    sent = upstream.requests[0]
    assert (sent.path, sent.headers["Authorization"]) == ("/v1/chat/completions", "Bearer sk-up-0000-1111")
    assert sent.body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert "anthropic-version" not in {k.lower() for k in sent.headers}

    upstream.push(ok_sse(chat_sse("streamed")))
    async with client.messages.stream(
        model="deepseek-chat", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert (text, final.stop_reason, final.usage.output_tokens) == ("streamed", "end_turn", 4)
    assert upstream.requests[1].body["stream"] is True
    await client.close()


async def test_openai_chat_sdk_over_an_anthropic_account(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": {**ANT_ONLY, "base_url": upstream.url}})
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)
    done = await client.chat.completions.create(
        model="claude-x", messages=[{"role": "user", "content": "hi"}]
    )
    assert (done.choices[0].message.content, done.choices[0].finish_reason) == ("pong", "stop")
    # OpenAI accounting includes cached tokens in prompt_tokens (protocols.md §5.11).
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (11 + 5 + 2, 3)
    sent = upstream.requests[0]
    assert (sent.path, sent.headers["x-api-key"], sent.headers["anthropic-version"]) == (
        "/v1/messages",
        "sk-ant-up-0000-1111",
        "2023-06-01",
    )
    assert sent.body["max_tokens"] > 0

    upstream.push(ok_sse(anthropic_sse("abc")))
    stream = await client.chat.completions.create(
        model="claude-x",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "abc"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert chunks[0].created > 1_700_000_000
    await client.close()


async def test_openai_responses_sdk_over_an_anthropic_account(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": {**ANT_ONLY, "base_url": upstream.url}})
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)
    upstream.push(ok_sse(anthropic_sse("hello")))
    stream = await client.responses.create(
        model="claude-x", input="hi", instructions="Be terse.", stream=True
    )
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "hello"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert upstream.requests[0].body["system"][0]["text"] == "Be terse."
    await client.close()


async def test_responses_client_over_a_chat_account(upstream, start_proxy) -> None:
    """Codex-style traffic: Responses to a Chat-only account comes back as a Responses stream."""
    proxy = await start_proxy({"c": {**CHAT_ONLY, "base_url": upstream.url + "/v1"}})
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)
    upstream.push(ok_sse(chat_sse("via chat")))
    stream = await client.responses.create(model="gpt-x", input="hi", stream=True)
    events = [e async for e in stream]
    assert events[-1].response.output_text == "via chat"
    assert upstream.requests[0].path == "/v1/chat/completions"
    await client.close()

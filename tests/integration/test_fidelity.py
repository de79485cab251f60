"""Fidelity with real providers (issue 18): converted requests each target accepts, and failover
that never strands a request. Every test goes through the real server to a recording upstream."""

from __future__ import annotations

import aiohttp
import anthropic
import openai
import orjson
import pytest

from proxygate.server.keys import BROKER
from tests.upstream import chat_completion, ok_json, ok_sse, status

CHAT_KEY = {"api_key": "sk-up-0000-1111", "models": ["*"]}
ANT_KEY = {"provider": "anthropic", "api_key": "sk-ant-up-0000-1111", "models": ["*"]}
THINKING = {"type": "enabled", "budget_tokens": 4000}


def chat_account(upstream, provider: str, **extra: object) -> dict[str, object]:
    return {"provider": provider, "base_url": upstream.url + "/v1", **CHAT_KEY, **extra}


def ant_client(proxy) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.url, api_key="client", max_retries=0)


def openai_client(proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)


# ----------------------------------------------------------------------- 1. prompt_cache_key


async def test_prompt_cache_key_only_to_providers_that_accept_it(upstream, start_proxy) -> None:
    proxy = await start_proxy(
        {
            "cerebras": {**chat_account(upstream, "cerebras"), "models": ["llama*"]},
            "custom": {**chat_account(upstream, "custom"), "models": ["local-*"]},
            "opted": {**chat_account(upstream, "custom", prompt_cache_key=True), "models": ["opted-*"]},
            "openrouter": {**chat_account(upstream, "openrouter"), "models": ["*/*"]},
        }
    )
    client = ant_client(proxy)
    for model in ("llama3.1-8b", "local-qwen", "opted-qwen", "openai/gpt-4o-mini"):
        message = await client.messages.create(
            model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].text == "pong"
    sent = [r.body for r in upstream.requests]
    assert ["prompt_cache_key" in body for body in sent] == [False, False, True, True]
    await client.close()


# ----------------------------------------------------------------------- 2. reasoning effort


async def test_thinking_is_dropped_for_models_without_reasoning_and_mapped_for_others(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy({"o": chat_account(upstream, "custom", models=["gpt-*", "o3*"])})
    client = ant_client(proxy)
    for model in ("gpt-4o", "o3", "gpt-5"):
        await client.messages.create(
            model=model,
            max_tokens=8000,
            thinking=THINKING,
            messages=[{"role": "user", "content": "hi"}],
        )
    efforts = [r.body.get("reasoning_effort") for r in upstream.requests]
    assert efforts == [None, "low", "low"]  # 4,000 tokens of budget is a "low" effort

    # A Responses client (Codex) on a Chat account: the nearest effort the model takes.
    o_client = openai_client(proxy)
    for model, effort in (("o3", "minimal"), ("gpt-5", "xhigh"), ("gpt-4o", "high")):
        upstream.push(ok_json(chat_completion()))
        answer = await o_client.responses.create(
            model=model, reasoning={"effort": effort}, input="hi", stream=False
        )
        assert answer.output_text == "pong"
    efforts = [r.body.get("reasoning_effort") for r in upstream.requests[3:]]
    assert efforts == ["low", "high", None]
    await client.close()
    await o_client.close()


async def test_responses_reasoning_is_dropped_for_gpt_4_1(upstream, start_proxy) -> None:
    proxy = await start_proxy(
        {"o": {"provider": "openai", "base_url": upstream.url + "/v1", **CHAT_KEY, "formats": ["responses"]}}
    )
    client = ant_client(proxy)
    answer = await client.messages.create(
        model="gpt-4.1", max_tokens=8000, thinking=THINKING, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.content[0].text == "pong"
    sent = upstream.requests[0]
    assert sent.path == "/v1/responses"
    assert "reasoning" not in sent.body
    assert "reasoning.encrypted_content" not in sent.body.get("include", [])
    await client.messages.create(
        model="o4-mini", max_tokens=8000, thinking=THINKING, messages=[{"role": "user", "content": "hi"}]
    )
    assert upstream.requests[1].body["reasoning"]["effort"] == "low"
    await client.close()


# ----------------------------------------------------------------------- 3. DeepSeek reasoner


async def test_deepseek_reasoner_gets_reasoning_content_on_every_tool_call_turn(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy({"d": chat_account(upstream, "deepseek", models=["deepseek-*"])})
    client = ant_client(proxy)
    history = [
        {"role": "user", "content": "list files"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "use ls", "signature": "c2lnLWZyb20tY2xhdWRl"},
                {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "cat", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "hello"}]},
    ]
    tools = [{"name": n, "input_schema": {"type": "object"}} for n in ("ls", "cat")]
    for model in ("deepseek-reasoner", "deepseek-chat"):
        answer = await client.messages.create(model=model, max_tokens=100, tools=tools, messages=history)
        assert answer.content[0].text == "pong"
    reasoner, chat = (r.body["messages"] for r in upstream.requests)
    calls = [m for m in reasoner if m.get("tool_calls")]
    assert len(calls) == 2
    assert all(isinstance(m.get("reasoning_content"), str) for m in calls)
    assert not any("reasoning_content" in m for m in chat)  # only where the model requires it
    await client.close()


# ----------------------------------------------------------------------- 4. sampling


async def test_chat_sampling_reaches_anthropic(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": {**ANT_KEY, "base_url": upstream.url}})
    client = openai_client(proxy)
    hi = [{"role": "user", "content": "hi"}]
    await client.chat.completions.create(model="claude-sonnet-4-5", temperature=0, messages=hi)
    await client.chat.completions.create(model="claude-sonnet-4-5", top_p=0.5, messages=hi)
    await client.chat.completions.create(model="claude-sonnet-4-5", temperature=0.2, top_p=0.5, messages=hi)
    await client.chat.completions.create(
        model="claude-sonnet-4-20250514", temperature=1.7, top_p=0.5, messages=hi
    )
    sent = [r.body for r in upstream.requests]
    assert sent[0]["temperature"] == 0 and "top_p" not in sent[0]
    assert sent[1]["top_p"] == 0.5 and "temperature" not in sent[1]
    # Sonnet 4.5 refuses the two together (documented): temperature is kept, top_p dropped.
    assert (sent[2]["temperature"], "top_p" in sent[2]) == (0.2, False)
    assert (sent[3]["temperature"], sent[3]["top_p"]) == (1.0, 0.5)  # Chat's 0–2 clamped to 0–1
    assert all(r.headers["anthropic-version"] == "2023-06-01" for r in upstream.requests)
    await client.close()


# ----------------------------------------------------------------------- 5. ids, max_tokens


async def test_tool_calls_without_ids_get_unique_ids_paired_with_their_results(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": {**ANT_KEY, "base_url": upstream.url}})
    client = openai_client(proxy)
    call = {"type": "function", "function": {"name": "read", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "read two files"},
        {"role": "assistant", "content": None, "tool_calls": [call, call]},
        {"role": "tool", "content": "one"},
        {"role": "tool", "content": "two"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "three"},
    ]
    tools = [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}]
    await client.chat.completions.create(model="claude-sonnet-4-5", messages=messages, tools=tools)
    sent = upstream.requests[0].body["messages"]
    uses = [
        b["id"] for m in sent if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"
    ]
    results = [
        (b["tool_use_id"], b["content"])
        for m in sent
        if m["role"] == "user" and isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert len(uses) == len(set(uses)) == 3
    assert [r[0] for r in results] == uses
    assert ["one" in str(r[1]) for r in results] == [True, False, False]
    await client.close()


async def test_answer_without_an_id_gets_one(upstream, start_proxy) -> None:
    proxy = await start_proxy(
        {
            "c": chat_account(upstream, "custom", models=["local"]),
            "g": {"provider": "gemini", "base_url": upstream.url, **CHAT_KEY, "models": ["gemini-*"]},
        }
    )
    client = ant_client(proxy)
    nameless = {k: v for k, v in chat_completion().items() if k != "id"}
    upstream.push(ok_json(nameless))
    answer = await client.messages.create(
        model="local", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.id.startswith("msg_") and len(answer.id) > len("msg_") + 8
    await client.close()

    candidate = {"content": {"role": "model", "parts": [{"text": "pong"}]}, "finishReason": "STOP"}
    upstream.push(ok_json({"candidates": [candidate]}))  # no responseId
    o_client = openai_client(proxy)
    done = await o_client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}]
    )
    assert done.choices[0].message.content == "pong"
    assert done.id.startswith("chatcmpl-") and len(done.id) > len("chatcmpl-") + 8
    await o_client.close()


async def test_converted_max_tokens_defaults_to_the_models_output_limit(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": {**ANT_KEY, "base_url": upstream.url}})
    client = openai_client(proxy)
    hi = [{"role": "user", "content": "hi"}]
    await client.chat.completions.create(model="claude-3-5-haiku-20241022", messages=hi)
    await client.chat.completions.create(model="claude-3-5-haiku-20241022", max_tokens=20000, messages=hi)
    await client.chat.completions.create(model="claude-sonnet-4-5", messages=hi)
    await client.chat.completions.create(model="claude-unknown-9", messages=hi)
    assert [r.body["max_tokens"] for r in upstream.requests] == [8192, 8192, 64000, 32000]
    await client.close()


# ----------------------------------------------------------------------- 6. Retry-After


def two_keys(url: str) -> dict[str, dict[str, object]]:
    return {
        "a": {**ANT_KEY, "api_key": "sk-ant-aaaa-0000", "base_url": url, "priority": 2},
        "b": {**ANT_KEY, "api_key": "sk-ant-bbbb-0000", "base_url": url, "priority": 1},
    }


PRIORITY = '[routing.configs.default]\nstrategy = "priority"\n'
ASK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


async def post(url: str, body: dict[str, object] = ASK) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as client, client.post(url + "/v1/messages", json=body) as resp:
        return resp.status, await resp.read()


@pytest.mark.parametrize(
    "retry_after",
    [
        {"retry-after": "0"},
        {"retry-after": "-5"},
        {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"},
        {"retry-after-ms": "0", "retry-after": "0"},
    ],
)
async def test_a_non_positive_or_past_retry_after_starts_the_exponential_cooldown(
    upstream, start_proxy, clock, retry_after
) -> None:
    upstream.push(status(429, headers=retry_after))
    proxy = await start_proxy(two_keys(upstream.url), clock=clock, config=PRIORITY)
    assert (await post(proxy.url))[0] == 200
    assert proxy.app[BROKER].state("a").cooling(clock()) == 15
    await post(proxy.url)
    assert [r.headers["x-api-key"][7:11] for r in upstream.requests] == ["aaaa", "bbbb", "bbbb"]


# ----------------------------------------------------------------------- 7. 403


FLAGGED = {
    "error": {
        "code": 403,
        "message": 'openai/gpt-4o requires moderation on OpenRouter. Your input was flagged for "harassment"',
        "metadata": {"reasons": ["harassment"], "flagged_input": "…", "provider_name": "OpenAI"},
    }
}


async def test_a_moderation_403_goes_back_to_the_client_and_leaves_the_account_serving(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy({"or": chat_account(upstream, "openrouter", models=["*/*"])})
    client = ant_client(proxy)
    upstream.push(status(403, FLAGGED))
    hi = [{"role": "user", "content": "hi"}]
    try:
        await client.messages.create(model="openai/gpt-4o", max_tokens=10, messages=hi)
        raise AssertionError("the flagged prompt was answered")
    except anthropic.PermissionDeniedError as exc:
        assert "flagged" in exc.message
    state = proxy.app[BROKER].state("or")
    assert (state.needs_reauth, state.quarantined, state.cooldown_until) == ("", "", 0)
    answer = await client.messages.create(model="openai/gpt-4o", max_tokens=10, messages=hi)
    assert answer.content[0].text == "pong"  # the only account serves the next request at once

    o_client = openai_client(proxy)  # same format: the provider's own body, verbatim
    upstream.push(status(403, FLAGGED))
    try:
        await o_client.chat.completions.create(model="openai/gpt-4o", messages=hi)
        raise AssertionError("the flagged prompt was answered")
    except openai.PermissionDeniedError as exc:
        assert exc.body is not None and "flagged" in str(exc.body)
    assert proxy.app[BROKER].state("or").needs_reauth == ""
    await client.close()
    await o_client.close()


@pytest.mark.parametrize(
    ("code", "error", "reauth", "quarantined"),
    [
        (401, {"type": "authentication_error", "message": "invalid x-api-key"}, True, False),
        (403, {"type": "authentication_error", "message": "OAuth token has expired"}, True, False),
        (403, {"type": "permission_error", "message": "Your API key does not have permission"}, False, True),
    ],
)
async def test_auth_and_permission_errors_are_the_accounts(
    upstream, start_proxy, code, error, reauth, quarantined
) -> None:
    upstream.push(status(code, {"type": "error", "error": error}))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    assert (await post(proxy.url))[0] == 200  # failed over to b
    state = proxy.app[BROKER].state("a")
    assert (bool(state.needs_reauth), bool(state.quarantined)) == (reauth, quarantined)


# ----------------------------------------------------------------------- 8. last resort


@pytest.mark.parametrize(
    ("first", "served_by"),
    [
        ({"retry-after": "1"}, "aaaa"),  # known reset 1 s away: waited for, then tried
        ({}, "aaaa"),  # our own guess of 15 s: tried at once, it may serve
        ({"retry-after": "30"}, None),  # known to be far: skipped, the 500 stands
    ],
)
async def test_a_cooling_account_is_the_last_resort(upstream, start_proxy, clock, first, served_by) -> None:
    proxy = await start_proxy(two_keys(upstream.url), clock=clock, config=PRIORITY)
    upstream.push(status(429, headers=first))
    assert (await post(proxy.url))[0] == 200  # a limited, b served
    upstream.push(status(500))  # b fails transiently; a is still cooling
    code, _ = await post(proxy.url)
    keys = [r.headers["x-api-key"][7:11] for r in upstream.requests]
    if served_by is None:
        assert (code, keys) == (500, ["aaaa", "bbbb", "bbbb"])
    else:
        assert (code, keys) == (200, ["aaaa", "bbbb", "bbbb", served_by])
        assert proxy.app[BROKER].state("a").cooling(clock()) == 0  # its success cleared the cooldown


async def test_a_short_known_reset_is_waited_for_within_the_same_request(
    upstream, start_proxy, clock
) -> None:
    # a: 429 with Retry-After 1 s, then b: a transient 500 — a is tried again once its reset passed.
    proxy = await start_proxy(two_keys(upstream.url), clock=clock, config=PRIORITY)
    upstream.push(status(429, headers={"retry-after": "1"}), status(500))
    code, _ = await post(proxy.url)
    assert code == 200
    assert [r.headers["x-api-key"][7:11] for r in upstream.requests] == ["aaaa", "bbbb", "aaaa"]


# ----------------------------------------------------------------------- 9. rotation per model


@pytest.mark.parametrize("strategy", ["round-robin", "drain-aware"])
async def test_each_model_takes_turns_over_the_accounts(upstream, start_proxy, strategy) -> None:
    accounts = {
        name: {**ANT_KEY, "api_key": f"sk-ant-{name * 4}-0000", "base_url": upstream.url} for name in "ab"
    }
    proxy = await start_proxy(accounts, config=f'[routing.configs.default]\nstrategy = "{strategy}"\n')
    main_model: dict[str, int] = {"a": 0, "b": 0}
    for i in range(8):  # Claude Code: a main-model turn, then a haiku request, each a new conversation
        for model in ("claude-sonnet-4-5", "claude-haiku-4-5"):
            body = {
                "model": model,
                "max_tokens": 10,
                "messages": [{"role": "user", "content": f"{model} {i}"}],
            }
            async with (
                aiohttp.ClientSession() as client,
                client.post(proxy.url + "/v1/messages", json=body) as resp,
            ):
                assert resp.status == 200
                if model == "claude-sonnet-4-5":
                    main_model[resp.headers["x-proxygate-account"]] += 1
    assert max(main_model.values()) <= 6, main_model


async def test_config_overrides_the_catalogs_reasoning_efforts_and_output_limit(
    upstream, start_proxy
) -> None:
    config = (
        '[models."gpt-4o"]\nreasoning_efforts = ["low", "high"]\n'
        '[models."my-reasoner"]\nthinking = true\nreasoning_efforts = ["medium"]\n'
        '[models."claude-sonnet-4-5"]\nmax_output_tokens = 1000\n'
    )
    proxy = await start_proxy(
        {
            "c": chat_account(upstream, "custom", models=["gpt-*", "my-*", "plain-*"]),
            "a": {**ANT_KEY, "base_url": upstream.url, "models": ["claude-*"]},
        },
        config=config,
    )
    client = ant_client(proxy)
    hi = [{"role": "user", "content": "hi"}]
    for model in ("gpt-4o", "my-reasoner", "plain-model"):
        await client.messages.create(model=model, max_tokens=8000, thinking=THINKING, messages=hi)
    assert [r.body.get("reasoning_effort") for r in upstream.requests] == ["low", "medium", None]
    o_client = openai_client(proxy)
    await o_client.chat.completions.create(model="claude-sonnet-4-5", messages=hi)
    assert upstream.requests[-1].body["max_tokens"] == 1000
    await client.close()
    await o_client.close()


async def test_streamed_tool_calls_without_ids_differ_between_answers(upstream, start_proxy) -> None:
    def nameless_call_stream() -> bytes:
        chunks = [
            {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": 0, "function": {"name": "ls", "arguments": "{}"}}]
                        },
                    }
                ]
            },
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        ]
        return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"

    proxy = await start_proxy({"c": chat_account(upstream, "custom")})
    client = ant_client(proxy)
    tools = [{"name": "ls", "input_schema": {"type": "object"}}]
    ids = []
    for _ in range(2):
        upstream.push(ok_sse(nameless_call_stream()))
        async with client.messages.stream(
            model="local", max_tokens=10, tools=tools, messages=[{"role": "user", "content": "ls"}]
        ) as stream:
            final = await stream.get_final_message()
        ids.append(final.content[0].id)  # type: ignore[union-attr]
    assert ids[0] != ids[1]
    await client.close()

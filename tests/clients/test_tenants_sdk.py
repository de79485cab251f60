"""Two tenant keys and the owner's token through the official SDKs: each SDK reads our refusals."""

from __future__ import annotations

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import FakeClock, admin_headers
from tests.upstream import sdk_accounts

OWNER = 'proxy_token = "owner-token-0123"\n'
HI = [{"role": "user", "content": "hi"}]


async def add(proxy, name: str, **limits: object) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{proxy.url}/admin/api/tenants",
            json={"name": name, **limits},
            headers=admin_headers(proxy.settings),
        ) as resp,
    ):
        assert resp.status == 201
        return str((await resp.json())["key"])


async def test_sdks_with_tenant_keys_and_the_owners_token(upstream, start_proxy) -> None:
    clock = FakeClock()
    proxy = await start_proxy(
        sdk_accounts(upstream.url),
        config=OWNER,
        clock=clock,
    )
    alice = await add(proxy, "alice", rpm=1)
    bob = await add(proxy, "bob")
    for key in ("owner-token-0123", alice, bob):
        async with anthropic.AsyncAnthropic(base_url=proxy.url, api_key=key, max_retries=0) as client:
            message = await client.messages.create(model="claude-x", max_tokens=10, messages=HI)
        assert message.content[0].text == "pong"
    async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key=bob, max_retries=0) as chat:
        answer = await chat.chat.completions.create(model="gpt-4o", messages=HI)
    assert answer.choices[0].message.content == "pong"

    for wrong in ("pgk_" + "A" * 43, "sk-ant-something"):
        async with anthropic.AsyncAnthropic(base_url=proxy.url, api_key=wrong, max_retries=0) as client:
            with pytest.raises(anthropic.AuthenticationError):
                await client.messages.create(model="claude-x", max_tokens=10, messages=HI)
        async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key=wrong, max_retries=0) as chat:
            with pytest.raises(openai.AuthenticationError):
                await chat.chat.completions.create(model="gpt-4o", messages=HI)

    async with anthropic.AsyncAnthropic(base_url=proxy.url, api_key=alice, max_retries=0) as limited:
        with pytest.raises(anthropic.RateLimitError) as refused:
            await limited.messages.create(model="claude-x", max_tokens=10, messages=HI)
        retry_s = int(refused.value.response.headers["retry-after"])
        assert 1 <= retry_s <= 60
        clock.advance(retry_s)  # waiting what it said is enough
        message = await limited.messages.create(model="claude-x", max_tokens=10, messages=HI)
    assert message.content[0].text == "pong"
    sent = str([r.headers for r in upstream.requests])
    assert alice[4:] not in sent and bob[4:] not in sent and "owner-token-0123" not in sent

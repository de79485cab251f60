"""The stages' ``on_done`` run after the answer has left, in order, each on its own: one that
fails is logged with the request id and the others (the usage record among them) still run."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from proxygate.call import Call
from proxygate.server.keys import PIPELINE, STORE
from tests.upstream import anthropic_message, ok_json


async def test_a_failing_on_done_hook_spares_the_answer_and_the_other_hooks(
    upstream, start_proxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await start_proxy(
        {
            "a": {
                "provider": "anthropic",
                "api_key": "sk-ant-aaaa-0000",
                "base_url": upstream.url,
                "models": ["*"],
            }
        }
    )
    pipeline = proxy.app[PIPELINE]
    seen: list[str] = []

    def broken(call: Call) -> None:
        raise RuntimeError("a stage's bug")

    def after(call: Call) -> None:
        seen.append(call.request_id)

    pipeline._on_done[:0] = [broken]
    pipeline._on_done.append(after)
    upstream.push(ok_json(anthropic_message("hi")))
    body = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with caplog.at_level(logging.ERROR, logger="proxygate.pipeline"):
        async with aiohttp.ClientSession() as http, http.post(proxy.url + "/v1/messages", json=body) as resp:
            assert resp.status == 200
            assert (await resp.json())["content"][0]["text"] == "hi"
            rid = resp.headers["x-proxygate-request-id"]
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
    assert seen == [rid]
    store = proxy.app[STORE]
    for _ in range(100):  # the usage record: written by the committer within ~100 ms
        if [e["request_id"] for e in store.requests(5)] == [rid]:
            break
        await asyncio.sleep(0.05)
    assert [e["request_id"] for e in store.requests(5)] == [rid]
    [failure] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert rid in failure.getMessage() and failure.exc_info is not None

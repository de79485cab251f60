"""A request refused before an account was chosen is in the request log, and in no usage row.

"What failed and why" (issue 11) includes the requests proxygate itself refused: a malformed
body, a model no account serves. The client's request id finds them in `requests`; the usage
history counts only what an account served.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.conftest import admin_headers
from tests.upstream import anthropic_message, ok_json


@pytest.mark.parametrize("backend", ["lmdb", "redis"])
async def test_refused_requests_are_logged_with_their_ids_and_counted_in_no_usage_row(
    upstream, start_proxy, backend, request
) -> None:
    env = {}
    if backend == "redis":
        env = {
            "PROXYGATE_STORE_BACKEND": "redis",
            "PROXYGATE_STORE_REDIS_URL": request.getfixturevalue("redis_url"),
        }
    proxy = await start_proxy(
        {
            "a": {
                "provider": "anthropic",
                "api_key": "sk-ant-aaaa-0000",
                "base_url": upstream.url,
                "models": ["claude-*"],
            }
        },
        env=env,
    )
    upstream.push(ok_json(anthropic_message("hi")))
    asks: list[tuple[dict[str, Any], int]] = [
        ({"model": "claude-x", "max_tokens": 5, "messages": "not a list"}, 400),  # refused at the edge
        (
            {"model": "gpt-nobody-serves", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            404,
        ),
        ({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, 200),
    ]
    ids: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        for body, expected in asks:
            async with http.post(proxy.url + "/v1/messages", json=body) as resp:
                await resp.read()
                assert resp.status == expected
                ids[resp.headers["x-proxygate-request-id"]] = resp.status
        headers = admin_headers(proxy.settings)
        logged: dict[str, Any] = {}
        for _ in range(100):  # written by the committer within ~100 ms
            async with http.get(proxy.url + "/admin/api/requests", headers=headers) as resp:
                logged = {e["request_id"]: e for e in (await resp.json())["requests"]}
            if set(ids) <= set(logged):
                break
            await asyncio.sleep(0.05)
        assert {rid: logged[rid]["status"] for rid in ids} == ids
        refused = [logged[rid] for rid, status in ids.items() if status >= 400]
        assert [(e["account_id"], bool(e["error_class"])) for e in refused] == [("", True), ("", True)]
        async with http.get(proxy.url + "/admin/api/usage?by=account", headers=headers) as resp:
            rows = (await resp.json())["rows"]
    assert [(r["account"], r["requests"]) for r in rows] == [("a", 1)]

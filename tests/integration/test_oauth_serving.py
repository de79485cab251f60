"""Subscription accounts through the real proxy: headers and bodies sent upstream, refresh, re-auth."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from proxygate.providers.subscriptions import CLAUDE_CODE_IDENTITY
from tests import oauth_fakes
from tests.conftest import admin_headers
from tests.oauth_fakes import FakeAuthServer, oauth_account
from tests.upstream import ScriptedUpstream, responses_sse, status

ANT_BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 10,
    "system": "Be terse.",
    "messages": [{"role": "user", "content": "hi"}],
}


auth_server = oauth_fakes.auth_server  # the fake authorization server fixture


def claude(upstream: ScriptedUpstream, **kw: Any) -> dict[str, Any]:
    return {"_kind": "claude", **oauth_account("claude", **kw), "base_url": upstream.url}


def chatgpt(upstream: ScriptedUpstream, **kw: Any) -> dict[str, Any]:
    return {"_kind": "chatgpt", **oauth_account("chatgpt", **kw), "base_url": upstream.url}


async def post(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as client, client.post(url, json=body, headers=headers or {}) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_claude_oauth_headers_and_identity_for_a_non_claude_code_client(
    upstream: ScriptedUpstream, start_proxy: Any, auth_server: FakeAuthServer
) -> None:
    proxy = await start_proxy({"me@example.com": claude(upstream)}, config=auth_server.config_toml())
    code, _, _ = await post(
        f"{proxy.url}/v1/messages",
        ANT_BODY,
        {
            "x-api-key": "client-key",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "interleaved-thinking-2025-05-14",
        },
    )
    assert code == 200
    sent = upstream.requests[0]
    headers = {k.lower(): v for k, v in sent.headers.items()}
    assert sent.path == "/v1/messages"
    assert headers["authorization"] == "Bearer at-0"
    assert (
        headers["anthropic-beta"] == "interleaved-thinking-2025-05-14,oauth-2025-04-20"
    )  # merged, not replaced
    assert headers["anthropic-version"] == "2023-06-01"
    assert "x-api-key" not in headers
    assert sent.body["system"] == [
        {"type": "text", "text": CLAUDE_CODE_IDENTITY},
        {"type": "text", "text": "Be terse."},
    ]
    assert auth_server.grants == []  # the token was valid: no refresh


async def test_claude_code_bytes_pass_untouched(
    upstream: ScriptedUpstream, start_proxy: Any, auth_server: FakeAuthServer
) -> None:
    proxy = await start_proxy({"me@example.com": claude(upstream)}, config=auth_server.config_toml())
    body = {
        **ANT_BODY,
        "system": [{"type": "text", "text": CLAUDE_CODE_IDENTITY}, {"type": "text", "text": "…"}],
    }
    await post(f"{proxy.url}/v1/messages", body, {"anthropic-version": "2023-06-01"})
    assert upstream.requests[0].body == body


async def test_chatgpt_fast_path_for_codex_headers_and_body(
    upstream: ScriptedUpstream, start_proxy: Any, auth_server: FakeAuthServer
) -> None:
    proxy = await start_proxy({"dev@example.com": chatgpt(upstream)}, config=auth_server.config_toml())
    body = {"model": "gpt-5-codex", "input": "hi", "stream": True, "store": True, "max_output_tokens": 100,
            "metadata": {"a": "b"}, "reasoning": {"effort": "low"}}  # fmt: skip
    client_headers = {"authorization": "Bearer proxy", "session_id": "sess-42", "originator": "codex_cli_rs",
                      "user-agent": "codex_cli_rs/0.60.0 (Linux; x86_64)", "chatgpt-account-id": "clients-own"}  # fmt: skip
    code, raw, _ = await post(f"{proxy.url}/v1/responses", body, client_headers)
    assert code == 200 and b"response.completed" in raw
    sent = upstream.requests[0]
    headers = {k.lower(): v for k, v in sent.headers.items()}
    assert sent.path == "/responses"
    assert headers["authorization"] == "Bearer at-0"
    assert headers["chatgpt-account-id"] == "acct-1"
    assert headers["originator"] == "codex_cli_rs"
    assert headers["user-agent"] == "codex_cli_rs/0.60.0 (Linux; x86_64)"
    assert headers["session_id"] == "sess-42"
    assert headers["accept"] == "text/event-stream"
    assert sent.body == {
        "model": "gpt-5-codex",
        "input": "hi",
        "stream": True,
        "store": False,
        "reasoning": {"effort": "low"},
        "include": ["reasoning.encrypted_content"],
    }


async def test_chat_client_without_stream_gets_the_chatgpt_stream_collected(
    upstream: ScriptedUpstream, start_proxy: Any, auth_server: FakeAuthServer
) -> None:
    proxy = await start_proxy({"dev@example.com": chatgpt(upstream)}, config=auth_server.config_toml())
    body = {"model": "gpt-5-codex", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    code, raw, _ = await post(f"{proxy.url}/v1/chat/completions", body)
    assert code == 200, raw
    answer = orjson.loads(raw)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "pong"
    sent = upstream.requests[0]
    assert (sent.body["stream"], sent.body["store"]) == (True, False)
    assert "max_output_tokens" not in sent.body and "max_tokens" not in sent.body
    headers = {k.lower(): v for k, v in sent.headers.items()}
    assert headers["accept"] == "text/event-stream"
    assert headers["originator"] == "codex_cli_rs"
    assert headers["user-agent"].startswith("codex_cli_rs/")
    assert len(headers["session_id"]) == 36  # stable per account when the client sends none


async def test_an_expiring_token_is_refreshed_and_on_disk_before_first_use(
    upstream: ScriptedUpstream, start_proxy: Any, auth_server: FakeAuthServer
) -> None:
    proxy = await start_proxy(
        {"dev@example.com": chatgpt(upstream, expires_in_s=30)}, config=auth_server.config_toml()
    )
    path = proxy.pool_dir / "chatgpt" / "dev@example.com.json"
    on_disk_at_use: list[str] = []

    async def check_disk(request: web.Request) -> web.StreamResponse:
        on_disk_at_use.append(orjson.loads(path.read_bytes())["access_token"])
        return web.Response(body=responses_sse(), content_type="text/event-stream")

    upstream.push(check_disk)
    code, _, _ = await post(
        f"{proxy.url}/v1/responses", {"model": "gpt-5-codex", "input": "hi", "stream": True}
    )
    assert code == 200
    assert len(auth_server.refreshes) == 1
    assert upstream.requests[0].headers["Authorization"] == "Bearer at-1"
    assert on_disk_at_use == ["at-1"]


async def test_a_401_refreshes_once_and_resends(
    upstream: ScriptedUpstream, start_proxy: Any, auth_server: FakeAuthServer
) -> None:
    proxy = await start_proxy({"me@example.com": claude(upstream)}, config=auth_server.config_toml())
    upstream.push(
        status(401, {"type": "error", "error": {"type": "authentication_error", "message": "revoked"}})
    )
    code, _, _ = await post(f"{proxy.url}/v1/messages", ANT_BODY, {"anthropic-version": "2023-06-01"})
    assert code == 200
    assert [r.headers["Authorization"] for r in upstream.requests] == ["Bearer at-0", "Bearer at-1"]
    assert len(auth_server.refreshes) == 1


async def test_a_dead_refresh_token_marks_needs_reauth_and_others_serve(
    upstream: ScriptedUpstream, start_proxy: Any, auth_server: FakeAuthServer
) -> None:
    accounts = {
        "dead@example.com": chatgpt(upstream, email="dead@example.com", expires_in_s=10, priority=1),
        "live@example.com": chatgpt(upstream, email="live@example.com", account_id="acct-2"),
    }
    proxy = await start_proxy(accounts, config=auth_server.config_toml())
    auth_server.push_token(400, {"error": {"code": "refresh_token_reused", "message": "already used"}})
    code, _, headers = await post(
        f"{proxy.url}/v1/responses", {"model": "gpt-5-codex", "input": "hi", "stream": True}
    )
    assert code == 200
    assert headers["x-proxygate-account"] == "live@example.com"
    assert [r.headers["chatgpt-account-id"] for r in upstream.requests] == ["acct-2"]
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{proxy.url}/admin/api/status", headers=admin_headers(proxy.settings)) as resp,
    ):
        accounts_status = {a["id"]: a for a in (await resp.json())["accounts"]}
    dead = accounts_status["dead@example.com"]
    assert dead["state"] == "needs re-auth"
    assert dead["reason"] == "dead@example.com: needs re-auth: refresh refused (refresh_token_reused)"
    assert accounts_status["live@example.com"]["state"] == "ready"


async def test_pooled_wham_usage_reflects_polled_headroom(
    upstream: ScriptedUpstream, start_proxy: Any, auth_server: FakeAuthServer
) -> None:
    resets = int(time.time()) + 3600
    auth_server.wham = {
        "plan_type": "pro",
        "rate_limit": {
            "allowed": True,
            "limit_reached": False,
            "primary_window": {
                "used_percent": 40,
                "limit_window_seconds": 18000,
                "reset_after_seconds": 3600,
                "reset_at": resets,
            },
            "secondary_window": {
                "used_percent": 10,
                "limit_window_seconds": 604800,
                "reset_at": resets + 86400,
            },
        },
    }
    proxy = await start_proxy(
        {"dev@example.com": chatgpt(upstream, plan="pro")}, config=auth_server.config_toml(usage_poll_s=60)
    )
    async with aiohttp.ClientSession() as client:
        for _ in range(100):
            if auth_server.usage_requests:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
        async with client.get(f"{proxy.url}/backend-api/wham/usage") as resp:
            usage = await resp.json()
    polled = {k.lower(): v for k, v in auth_server.usage_requests[0].items()}
    assert (polled["authorization"], polled["chatgpt-account-id"]) == ("Bearer at-0", "acct-1")
    assert usage["plan_type"] == "pro"
    assert usage["rate_limit"]["allowed"] is True and usage["rate_limit"]["limit_reached"] is False
    assert usage["rate_limit"]["primary_window"]["used_percent"] == 40
    assert usage["rate_limit"]["primary_window"]["reset_at"] == resets
    assert usage["rate_limit"]["secondary_window"]["used_percent"] == 10

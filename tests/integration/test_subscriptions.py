"""Issue 16 through the real server: bans, reserve, overage and thinking signatures, scripted upstreams."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from multidict import CIMultiDict

from proxygate.config import AlertSettings
from proxygate.server.alerts import QUEUE_MAX, Alerts
from proxygate.server.keys import BROKER, PIPELINE
from tests import oauth_fakes
from tests.conftest import admin_headers
from tests.oauth_fakes import oauth_account
from tests.upstream import answer_with_headers, anthropic_sse, status, unified_headers

ASK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
BANNED = {
    "type": "error",
    "error": {
        "type": "permission_error",
        "message": "OAuth authentication is currently not allowed for this organization.",
    },
}
BAD_SIGNATURE = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "messages.1.content.0: Invalid `signature` in `thinking` block",
    },
}


def two_keys(url: str, **first: object) -> dict[str, dict[str, object]]:
    return {
        "a": {
            "provider": "anthropic",
            "api_key": "sk-ant-aaaa-0000",
            "base_url": url,
            "priority": 2,
            **first,
        },
        "b": {"provider": "anthropic", "api_key": "sk-ant-bbbb-0000", "base_url": url, "priority": 1},
    }


auth_server = oauth_fakes.auth_server  # the fake authorization server fixture

PRIORITY = '[routing.configs.default]\nstrategy = "priority"\n'


async def post(url: str, body: dict[str, object] = ASK) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as client, client.post(url + "/v1/messages", json=body) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


def keys_used(upstream) -> list[str]:
    return [r.headers["x-api-key"][7:11] for r in upstream.requests]


async def test_a_banned_account_gets_no_request_after_its_first_refusal(upstream, start_proxy) -> None:
    upstream.standing["aaaa"] = status(403, BANNED)
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    answers = [(await post(proxy.url))[0] for _ in range(20)]
    assert answers == [200] * 20
    assert keys_used(upstream).count("aaaa") == 1 and keys_used(upstream).count("bbbb") == 20
    broker = proxy.app[BROKER]
    view = broker.describe(broker.snapshot.by_id["a"], broker.clock())
    assert view["state"] == "quarantined" and "permission_error" in view["reason"]
    async with aiohttp.ClientSession() as client, client.get(proxy.url + "/metrics") as resp:
        text = await resp.text()
    assert 'proxygate_account_quarantined{account="a",reason="permission_error"} 1.0' in text
    assert 'proxygate_pool_accounts{state="quarantined"} 1.0' in text
    broker.reset("a")
    assert (await post(proxy.url))[0] == 200
    assert keys_used(upstream)[-2:] == ["aaaa", "bbbb"]  # reset lifts it (and the ban answers again)


async def test_a_401_is_needs_reauth_not_a_quarantine(upstream, start_proxy) -> None:
    upstream.standing["aaaa"] = status(401, {"error": {"type": "authentication_error", "message": "bad key"}})
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    assert (await post(proxy.url))[0] == 200
    state = proxy.app[BROKER].state("a")
    assert (state.needs_reauth, state.quarantined) == ("401: bad key", "")


async def test_with_reserve_15_no_request_passes_85_percent(upstream, start_proxy) -> None:
    used = [0.80]

    def window() -> dict[str, str]:
        used[0] += 0.01  # each answer reports the utilisation after itself
        return unified_headers(used[0])

    upstream.standing["aaaa"] = answer_with_headers(window)
    proxy = await start_proxy(two_keys(upstream.url, reserve_pct=15), config=PRIORITY)
    for _ in range(20):
        assert (await post(proxy.url))[0] == 200
    assert round(used[0], 2) == 0.85
    assert keys_used(upstream).count("aaaa") == 5


async def test_overage_never_sends_nothing_to_an_account_living_on_overage(upstream, start_proxy) -> None:
    upstream.standing["aaaa"] = answer_with_headers(
        lambda: unified_headers(1.0, status="rejected", overage="allowed")
    )
    upstream.standing["bbbb"] = answer_with_headers(lambda: unified_headers(0.985))  # near its own limit
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    for _ in range(10):
        assert (await post(proxy.url))[0] == 200
    assert keys_used(upstream).count("aaaa") == 1  # the first answer said so: nothing after it
    broker = proxy.app[BROKER]
    assert broker.describe(broker.snapshot.by_id["a"], broker.clock())["overage_requests"] == 1
    async with aiohttp.ClientSession() as client, client.get(proxy.url + "/metrics") as resp:
        assert 'proxygate_overage_requests_total{account="a"} 1.0' in await resp.text()


THINKING_TURN = {
    "model": "claude-x",
    "max_tokens": 2000,
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "messages": [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig-from-another-account"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "hello"},
            ],
        },
        {"role": "user", "content": "again"},
    ],
}


async def test_an_invalid_signature_400_is_recovered_on_the_same_account(upstream, start_proxy) -> None:
    upstream.push(status(400, BAD_SIGNATURE))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, _, body = await post(proxy.url, THINKING_TURN)
    assert code == 200 and orjson.loads(body)["content"][0]["text"] == "pong"
    assert keys_used(upstream) == ["aaaa", "aaaa"]
    first, retry = (r.body for r in upstream.requests)
    assert [b["type"] for b in first["messages"][1]["content"]] == ["thinking", "redacted_thinking", "text"]
    assert retry["messages"][1]["content"] == [{"type": "text", "text": "hello"}]
    assert retry["thinking"] == THINKING_TURN["thinking"]  # not a tool loop: thinking stays on
    assert proxy.app[PIPELINE].signature_retries == 1
    async with aiohttp.ClientSession() as client, client.get(proxy.url + "/metrics") as resp:
        assert "proxygate_signature_retries_total 1.0" in await resp.text()
    assert proxy.app[BROKER].state("a").last_error_at == 0.0  # not the account's fault


async def test_signature_recovery_streams_and_turns_thinking_off_mid_tool_loop(upstream, start_proxy) -> None:
    loop = {
        **THINKING_TURN,
        "stream": True,
        "messages": [
            {"role": "user", "content": "list files"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "use ls", "signature": "foreign"},
                    {"type": "tool_use", "id": "t1", "name": "ls", "input": {}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"}]},
        ],
    }
    upstream.push(status(400, BAD_SIGNATURE))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, _, body = await post(proxy.url, loop)
    assert code == 200 and body == anthropic_sse()
    assert keys_used(upstream) == ["aaaa", "aaaa"]
    retry = upstream.requests[1].body
    assert "thinking" not in retry and [b["type"] for b in retry["messages"][1]["content"]] == ["tool_use"]


async def test_a_second_signature_400_reaches_the_client_once(upstream, start_proxy) -> None:
    upstream.push(status(400, BAD_SIGNATURE), status(400, BAD_SIGNATURE))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, _, body = await post(proxy.url, THINKING_TURN)
    assert code == 400 and b"signature" in body
    assert keys_used(upstream) == ["aaaa", "aaaa"]  # one retry, never a loop


async def test_a_quarantine_is_posted_once_to_the_alert_webhook(upstream, start_proxy, caplog) -> None:
    upstream.standing["aaaa"] = status(403, BANNED)
    config = PRIORITY + f'[alerts]\nwebhook_url = "{upstream.url}/hook"\n'
    proxy = await start_proxy(two_keys(upstream.url), config=config)
    for _ in range(3):
        assert (await post(proxy.url))[0] == 200
    async with asyncio.timeout(5):
        while "/hook" not in upstream.paths():  # noqa: ASYNC110 - the scripted upstream has no event
            await asyncio.sleep(0.02)
    hooks = [r.body for r in upstream.requests if r.path == "/hook"]
    assert [(h["event"], h["account"]) for h in hooks] == [("quarantined", "a")]
    assert hooks[0]["reason"].startswith("permission_error: OAuth authentication")
    loud = [r for r in caplog.records if r.name == "proxygate.alerts"]
    assert [r.levelname for r in loud] == ["ERROR"] and "sk-ant" not in loud[0].getMessage()


async def _chat(url: str, messages: list[dict[str, object]], **extra: object) -> int:
    body = {"model": "gpt-test", "messages": messages, **extra}
    async with (
        aiohttp.ClientSession() as client,
        client.post(url + "/v1/chat/completions", json=body) as resp,
    ):
        await resp.read()
        return resp.status


async def test_a_converted_chat_to_responses_route_carries_the_conversations_cache_key(
    upstream, start_proxy
) -> None:
    responses_only = {"provider": "openai", "api_key": "sk-oa-1111-0000", "base_url": upstream.url,
                      "formats": ["responses"]}  # fmt: skip
    proxy = await start_proxy({"o": responses_only})
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "task A"}]
    assert await _chat(proxy.url, first) == 200
    second = [*first, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    assert await _chat(proxy.url, second) == 200
    other = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "task B"}]
    assert await _chat(proxy.url, other) == 200
    assert await _chat(proxy.url, first, prompt_cache_key="client-key") == 200
    keys = [r.body.get("prompt_cache_key") for r in upstream.requests]
    assert all(r.path.endswith("/responses") for r in upstream.requests)
    assert keys[0] == keys[1] and keys[0].startswith("pg-")  # one conversation, one key
    assert keys[2] != keys[0] and keys[2].startswith("pg-")  # another conversation, another key
    assert keys[3] == "client-key"  # the client's own key is kept


async def test_no_cache_key_goes_to_an_endpoint_that_refuses_it(upstream, start_proxy) -> None:
    refuses = {"provider": "openai", "api_key": "sk-oa-1111-0000", "base_url": upstream.url,
               "formats": ["responses"], "prompt_cache_key": False}  # fmt: skip
    proxy = await start_proxy({"o": refuses})
    assert await _chat(proxy.url, [{"role": "user", "content": "hi"}]) == 200
    assert "prompt_cache_key" not in upstream.requests[0].body


async def conversation_turn(url: str, session: str) -> str:
    """One turn of the conversation ``session`` (Claude Code's header); the account that served it."""
    headers = {"x-claude-code-session-id": session}
    async with (
        aiohttp.ClientSession() as client,
        client.post(url + "/v1/messages", json=ASK, headers=headers) as resp,
    ):
        await resp.read()
        return resp.headers["x-proxygate-account"]


async def test_a_pinned_conversation_waits_out_a_short_cooldown_or_moves_and_records_the_lost_cache(
    upstream, start_proxy, tmp_path
) -> None:
    for max_wait_s, expected in ((3, "a"), (0, "b")):
        upstream.requests.clear()
        (tmp_path / f"wait-{max_wait_s}").mkdir()
        config = PRIORITY.replace(
            "[routing.configs.default]", f"[routing]\nmax_wait_s = {max_wait_s}\n\n[routing.configs.default]"
        )
        proxy = await start_proxy(two_keys(upstream.url), config=config, root=tmp_path / f"wait-{max_wait_s}")
        assert await conversation_turn(proxy.url, "conversation-x") == "a"
        upstream.push(status(429, headers={"retry-after": "1"}))  # another conversation cools a for 1 s
        assert await conversation_turn(proxy.url, "conversation-y") == "b"
        assert await conversation_turn(proxy.url, "conversation-x") == expected
        report = proxy.app[BROKER].cache.report()
        assert report["lost_count"] == (expected == "b")
        if expected == "b":
            assert report["lost"][0]["from"] == "a" and report["lost"][0]["tokens"] > 0
            admin = aiohttp.ClientSession(headers=admin_headers(proxy.settings))
            async with admin as client, client.get(proxy.url + "/admin/api/usage") as resp:
                lost = (await resp.json())["cache_lost"]
            assert lost["count"] == 1 and lost["recent"][0]["to"] == "b"  # `proxygate usage` shows it


async def test_a_refresh_saying_the_account_is_deactivated_quarantines_it(
    upstream, start_proxy, auth_server
) -> None:
    accounts = {
        "gone@example.com": {"_kind": "chatgpt", **oauth_account("chatgpt", email="gone@example.com", expires_in_s=10,
                                                                 priority=1), "base_url": upstream.url},
        "live@example.com": {"_kind": "chatgpt", **oauth_account("chatgpt", email="live@example.com",
                                                                 account_id="acct-2"), "base_url": upstream.url},
    }  # fmt: skip
    proxy = await start_proxy(accounts, config=auth_server.config_toml())
    auth_server.push_token(
        401, {"error": {"code": "account_deactivated", "message": "This account was deactivated"}}
    )
    body = {"model": "gpt-5-codex", "input": "hi", "stream": True}
    for _ in range(3):
        async with (
            aiohttp.ClientSession() as client,
            client.post(proxy.url + "/v1/responses", json=body) as resp,
        ):
            await resp.read()
            assert resp.headers["x-proxygate-account"] == "live@example.com"
    assert len(auth_server.refreshes) == 1  # never retried: no cooldown that runs out
    state = proxy.app[BROKER].state("gone@example.com")
    assert state.quarantined.startswith("account_deactivated: ")


async def test_alerts_never_block_and_drop_what_a_dead_webhook_cannot_take() -> None:
    alerts = Alerts(AlertSettings(webhook_url="http://127.0.0.1:9/hook"))
    for i in range(QUEUE_MAX + 5):
        alerts.notify("window_spent", f"acct-{i}", "window 5h is spent")
    assert (alerts.queue.qsize(), alerts.dropped) == (QUEUE_MAX, 5)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(alerts.run(stop))
        async with asyncio.timeout(10):
            while not alerts.queue.empty():  # noqa: ASYNC110 - the queue has no "drained" event
                await asyncio.sleep(0.01)
        stop.set()
    assert alerts.sent == 0  # nothing listens on port 9: each post fails, is logged, and the next is tried

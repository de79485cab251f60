"""Tenants through the real server: keys in every format, limits with Retry-After, usage by tenant."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.conftest import FakeClock, admin_headers
from tests.oauth_fakes import oauth_account
from tests.upstream import anthropic_message

ANT = {"provider": "anthropic", "api_key": "sk-ant-upstream-0000"}
OAI = {"provider": "openai", "api_key": "sk-upstream-0000"}
TOKENS_PER_ANSWER = 21
"anthropic_message()'s usage: in 11, out 3, cache read 5, cache write 2 (total_tokens counts all)."


async def serve(start_proxy, upstream, config: str = "", clock: Any = None):
    accounts = {
        "ant": {**ANT, "base_url": upstream.url},
        "oai": {**OAI, "base_url": upstream.url + "/v1"},
    }
    return await start_proxy(accounts, config=config, clock=clock)


async def add(http: aiohttp.ClientSession, proxy, name: str, **limits: Any) -> str:
    async with http.post(
        f"{proxy.url}/admin/api/tenants", json={"name": name, **limits}, headers=admin_headers(proxy.settings)
    ) as resp:
        assert resp.status == 201, await resp.text()
        data = await resp.json()
    key = data["key"]
    assert key.startswith("pgk_") and len(key) == 4 + 43
    return str(key)


async def ask(http: aiohttp.ClientSession, proxy, key: str | None, model: str = "claude-sonnet-4-5"):
    headers = {"x-api-key": key} if key else {}
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{proxy.url}/v1/messages", json=body, headers=headers) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


async def test_tenant_keys_in_every_format_and_never_upstream(start_proxy, upstream) -> None:
    proxy = await serve(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        assert (await ask(http, proxy, None))[0] == 200  # no tenants yet: keyless owner access
        alice = await add(http, proxy, "alice")
        bob = await add(http, proxy, "bob")
        for key in (alice, bob):
            assert (await ask(http, proxy, key))[0] == 200
        # Chat with Bearer, Gemini with ?key= and x-goog-api-key
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        async with http.post(
            f"{proxy.url}/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {alice}"}
        ) as resp:
            assert resp.status == 200
        status, _, body = await ask(http, proxy, None)
        assert status == 401
        assert orjson.loads(body)["error"]["type"] == "authentication_error"
        status, _, body = await ask(http, proxy, alice[:-1] + ("A" if alice[-1] != "A" else "B"))
        assert status == 401
        async with http.post(
            f"{proxy.url}/v1/chat/completions", json=chat, headers={"authorization": "Bearer sk-whatever"}
        ) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "invalid_api_key"
        gemini = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        async with http.post(
            f"{proxy.url}/v1beta/models/gemini-2.5-pro:generateContent?key=nope", json=gemini
        ) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["status"] == "UNAUTHENTICATED"
        async with http.get(f"{proxy.url}/healthz") as resp:
            assert resp.status == 200
    sent = [str(r.headers) for r in upstream.requests]
    assert sent and not any(alice[4:] in h or bob[4:] in h for h in sent)


async def test_proxy_token_stays_the_owners(start_proxy, upstream) -> None:
    proxy = await serve(start_proxy, upstream, config='proxy_token = "owner-secret-token"\n')
    async with aiohttp.ClientSession() as http:
        alice = await add(http, proxy, "alice")
        assert (await ask(http, proxy, "owner-secret-token"))[0] == 200
        assert (await ask(http, proxy, alice))[0] == 200
        assert (await ask(http, proxy, None))[0] == 401
        async with http.get(f"{proxy.url}/admin/api/tenants", headers=admin_headers(proxy.settings)) as resp:
            listed = await resp.json()
        async with http.get(f"{proxy.url}/metrics", headers=admin_headers(proxy.settings)) as resp:
            metrics = await resp.text()
    requests = [line for line in metrics.splitlines() if line.startswith("proxygate_requests_total{")]
    assert sorted(line.split('tenant="')[1].split('"')[0] for line in requests) == ["-", "alice", "none"]
    assert [t["display_name"] for t in listed["tenants"]] == ["-", "alice"]
    assert [t["usage"]["requests_today"] for t in listed["tenants"]] == [1, 1]
    assert listed["owner_needs_token"] is False
    assert "key_sha256" not in str(listed) and alice not in str(listed)


async def test_rpm_refuses_the_extra_request_with_a_retry_after_that_is_enough(start_proxy, upstream) -> None:
    clock = FakeClock()
    proxy = await serve(start_proxy, upstream, clock=clock)
    async with aiohttp.ClientSession() as http:
        key = await add(http, proxy, "alice", rpm=2)
        assert (await ask(http, proxy, key))[0] == 200
        clock.advance(10)
        assert (await ask(http, proxy, key))[0] == 200
        clock.advance(10)
        sent = len(upstream.requests)
        status, headers, body = await ask(http, proxy, key)
        assert status == 429 and len(upstream.requests) == sent  # nothing went upstream
        assert orjson.loads(body)["error"]["type"] == "rate_limit_error"
        retry = int(headers["retry-after"])
        assert retry == 40  # the first request leaves the 60 s window 40 s from now
        # Refused requests do not use up the allowance: a burst of refusals changes nothing.
        for _ in range(3):
            assert (await ask(http, proxy, key))[0] == 429
        clock.advance(retry - 1)
        assert (await ask(http, proxy, key))[0] == 429
        clock.advance(1)
        assert (await ask(http, proxy, key))[0] == 200


async def test_tpm_counts_settled_tokens(start_proxy, upstream) -> None:
    clock = FakeClock()
    proxy = await serve(start_proxy, upstream, clock=clock)
    async with aiohttp.ClientSession() as http:
        key = await add(http, proxy, "alice", tpm=TOKENS_PER_ANSWER + 1)
        other = await add(http, proxy, "bob", tpm=TOKENS_PER_ANSWER + 1)
        assert (await ask(http, proxy, key))[0] == 200  # 21 of 22 used: still under
        clock.advance(5)
        assert (await ask(http, proxy, key))[0] == 200  # now 42
        clock.advance(5)
        status, headers, _ = await ask(http, proxy, key)
        assert status == 429
        assert (await ask(http, proxy, other))[0] == 200  # limits are per tenant
        retry = int(headers["retry-after"])
        assert 1 <= retry <= 60
        clock.advance(retry)
        assert (await ask(http, proxy, key))[0] == 200


async def test_model_outside_the_tenants_globs_is_refused_before_upstream(start_proxy, upstream) -> None:
    models = ["claude-haiku-4-5", "claude-sonnet-4-5"]
    proxy = await start_proxy({"ant": {**ANT, "base_url": upstream.url, "models": models}})
    async with aiohttp.ClientSession() as http:
        key = await add(http, proxy, "alice", models=["claude-haiku-*"], aliases={"fast": "claude-haiku-4-5"})
        status, _, body = await ask(http, proxy, key, model="claude-sonnet-4-5")
        assert status == 403
        assert orjson.loads(body)["error"]["type"] == "permission_error"
        assert upstream.requests == []
        assert (await ask(http, proxy, key, model="fast"))[0] == 200
        async with http.get(f"{proxy.url}/v1/models", headers={"x-api-key": key}) as resp:
            listed = [m["id"] for m in (await resp.json())["data"]]
    assert upstream.requests[0].body["model"] == "claude-haiku-4-5"
    assert listed == ["claude-haiku-4-5"]  # the model list shows what the tenant may use


async def test_daily_tokens_and_dollars_hold_across_a_restart(start_proxy, upstream, tmp_path) -> None:
    proxy = await serve(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        key = await add(http, proxy, "alice", daily_tokens=30)
        cheap = await add(http, proxy, "bob", daily_usd=0.00015)
        assert (await ask(http, proxy, key))[0] == 200
        assert (await ask(http, proxy, key))[0] == 200  # 21 < 30: admitted, now 42
        assert (await ask(http, proxy, key))[0] == 429
        assert (await ask(http, proxy, cheap))[0] == 200  # 0.000087 USD at sonnet's price
        assert (await ask(http, proxy, cheap))[0] == 200
        assert (await ask(http, proxy, cheap))[0] == 429
    await proxy.runner.cleanup()  # stops the app: the store is flushed
    again = await serve(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        status, headers, body = await ask(http, again, key)
        assert status == 429, body
        assert 1 <= int(headers["retry-after"]) <= 86400
        assert (await ask(http, again, cheap))[0] == 429
        async with http.get(f"{again.url}/admin/api/tenants", headers=admin_headers(again.settings)) as resp:
            listed = {t["display_name"]: t for t in (await resp.json())["tenants"]}
        async with http.get(
            f"{again.url}/admin/api/usage?since=1d&by=tenant", headers=admin_headers(again.settings)
        ) as resp:
            assert resp.status == 200
            by_tenant = await resp.json()
        async with http.get(f"{again.url}/admin/api/requests", headers=admin_headers(again.settings)) as resp:
            logged = await resp.json()
    assert listed["alice"]["usage"]["tokens_today"] == 2 * TOKENS_PER_ANSWER
    assert listed["alice"]["usage"]["requests_today"] == 2
    assert math.isclose(listed["bob"]["usage"]["usd_today"], 2 * 0.000087, rel_tol=0.05)
    assert listed["alice"]["created_at"] > 0
    assert [(r["tenant"], r["requests"]) for r in by_tenant["rows"]] == [("alice", 2), ("bob", 2)]
    assert {e["tenant"] for e in logged["requests"]} == {"alice", "bob"}


@pytest.mark.parametrize("limit", [{"concurrency": 1}])
async def test_limits_validate(start_proxy, upstream, limit) -> None:
    proxy = await serve(start_proxy, upstream)
    headers = admin_headers(proxy.settings)
    async with aiohttp.ClientSession() as http:
        for bad in (
            {"name": "Alice!"},
            {"name": "a", "rpm": -1},
            {"name": "a", "route": "nope"},
            {"name": "a", "x": 1},
        ):
            async with http.post(f"{proxy.url}/admin/api/tenants", json=bad, headers=headers) as resp:
                assert resp.status == 400, bad
        await add(http, proxy, "alice", **limit)
        async with http.post(
            f"{proxy.url}/admin/api/tenants", json={"name": "alice"}, headers=headers
        ) as resp:
            assert resp.status == 409
        async with http.patch(
            f"{proxy.url}/admin/api/tenants/alice", json={"rpm": 5}, headers=headers
        ) as resp:
            assert (await resp.json())["tenant"]["rpm"] == 5
        async with http.post(f"{proxy.url}/admin/api/tenants/alice/rotate-key", headers=headers) as resp:
            new_key = (await resp.json())["key"]
        assert (await ask(http, proxy, new_key))[0] == 200
        async with http.delete(f"{proxy.url}/admin/api/tenants/alice", headers=headers) as resp:
            assert resp.status == 200
        assert (await ask(http, proxy, new_key))[0] == 200  # no tenants left: keyless access again
        async with http.get(f"{proxy.url}/admin/api/tenants/alice", headers=headers) as resp:
            assert resp.status == 404


SHAPING = '[models."claude-text-*"]\nimages = false\nthinking = false\nmax_output_tokens = 1000\n'
IMAGE_DATA = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


async def test_a_request_is_shaped_to_what_the_model_takes(start_proxy, upstream) -> None:
    proxy = await serve(start_proxy, upstream, config=SHAPING)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE_DATA}}
    body = {
        "model": "claude-text-1",
        "max_tokens": 64000,
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "describe"}, image]}],
    }
    chat = {
        "model": "claude-text-1",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + IMAGE_DATA}}
                ],
            }
        ],
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{proxy.url}/v1/messages", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["x-proxygate-shaped"] == "max_tokens,thinking,images"
        async with http.post(f"{proxy.url}/v1/chat/completions", json=chat) as resp:  # converted to Anthropic
            assert resp.status == 200
            assert resp.headers["x-proxygate-shaped"] == "images"
        plain = {**body, "model": "claude-sonnet-4-5"}
        async with http.post(f"{proxy.url}/v1/messages", json=plain) as resp:
            assert resp.status == 200
            assert "x-proxygate-shaped" not in resp.headers
    first, converted, untouched = (r.body for r in upstream.requests)
    assert "thinking" not in first and first["max_tokens"] == 1000
    assert first["messages"][0]["content"] == [
        {"type": "text", "text": "describe"},
        {"type": "text", "text": "[image omitted: model has no vision]"},
    ]
    assert IMAGE_DATA not in str(first) and IMAGE_DATA not in str(converted)
    assert "[image omitted: model has no vision]" in str(converted["messages"])
    assert untouched["thinking"] == body["thinking"] and IMAGE_DATA in str(untouched)


class SubscriptionWindow:
    """An upstream whose 5-hour window fills by 5 % with every answer it gives."""

    def __init__(self, upstream, resets_at: float) -> None:
        self.answered = 0
        self.resets_at = resets_at
        upstream.push(*[self.answer for _ in range(100)])

    async def answer(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/apikey"):  # the API key account: no window
            return web.json_response(anthropic_message())
        self.answered += 1
        headers = {
            "anthropic-ratelimit-unified-5h-status": "allowed",
            "anthropic-ratelimit-unified-5h-utilization": f"{0.05 * self.answered:.2f}",
            "anthropic-ratelimit-unified-5h-reset": str(int(self.resets_at)),
        }
        return web.Response(
            body=orjson.dumps(anthropic_message()), headers=headers, content_type="application/json"
        )


async def test_a_tenant_over_its_fair_share_moves_to_an_api_key_then_waits(
    start_proxy, upstream, tmp_path
) -> None:
    clock = FakeClock()
    SubscriptionWindow(upstream, clock() + 3 * 3600)
    key_upstream = upstream.url + "/apikey"
    accounts = {
        "max": {"_kind": "claude", **oauth_account("claude"), "base_url": upstream.url},
        "key": {**ANT, "base_url": key_upstream},
    }
    config = '[oauth]\nusage_poll_s = 0\n[routing.configs.subs.tiers.default]\naccounts = ["max"]\n'
    proxy = await start_proxy(accounts, config=config, clock=clock)
    async with aiohttp.ClientSession() as http:
        alice = await add(http, proxy, "alice")
        bob = await add(http, proxy, "bob")
        served = []
        assert (await ask(http, proxy, bob))[1]["x-proxygate-account"] == "max"  # bob wants the window too
        for _ in range(14):
            clock.advance(1)
            served.append((await ask(http, proxy, alice))[1]["x-proxygate-account"])
        # alice's part of the window's growth passes her half of it after 11 answers: then the API key
        assert served == ["max"] * 11 + ["key"] * 3
        assert (await ask(http, proxy, bob))[1]["x-proxygate-account"] == "max"  # bob is within his share
        async with http.get(f"{proxy.url}/admin/api/tenants", headers=admin_headers(proxy.settings)) as resp:
            windows = {t["display_name"]: t["windows"] for t in (await resp.json())["tenants"]}
        assert [(w["account"], w["window"], w["share_pct"]) for w in windows["alice"]] == [
            ("max", "5h", 47.5)
        ]
        assert windows["alice"][0]["use_pct"] >= 47.5 > windows["bob"][0]["use_pct"]
        async with http.get(f"{proxy.url}/admin/api/status", headers=admin_headers(proxy.settings)) as resp:
            status_tenants = {t["display_name"]: t["windows"] for t in (await resp.json())["tenants"]}
        assert status_tenants == windows  # `status` shows the same shares
        async with http.patch(
            f"{proxy.url}/admin/api/tenants/alice",
            json={"route": "subs"},
            headers=admin_headers(proxy.settings),
        ) as resp:
            assert resp.status == 200
        status, headers, body = await ask(http, proxy, alice)  # no API key in her route: wait
        assert status == 429
        assert "fair share" in orjson.loads(body)["error"]["message"]
        retry = int(headers["retry-after"])
        assert retry == 300  # bob counts as idle 5 minutes after he last asked
        clock.advance(retry)
        status, headers, _ = await ask(http, proxy, alice)
        assert (status, headers["x-proxygate-account"], headers["x-proxygate-route"]) == (
            200,
            "max",
            "subs/drain-aware",
        )

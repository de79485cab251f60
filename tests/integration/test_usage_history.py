"""Usage history through the real server: cost per request, GET /admin/api/usage and /requests."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import admin_headers
from tests.upstream import status

SONNET_COST = (11 * 3.0 + 3 * 15.0 + 5 * 0.30 + 2 * 3.75) / 1e6
"anthropic_message()'s usage (in 11, out 3, cache read 5, cache write 2) at claude-sonnet-4-5's price."
GPT4O_COST = (12 * 2.50 + 8 * 1.25 + 4 * 10.0) / 1e6
"chat_completion()'s usage (prompt 20 of which 8 cached, completion 4) at gpt-4o's price."


async def pool(start_proxy, upstream):
    return await start_proxy(
        {
            "ant": {"provider": "anthropic", "api_key": "sk-ant-upstream-0000", "base_url": upstream.url},
            "oai": {"provider": "openai", "api_key": "sk-upstream-0000", "base_url": upstream.url + "/v1"},
        }
    )


async def ask_claude(http: aiohttp.ClientSession, proxy, model: str, **extra) -> str:
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **extra}
    async with http.post(f"{proxy.url}/v1/messages", json=body) as resp:
        await resp.read()
        return resp.headers["x-proxygate-request-id"]


async def ask_gpt(http: aiohttp.ClientSession, proxy, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{proxy.url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        await resp.read()
        return resp.headers["x-proxygate-request-id"]


async def get(http: aiohttp.ClientSession, proxy, path: str, *, token: bool = True) -> tuple[int, dict]:
    headers = admin_headers(proxy.settings) if token else {}
    async with http.get(f"{proxy.url}{path}", headers=headers) as resp:
        return resp.status, await resp.json()


def tokens(row: dict) -> dict:
    keys = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    return {k: row[k] for k in (*keys, "total_tokens")}


async def test_usage_by_model_prices_dated_names_and_leaves_unknown_models_unpriced(
    start_proxy, upstream
) -> None:
    proxy = await pool(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        await ask_claude(http, proxy, "claude-sonnet-4-5-20250929")
        await ask_claude(http, proxy, "claude-sonnet-4-5-20250929", stream=True)
        await ask_gpt(http, proxy, "gpt-4o-2024-08-06")
        await ask_claude(http, proxy, "claude-in-house-1")
        code, report = await get(http, proxy, "/admin/api/usage?by=model")
    assert code == 200
    rows = {r["model"]: r for r in report["rows"]}
    assert {m: tokens(r) for m, r in rows.items()} == {
        "claude-sonnet-4-5-20250929": {
            "requests": 2,
            "input_tokens": 22,
            "output_tokens": 6,
            "cache_read_tokens": 10,
            "cache_write_tokens": 4,
            "total_tokens": 42,
        },
        "gpt-4o-2024-08-06": {
            "requests": 1,
            "input_tokens": 12,
            "output_tokens": 4,
            "cache_read_tokens": 8,
            "cache_write_tokens": 0,
            "total_tokens": 24,
        },
        "claude-in-house-1": {
            "requests": 1,
            "input_tokens": 11,
            "output_tokens": 3,
            "cache_read_tokens": 5,
            "cache_write_tokens": 2,
            "total_tokens": 21,
        },
    }
    assert rows["claude-sonnet-4-5-20250929"]["cost_usd"] == pytest.approx(2 * SONNET_COST)
    assert rows["gpt-4o-2024-08-06"]["cost_usd"] == pytest.approx(GPT4O_COST)
    assert rows["claude-in-house-1"]["cost_usd"] is None  # unknown, never 0
    assert rows["claude-in-house-1"]["unpriced_requests"] == 1
    assert rows["gpt-4o-2024-08-06"]["cache_hit_rate"] == pytest.approx(8 / 20)
    total = report["total"]
    assert tokens(total) == {
        "requests": 4,
        "input_tokens": 45,
        "output_tokens": 13,
        "cache_read_tokens": 23,
        "cache_write_tokens": 6,
        "total_tokens": 87,
    }
    # Three requests priced, one not: the total is a lower bound, and says so.
    assert (total["cost_usd"], total["cost_is_partial"]) == (
        pytest.approx(2 * SONNET_COST + GPT4O_COST),
        True,
    )
    assert total["api_cost_usd"] == pytest.approx(2 * SONNET_COST + GPT4O_COST)
    assert total["subscription_value_usd"] == 0.0


async def test_usage_by_day_account_format_and_route_agree_on_the_totals(start_proxy, upstream) -> None:
    proxy = await pool(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        await ask_claude(http, proxy, "claude-sonnet-4-5")
        await ask_gpt(http, proxy, "gpt-4o")
        reports = {by: (await get(http, proxy, f"/admin/api/usage?by={by}&since=7d"))[1] for by in
                   ("day", "account", "format", "route", "model")}  # fmt: skip
    assert [r["day"] for r in reports["day"]["rows"]] == [reports["day"]["days"][-1]["day"]]
    assert len(reports["day"]["days"]) == 7
    assert {r["account"]: (r["kind"], r["is_subscription"]) for r in reports["account"]["rows"]} == {
        "ant": ("apikey", False),
        "oai": ("apikey", False),
    }
    assert {r["format"] for r in reports["format"]["rows"]} == {"anthropic", "chat"}
    assert [r["route"] for r in reports["route"]["rows"]] == ["default"]
    for by, report in reports.items():
        assert sum(r["total_tokens"] for r in report["rows"]) == 21 + 24, by
        assert sum(r["cost_usd"] for r in report["rows"]) == pytest.approx(SONNET_COST + GPT4O_COST), by


async def test_request_log_lists_the_ids_clients_got_newest_first_and_pages(start_proxy, upstream) -> None:
    proxy = await pool(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        ids = [await ask_claude(http, proxy, "claude-sonnet-4-5") for _ in range(3)]
        ids.append(await ask_gpt(http, proxy, "gpt-4o"))
        upstream.push(
            status(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}})
        )
        ids.append(await ask_claude(http, proxy, "claude-sonnet-4-5"))
        _, first = await get(http, proxy, "/admin/api/requests?limit=2")
        _, second = await get(http, proxy, f"/admin/api/requests?limit=2&before={first['next_before']}")
        _, last = await get(http, proxy, f"/admin/api/requests?limit=2&before={second['next_before']}")
        _, failed = await get(http, proxy, "/admin/api/requests?status=4xx")
        _, of_oai = await get(http, proxy, "/admin/api/requests?account=oai")
    newest_first = ids[::-1]
    assert [e["request_id"] for e in first["requests"]] == newest_first[:2]
    assert [e["request_id"] for e in second["requests"]] == newest_first[2:4]
    assert ([e["request_id"] for e in last["requests"]], last["next_before"]) == (newest_first[4:], None)
    assert [(e["request_id"], e["status"]) for e in failed["requests"]] == [(ids[-1], 400)]
    assert [e["request_id"] for e in of_oai["requests"]] == [ids[3]]
    gpt = of_oai["requests"][0]
    assert (gpt["model_asked"], gpt["model"], gpt["client_format"], gpt["route"], gpt["attempts"]) == (
        "gpt-4o",
        "gpt-4o",
        "chat",
        "default",
        1,
    )
    assert (gpt["total_tokens"], gpt["cost_usd"]) == (24, pytest.approx(GPT4O_COST))
    assert "messages" not in gpt and "body" not in gpt


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "/admin/api/usage?since=last-week",
            "since: 'last-week' is not a period; use 7d, 24h or a date like 2026-11-01",
        ),
        (
            "/admin/api/usage?by=colour",
            "by: 'colour' is not one of day, hour, account, model, route, format, tenant",
        ),
        ("/admin/api/requests?limit=0", "limit: 0 is not between 1 and 1000"),
        ("/admin/api/requests?limit=ten", "limit: 'ten' is not a whole number"),
        (
            "/admin/api/requests?status=oops",
            "status filter 'oops': expected three digits or x, like 429 or 5xx",
        ),
    ],
)
async def test_bad_report_parameters_are_a_clear_400(start_proxy, upstream, path: str, message: str) -> None:
    proxy = await pool(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        assert await get(http, proxy, path) == (400, {"error": message})


async def test_the_usage_api_needs_the_admin_token(start_proxy, upstream) -> None:
    proxy = await pool(start_proxy, upstream)
    async with aiohttp.ClientSession() as http:
        for path in ("/admin/api/usage", "/admin/api/requests"):
            code, body = await get(http, proxy, path, token=False)
            assert code == 401, path
            assert "admin token" in body["error"]

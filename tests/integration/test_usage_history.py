"""Usage history through the real server: cost per request, GET /admin/api/usage and /requests."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from typer.testing import CliRunner

from proxygate.cli import app
from proxygate.cli.usage import CSV_COLUMNS, newer_than
from proxygate.store import LMDBStore, UsageRecord
from tests.conftest import admin_headers, free_port, write_account
from tests.oauth_fakes import oauth_account
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


# -- the CLI, with no server running: it reads the store ---------------------------------------


def offline_setup(tmp_path: Path) -> Path:
    """A config whose addr nobody listens on, a pool with a Claude Max subscription and an API key,
    and a store holding three requests of today (one on a model with no price)."""
    config = tmp_path / "config.toml"
    config.write_text(f'pool_dir = "pool"\ndata_dir = "data"\naddr = "127.0.0.1:{free_port()}"\n')
    write_account(
        tmp_path / "pool", "claude", "work", {**oauth_account("claude"), "subscription_type": "max"}
    )
    write_account(tmp_path / "pool", "apikeys", "key1", {"provider": "anthropic", "api_key": "sk-ant-0000"})
    store = LMDBStore(tmp_path / "data")
    now = time.time()
    for n, (account, model, cost) in enumerate(
        [("work", "claude-opus-4-5", 0.5), ("work", "claude-opus-4-5", 0.25), ("key1", "in-house", None)]
    ):
        store.record(
            UsageRecord(
                f"pg_{n}",
                now,
                account,
                model,
                "anthropic",
                "anthropic",
                200,
                input_tokens=100,
                output_tokens=10,
                cache_read_tokens=300,
                cache_write_tokens=0,
                model_asked=model,
                route="default",
                attempts=1,
                cost_usd=cost,
            )
        )
    store.close()
    return config


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_usage_cli_reads_the_store_when_no_server_runs(tmp_path: Path) -> None:
    config = str(offline_setup(tmp_path))
    report = orjson.loads(run_cli("usage", "--by", "account", "--json", "-c", config))
    assert [(r["account"], r["kind"], r["plan"], r["is_subscription"], r["total_tokens"], r["cost_usd"])
            for r in report["rows"]] == [
        ("work", "claude", "max", True, 820, 0.75),
        ("key1", "apikey", "", False, 410, None),
    ]  # fmt: skip
    assert report["subscriptions"] == [
        {
            "account": "work",
            "kind": "claude",
            "plan": "max",
            "requests": 2,
            "total_tokens": 820,
            "api_value_usd": 0.75,
        }
    ]
    assert (report["total"]["cost_usd"], report["total"]["cost_is_partial"]) == (0.75, True)
    assert (report["total"]["api_cost_usd"], report["total"]["subscription_value_usd"]) == (None, 0.75)
    assert report["total"]["cache_hit_rate"] == 0.75


def test_usage_table_shows_unknown_cost_as_a_dash_and_the_plan_value(tmp_path: Path) -> None:
    config = str(offline_setup(tmp_path))
    lines = run_cli("usage", "--by", "account", "-c", config).splitlines()
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    assert [(r[0], r[-1]) for r in rows] == [
        ("work (claude max)", "$0.75"),
        ("key1 (API key)", "–"),
        ("Total", "≥ $0.75"),
    ]
    assert lines[-3:] == [
        "1 request(s) used a model with no price: their cost is unknown (see `proxygate prices`).",
        "API keys: – spent · subscriptions: $0.75 API-equivalent value",
        "  work (claude max plan): $0.75 at API prices, 820 tokens",
    ]
    week = run_cli("usage", "--since", "3d", "-c", config).splitlines()
    assert re.fullmatch(r"Tokens per day \d{4}-\d\d-\d\d … \d{4}-\d\d-\d\d: ▁▁█", week[-1])


def test_usage_csv_starts_with_a_header_and_leaves_unknown_cost_empty(tmp_path: Path) -> None:
    config = str(offline_setup(tmp_path))
    rows = list(csv.reader(io.StringIO(run_cli("usage", "--by", "model", "--csv", "-c", config))))
    assert rows[0] == ["model", *CSV_COLUMNS]
    by_model = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    assert (by_model["claude-opus-4-5"]["total_tokens"], by_model["claude-opus-4-5"]["cost_usd"]) == (
        "820",
        "0.75",
    )
    assert (by_model["in-house"]["input_tokens"], by_model["in-house"]["cost_usd"]) == ("100", "")


def test_requests_cli_lists_the_log_from_the_store(tmp_path: Path) -> None:
    config = str(offline_setup(tmp_path))
    page = orjson.loads(run_cli("requests", "--json", "-c", config))
    assert [(e["request_id"], e["account_id"], e["cost_usd"]) for e in page["requests"]] == [
        ("pg_2", "key1", None),
        ("pg_1", "work", 0.25),
        ("pg_0", "work", 0.5),
    ]
    table = run_cli("requests", "--account", "work", "--limit", "1", "-c", config)
    assert "pg_1" in table and "pg_0" not in table and "pg_2" not in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["usage", "--since", "soon"], "'soon' is not a period"),
        (["usage", "--by", "colour"], "'colour' is not one of day, hour"),
        (["requests", "--status", "bad"], "'bad': expected three digits or x"),
    ],
)
def test_bad_cli_options_exit_2_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*args, "-c", str(offline_setup(tmp_path))])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())


def test_requests_follow_prints_only_what_is_new_oldest_first() -> None:
    page = [{"request_id": i} for i in ("pg_5", "pg_4", "pg_3", "pg_2")]
    assert newer_than(page, "pg_3") == [{"request_id": "pg_4"}, {"request_id": "pg_5"}]
    assert newer_than(page, "pg_5") == []


def test_prices_cli_says_what_applies_and_from_where(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('data_dir = "data"\n[prices."in-house"]\ninput = 0.5\noutput = 1.5\n')
    one = orjson.loads(run_cli("prices", "claude-sonnet-4-5-20250929", "--json", "-c", str(config)))
    assert one["price"]["model"] == "claude-sonnet-4-5"
    assert (one["price"]["origin"], one["price"]["date"]) == ("shipped", "2025-09-29")
    assert one["price"]["long_context"]["above_tokens"] == 200_000
    everything = orjson.loads(run_cli("prices", "--json", "-c", str(config)))
    house = next(p for p in everything if p["model"] == "in-house")
    assert (house["origin"], house["input"], house["cache_read"]) == ("config", 0.5, 0.5)
    unknown = orjson.loads(run_cli("prices", "llama-local", "--json", "-c", str(config)))
    assert unknown == {"model": "llama-local", "price": None}
    assert run_cli("prices", "llama-local", "-c", str(config)).startswith("no price for llama-local")


async def test_an_account_over_its_dollar_budget_is_skipped_by_the_running_server(
    start_proxy, upstream
) -> None:
    """One sonnet answer costs $0.000087; under a $0.0001 daily budget a second one passes it, a third goes elsewhere."""
    proxy = await start_proxy(
        {
            "first": {
                "provider": "anthropic",
                "api_key": "sk-ant-1111",
                "base_url": upstream.url,
                "priority": 1,
            },
            "second": {"provider": "anthropic", "api_key": "sk-ant-2222", "base_url": upstream.url},
        },
        config='[routing.configs.default]\nstrategy = "priority"\n[budgets.first]\ndaily_usd = 0.0001\n',
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            await ask_claude(http, proxy, "claude-sonnet-4-5")
        _, log = await get(http, proxy, "/admin/api/requests")
    assert [e["account_id"] for e in log["requests"]][::-1] == ["first", "first", "second"]

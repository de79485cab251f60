"""GET /metrics (issue 11): Prometheus text through prometheus_client, counters that move exactly."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from proxygate.broker import Headroom
from proxygate.server.keys import BROKER
from tests.upstream import anthropic_message, ok_json, status

ASK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC_UNIFIED = "anthropic-unified"


def two_keys(url: str) -> dict[str, dict[str, object]]:
    return {
        "a": {"provider": "anthropic", "api_key": "sk-ant-aaaa-0000", "base_url": url, "priority": 2},
        "b": {"provider": "anthropic", "api_key": "sk-ant-bbbb-0000", "base_url": url, "priority": 1},
    }


PRIORITY = '[routing.configs.default]\nstrategy = "priority"\n'

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as client, client.get(url + "/metrics", headers=headers) as resp:
        return resp.status, await resp.text()


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def total(found: Samples, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    return sum(
        value
        for (n, lbls), value in found.items()
        if n == name and all(dict(lbls).get(k) == v for k, v in labels.items())
    )


async def post(url: str, body: object = ASK, path: str = "/v1/messages", **kw: object) -> int:
    async with aiohttp.ClientSession() as client, client.post(url + path, json=body, **kw) as resp:
        await resp.read()
        return resp.status


async def test_request_counter_moves_by_exactly_the_requests_made_with_failover(
    upstream, start_proxy
) -> None:
    upstream.push(
        status(429, headers={"retry-after": "30"}),
        ok_json(anthropic_message("from b")),
        ok_json(anthropic_message("again")),
    )
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    code, before = await scrape(proxy.url)
    assert code == 200
    assert total(samples(before), "proxygate_requests_total") == 0
    assert [await post(proxy.url), await post(proxy.url)] == [200, 200]
    _, text = await scrape(proxy.url)
    _, text = await scrape(proxy.url)  # scrapes are not requests
    found = samples(text)
    assert len(upstream.requests) == 3
    assert total(found, "proxygate_requests_total") == 2
    assert (
        found[
            (
                "proxygate_requests_total",
                (
                    ("account", "b"),
                    ("format", "anthropic"),
                    ("model", "claude-x"),
                    ("route", "default"),
                    ("status", "2xx"),
                    ("tenant", "-"),
                ),
            )
        ]
        == 2
    )
    assert total(found, "proxygate_failovers_total", format="anthropic", route="default") == 1
    assert total(found, "proxygate_tokens_total", kind="input") == 22
    assert total(found, "proxygate_tokens_total", kind="output") == 6
    assert total(found, "proxygate_tokens_total", kind="cache_read") == 10
    assert total(found, "proxygate_tokens_total", kind="cache_write") == 4
    assert total(found, "proxygate_request_duration_seconds_count", account="b") == 2
    assert total(found, "proxygate_first_byte_seconds_count", account="b") == 2
    # the 429 cooled a down for 30 s, by rate limit; no lease is left
    assert found[("proxygate_cooldowns", (("reason", "rate_limited"), ("scope", "account")))] == 1
    assert found[("proxygate_pool_accounts", (("state", "cooling_down"),))] == 1
    assert found[("proxygate_pool_accounts", (("state", "ready"),))] == 1
    assert 29 <= found[("proxygate_cooldown_seconds", (("account", "a"),))] <= 30
    assert total(found, "proxygate_leases_in_flight") == 0
    assert found[("proxygate_store_queue_depth", ())] >= 0
    assert ("proxygate_store_commit_failures_total", ()) in found


async def test_requests_refused_before_the_pipeline_are_counted_once(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url), config='proxy_token = "tok-1"\n')
    assert await post(proxy.url, headers={"authorization": "Bearer wrong"}) == 401
    async with aiohttp.ClientSession() as client:
        async with client.post(
            proxy.url + "/v1/chat/completions", data=b"{not json", headers={"authorization": "Bearer tok-1"}
        ) as resp:
            assert resp.status == 400
        async with client.post(proxy.url + "/v1/nothing-here", data=b"{}") as resp:
            assert resp.status == 404  # not an LLM route: not counted
        async with client.get(proxy.url + "/healthz") as resp:
            assert resp.status == 200
    assert await post(proxy.url, headers={"authorization": "Bearer tok-1"}) == 200
    found = samples((await scrape(proxy.url))[1])
    assert total(found, "proxygate_requests_total") == 3
    assert total(found, "proxygate_requests_total", format="anthropic", account="none", status="4xx") == 1
    assert total(found, "proxygate_requests_total", format="chat", account="none", status="4xx") == 1
    assert (
        total(found, "proxygate_requests_total", account="a", status="2xx")
        + total(found, "proxygate_requests_total", account="b", status="2xx")
        == 1
    )


async def test_made_up_model_names_are_labelled_other(upstream, start_proxy) -> None:
    """Model labels stay bounded: a name nothing answered with success is "other"."""
    upstream.push(status(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}))
    proxy = await start_proxy(two_keys(upstream.url))
    assert await post(proxy.url, {**ASK, "model": "claude-made-up-1"}) == 400
    assert await post(proxy.url, {**ASK, "model": "gpt-nobody-serves"}) == 404
    assert await post(proxy.url, {**ASK, "model": "claude-real"}) == 200
    found = samples((await scrape(proxy.url))[1])
    models = {dict(labels)["model"] for (name, labels) in found if name == "proxygate_requests_total"}
    assert models == {"other", "claude-real"}


async def test_headroom_per_account_window_is_read_at_scrape_time(upstream, start_proxy, clock) -> None:
    proxy = await start_proxy(two_keys(upstream.url), clock=clock)
    now = clock()
    proxy.app[BROKER].update_headroom(
        "a",
        [
            Headroom("5h", 0.25, now + 600, ANTHROPIC_UNIFIED, now),
            Headroom("7d", 0.9, None, ANTHROPIC_UNIFIED, now),
        ],
    )
    found = samples((await scrape(proxy.url))[1])
    assert found[("proxygate_headroom_left_percent", (("account", "a"), ("window", "5h")))] == 25
    assert found[("proxygate_headroom_left_percent", (("account", "a"), ("window", "7d")))] == 90
    assert found[("proxygate_headroom_reset_seconds", (("account", "a"), ("window", "5h")))] == 600
    assert ("proxygate_headroom_reset_seconds", (("account", "a"), ("window", "7d"))) not in found
    clock.advance(601)  # the 5h window refilled
    found = samples((await scrape(proxy.url))[1])
    assert found[("proxygate_headroom_left_percent", (("account", "a"), ("window", "5h")))] == 100


async def test_two_apps_in_one_process_keep_their_own_counts(upstream, start_proxy, tmp_path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = await start_proxy(two_keys(upstream.url), root=tmp_path / "one")
    second = await start_proxy(two_keys(upstream.url), root=tmp_path / "two")
    assert await post(first.url) == 200
    assert total(samples((await scrape(first.url))[1]), "proxygate_requests_total") == 1
    assert total(samples((await scrape(second.url))[1]), "proxygate_requests_total") == 0


async def test_loopback_scrapes_with_no_token_or_with_the_admin_token_file(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url), config='admin_token = "adm-1"\n')
    token_file = proxy.settings.data_dir / "admin.token"
    token_file.write_text("generated-2\n")
    for headers in (None, {"authorization": "Bearer generated-2"}, {"authorization": "Bearer adm-1"}):
        code, text = await scrape(proxy.url, headers)
        assert code == 200
        assert "proxygate_requests" in {f.name for f in text_string_to_metric_families(text)}


DASHBOARD = Path(__file__).parents[2] / "packaging" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


async def test_every_metric_the_grafana_dashboard_queries_exists(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    exposed: set[str] = set()
    for family in text_string_to_metric_families((await scrape(proxy.url))[1]):
        exposed.add(family.name)
        exposed.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bproxygate_[a-z_]+\b", expr)}
    assert len(used) >= 14
    assert sorted(used - exposed) == []


async def test_cost_and_streams_count_like_the_price_table_says(upstream, start_proxy) -> None:
    """The stream counts once; the cost counter adds what pricing computed (USD per million tokens)."""
    prices = (
        '[prices]\n"claude-priced" = { input = 3.0, output = 15.0, cache_read = 0.3, cache_write = 3.75 }\n'
    )
    proxy = await start_proxy(two_keys(upstream.url), config=prices)
    assert await post(proxy.url, {**ASK, "model": "claude-priced"}) == 200
    assert await post(proxy.url, {**ASK, "model": "claude-priced", "stream": True}) == 200
    assert await post(proxy.url, {**ASK, "model": "claude-unpriced"}) == 200
    found = samples((await scrape(proxy.url))[1])
    assert total(found, "proxygate_requests_total") == 3
    # each answer: 11 input, 3 output, 5 cache read, 2 cache write (tests/upstream.anthropic_message)
    one = (11 * 3.0 + 3 * 15.0 + 5 * 0.3 + 2 * 3.75) / 1e6
    assert abs(total(found, "proxygate_cost_usd_total", model="claude-priced") - 2 * one) < 1e-12
    assert total(found, "proxygate_cost_usd_total", model="claude-unpriced") == 0
    assert total(found, "proxygate_unpriced_requests_total", model="claude-unpriced") == 1
    assert total(found, "proxygate_unpriced_requests_total", model="claude-priced") == 0

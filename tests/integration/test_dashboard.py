"""The dashboard's server side: login, sessions, CSRF, Host rules, account actions, live feed, OpenAPI."""

from __future__ import annotations

import asyncio
import re
import stat
from http.cookies import SimpleCookie

import aiohttp
import orjson

from proxygate.server.dashboard.openapi import openapi_document
from proxygate.server.dashboard.sessions import SESSIONS
from proxygate.server.keys import BROKER
from tests.conftest import admin_headers
from tests.upstream import status

ASK = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def two_keys(url: str) -> dict[str, dict[str, object]]:
    return {
        "a": {"provider": "anthropic", "api_key": "sk-ant-aaaa-0000", "base_url": url, "priority": 2},
        "b": {"provider": "anthropic", "api_key": "sk-ant-bbbb-0000", "base_url": url, "priority": 1},
    }


PRIORITY = '[routing.configs.default]\nstrategy = "priority"\n'


class Browser:
    """What a browser keeps for one origin: the session cookie and the page's CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookie = ""
        self.csrf = ""

    async def login(self, token: str) -> aiohttp.ClientResponse:
        async with aiohttp.ClientSession() as client:
            resp = await client.post(
                self.base + "/login",
                data={"token": token, "next": "/"},
                allow_redirects=False,
                headers={"origin": self.base},
            )
            self.cookie = resp.headers.get("set-cookie", "")
            return resp

    @property
    def cookie_header(self) -> dict[str, str]:
        jar = SimpleCookie(self.cookie)
        return {"cookie": f"proxygate_session={jar['proxygate_session'].value}"} if self.cookie else {}

    async def page(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as client,
            client.get(self.base + path, headers=self.cookie_header, allow_redirects=False) as resp,
        ):
            text = await resp.text()
            if m := re.search(r'<meta name="csrf-token" content="([^"]+)"', text):
                self.csrf = m[1]
            return resp.status, text

    async def call(
        self, method: str, path: str, body: object = None, *, csrf: bool = True
    ) -> tuple[int, object]:
        headers = {**self.cookie_header, "origin": self.base}
        if csrf:
            headers["x-csrf-token"] = self.csrf
        async with (
            aiohttp.ClientSession() as client,
            client.request(method, self.base + path, json=body, headers=headers) as resp,
        ):
            return resp.status, orjson.loads(await resp.read() or b"null")


async def logged_in(proxy) -> Browser:
    browser = Browser(proxy.url)
    resp = await browser.login(admin_headers(proxy.settings)["authorization"][7:])
    assert resp.status == 303
    status, _ = await browser.page("/")
    assert status == 200 and browser.csrf
    return browser


async def test_root_without_session_redirects_to_a_login_page_with_a_password_field(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url + "/", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["location"].startswith("/login")
        async with client.get(proxy.url + resp.headers["location"]) as page:
            text = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    assert 'type="password"' in text and "Log in" in text


async def test_login_sets_an_httponly_samesite_strict_cookie_and_a_wrong_token_is_refused(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    browser = Browser(proxy.url)
    refused = await browser.login("wrong")
    assert refused.status == 401 and not browser.cookie
    resp = await browser.login(admin_headers(proxy.settings)["authorization"][7:])
    assert resp.status == 303
    cookie = SimpleCookie(browser.cookie)["proxygate_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    status, text = await browser.page("/")
    assert status == 200 and 'href="/setup"' in text and 'href="/traffic"' in text


async def test_a_session_call_that_changes_state_needs_the_csrf_token(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    browser = await logged_in(proxy)
    assert (await browser.call("GET", "/admin/api/status", csrf=False))[0] == 200  # reading needs none
    status, body = await browser.call("POST", "/admin/api/accounts/a/disable", csrf=False)
    assert status == 403 and "CSRF" in body["error"]
    browser.csrf = "forged"
    assert (await browser.call("POST", "/admin/api/accounts/a/disable"))[0] == 403
    assert proxy.app[BROKER].snapshot.by_id["a"].disabled is False
    # Scripts and the CLI keep using the token as a header, with no CSRF token.
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            proxy.url + "/admin/api/accounts/a/disable", headers=admin_headers(proxy.settings)
        ) as resp,
    ):
        assert resp.status == 200


async def test_a_foreign_host_is_refused_on_the_dashboard_and_the_admin_api_even_with_the_token(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    browser = await logged_in(proxy)
    headers = {**admin_headers(proxy.settings), **browser.cookie_header, "host": "evil.example"}
    async with aiohttp.ClientSession() as client:
        for path in ("/", "/setup", "/admin/api/status", "/admin/api/openapi.json"):
            async with client.get(proxy.url + path, headers=headers, allow_redirects=False) as resp:
                assert resp.status == 403, path


async def test_disabling_writes_the_file_and_routing_stops_using_the_account_at_once(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    browser = await logged_in(proxy)
    status, body = await browser.call("POST", "/admin/api/accounts/a/disable")
    assert status == 200 and body == {"id": "a", "enabled": False}
    assert orjson.loads((proxy.pool_dir / "apikeys" / "a.json").read_bytes())["disabled"] is True
    async with aiohttp.ClientSession() as client, client.post(proxy.url + "/v1/messages", json=ASK) as resp:
        assert resp.status == 200
    assert upstream.requests[-1].headers["x-api-key"] == "sk-ant-bbbb-0000"  # a (priority 2) skipped
    status, _ = await browser.call("POST", "/admin/api/accounts/a/enable")
    assert status == 200
    async with aiohttp.ClientSession() as client, client.post(proxy.url + "/v1/messages", json=ASK) as resp:
        assert resp.status == 200
    assert upstream.requests[-1].headers["x-api-key"] == "sk-ant-aaaa-0000"


async def test_adding_a_key_writes_a_0600_file_and_never_returns_the_key(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    browser = await logged_in(proxy)
    key = "sk-ant-new-secret-9f3a"
    entry = {
        "provider": "anthropic",
        "api_key": key,
        "id": "fresh",
        "base_url": upstream.url,
        "models": "claude-*",
    }
    status, body = await browser.call("POST", "/admin/api/accounts", entry)
    assert status == 201, body
    assert key not in orjson.dumps(body).decode()
    path = proxy.pool_dir / "apikeys" / "fresh.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert orjson.loads(path.read_bytes())["models"] == ["claude-*"]
    assert "fresh" in proxy.app[BROKER].snapshot.by_id  # routable before the watcher sees it
    status, body = await browser.call("POST", "/admin/api/accounts", entry)
    assert status == 409
    status, body = await browser.call("POST", "/admin/api/accounts", {"provider": "nope", "api_key": "k"})
    assert status == 400 and "provider" in body["error"]


async def test_delete_removes_the_file(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    browser = await logged_in(proxy)
    status, _ = await browser.call("POST", "/admin/api/accounts/b/delete")
    assert status == 200
    assert not (proxy.pool_dir / "apikeys" / "b.json").exists()
    assert "b" not in proxy.app[BROKER].snapshot.by_id


async def test_a_one_time_login_link_works_once(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    async with aiohttp.ClientSession() as client:
        async with client.post(
            proxy.url + "/admin/api/dashboard/login-link", headers=admin_headers(proxy.settings)
        ) as resp:
            path = (await resp.json())["path"]
        code = path.split("code=")[1]
        async with client.get(proxy.url + path) as page:  # GET only shows the form: no state changes
            assert code in await page.text()
        results = []
        for _ in range(2):
            async with client.post(
                proxy.url + "/login",
                data={"code": code},
                allow_redirects=False,
                headers={"origin": proxy.url},
            ) as resp:
                results.append((resp.status, "proxygate_session" in resp.headers.get("set-cookie", "")))
    assert results == [(303, True), (401, False)]


async def test_the_live_feed_shows_a_request_and_ends_at_shutdown(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    headers = admin_headers(proxy.settings)
    async with aiohttp.ClientSession() as client:
        stream = await client.get(proxy.url + "/admin/api/traffic/stream", headers=headers)
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert (await stream.content.readline()).startswith(b":")
        await stream.content.readline()
        async with client.post(proxy.url + "/v1/messages", json=ASK) as resp:
            rid = resp.headers["x-proxygate-request-id"]
        line = await asyncio.wait_for(stream.content.readline(), 10)
        entry = orjson.loads(line.removeprefix(b"data: "))
        assert entry["request_id"] == rid and entry["status"] == 200 and entry["model_asked"] == "claude-x"
        assert "messages" not in entry  # never a body
        # Shutdown with a subscriber: the stream ends at once, it does not hold the drain.
        proxy.runner._shutdown_timeout = 60.0
        await asyncio.wait_for(proxy.runner.cleanup(), 10)
        assert (await asyncio.wait_for(stream.content.read(), 5)).strip() == b""
        stream.release()


async def test_openapi_documents_every_admin_api_route_and_takes_the_bearer_token(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    documented = {
        (method.upper(), path) for path, methods in openapi_document()["paths"].items() for method in methods
    }
    served = {
        (route.method, route.resource.canonical)
        for route in proxy.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/admin/api")
        and route.method not in ("HEAD", "OPTIONS")
    }
    assert served - documented == set(), "undocumented admin API routes"
    assert documented - served == set(), "documented routes that do not exist"
    async with aiohttp.ClientSession() as client:
        async with client.get(
            proxy.url + "/admin/api/openapi.json", headers=admin_headers(proxy.settings)
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["openapi"].startswith("3.")
        async with client.get(proxy.url + "/admin/api/openapi.json") as resp:
            assert resp.status == 401


async def test_logout_ends_the_session(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    browser = await logged_in(proxy)
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            proxy.url + "/logout",
            data={"csrf": browser.csrf},
            headers={**browser.cookie_header, "origin": proxy.url},
            allow_redirects=False,
        ) as resp,
    ):
        assert resp.status == 303
    assert (await browser.page("/"))[0] == 303
    assert (await browser.call("GET", "/admin/api/status"))[0] == 401
    assert len(proxy.app[SESSIONS]._ended) == 1


CONFIG_WITH_COMMENTS = """# my proxy settings
[routing]
# which config is used
active = "default"

[routing.configs.default]
strategy = "priority"  # keep a first
"""


async def test_editing_aliases_keeps_comments_backs_up_validates_and_applies_at_once(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy(two_keys(upstream.url), config=CONFIG_WITH_COMMENTS)
    path = proxy.settings.config_path
    before = path.read_text()
    headers = admin_headers(proxy.settings)
    async with aiohttp.ClientSession() as client:
        async with client.post(
            proxy.url + "/admin/api/config/routing",
            json={"aliases": {"fast": "claude-haiku-4-5"}},
            headers=headers,
        ) as resp:
            assert resp.status == 200, await resp.text()
        text = path.read_text()
        assert "# which config is used" in text and "# keep a first" in text
        assert 'fast = "claude-haiku-4-5"' in text
        assert path.with_name("config.toml.bak").read_text() == before
        async with client.post(proxy.url + "/v1/messages", json={**ASK, "model": "fast"}) as resp:
            assert resp.status == 200
        assert upstream.requests[-1].body["model"] == "claude-haiku-4-5"  # applied without a restart
        # A change that does not validate is refused and nothing is written.
        async with client.post(
            proxy.url + "/admin/api/config/routing", json={"active": "nope"}, headers=headers
        ) as resp:
            assert resp.status == 400
            assert "routing.active" in (await resp.json())["error"]
        assert path.read_text() == text


async def test_the_live_feed_shows_each_attempt_of_a_failover(upstream, start_proxy) -> None:
    upstream.push(status(500, {"error": {"message": "boom"}}))
    proxy = await start_proxy(two_keys(upstream.url), config=PRIORITY)
    async with aiohttp.ClientSession() as client:
        stream = await client.get(
            proxy.url + "/admin/api/traffic/stream", headers=admin_headers(proxy.settings)
        )
        await stream.content.readline()
        await stream.content.readline()
        async with client.post(proxy.url + "/v1/messages", json=ASK) as resp:
            assert resp.status == 200
        entry = orjson.loads((await asyncio.wait_for(stream.content.readline(), 10)).removeprefix(b"data: "))
        stream.release()
    assert entry["attempts"] == 2 and entry["account_id"] == "b"
    [failed] = entry["failovers"]
    assert failed["account_id"] == "a" and failed["status"] == 500 and "boom" in failed["error"]


async def test_check_makes_one_live_call_through_the_account(upstream, start_proxy) -> None:
    proxy = await start_proxy(two_keys(upstream.url))
    browser = await logged_in(proxy)
    status_code, body = await browser.call("POST", "/admin/api/accounts/b/check")
    assert status_code == 200, body
    assert body["status"] == 200 and body["id"] == "b"
    assert upstream.requests[-1].headers["x-api-key"] == "sk-ant-bbbb-0000"
    assert (await browser.call("POST", "/admin/api/accounts/nobody/check"))[0] == 404


async def test_a_budget_set_from_the_routing_page_is_written_and_enforced_at_once(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy(two_keys(upstream.url), config=CONFIG_WITH_COMMENTS)
    headers = admin_headers(proxy.settings)
    async with aiohttp.ClientSession() as client:
        budget = {"budgets": {"a": {"daily_tokens": 1, "daily_usd": None}}}
        async with client.post(proxy.url + "/admin/api/config/routing", json=budget, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        text = proxy.settings.config_path.read_text()
        assert "[budgets.a]" in text and "daily_tokens = 1" in text and "# which config is used" in text
        for _ in range(2):  # the first uses a's day (more than 1 token); the next goes to b
            async with client.post(proxy.url + "/v1/messages", json=ASK) as resp:
                assert resp.status == 200
        assert [r.headers["x-api-key"][7:11] for r in upstream.requests] == ["aaaa", "bbbb"]
        async with client.get(proxy.url + "/admin/api/config", headers=headers) as resp:
            assert (await resp.json())["budgets"]["a"]["daily_tokens"] == 1
        bad = {"budgets": {"a": {"daily_tokens": -5}}}
        async with client.post(proxy.url + "/admin/api/config/routing", json=bad, headers=headers) as resp:
            assert resp.status == 400
        cleared = {"budgets": {"a": {"daily_tokens": None}}}
        async with client.post(
            proxy.url + "/admin/api/config/routing", json=cleared, headers=headers
        ) as resp:
            assert resp.status == 200
        assert "[budgets.a]" not in proxy.settings.config_path.read_text()

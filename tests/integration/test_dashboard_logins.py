"""Subscription logins started from the dashboard: the CLI's flows against a fake authorization server."""

from __future__ import annotations

import asyncio
import stat
from urllib.parse import parse_qs, urlparse

import aiohttp
import orjson

from proxygate.server.keys import BROKER
from tests import oauth_fakes
from tests.conftest import admin_headers, free_port
from tests.oauth_fakes import FakeAuthServer

auth_server = oauth_fakes.auth_server  # the fake authorization server fixture


async def start(client: aiohttp.ClientSession, proxy, body: dict[str, str]) -> dict[str, object]:
    async with client.post(
        proxy.url + "/admin/api/logins", json=body, headers=admin_headers(proxy.settings)
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def test_a_claude_login_finishes_with_the_pasted_code(start_proxy, auth_server: FakeAuthServer) -> None:
    proxy = await start_proxy({}, config=auth_server.config_toml())
    auth_server.push_token(
        200,
        {
            "access_token": "sk-ant-oat-1",
            "refresh_token": "sk-ant-ort-1",
            "expires_in": 3600,
            "account": {"email_address": "me@example.com"},
        },
    )
    headers = admin_headers(proxy.settings)
    async with aiohttp.ClientSession() as client:
        login = await start(client, proxy, {"provider": "claude"})
        assert login["needs_paste"] is True
        state = parse_qs(urlparse(str(login["url"])).query)["state"][0]
        async with client.post(
            f"{proxy.url}/admin/api/logins/{login['id']}/code",
            json={"code": "wrong#other-state"},
            headers=headers,
        ) as resp:
            assert resp.status == 401  # another login's code: refused, the login stays open
        async with client.post(
            f"{proxy.url}/admin/api/logins/{login['id']}/code",
            json={"code": f"the-code#{state}"},
            headers=headers,
        ) as resp:
            done = await resp.json()
    assert done["status"] == "done", done
    assert auth_server.grants[-1]["code"] == "the-code" and auth_server.grants[-1]["state"] == state
    path = proxy.pool_dir / "claude" / "me@example.com.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert orjson.loads(path.read_bytes())["refresh_token"] == "sk-ant-ort-1"
    assert done["account_id"] in proxy.app[BROKER].snapshot.by_id
    assert "sk-ant-ort-1" not in orjson.dumps(done).decode()


async def test_a_chatgpt_login_finishes_on_the_loopback_callback(
    start_proxy, auth_server: FakeAuthServer
) -> None:
    port = free_port()
    proxy = await start_proxy({}, config=auth_server.config_toml(callback_port=port))
    headers = admin_headers(proxy.settings)
    async with aiohttp.ClientSession() as client:
        login = await start(client, proxy, {"provider": "chatgpt"})
        query = parse_qs(urlparse(str(login["url"])).query)
        assert query["redirect_uri"] == [f"http://localhost:{port}/auth/callback"]
        state = query["state"][0]
        # What the browser does after signing in: the authorization server redirects it here.
        for _ in range(100):
            try:
                async with client.get(
                    f"http://127.0.0.1:{port}/auth/callback", params={"code": "cb-code", "state": state}
                ) as resp:
                    assert resp.status == 200
                    break
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.05)  # the listener is starting
        for _ in range(100):
            async with client.get(f"{proxy.url}/admin/api/logins/{login['id']}", headers=headers) as resp:
                status = await resp.json()
            if status["status"] != "waiting":
                break
            await asyncio.sleep(0.05)
    assert status["status"] == "done", status
    assert auth_server.grants[-1]["code"] == "cb-code"
    assert (proxy.pool_dir / "chatgpt" / "dev@example.com.json").exists()
    assert status["account_id"] in proxy.app[BROKER].snapshot.by_id


async def test_an_unknown_provider_is_refused(start_proxy) -> None:
    proxy = await start_proxy({})
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            proxy.url + "/admin/api/logins", json={"provider": "nope"}, headers=admin_headers(proxy.settings)
        ) as resp,
    ):
        assert resp.status == 400

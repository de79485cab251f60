"""The admin API refuses to change, rotate or remove the owner, each with its own reason."""

from __future__ import annotations

import aiohttp

from tests.conftest import admin_headers


async def test_the_owner_is_refused_with_the_reason(start_proxy, upstream) -> None:
    proxy = await start_proxy(
        {"ant": {"provider": "anthropic", "api_key": "sk-ant-0000", "base_url": upstream.url}}
    )
    headers = admin_headers(proxy.settings)
    url = f"{proxy.url}/admin/api/tenants/-"  # "-" names the owner
    async with aiohttp.ClientSession() as http:
        async with http.patch(url, json={"rpm": 5}, headers=headers) as resp:
            assert resp.status == 400
            assert "owner_share" in await resp.text()
        async with http.post(f"{url}/rotate-key", headers=headers) as resp:
            assert resp.status == 400
            assert "proxy_token" in await resp.text()
        async with http.delete(url, headers=headers) as resp:
            assert resp.status == 400
            assert "cannot be removed" in await resp.text()
        async with http.delete(f"{proxy.url}/admin/api/tenants/nobody", headers=headers) as resp:
            assert resp.status == 404
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 200

"""The browser guard: Host (DNS rebinding), Origin (CSRF), the admin token, and request ids."""

from __future__ import annotations

import logging
import os
import stat

import aiohttp
import orjson

from tests.conftest import admin_headers

ANTHROPIC = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def ant_key(url: str) -> dict[str, object]:
    return {"provider": "anthropic", "api_key": "sk-ant-real-key-9999", "base_url": url}


async def send(
    method: str,
    url: str,
    *,
    body: object = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], object]:
    if body is not None:
        data = orjson.dumps(body)
        headers = {"content-type": "application/json", **(headers or {})}
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, url, data=data, headers=headers) as resp,
    ):
        raw = await resp.read()
        return resp.status, dict(resp.headers), orjson.loads(raw) if raw else None


async def test_a_foreign_host_is_refused_in_the_clients_format_and_nothing_goes_upstream(
    upstream, start_proxy
) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)})
    rebound = {"host": "attacker.example:19527"}
    status, headers, error = await send("POST", proxy.url + "/v1/messages", body=ANTHROPIC, headers=rebound)
    message = "Host 'attacker.example:19527' is not allowed (allowed_hosts)"
    assert (status, error) == (
        403,
        {
            "type": "error",
            "error": {"type": "permission_error", "message": message},
            "request_id": headers["x-proxygate-request-id"],
        },
    )
    status, _, error = await send("POST", proxy.url + "/v1/chat/completions", body=CHAT, headers=rebound)
    assert (status, error) == (
        403,
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}},
    )
    status, _, error = await send(
        "POST", proxy.url + "/v1beta/models/claude-x:generateContent", body=GEMINI, headers=rebound
    )
    assert (status, error) == (
        403,
        {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}},
    )
    assert upstream.requests == []


async def test_a_foreign_host_gets_403_on_the_admin_api_even_with_the_token(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)})
    headers = {**admin_headers(proxy.settings), "host": "attacker.example"}
    status, _, error = await send("GET", proxy.url + "/admin/api/status", headers=headers)
    assert (status, error) == (403, {"error": "Host 'attacker.example' is not allowed (allowed_hosts)"})


async def test_loopback_names_on_any_port_and_allowed_hosts_are_served(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)}, config='allowed_hosts = ["proxy.lan"]\n')
    for host in ("127.0.0.1", "localhost:1", "LOCALHOST:19527", "[::1]:8080", "proxy.lan", "proxy.lan:19527"):
        status, _, _ = await send(
            "GET", proxy.url + "/admin/api/status", headers={**admin_headers(proxy.settings), "host": host}
        )
        assert (host, status) == (host, 200)
    for host in ("127.0.0.1.attacker.example", "localhost.attacker.example:80", "other.lan"):
        status, _, _ = await send("POST", proxy.url + "/v1/messages", body=ANTHROPIC, headers={"host": host})
        assert (host, status) == (host, 403)


async def test_beyond_loopback_any_host_unless_allowed_hosts_is_set(upstream, start_proxy, tmp_path) -> None:
    # The listen address is what the guard reads; the test server still binds 127.0.0.1.
    wide = await start_proxy({"a": ant_key(upstream.url)}, config='addr = "0.0.0.0:19527"\n')
    status, _, _ = await send(
        "POST", wide.url + "/v1/messages", body=ANTHROPIC, headers={"host": "box.lan:19527"}
    )
    assert status == 200
    (tmp_path / "listed").mkdir()
    listed = await start_proxy(
        {"a": ant_key(upstream.url)},
        config='addr = "0.0.0.0:19527"\nallowed_hosts = ["box.lan"]\n',
        root=tmp_path / "listed",
    )
    for host, expected in (("box.lan:19527", 200), ("localhost", 200), ("other.lan", 403)):
        status, _, _ = await send("POST", listed.url + "/v1/messages", body=ANTHROPIC, headers={"host": host})
        assert (host, status) == (host, expected)


async def test_a_foreign_origin_is_refused_whatever_the_content_type(upstream, start_proxy) -> None:
    """A page's CORS "simple request" (text/plain) cannot spend quota or reset accounts."""
    proxy = await start_proxy({"a": ant_key(upstream.url)})
    evil = {"origin": "https://evil.example", "content-type": "text/plain"}
    status, _, error = await send(
        "POST", proxy.url + "/v1/messages", data=orjson.dumps(ANTHROPIC), headers=evil
    )
    assert (status, error["error"]["type"]) == (403, "permission_error")
    assert error["error"]["message"] == "Origin 'https://evil.example' is not allowed (allowed_origins)"
    for origin in ("null", "http://localhost:19527", "http://127.0.0.1"):  # not this server's own origin
        status, _, _ = await send(
            "POST", proxy.url + "/v1/chat/completions", body=CHAT, headers={"origin": origin}
        )
        assert (origin, status) == (origin, 403)
    status, _, error = await send(
        "POST", proxy.url + "/admin/api/accounts/a/reset", headers={**admin_headers(proxy.settings), **evil}
    )
    assert (status, error) == (
        403,
        {"error": "Origin 'https://evil.example' is not allowed (allowed_origins)"},
    )
    assert upstream.requests == []
    status, _, health = await send("GET", proxy.url + "/healthz", headers=evil)
    assert (status, health) == (200, {"ok": True, "pid": os.getpid()})


async def test_allowed_origins_and_the_servers_own_origin_are_served(upstream, start_proxy) -> None:
    proxy = await start_proxy(
        {"a": ant_key(upstream.url)}, config='allowed_origins = ["https://my-web-client.example"]\n'
    )
    port = proxy.url.rsplit(":", 1)[1]
    for origin in (
        "https://my-web-client.example",
        "https://MY-web-client.example/",
        f"http://127.0.0.1:{port}",
    ):
        status, _, _ = await send(
            "POST", proxy.url + "/v1/messages", body=ANTHROPIC, headers={"origin": origin}
        )
        assert (origin, status) == (origin, 200)
    # Same-origin means this Host: a page served from localhost:<port> posts with that Host.
    status, _, _ = await send(
        "POST",
        proxy.url + "/v1/messages",
        body=ANTHROPIC,
        headers={"origin": f"http://localhost:{port}", "host": f"localhost:{port}"},
    )
    assert status == 200


async def test_the_admin_api_always_needs_a_token_generated_once_into_the_data_dir(
    upstream, start_proxy, tmp_path
) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)})
    status, headers, error = await send("GET", proxy.url + "/admin/api/status")
    assert status == 401
    assert error["error"].startswith("missing or wrong admin token")
    assert headers["x-proxygate-request-id"].startswith("pg_")
    path = proxy.settings.data_dir / "admin.token"
    text = path.read_text()
    token = text.strip()
    assert text == token + "\n" and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for header in ({"authorization": f"Bearer {token}"}, {"x-proxygate-admin-token": token}):
        status, _, _ = await send("GET", proxy.url + "/admin/api/status", headers=header)
        assert status == 200
    status, _, _ = await send(
        "GET", proxy.url + "/admin/api/status", headers={"authorization": "Bearer nope"}
    )
    assert status == 401
    # A later start finds the file and keeps it (the CLI may have read it already).
    (tmp_path / "later" / "data").mkdir(parents=True)
    (tmp_path / "later" / "data" / "admin.token").write_text("kept-token-1234\n")
    later = await start_proxy({"a": ant_key(upstream.url)}, root=tmp_path / "later")
    status, _, _ = await send(
        "GET", later.url + "/admin/api/status", headers={"authorization": "Bearer kept-token-1234"}
    )
    assert status == 200
    assert (tmp_path / "later" / "data" / "admin.token").read_text() == "kept-token-1234\n"


async def test_a_configured_admin_token_is_used_and_no_file_is_written(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)}, config='admin_token = "adm1n"\n')
    status, _, _ = await send(
        "GET", proxy.url + "/admin/api/status", headers={"authorization": "Bearer adm1n"}
    )
    assert status == 200
    assert not (proxy.settings.data_dir / "admin.token").exists()


async def test_route_switch_takes_the_name_from_the_json_body_only(upstream, start_proxy) -> None:
    proxy = await start_proxy(
        {"a": ant_key(upstream.url)}, config='[routing.configs.rr]\nstrategy = "round-robin"\n'
    )
    token = admin_headers(proxy.settings)
    status, _, error = await send("POST", proxy.url + "/admin/api/route?name=rr", headers=token)
    assert (status, error) == (400, {"error": 'expected a JSON body {"name": …}'})
    # A header-authenticated call may use any content type (curl, the CLI).
    status, _, answer = await send(
        "POST",
        proxy.url + "/admin/api/route",
        data=b'{"name": "rr"}',
        headers={**token, "content-type": "text/plain"},
    )
    assert (status, answer) == (200, {"route": "rr/round-robin"})


async def test_every_answer_carries_a_request_id(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)})
    for method, path in (
        ("GET", "/nowhere"),
        ("GET", "/v1/messages"),
        ("DELETE", "/healthz"),
        ("GET", "/healthz"),
    ):
        async with aiohttp.ClientSession() as client, client.request(method, proxy.url + path) as resp:
            assert resp.headers["x-proxygate-request-id"].startswith("pg_"), (method, path)
    status, headers, _ = await send("POST", proxy.url + "/v1/messages", body=ANTHROPIC)
    assert status == 200 and headers["x-proxygate-request-id"].startswith("pg_")


async def test_401_and_413_are_logged_once_with_the_request_id_and_escaped(
    upstream, start_proxy, caplog
) -> None:
    proxy = await start_proxy(
        {"a": ant_key(upstream.url)},
        env={"PROXYGATE_PROXY_TOKEN": "s3cret", "PROXYGATE_MAX_BODY_MB": "0.001"},
    )
    caplog.set_level(logging.WARNING, logger="proxygate")
    status, headers, _ = await send("POST", proxy.url + "/v1/messages%0D%0AFORGED", body=ANTHROPIC)
    assert status == 404  # an unknown path: no 401 to log
    status, headers, _ = await send("POST", proxy.url + "/v1/messages", body=ANTHROPIC)
    assert status == 401
    big = {**ANTHROPIC, "messages": [{"role": "user", "content": "x" * 5000}]}
    status, big_headers, _ = await send(
        "POST", proxy.url + "/v1/messages", body=big, headers={"authorization": "Bearer s3cret"}
    )
    assert status == 413
    status, admin_headers_, _ = await send("POST", proxy.url + "/admin/api/accounts/a%0D%0AFORGED/reset")
    assert status == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "proxygate"]
    assert lines == [
        f"{headers['x-proxygate-request-id']} 401 POST /v1/messages: missing or wrong proxygate token "
        "(send it as Authorization: Bearer, X-ProxyGate-Token or x-api-key)",
        f"{big_headers['x-proxygate-request-id']} 413 POST /v1/messages: request body over the 0.001 MB "
        "limit (max_body_mb)",
        f"{admin_headers_['x-proxygate-request-id']} 401 POST /admin/api/accounts/a\\r\\nFORGED/reset: "
        "missing or wrong admin token",
    ]


async def test_a_listed_origins_page_gets_cors_answers_and_no_other_does(upstream, start_proxy) -> None:
    """allowed_origins is usable from a real browser: preflight, then readable answers, streams too."""
    page = "https://my-web-client.example"
    proxy = await start_proxy({"a": ant_key(upstream.url)}, config=f'allowed_origins = ["{page}"]\n')
    preflight = {
        "origin": page,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, x-api-key, anthropic-version",
    }
    status, headers, _ = await send("OPTIONS", proxy.url + "/v1/messages", headers=preflight)
    assert status == 204
    assert {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control")} == {
        "access-control-allow-origin": page,
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "content-type, x-api-key, anthropic-version",
        "access-control-max-age": "600",
        "access-control-expose-headers": (
            "x-proxygate-request-id, x-proxygate-account, x-proxygate-route, retry-after, x-should-retry"
        ),
    }
    for body in (ANTHROPIC, {**ANTHROPIC, "stream": True}):
        async with (
            aiohttp.ClientSession() as client,
            client.post(proxy.url + "/v1/messages", json=body, headers={"origin": page}) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["access-control-allow-origin"] == page
            assert "x-proxygate-request-id" in resp.headers["access-control-expose-headers"]
    # Same-origin and origin-less calls need no CORS and get none; a foreign preflight is refused.
    status, headers, _ = await send("POST", proxy.url + "/v1/messages", body=ANTHROPIC)
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    status, _, _ = await send(
        "OPTIONS", proxy.url + "/v1/messages", headers={**preflight, "origin": "https://evil.example"}
    )
    assert status == 403

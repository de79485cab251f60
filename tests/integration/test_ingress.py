"""Ingress: tokens, body limits, bad JSON, unknown models and paths — each in the client's format."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from tests.conftest import write_account


def ant_key(url: str) -> dict[str, object]:
    return {"provider": "anthropic", "api_key": "sk-ant-real-key-9999", "base_url": url}


async def call(
    url: str,
    path: str,
    *,
    data: bytes | None = None,
    json: object = None,
    headers: dict[str, str] | None = None,
):
    async with (
        aiohttp.ClientSession() as client,
        client.post(url + path, data=data, json=json, headers=headers) as resp,
    ):
        return resp.status, resp.headers.copy(), orjson.loads(await resp.read())


async def test_proxy_token_is_required_and_accepted_in_every_header(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)}, env={"PROXYGATE_PROXY_TOKEN": "s3cret"})
    body = {"model": "claude-x", "max_tokens": 5, "messages": []}
    status, headers, error = await call(proxy.url, "/v1/messages", json=body)
    assert (status, error["error"]["type"]) == (401, "authentication_error")
    assert error["request_id"] == headers["x-proxygate-request-id"]
    status, _, error = await call(
        proxy.url, "/v1/chat/completions", json={"model": "gpt-x"}, headers={"authorization": "Bearer nope"}
    )
    assert (status, error["error"]["code"]) == (401, "invalid_api_key")
    for header in (
        {"authorization": "Bearer s3cret"},
        {"x-proxygate-token": "s3cret"},
        {"x-api-key": "s3cret"},
    ):
        status, _, _ = await call(proxy.url, "/v1/messages", json=body, headers=header)
        assert status == 200
    # The client's token for us never reaches the provider.
    assert {r.headers.get("x-api-key") for r in upstream.requests} == {"sk-ant-real-key-9999"}


async def test_body_over_the_limit_is_413_in_the_clients_format(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)}, env={"PROXYGATE_MAX_BODY_MB": "0.001"})
    big = orjson.dumps({"model": "claude-x", "messages": [{"role": "user", "content": "x" * 5000}]})
    status, _, error = await call(
        proxy.url, "/v1/messages", data=big, headers={"content-type": "application/json"}
    )
    assert (status, error["error"]["type"]) == (413, "request_too_large")
    status, _, error = await call(
        proxy.url, "/v1/chat/completions", data=big, headers={"content-type": "application/json"}
    )
    assert status == 413 and error["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


async def test_bad_json_and_missing_model(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)})
    status, _, error = await call(
        proxy.url, "/v1/messages", data=b"{nope", headers={"content-type": "application/json"}
    )
    assert (status, error["error"]["type"]) == (400, "invalid_request_error")
    assert error["error"]["message"].startswith("request body is not valid JSON")
    status, _, error = await call(proxy.url, "/v1/responses", json={"input": "hi"})
    assert (status, error["error"]["message"]) == (400, 'missing "model"')


async def test_unknown_model_names_what_the_pool_serves(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": ant_key(upstream.url)})
    status, _, error = await call(proxy.url, "/v1/chat/completions", json={"model": "gpt-9", "messages": []})
    assert status == 404
    assert error == {
        "error": {
            "message": "no account in the pool serves model 'gpt-9' (the pool serves: claude-*)",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }


async def test_unknown_path_is_a_404_in_format(start_proxy) -> None:
    proxy = await start_proxy()
    async with aiohttp.ClientSession() as client, client.get(proxy.url + "/v1/responses") as resp:
        assert resp.status == 404
        assert await resp.json() == {
            "error": {
                "message": "no such endpoint: GET /v1/responses",
                "type": "invalid_request_error",
                "param": None,
                "code": "unknown_url",
            }
        }


async def test_models_lists_what_the_pool_serves(upstream, start_proxy) -> None:
    from tests.upstream import ok_json

    upstream.push(ok_json({"data": [{"id": "claude-a"}, {"id": "claude-b"}, {"id": "other"}]}))
    proxy = await start_proxy({"a": {**ant_key(upstream.url), "models": ["claude-*", "house-model"]}})
    async with aiohttp.ClientSession() as client, client.get(proxy.url + "/v1/models") as resp:
        data = await resp.json()
    assert [m["id"] for m in data["data"]] == ["claude-a", "claude-b", "house-model"]
    assert upstream.requests[0].path == "/v1/models"


async def test_hot_reload_add_bad_and_remove(upstream, start_proxy) -> None:
    proxy = await start_proxy()
    body = {"model": "claude-x", "max_tokens": 5, "messages": []}
    status, _, _ = await call(proxy.url, "/v1/messages", json=body)
    assert status == 404
    # The bad file first: the reload that brings "late" has seen it (one reload may take both).
    (proxy.pool_dir / "apikeys").mkdir(parents=True, exist_ok=True)
    (proxy.pool_dir / "apikeys" / "broken.json").write_text("{not json")
    write_account(proxy.pool_dir, "apikeys", "late", ant_key(upstream.url))
    deadline = time.monotonic() + 15  # a generous bound for a loaded machine; usually < 0.2 s
    while time.monotonic() < deadline:
        status, headers, _ = await call(proxy.url, "/v1/messages", json=body)
        if status == 200:
            break
        await asyncio.sleep(0.02)
    assert (status, headers["x-proxygate-account"]) == (200, "late")
    from proxygate.server.keys import POOL

    [bad] = proxy.app[POOL][0].invalid
    assert (bad.path.name, bad.reason.split(":")[0]) == ("broken.json", "malformed JSON")
    (proxy.pool_dir / "apikeys" / "late.json").unlink()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, _, _ = await call(proxy.url, "/v1/messages", json=body)
        if status == 404:
            break
        await asyncio.sleep(0.02)
    assert status == 404


async def test_wrong_typed_fields_are_a_400_in_the_clients_format_before_anything_else(
    upstream, start_proxy
) -> None:
    """Once a bare 500 text/plain: the conversation key read these fields before any validation."""
    proxy = await start_proxy({"a": ant_key(upstream.url)})
    cases = [
        ("/v1/messages", {"model": "claude-x", "messages": 123}, '"messages" must be an array, not number'),
        ("/v1/messages", {"model": "claude-x", "messages": ["hi"]}, '"messages[0]" must be an object, not string'),
        ("/v1/messages", {"model": "claude-x", "messages": [], "system": 5}, '"system" must be a string or array, not number'),
        ("/v1/messages", {"model": "claude-x", "messages": [], "metadata": "x"}, '"metadata" must be an object, not string'),
        ("/v1/messages", {"model": 7, "messages": []}, '"model" must be a string, not number'),
        ("/v1/chat/completions", {"model": "claude-x", "messages": {"role": "user"}}, '"messages" must be an array, not object'),
        ("/v1/chat/completions", {"model": "claude-x", "messages": [], "stream": "yes"}, '"stream" must be a boolean, not string'),
        ("/v1/chat/completions", {"model": "claude-x", "messages": [{"role": 1}]}, '"messages[0].role" must be a string, not number'),
        ("/v1/responses", {"model": "claude-x", "input": 42}, '"input" must be a string or array, not number'),
        ("/v1/responses", {"model": "claude-x", "input": "hi", "tools": {}}, '"tools" must be an array, not object'),
        ("/v1/responses", {"model": "claude-x", "input": [None]}, '"input[0]" must be an object, not null'),
        ("/v1beta/models/claude-x:generateContent", {"contents": 5}, '"contents" must be an array, not number'),
        ("/v1beta/models/claude-x:generateContent", {"contents": [], "systemInstruction": 1}, '"systemInstruction" must be an object or string, not number'),
    ]  # fmt: skip
    for path, body, message in cases:
        status, headers, error = await call(proxy.url, path, json=body)
        assert (path, status) == (path, 400)
        assert headers["x-proxygate-request-id"].startswith("pg_")
        if path.startswith("/v1beta"):
            assert error == {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
        elif path == "/v1/messages":
            assert error["error"] == {"type": "invalid_request_error", "message": message}
        else:
            assert error["error"] == {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
    deep: object = "x"
    for _ in range(300):
        deep = [deep]
    status, _, error = await call(
        proxy.url, "/v1/messages", json={"model": "claude-x", "messages": [{"role": "user", "content": deep}]}
    )
    assert (status, error["error"]["message"]) == (400, "request body is nested deeper than 254 levels")
    assert upstream.requests == []


async def test_model_names_over_256_bytes_are_refused_before_the_upstream(upstream, start_proxy) -> None:
    proxy = await start_proxy({"a": {**ant_key(upstream.url), "models": ["*"]}})
    for model in ("claude-" + "a" * 600, "é" * 129, "claude-x\r\nforged: 1"):
        status, _, error = await call(proxy.url, "/v1/messages", json={"model": model, "messages": []})
        assert status == 400, model
        assert error["error"]["message"] in (
            "model name is longer than 256 bytes",
            "model name contains control characters",
        )
        status, _, error = await call(
            proxy.url, "/v1/chat/completions", json={"model": model, "messages": []}
        )
        assert status == 400
    long_path_model = "gemini-" + "b" * 300
    status, _, error = await call(
        proxy.url, f"/v1beta/models/{long_path_model}:generateContent", json={"contents": []}
    )
    assert (status, error) == (
        400,
        {
            "error": {
                "code": 400,
                "message": "model name is longer than 256 bytes",
                "status": "INVALID_ARGUMENT",
            }
        },
    )
    assert upstream.requests == []
    # 256 bytes exactly is a name like any other.
    status, _, _ = await call(proxy.url, "/v1/messages", json={"model": "c" * 256, "messages": []})
    assert status == 200

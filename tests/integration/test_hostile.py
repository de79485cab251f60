"""A hostile-input corpus, over raw sockets: every case is a 4xx JSON error in the endpoint's format.

For every case: a 4xx, a JSON body in the format of the endpoint it was sent to (or, for what
fails before routing, the one body every SDK reads), an ``x-proxygate-request-id``, no
traceback text, and ``/healthz`` still 200. After the corpus, normal requests in all four
formats are answered and their usage is recorded.
"""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from proxygate.server.keys import STORE
from proxygate.store import today
from tests.serving import start_serve

ANT, CHAT, RESP, GEM = (
    "/v1/messages",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1beta/models/claude-x:generateContent",
)
FORMAT_OF = {ANT: "anthropic", CHAT: "chat", RESP: "responses", GEM: "gemini"}
TURNS = {ANT: "messages", CHAT: "messages", RESP: "input", GEM: "contents"}
ANY = "before-routing"
"The body aiohttp-level errors get: the request was never parsed far enough to know its format."


@dataclass(frozen=True)
class Case:
    name: str
    request: bytes
    expect: str
    "The error format: anthropic, chat, responses, gemini or ANY."
    drip_s: float = 0.0
    "Send the request a few bytes at a time with this pause between them."


def http(path: str, body: bytes, *, headers: dict[str, str] | None = None, method: str = "POST") -> bytes:
    head = {"Host": "127.0.0.1", "Content-Type": "application/json", "Content-Length": str(len(body))}
    head.update(headers or {})
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return f"{method} {path} HTTP/1.1\r\n{lines}Connection: close\r\n\r\n".encode() + body


def valid(path: str, **override: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        ANT: {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        CHAT: {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]},
        RESP: {"model": "claude-x", "input": "hi"},
        GEM: {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    }[path]
    return {**body, **override}


def json_case(name: str, path: str, body: Any) -> Case:
    return Case(f"{FORMAT_OF[path]}: {name}", http(path, orjson.dumps(body)), FORMAT_OF[path])


def raw_case(name: str, path: str, body: bytes, **kw: Any) -> Case:
    return Case(f"{FORMAT_OF[path]}: {name}", http(path, body, **kw), FORMAT_OF[path])


def corpus() -> list[Case]:
    cases: list[Case] = []
    for path in (ANT, CHAT, RESP, GEM):
        turns = TURNS[path]
        model_path = path if path != GEM else "/v1beta/models/{}:generateContent"
        # Wrong types where the pipeline looks first.
        cases += [
            json_case(f"{turns} is a number", path, valid(path, **{turns: 123})),
            json_case(f"{turns} is true", path, valid(path, **{turns: True})),
            json_case(f"{turns}[0] is a string", path, valid(path, **{turns: ["hi"]})),
            json_case("metadata is a list", path, valid(path, metadata=[1])),
            json_case("tools is a string", path, valid(path, tools="all")),
            json_case("the body is an array", path, [valid(path)]),
            json_case("the body is null", path, None),
            # Bodies that are not JSON, or not UTF-8.
            raw_case("truncated JSON", path, b'{"model": "claude-x", "mess'),
            raw_case("empty body", path, b""),
            raw_case("invalid UTF-8", path, orjson.dumps(valid(path))[:-1] + b',"x":"\xff\xfe"}'),
            raw_case("a raw NUL in a string", path, orjson.dumps(valid(path))[:-1] + b',"x":"a\x00b"}'),
            raw_case("a lone surrogate", path, orjson.dumps(valid(path))[:-1] + b',"x":"\\ud800"}'),
            # Nesting deeper than anything re-serialises.
            raw_case("nesting 300 deep", path, orjson.dumps(valid(path))[:-1] + b',"x":' + b"[" * 300 + b"]" * 300 + b"}"),
            raw_case("nesting 5,000 deep", path, b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}"),
            # A 413 before the body is read: Content-Length over max_body_mb.
            raw_case("Content-Length over the limit", path, b"", headers={"Content-Length": "99999999999"}),
            # Foreign browsers.
            with_headers(json_case("a rebinding Host", path, valid(path)), {"Host": "attacker.example:19527"}),
            with_headers(
                json_case("a foreign Origin, text/plain", path, valid(path)),
                {"Origin": "https://evil.example", "Content-Type": "text/plain"},
            ),
            Case(f"{FORMAT_OF[path]}: a drip-fed broken body", http(path, b'{"model": "claude-x", "x": '), FORMAT_OF[path], drip_s=0.01),
        ]  # fmt: skip
        if path == GEM:
            for name, model in (
                ("a 600-byte model", "g" * 600),
                ("a 300 x é model", "%C3%A9" * 300),
                ("a CR/LF model", "claude%0D%0AX-Forged:%201"),
            ):
                cases.append(with_path(json_case(name, path, valid(path)), model_path.format(model)))
        else:
            cases += [
                json_case("a 600-byte model", path, valid(path, model="claude-" + "a" * 600)),
                json_case("a 300 x é model", path, valid(path, model="é" * 300)),
                json_case("a 4 MB model", path, valid(path, model="m" * 4_000_000)),
                json_case("a CR/LF model", path, valid(path, model="claude-x\r\nX-Forged: 1")),
                json_case("a NUL model", path, valid(path, model="claude\u0000x")),
                json_case("model is a number", path, valid(path, model=5)),
                json_case("stream is a string", path, valid(path, stream="yes")),
            ]
    # What fails before routing: the parser's errors.
    ok = orjson.dumps(valid(ANT))
    cases += [
        Case("a 70 KB header line", http(ANT, ok, headers={"X-Big": "a" * 70_000}), ANY),
        Case("500 headers", http(ANT, ok, headers={f"X-H{i}": "1" for i in range(500)}), ANY),
        Case("a 100 KB request line", http("/v1/messages?" + "q" * 100_000, ok), ANY),
        Case("a header without a colon", http(ANT, ok).replace(b"Connection: close", b"NoColonHere"), ANY),
        Case("a NUL in the request target", http("/v1/mess\x00ages", ok), ANY),
        Case("not HTTP at all (TLS hello)", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, ANY),
        Case("two Content-Lengths", http(ANT, ok, headers={"Content-Length": "5, 6"}), ANY),
        Case("Content-Length is not a number", http(ANT, ok, headers={"Content-Length": "abc"}), ANY),
        Case("a bad chunk size", chunked(ANT, b"zz\r\nabc\r\n0\r\n\r\n"), ANY),
        Case("a chunk size that overflows", chunked(ANT, b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), ANY),
        Case("a chunk without its CRLF", chunked(ANT, b"5\r\n{\"a\":QQ\r\n0\r\n\r\n"), ANY),
        Case("a gzip body that is not gzip", http(ANT, b"not gzip at all", headers={"Content-Encoding": "gzip"}), "anthropic"),
        Case("a gzip bomb over max_body_mb", http(ANT, gzip.compress(b" " * 40_000_000), headers={"Content-Encoding": "gzip"}), "anthropic"),
        Case("a GET on a POST route", http(ANT, b"", method="GET"), "anthropic"),
        Case("an unknown path", http("/v1/nothing-here", ok), "chat"),
        Case("a Gemini method that does not exist", http("/v1beta/models/claude-x:explode", ok), "gemini"),
    ]  # fmt: skip
    return cases


def chunked(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode() + body


def with_headers(case: Case, headers: dict[str, str]) -> Case:
    head, _, body = case.request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    names = {k.lower().encode() for k in headers}
    kept = [lines[0]] + [line for line in lines[1:] if line.split(b":", 1)[0].lower() not in names]
    kept += [f"{k}: {v}".encode() for k, v in headers.items()]
    return Case(case.name, b"\r\n".join(kept) + b"\r\n\r\n" + body, case.expect, case.drip_s)


def with_path(case: Case, path: str) -> Case:
    line, sep, rest = case.request.partition(b"\r\n")
    method, _, _ = line.split(b" ")
    return Case(
        case.name, method + b" " + path.encode() + b" HTTP/1.1" + sep + rest, case.expect, case.drip_s
    )


async def exchange(port: int, request: bytes, *, drip_s: float = 0.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes and read one answer: status, headers, body (by Content-Length, else to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if drip_s:
            for i in range(0, len(request), 16):
                writer.write(request[i : i + 16])
                await writer.drain()
                await asyncio.sleep(drip_s)
        else:
            writer.write(request)
            await writer.drain()
        async with asyncio.timeout(10):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *header_lines = head.strip().split("\r\n")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = _unchunk(await reader.read())
    finally:
        writer.close()
    return int(status_line.split(" ")[1]), headers, body


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def assert_error_in(expect: str, body: Any) -> None:
    error = body["error"]
    if expect == ANY:  # every SDK's reader finds its fields
        assert body["type"] == "error" and error["type"] == "invalid_request_error"
        assert isinstance(error["message"], str) and isinstance(error["code"], int)
        assert error["status"] == "INVALID_ARGUMENT"
    elif expect == "anthropic":
        assert body["type"] == "error" and set(error) == {"type", "message"}
        assert body["request_id"].startswith("pg_")
    elif expect == "gemini":
        assert set(error) == {"code", "message", "status"} and isinstance(error["code"], int)
    else:
        assert set(error) == {"message", "type", "param", "code"}


@pytest.fixture
async def proxy(upstream, start_proxy):
    return await start_proxy(
        {"a": {"provider": "anthropic", "api_key": "sk-ant-hostile-0001", "base_url": upstream.url}},
        config="header_timeout_s = 2\nbody_min_bytes_per_s = 1000\n",
    )


async def test_every_hostile_case_is_a_4xx_json_error_in_the_endpoints_format(proxy, upstream) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    cases = corpus()
    assert len(cases) >= 50
    failures = []
    for case in cases:
        try:
            status, headers, body = await exchange(port, case.request, drip_s=case.drip_s)
            assert 400 <= status < 500, status
            assert headers["content-type"].startswith("application/json")
            assert headers["x-proxygate-request-id"].startswith("pg_")
            assert b"Traceback" not in body and b'File "' not in body
            assert_error_in(case.expect, orjson.loads(body))
            health = await exchange(port, http("/healthz", b"", method="GET"))
            assert (health[0], orjson.loads(health[2])["ok"]) == (200, True)
        except (AssertionError, KeyError, ValueError, IndexError, TimeoutError, OSError) as exc:
            failures.append(f"{case.name}: {exc.__class__.__name__} {exc}"[:300])
    assert failures == [], "\n".join(failures)
    assert upstream.requests == []
    # The server and its bookkeeping still work: four normal requests, four usage records.
    for path in (ANT, CHAT, RESP, GEM):
        status, _, _ = await exchange(port, http(path, orjson.dumps(valid(path))))
        assert (path, status) == (path, 200)
    store = proxy.app[STORE]
    store.flush()
    assert sum(row.totals.requests for row in store.usage(today())) == 4


async def test_a_stalled_body_is_answered_and_closed(proxy) -> None:
    """Content-Length 100, then 5 bytes and silence: a 408 in the client's format within the deadline."""
    port = int(proxy.url.rsplit(":", 1)[1])
    request = http(ANT, b'{"mo', headers={"Content-Length": "100"})
    status, headers, body = await exchange(port, request)
    assert status == 408
    assert headers["x-proxygate-request-id"].startswith("pg_")
    assert_error_in("anthropic", orjson.loads(body))


async def test_odd_but_valid_requests_are_served_and_recorded(proxy) -> None:
    """Bytes a client chose that are not errors (a non-UTF-8 session id, a 256-byte model) keep the store alive."""
    port = int(proxy.url.rsplit(":", 1)[1])
    odd = [
        http(ANT, orjson.dumps(valid(ANT))).replace(b"Host:", b"session_id: abc\xff\xfe\r\nHost:"),
        http(ANT, orjson.dumps(valid(ANT))).replace(b"Host:", b"x-claude-code-session-id: \xc3\x28\r\nHost:"),
        http(ANT, orjson.dumps(valid(ANT, model="claude-" + "é" * 124))),
        http(CHAT, orjson.dumps(valid(CHAT, prompt_cache_key="k" * 10_000))),
        http(RESP, orjson.dumps(valid(RESP, previous_response_id="\u0000\n" * 50))),
    ]
    for request in odd:
        status, _, _ = await exchange(port, request)
        assert status == 200
    status, _, _ = await exchange(port, http(ANT, orjson.dumps(valid(ANT))))
    assert status == 200
    store = proxy.app[STORE]
    store.flush()
    assert sum(row.totals.requests for row in store.usage(today())) == len(odd) + 1


async def test_the_real_serve_answers_parser_errors_as_json_and_guards_the_admin_api(tmp_path) -> None:
    """``proxygate serve`` (not the test runner) uses the same edge: parser errors, Host, token file."""
    served = await start_serve(tmp_path)
    port = served.port
    try:
        status, headers, body = await exchange(port, http(ANT, b"{}", headers={"X-Big": "a" * 70_000}))
        assert (status, orjson.loads(body)) == (
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "a request line or header is over the size limit",
                    "code": 400,
                    "status": "INVALID_ARGUMENT",
                },
            },
        )
        assert headers["x-proxygate-request-id"].startswith("pg_")
        token = served.admin_token()
        status, _, _ = await exchange(port, http("/admin/api/status", b"", method="GET"))
        assert status == 401
        authorized = {"Authorization": f"Bearer {token}"}
        status, _, _ = await exchange(port, http("/admin/api/status", b"", method="GET", headers=authorized))
        assert status == 200
        rebound = {**authorized, "Host": "attacker.example"}
        status, _, _ = await exchange(port, http("/admin/api/status", b"", method="GET", headers=rebound))
        assert status == 403
    finally:
        await served.stop()

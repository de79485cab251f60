"""Ingress: the path decides the client's format; the body is read once, checked, parsed once.

    POST /v1/messages               anthropic     (+ /v1/messages/count_tokens)
    POST /v1/chat/completions       chat
    POST /v1/responses              responses     (+ /v1/responses/compact)
    POST /v1beta/models/M:generateContent | :streamGenerateContent   gemini

Query strings (Claude Code's ``?beta=true``) are accepted and forwarded on the fast path.
Paths without the ``/v1`` prefix are accepted too: users often paste a base URL without it.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from aiohttp import web

from proxygate.call import Call, Op, new_request_id
from proxygate.config import Settings
from proxygate.errors import BodyTooLarge, ClientError, ProxyError, Unauthorized
from proxygate.server.keys import MODELS, PIPELINE, SETTINGS
from proxygate.wire.errors import client_status, error_body
from proxygate.wire.ir import Format

_GEMINI_ACTIONS = {"generateContent": False, "streamGenerateContent": True}


def presented_token(request: web.Request, fmt: Format) -> str:
    """The proxy token as any client can send it: Bearer, X-ProxyGate-Token, x-api-key, Gemini key."""
    headers = request.headers
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in ("x-proxygate-token", "x-api-key", "x-goog-api-key"):
        if value := headers.get(name):
            return value
    return request.query.get("key", "") if fmt is Format.gemini else ""


def check_token(settings: Settings, request: web.Request, fmt: Format) -> None:
    if settings.proxy_token and not hmac.compare_digest(
        presented_token(request, fmt).encode(), settings.proxy_token.encode()
    ):
        raise Unauthorized(
            "missing or wrong proxygate token (send it as Authorization: Bearer, X-ProxyGate-Token or x-api-key)"
        )


def render_error(fmt: Format, exc: ProxyError, request_id: str) -> web.Response:
    status = client_status(fmt, exc.error_class, exc.status)
    body = error_body(fmt, exc.error_class, exc.message, status=status, request_id=request_id)
    headers = {"x-proxygate-request-id": request_id}
    if status < 500 and status != 429:
        headers["x-should-retry"] = "false"
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


async def _read_call(
    request: web.Request,
    fmt: Format,
    request_id: str,
    *,
    op: Op,
    path_model: str | None,
    gemini_stream: bool | None,
) -> Call:
    settings = request.app[SETTINGS]
    check_token(settings, request, fmt)
    limit = settings.max_body_bytes
    if (request.content_length or 0) > limit:
        raise BodyTooLarge(f"request body over the {settings.max_body_mb:g} MB limit (max_body_mb)")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body over the {settings.max_body_mb:g} MB limit (max_body_mb)") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ClientError("request body must be a JSON object")
    model = path_model or body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError('missing "model"')
    if gemini_stream is not None:
        is_stream = gemini_stream
        query = urlencode([(k, v) for k, v in parse_qsl(request.query_string) if k != "key"])
    else:
        is_stream = body.get("stream") is True
        query = request.query_string
    options = body.get("stream_options")
    asks_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return Call(
        request_id,
        fmt,
        request.headers,
        body,
        raw,
        model,
        is_stream,
        query=query,
        op=op,
        asks_usage=asks_usage,
    )


def _handler(fmt: Format, op: Op = "generate") -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        path_model: str | None = None
        gemini_stream: bool | None = None
        try:
            if fmt is Format.gemini:
                target = request.match_info["target"]
                path_model, _, action = target.rpartition(":")
                if action not in _GEMINI_ACTIONS or not path_model:
                    raise ClientError(
                        f"unsupported Gemini method {target!r} (generateContent, streamGenerateContent)"
                    )
                gemini_stream = _GEMINI_ACTIONS[action]
            call = await _read_call(
                request, fmt, request_id, op=op, path_model=path_model, gemini_stream=gemini_stream
            )
        except ProxyError as exc:
            return render_error(fmt, exc, request_id)
        return await request.app[PIPELINE].handle(request, call)

    return handle


async def list_models(request: web.Request) -> web.Response:
    fmt = Format.gemini if request.path.startswith("/v1beta") else Format.chat
    request_id = new_request_id()
    try:
        check_token(request.app[SETTINGS], request, fmt)
    except ProxyError as exc:
        return render_error(fmt, exc, request_id)
    models = await request.app[MODELS].names()
    data: dict[str, Any]
    if fmt is Format.gemini:
        data = {
            "models": [
                {
                    "name": f"models/{m}",
                    "displayName": m,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
                }
                for m in models
            ]
        }
    else:
        # One body both SDKs read: OpenAI's list shape plus Anthropic's page fields.
        data = {
            "object": "list",
            "data": [
                {
                    "id": m,
                    "object": "model",
                    "type": "model",
                    "display_name": m,
                    "created": 0,
                    "created_at": "1970-01-01T00:00:00Z",
                    "owned_by": "proxygate",
                }
                for m in models
            ],
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }
    return web.json_response(
        data, dumps=lambda d: orjson.dumps(d).decode(), headers={"x-proxygate-request-id": request_id}
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/messages", _handler(Format.anthropic))
        app.router.add_post(f"{prefix}/messages/count_tokens", _handler(Format.anthropic, "count_tokens"))
        app.router.add_post(f"{prefix}/chat/completions", _handler(Format.chat))
        app.router.add_post(f"{prefix}/responses", _handler(Format.responses))
        app.router.add_post(f"{prefix}/responses/compact", _handler(Format.responses, "compact"))
    app.router.add_post("/v1beta/models/{target}", _handler(Format.gemini))
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1beta/models", list_models)
    app.router.add_get("/healthz", healthz)

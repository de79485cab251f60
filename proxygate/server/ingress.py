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
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from aiohttp import web

from proxygate.call import Call, Op
from proxygate.config import Settings
from proxygate.errors import BodyTooLarge, ClientError, ProxyError, Unauthorized
from proxygate.server.connections import read_body
from proxygate.server.guard import REQUEST_ID_HEADER, log_rejection, render_error, request_id
from proxygate.server.keys import MODELS, PIPELINE, SETTINGS, STORE, TENANT_BOOK
from proxygate.store.base import UsageRecord
from proxygate.wire.errors import client_status
from proxygate.wire.ir import TURNS_FIELD, Format

__all__ = ["add_routes", "check_shape", "check_token", "presented_token", "render_error"]

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


def check_token(settings: Settings, request: web.Request, fmt: Format) -> str:
    """The caller's tenant (``""``: the owner), or ``Unauthorized``.

    A tenant key is accepted wherever the proxy token is; once tenants exist a request needs
    one of them, or the proxy token when one is set (features/tenants.py).
    """
    book = request.app.get(TENANT_BOOK)
    if book is not None and book.tenants:
        tenant = book.authenticate(presented_token(request, fmt))
        if tenant is None:
            raise Unauthorized(
                "missing or wrong proxygate key (send your tenant key as Authorization: Bearer, "
                "x-api-key or x-goog-api-key)"
            )
        return tenant
    if settings.proxy_token and not hmac.compare_digest(
        presented_token(request, fmt).encode(), settings.proxy_token.encode()
    ):
        raise Unauthorized(
            "missing or wrong proxygate token (send it as Authorization: Bearer, X-ProxyGate-Token or x-api-key)"
        )
    return ""


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
    tenant = check_token(settings, request, fmt)
    limit = settings.max_body_bytes
    if (request.content_length or 0) > limit:
        raise BodyTooLarge(f"request body over the {settings.max_body_mb:g} MB limit (max_body_mb)")
    try:
        raw = await read_body(request, settings)  # within the body deadline (server/connections.py)
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body over the {settings.max_body_mb:g} MB limit (max_body_mb)") from None
    except web.RequestPayloadError:  # aiohttp's message quotes nothing useful; never echo input
        raise ClientError("the request body could not be read (bad content encoding or framing)") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ClientError("request body must be a JSON object")
    check_shape(fmt, body)
    model = path_model or body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError('missing "model"')
    check_model_name(model)
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
        tenant=tenant,
    )


MAX_MODEL_BYTES = 256
"Longest model name accepted (UTF-8 bytes): real ones are under 100, and the name is a store key."
MAX_DEPTH = 254
"Deepest JSON nesting accepted: what orjson can write back (the pipeline re-serialises bodies)."

# Top-level fields the pipeline reads (conversation key, conversion, stages) → the JSON types
# accepted; absent or null is always fine (the provider judges what is required).
_OBJECT, _ARRAY, _STRING, _BOOLEAN = dict, list, str, bool
_COMMON: dict[str, tuple[type, ...]] = {
    "model": (_STRING,),
    "metadata": (_OBJECT,),
    "tools": (_ARRAY,),
    "stream": (_BOOLEAN,),
    "stream_options": (_OBJECT,),
    "prompt_cache_key": (_STRING,),
    "previous_response_id": (_STRING,),
    "conversation": (_STRING, _OBJECT),
}
_FIELDS: dict[Format, dict[str, tuple[type, ...]]] = {
    Format.anthropic: {**_COMMON, "messages": (_ARRAY,), "system": (_STRING, _ARRAY)},
    Format.chat: {**_COMMON, "messages": (_ARRAY,)},
    Format.responses: {**_COMMON, "input": (_STRING, _ARRAY), "instructions": (_STRING,)},
    Format.gemini: {
        **_COMMON,
        "contents": (_ARRAY,),
        "systemInstruction": (_OBJECT, _STRING),
        "system_instruction": (_OBJECT, _STRING),
        "generationConfig": (_OBJECT,),
    },
}
_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def check_shape(fmt: Format, body: Mapping[str, Any]) -> None:
    """Raise ``ClientError`` when a field the pipeline reads has the wrong JSON type.

    Only what proxygate itself touches is checked; the provider still judges the rest. The
    body is parsed JSON, so a value's type is exactly one of the JSON types (a bool is not
    taken for a number).
    """
    for name, types in _FIELDS[fmt].items():
        value = body.get(name)
        if value is not None and type(value) not in types:
            expected = " or ".join(_JSON_TYPE[t] for t in types)
            raise ClientError(f'"{name}" must be {_article(expected)}, not {_type_name(value)}')
    turns = body.get(TURNS_FIELD[fmt])  # each of the conversation's items must be an object
    if type(turns) is list:
        for index, turn in enumerate(turns):
            if type(turn) is not dict:
                raise ClientError(f'"{TURNS_FIELD[fmt]}[{index}]" must be an object, not {_type_name(turn)}')
            role = turn.get("role")
            if role is not None and type(role) is not str:
                raise ClientError(
                    f'"{TURNS_FIELD[fmt]}[{index}].role" must be a string, not {_type_name(role)}'
                )
    # A body orjson cannot write back would fail later, wherever a stage or codec re-serialises
    # it; writing it costs a few percent of parsing it (0.05 ms for 244 KB).
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise ClientError(f"request body is nested deeper than {MAX_DEPTH} levels") from None


def check_model_name(model: str) -> None:
    if len(model.encode("utf-8", "surrogatepass")) > MAX_MODEL_BYTES:
        raise ClientError(f"model name is longer than {MAX_MODEL_BYTES} bytes")
    if not model.isprintable():
        raise ClientError("model name contains control characters")


def _type_name(value: Any) -> str:
    return "null" if value is None else _JSON_TYPE.get(type(value), type(value).__name__)


def _article(expected: str) -> str:
    return ("an " if expected[0] in "aeiou" else "a ") + expected


def _handler(fmt: Format, op: Op = "generate") -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        rid = request_id(request)
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
                request, fmt, rid, op=op, path_model=path_model, gemini_stream=gemini_stream
            )
        except ProxyError as exc:
            if exc.status in (401, 413):
                log_rejection(request, exc.status, exc.message)
            if not isinstance(exc, Unauthorized):  # an unauthenticated peer writes nothing to the store
                _record_refusal(request, fmt, rid, exc)
            return render_error(fmt, exc, rid)
        return await request.app[PIPELINE].handle(request, call)

    return handle


def _record_refusal(request: web.Request, fmt: Format, rid: str, exc: ProxyError) -> None:
    """A request refused before it became a call (body, shape, size): in the request log, so
    ``proxygate requests`` finds the id the client got; no account, so in no usage row."""
    status = client_status(fmt, exc.error_class, exc.status)
    request.app[STORE].record(
        UsageRecord(rid, time.time(), "", "", fmt.value, fmt.value, status, error_class=exc.error_class)
    )


async def list_models(request: web.Request) -> web.Response:
    fmt = Format.gemini if request.path.startswith("/v1beta") else Format.chat
    rid = request_id(request)
    try:
        tenant = check_token(request.app[SETTINGS], request, fmt)
    except ProxyError as exc:
        log_rejection(request, exc.status, exc.message)
        return render_error(fmt, exc, rid)
    catalog = request.app[MODELS]
    models = await catalog.names()
    if tenant and (book := request.app.get(TENANT_BOOK)) is not None:  # only what its --models allow
        models = [m for m in models if book.allows(tenant, m)]
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
                    "created": catalog.created_s,
                    "created_at": catalog.created_at,
                    "owned_by": "proxygate",
                }
                for m in models
            ],
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }
    return web.json_response(data, dumps=lambda d: orjson.dumps(d).decode(), headers={REQUEST_ID_HEADER: rid})


async def healthz(request: web.Request) -> web.Response:
    # The answering process: with ``serve --workers N`` it tells which worker took the connection.
    return web.json_response({"ok": True, "pid": os.getpid()})


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

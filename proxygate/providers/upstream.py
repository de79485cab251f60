"""Turning a leased account plus a request body into the HTTP request a provider expects.

One place knows each provider's URL layout and auth header (``pool/catalog.py`` holds the
facts). The client's own credentials and hop-by-hop headers never travel upstream; on the
fast path the client's protocol headers (``anthropic-version``, ``anthropic-beta``, OpenAI
and stainless headers) do. OAuth accounts add what subscriptions need (``providers/oauth``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from proxygate.call import Op
from proxygate.pool.records import Account, mask
from proxygate.providers.subscriptions import subscription_headers
from proxygate.wire.ir import Format

# Claude subscription tokens are refused without this beta (protocols.md §1.2, peers.md §3.1).
OAUTH_BETA = "oauth-2025-04-20"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"

# RFC 9110 §7.6.1 hop-by-hop headers, the client's credentials for *us*, what aiohttp sets
# itself, and what tells the provider about the browser or the hops in front of us (issue 10
# §4). The client's accept-encoding is replaced by identity (``build_request``).
_DROP_REQUEST_PREFIXES = ("x-proxygate-", "x-forwarded-")
_DROP_REQUEST = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "accept-encoding",
        "authorization",
        "x-api-key",
        "x-goog-api-key",
        "cookie",
        "origin",
        "referer",
        "forwarded",
        "x-real-ip",
    }
)
_DROP_RESPONSE = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}
)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]


def endpoint(account: Account, fmt: Format, model: str, *, is_stream: bool, op: Op = "generate") -> str:
    base = account.base_url
    match fmt:
        case Format.anthropic:
            return f"{base}/v1/messages/count_tokens" if op == "count_tokens" else f"{base}/v1/messages"
        case Format.chat:
            return f"{base}/chat/completions"
        case Format.responses:
            return f"{base}/responses/compact" if op == "compact" else f"{base}/responses"
        case Format.gemini:
            method = "streamGenerateContent?alt=sse" if is_stream else "generateContent"
            return f"{base}/v1beta/models/{quote(model, safe='')}:{method}"


def auth_headers(account: Account) -> dict[str, str]:
    match account.spec.auth:
        case "x-api-key":
            return {"x-api-key": account.credential}
        case "x-goog-api-key":
            return {"x-goog-api-key": account.credential}
        case "bearer":
            return {"authorization": f"Bearer {account.credential}"}


def merge_beta(existing: str, beta: str) -> str:
    """Add ``beta`` to a comma-separated ``anthropic-beta`` list, never replacing the client's."""
    items = [b.strip() for b in existing.split(",") if b.strip()]
    return ",".join(items if beta in items else [*items, beta])


def build_request(
    account: Account,
    fmt: Format,
    model: str,
    client_headers: Mapping[str, str],
    *,
    is_stream: bool,
    same_format: bool,
    op: Op = "generate",
    query: str = "",
) -> UpstreamRequest:
    """The URL and headers for sending a request in ``fmt`` to ``account``."""
    headers: dict[str, str] = {}
    if same_format:
        for name, value in client_headers.items():
            lower = name.lower()
            if lower not in _DROP_REQUEST and not lower.startswith(_DROP_REQUEST_PREFIXES):
                headers[lower] = value
    headers["content-type"] = "application/json"
    # Else aiohttp asks for gzip, deflate: usage is sniffed from the bytes, and loopback
    # clients gain nothing from compression (relay.py still inflates an upstream that insists).
    headers["accept-encoding"] = "identity"
    headers["accept"] = "text/event-stream" if is_stream else "application/json"
    if fmt is Format.anthropic:
        headers.setdefault("anthropic-version", DEFAULT_ANTHROPIC_VERSION)
        if account.kind == "claude":
            headers["anthropic-beta"] = merge_beta(headers.get("anthropic-beta", ""), OAUTH_BETA)
    headers.update(auth_headers(account))
    headers.update(subscription_headers(account, client_headers))
    url = endpoint(account, fmt, model, is_stream=is_stream, op=op)
    if query and same_format and fmt is not Format.gemini:
        url = f"{url}?{query}"
    return UpstreamRequest(url, headers)


def scrub(account: Account, text: str) -> str:
    """``text`` from the upstream with the account's own credentials masked (``sk-…f3a9``).

    Providers echo a rejected key in their 401 message (``invalid x-api-key sk-ant-…``); what
    they say is logged, stored as a cooldown reason and shown to clients (issue 10 §5).
    """
    for secret in (account.api_key, account.access_token, account.refresh_token):
        if secret and secret in text:
            text = text.replace(secret, mask(secret))
    return text


def scrub_bytes(account: Account, body: bytes) -> bytes:
    """``scrub`` for a body passed on verbatim."""
    for secret in (account.api_key, account.access_token, account.refresh_token):
        raw = secret.encode()
        if raw and raw in body:
            body = body.replace(raw, mask(secret).encode())
    return body


def response_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    """Provider headers passed back to the client (request ids, rate limits), minus hop-by-hop."""
    # Lower-cased keys: callers may set or drop headers without caring how the provider spelt them.
    return {name: v for k, v in upstream.items() if (name := k.lower()) not in _DROP_RESPONSE}

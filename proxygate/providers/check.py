"""``proxygate check``: one minimal live call through one account, straight to its provider."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from proxygate.config import TimeoutSettings
from proxygate.errors import UpstreamError
from proxygate.pool.records import Account
from proxygate.providers.upstream import build_request
from proxygate.wire.ir import Format


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: int
    latency_ms: float
    said: str


def minimal_body(fmt: Format, model: str) -> dict[str, Any]:
    match fmt:
        case Format.anthropic:
            return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Say ok."}]}
        case Format.chat:
            return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Say ok."}]}
        case Format.responses:
            return {"model": model, "max_output_tokens": 16, "input": "Say ok."}
        case Format.gemini:
            return {
                "contents": [{"role": "user", "parts": [{"text": "Say ok."}]}],
                "generationConfig": {"maxOutputTokens": 8},
            }


async def check_account(account: Account, model: str, timeouts: TimeoutSettings) -> CheckResult:
    fmt = account.formats[0]
    req = build_request(account, fmt, model, {}, is_stream=False, same_format=False)
    timeout = aiohttp.ClientTimeout(total=timeouts.first_byte_s, sock_connect=timeouts.connect_s)
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=True) as session,
            session.post(req.url, data=orjson.dumps(minimal_body(fmt, model)), headers=req.headers) as resp,
        ):
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise UpstreamError(f"{account.id}: {type(exc).__name__}: {exc}") from None
    latency_ms = (time.monotonic() - started) * 1000
    return CheckResult(status, latency_ms, raw.decode("utf-8", "replace")[:400])

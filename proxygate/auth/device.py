"""The ChatGPT device-code login (peers.md §3.2), for machines without a browser.

Ask for a user code; the user opens ``https://auth.openai.com/codex/device`` anywhere and
types it; meanwhile we poll. The poll answers ``authorization_pending`` until the user is
done (keep polling), ``slow_down`` when we poll too fast (add 5 s to the interval, RFC 8628
§3.5), and finally an authorization code plus the PKCE verifier the server made for it, which
go through the normal code exchange with the device redirect URI.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from proxygate.auth.pkce import LoginError
from proxygate.auth.tokens import CODEX_USER_AGENT, TOKEN_TIMEOUT, error_code
from proxygate.config import OpenAIOAuthSettings

# RFC 8628 §3.5: on slow_down the interval grows by 5 seconds.
SLOW_DOWN_STEP_S = 5.0
DEFAULT_INTERVAL_S = 5.0
# The server's interval is used within these bounds: 0 would poll thousands of times a
# second, NaN or an hour would hang the login (RFC 8628 §3.2 suggests 5 s).
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 60.0
DEVICE_TIMEOUT_S = 15 * 60.0  # the user code's lifetime (peers.md §3.2)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeviceCode:
    device_auth_id: str
    user_code: str
    interval_s: float
    verify_url: str


@dataclass(frozen=True, slots=True)
class DeviceGrant:
    authorization_code: str
    code_verifier: str


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, str]) -> tuple[int, Any]:
    headers = {"accept": "application/json", "user-agent": CODEX_USER_AGENT}
    try:
        async with session.post(url, json=body, headers=headers, timeout=TOKEN_TIMEOUT) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise LoginError(f"device login: {url} unreachable: {type(exc).__name__}") from exc
    try:
        return status, orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return status, {}


async def request_device_code(session: aiohttp.ClientSession, settings: OpenAIOAuthSettings) -> DeviceCode:
    status, body = await _post(session, settings.device_code_url, {"client_id": settings.client_id})
    if (
        status >= 400
        or not isinstance(body, dict)
        or not body.get("device_auth_id")
        or not body.get("user_code")
    ):
        code, message = error_code(body)
        raise LoginError(f"device login refused: HTTP {status} {code} {message}".strip())
    return DeviceCode(
        str(body["device_auth_id"]),
        str(body["user_code"]),
        poll_interval_s(body.get("interval")),
        settings.device_verify_url,
    )


def poll_interval_s(value: Any) -> float:
    """The server's poll interval (a number or numeric string), clamped to 1–60 s; 5 s if absent."""
    if value is None or value == "" or isinstance(value, bool):
        return DEFAULT_INTERVAL_S
    try:
        interval = float(value)
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_INTERVAL_S
    if not math.isfinite(interval):
        return DEFAULT_INTERVAL_S if math.isnan(interval) else MAX_INTERVAL_S
    return min(max(interval, MIN_INTERVAL_S), MAX_INTERVAL_S)


async def poll_device_grant(
    session: aiohttp.ClientSession,
    settings: OpenAIOAuthSettings,
    device: DeviceCode,
    *,
    sleep: Sleep = asyncio.sleep,
    timeout_s: float = DEVICE_TIMEOUT_S,
) -> DeviceGrant:
    """Poll until the user approved; ``LoginError`` on denial, expiry or timeout."""
    interval = poll_interval_s(device.interval_s)
    deadline = time.monotonic() + timeout_s
    body_out = {"device_auth_id": device.device_auth_id, "user_code": device.user_code}
    while True:
        status, body = await _post(session, settings.device_token_url, body_out)
        if status < 400 and isinstance(body, dict) and body.get("authorization_code"):
            return DeviceGrant(str(body["authorization_code"]), str(body.get("code_verifier") or ""))
        code, message = error_code(body)
        # CPA sees 403/404 while the user has not approved yet; RFC 8628 says authorization_pending.
        if code == "slow_down":
            interval = min(interval + SLOW_DOWN_STEP_S, MAX_INTERVAL_S)
        elif code not in ("authorization_pending", "") or status not in (400, 403, 404, 428):
            raise LoginError(f"device login failed: HTTP {status} {code} {message}".strip())
        if time.monotonic() + interval > deadline:
            raise LoginError("device login timed out: the code was not approved in time; start again")
        await sleep(interval)

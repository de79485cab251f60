"""OAuth token endpoints of the two subscriptions: code exchange, refresh, and what comes back.

The one idea: a token endpoint answers either a ``TokenSet`` or a ``TokenEndpointError``
whose ``is_terminal`` says whether retrying can ever help. ChatGPT refresh tokens rotate and
are single-use (peers.md §3.2): a second use is ``refresh_token_reused``, and only a new
login fixes that, so the account must be marked "needs re-auth", not retried.

The two providers differ in encoding only: OpenAI's endpoint takes form fields, Anthropic's
takes JSON (peers.md §3.1). Identity comes from the OpenAI ``id_token`` claims (read without
verification: we got it from the token endpoint over TLS, we only label the account with it).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import orjson

from proxygate.config import OAuthSettings
from proxygate.errors import ProxyError

OAuthKind = Literal["claude", "chatgpt"]

# Error codes after which the refresh token is dead for good (peers.md §3.2; RFC 6749 §5.2).
TERMINAL_CODES = frozenset(
    {"refresh_token_reused", "refresh_token_expired", "refresh_token_invalidated", "invalid_grant"}
)

# The token endpoints answer in well under a second; a hung one must not hold a refresh lock.
TOKEN_TIMEOUT = aiohttp.ClientTimeout(total=30)

# The Codex backend and auth server expect the Codex CLI's originator and User-Agent form
# (peers.md §3.2: ``codex_cli_rs/<ver> (<os>; <arch>)``).
CODEX_ORIGINATOR = "codex_cli_rs"
CODEX_USER_AGENT = "codex_cli_rs/0.50.0 (proxygate)"

_OPENAI_AUTH_CLAIM = "https://api.openai.com/auth"
_OPENAI_PROFILE_CLAIM = "https://api.openai.com/profile"


class TokenEndpointError(ProxyError):
    """The token endpoint refused or failed; ``code`` is its error code, never a token."""

    error_class = "authentication"
    status = 401

    def __init__(self, message: str, *, code: str = "", is_terminal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.is_terminal = is_terminal


@dataclass(frozen=True, slots=True)
class TokenSet:
    """An access token, the refresh token that renews it, and when the access token expires."""

    access_token: str
    refresh_token: str
    expires_at: float | None = None
    "Epoch seconds; None when unknown (then only a 401 triggers a refresh)."
    id_token: str = ""

    def expires_within(self, seconds: float, now: float) -> bool:
        return self.expires_at is not None and self.expires_at - now <= seconds

    def file_fields(self, now: float) -> dict[str, Any]:
        """The pool-file keys these tokens set (merged into the file, other keys kept)."""
        fields: dict[str, Any] = {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "last_refresh": iso(now),
        }
        if self.expires_at is not None:
            fields["expires_at"] = iso(self.expires_at)
        if self.id_token:
            fields["id_token"] = self.id_token
        return fields


def iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified; {} when ``token`` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


LAST_DATE_TS = 253_402_300_799
"9999-12-31T23:59:59Z: the last expiry a date can hold."
MAX_EXPIRES_IN_S = 10 * 366 * 86400
"A token endpoint's ``expires_in`` beyond this (or not above 0) is ignored: the JWT's own expiry is used."


def jwt_expiry(token: str) -> float | None:
    exp = jwt_claims(token).get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool) and 0 < exp <= LAST_DATE_TS:
        return float(exp)
    return None


@dataclass(frozen=True, slots=True)
class ChatGPTIdentity:
    email: str
    account_id: str
    plan: str


def chatgpt_identity(id_token: str) -> ChatGPTIdentity:
    """Email, ChatGPT account (workspace) id and plan from the id_token (peers.md §3.2)."""
    claims = jwt_claims(id_token)
    auth = claims.get(_OPENAI_AUTH_CLAIM)
    auth = auth if isinstance(auth, dict) else {}
    profile = claims.get(_OPENAI_PROFILE_CLAIM)
    profile = profile if isinstance(profile, dict) else {}
    email = claims.get("email") or profile.get("email") or ""
    return ChatGPTIdentity(
        email=str(email),
        account_id=str(auth.get("chatgpt_account_id") or ""),
        plan=str(auth.get("chatgpt_plan_type") or ""),
    )


def parse_token_response(data: Any, *, previous_refresh: str = "", now: float | None = None) -> TokenSet:
    """A token endpoint's success body as a ``TokenSet``; a missing refresh token keeps the old one."""
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("access_token"), str)
        or not data["access_token"]
    ):
        raise TokenEndpointError("the token endpoint answered without an access_token")
    now = time.time() if now is None else now
    access = data["access_token"]
    refresh = data.get("refresh_token") or previous_refresh
    if not isinstance(refresh, str) or not refresh:
        raise TokenEndpointError("the token endpoint answered without a refresh_token")
    expires_in = data.get("expires_in")
    # Bounded: the expiry is written as a date, and a year past 9999 cannot be (the refresh
    # token is spent by then, so failing here would lose the login).
    if (
        isinstance(expires_in, int | float)
        and not isinstance(expires_in, bool)
        and 0 < expires_in <= MAX_EXPIRES_IN_S
    ):
        expires_at: float | None = now + float(expires_in)
    else:
        expires_at = jwt_expiry(access)
    id_token = data.get("id_token")
    return TokenSet(access, refresh, expires_at, id_token if isinstance(id_token, str) else "")


def error_code(body: Any) -> tuple[str, str]:
    """(code, message) from an OAuth error body: RFC 6749 ``error`` or OpenAI's ``error.code``."""
    if not isinstance(body, dict):
        return "", ""
    err = body.get("error")
    if isinstance(err, dict):
        code = err.get("code") or err.get("type") or ""
        return str(code), str(err.get("message") or "")[:200]
    if isinstance(err, str):
        return err, str(body.get("error_description") or "")[:200]
    code = body.get("code")
    return (str(code), str(body.get("message") or "")[:200]) if isinstance(code, str) else ("", "")


async def post_token(
    session: aiohttp.ClientSession,
    url: str,
    fields: Mapping[str, str],
    *,
    as_json: bool,
    user_agent: str = "",
) -> dict[str, Any]:
    """POST to a token endpoint; the JSON answer, or ``TokenEndpointError`` naming the code."""
    headers = {"accept": "application/json"}
    if user_agent:
        headers["user-agent"] = user_agent
    kwargs: dict[str, Any] = {"json": dict(fields)} if as_json else {"data": dict(fields)}
    try:
        async with session.post(url, headers=headers, timeout=TOKEN_TIMEOUT, **kwargs) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise TokenEndpointError(f"token endpoint unreachable: {type(exc).__name__}") from exc
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = {}
    if status >= 400:
        code, message = error_code(body)
        detail = f"{code}: {message}" if message else code or raw[:120].decode("utf-8", "replace")
        raise TokenEndpointError(
            f"token endpoint HTTP {status}: {detail}".rstrip(": "),
            code=code,
            is_terminal=code in TERMINAL_CODES,
        )
    if not isinstance(body, dict):
        raise TokenEndpointError("token endpoint answered something other than a JSON object")
    return body


async def refresh_grant(
    session: aiohttp.ClientSession, kind: OAuthKind, settings: OAuthSettings, refresh_token: str
) -> TokenSet:
    """Spend ``refresh_token`` once for a new ``TokenSet`` (which may carry a new refresh token)."""
    if kind == "chatgpt":
        o = settings.openai
        # Form-encoded, scope without offline_access, as the Codex CLI refreshes (peers.md §3.2).
        fields = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": o.client_id,
            "scope": "openid profile email",
        }
        body = await post_token(session, o.token_url, fields, as_json=False, user_agent=CODEX_USER_AGENT)
    else:
        c = settings.claude
        fields = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": c.client_id}
        body = await post_token(session, c.token_url, fields, as_json=True)
    return parse_token_response(body, previous_refresh=refresh_token)


async def exchange_code(
    session: aiohttp.ClientSession,
    kind: OAuthKind,
    settings: OAuthSettings,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
    state: str = "",
) -> tuple[TokenSet, dict[str, Any]]:
    """Trade an authorization code (PKCE) for tokens; also returns the raw body (Claude's account info)."""
    if kind == "chatgpt":
        o = settings.openai
        fields = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": o.client_id,
            "code_verifier": verifier,
        }
        body = await post_token(session, o.token_url, fields, as_json=False, user_agent=CODEX_USER_AGENT)
    else:
        c = settings.claude
        fields = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": c.client_id,
            "code_verifier": verifier,
            "state": state,
        }
        body = await post_token(session, c.token_url, fields, as_json=True)
    return parse_token_response(body), body

"""Credentials from logins and from other tools' files, as pool-file entries.

Three sources become one shape (the pool file of ``pool/records.py``):

    Claude Code      ``~/.claude/.credentials.json``: ``{"claudeAiOauth": {"accessToken",
                     "refreshToken", "expiresAt" (epoch ms), "subscriptionType", …}}`` (peers.md §3.1)
    Codex CLI        ``~/.codex/auth.json``: ``{"tokens": {"id_token", "access_token",
                     "refresh_token", "account_id"}, "last_refresh"}`` (peers.md §3.2)
    a login          a ``TokenSet`` from the token endpoint (plus id_token claims)

proxygate's own pool-file format is accepted wherever a Claude Code file is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from proxygate.auth.tokens import TokenSet, chatgpt_identity, iso, jwt_expiry
from proxygate.errors import PoolError
from proxygate.pool import files
from proxygate.pool.files import load_pool
from proxygate.pool.records import InvalidAccount
from proxygate.store.secrets import Vault


def read_json(path: Path) -> Any:
    """A credential file's JSON; ``PoolError`` naming the file (never its content) otherwise."""
    try:
        return files.read_json(path)
    except InvalidAccount as exc:
        raise PoolError(f"{path}: {exc}") from None


def claude_entry(data: Any, *, email: str, source: Path) -> dict[str, Any]:
    """A Claude Code credential file (or a proxygate pool file) as a ``pool/claude`` entry."""
    if not isinstance(data, dict):
        raise PoolError(f"{source}: expected a JSON object")
    oauth = data.get("claudeAiOauth")
    if isinstance(oauth, dict):
        entry: dict[str, Any] = {
            "email": email,
            "access_token": oauth.get("accessToken"),
            "refresh_token": oauth.get("refreshToken"),
            "expires_at": _rfc3339(oauth.get("expiresAt"), source),
        }
        if oauth.get("subscriptionType"):
            entry["plan"] = oauth["subscriptionType"]
        if oauth.get("rateLimitTier"):
            entry["rate_limit_tier"] = oauth["rateLimitTier"]
        if oauth.get("scopes"):
            entry["scopes"] = oauth["scopes"]
    elif data.get("access_token"):
        entry = {k: v for k, v in data.items() if k not in ("id", "kind")}
        entry["email"] = email or str(data.get("email") or "")
    else:
        raise PoolError(f'{source}: neither a Claude Code credential file ("claudeAiOauth") nor a pool file')
    if not entry.get("access_token") or not entry.get("refresh_token"):
        raise PoolError(f"{source}: no access and refresh token in it (is Claude Code logged in?)")
    if not entry["email"]:
        raise PoolError(f"{source}: the file names no account; pass --email")
    return entry


def _rfc3339(expires_at_ms: Any, source: Path) -> str | None:
    """Claude Code's ``expiresAt`` (epoch ms) as the RFC 3339 time our pool files hold."""
    if expires_at_ms is None or isinstance(expires_at_ms, str):
        return expires_at_ms
    if isinstance(expires_at_ms, bool) or not isinstance(expires_at_ms, int | float):
        raise PoolError(f'{source}: "expiresAt" is not a time')
    try:
        return iso(expires_at_ms / 1000)
    except (OverflowError, OSError, ValueError):
        raise PoolError(f'{source}: "expiresAt" is out of range') from None


def is_codex_auth(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("tokens"), dict)


def codex_entry(data: Any, *, source: Path) -> dict[str, Any]:
    """The Codex CLI's ``auth.json`` as a ``pool/chatgpt`` entry (identity from the id_token)."""
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, dict) or not tokens.get("access_token") or not tokens.get("refresh_token"):
        raise PoolError(f"{source}: no ChatGPT login in it (an API-key-only auth.json cannot be pooled)")
    access = str(tokens["access_token"])
    identity = chatgpt_identity(str(tokens.get("id_token") or ""))
    entry: dict[str, Any] = {
        "kind": "chatgpt",
        "email": identity.email,
        "account_id": str(tokens.get("account_id") or identity.account_id),
        "plan": identity.plan,
        "access_token": access,
        "refresh_token": str(tokens["refresh_token"]),
        "id_token": str(tokens.get("id_token") or ""),
    }
    if (expires := jwt_expiry(access)) is not None:
        entry["expires_at"] = iso(expires)
    if isinstance(data.get("last_refresh"), str):
        entry["last_refresh"] = data["last_refresh"]
    if not entry["email"] or not entry["account_id"]:
        raise PoolError(f"{source}: the id_token names no email or ChatGPT account id")
    return entry


def chatgpt_login_entry(tokens: TokenSet, now: float) -> dict[str, Any]:
    """A fresh ChatGPT login's pool entry; identity from the id_token claims (peers.md §3.2)."""
    identity = chatgpt_identity(tokens.id_token)
    if not identity.email or not identity.account_id:
        raise PoolError("the login's id_token names no email or ChatGPT account id; not saved")
    return {
        "email": identity.email,
        "account_id": identity.account_id,
        "plan": identity.plan,
        **tokens.file_fields(now),
    }


def claude_login_entry(tokens: TokenSet, body: dict[str, Any], *, email: str, now: float) -> dict[str, Any]:
    """A fresh Claude login's pool entry; the email from the token answer's account, or ``email``."""
    account = body.get("account")
    found = account.get("email_address") if isinstance(account, dict) else None
    email = email or (found if isinstance(found, str) else "")
    if not email:
        raise PoolError("the login did not say which account it is; pass --email")
    return {"email": email, **tokens.file_fields(now)}


def chatgpt_file_name(pool_dir: Path, email: str, account_id: str, vault: Vault | None = None) -> str:
    """``<email>``, or ``<email>.<account id>`` when the email already has another workspace."""
    for account in load_pool(pool_dir, vault).accounts:
        if (
            account.kind == "chatgpt"
            and account.email.lower() == email.lower()
            and account.account_id != account_id
        ):
            return f"{email}.{account_id}"
    existing = pool_dir / "chatgpt" / f"{email}.json"
    if existing.exists():
        try:
            if orjson.loads(existing.read_bytes()).get("account_id") not in (None, account_id):
                return f"{email}.{account_id}"
        except (OSError, orjson.JSONDecodeError, AttributeError):
            pass
    return email

"""Credentials from logins and from other tools' files, as pool-file entries.

Three sources become one shape (the pool file of ``pool/records.py``):

    Claude Code      ``~/.claude/.credentials.json``: ``{"claudeAiOauth": {"accessToken",
                     "refreshToken", "expiresAt" (epoch ms), "subscriptionType", …}}`` (peers.md §3.1)
    Codex CLI        ``~/.codex/auth.json``: ``{"tokens": {"id_token", "access_token",
                     "refresh_token", "account_id"}, "last_refresh"}`` (peers.md §3.2)
    a login          a ``TokenSet`` from the token endpoint (plus id_token claims)

proxygate's own pool-file format is accepted wherever a Claude Code file is.

``import --local`` finds the two CLIs' files in the user's home (``local_logins``). With
``--share`` the pool file remembers the CLI's file as ``shared_file``: the CLI and proxygate then
hold one single-use refresh token, so before each refresh the keeper re-reads that file
(``read_shared_tokens``) and afterwards writes the rotated tokens back (``write_shared_tokens``),
in the CLI's own shape, every other key kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from proxygate.auth.tokens import TokenSet, chatgpt_identity, iso, jwt_expiry
from proxygate.errors import PoolError
from proxygate.pool import files
from proxygate.pool.files import load_pool
from proxygate.pool.records import InvalidAccount
from proxygate.store.files import write_bytes_atomic
from proxygate.store.secrets import Vault

LocalKind = Literal["claude", "chatgpt"]


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


# -- the official CLIs' own files (import --local, --share) --------------------------------------


@dataclass(frozen=True, slots=True)
class LocalLogin:
    """A CLI's login found on this machine, as the pool entry it becomes."""

    kind: LocalKind
    source: Path
    "The CLI's credential file."
    name: str
    "The pool file's name (the email)."
    entry: dict[str, Any]


def claude_dir(home: Path, environ: Mapping[str, str]) -> Path:
    """Claude Code's config dir: $CLAUDE_CONFIG_DIR, else ~/.claude."""
    return (
        Path(environ["CLAUDE_CONFIG_DIR"]).expanduser()
        if environ.get("CLAUDE_CONFIG_DIR")
        else home / ".claude"
    )


def codex_dir(home: Path, environ: Mapping[str, str]) -> Path:
    """The Codex CLI's home: $CODEX_HOME, else ~/.codex."""
    return Path(environ["CODEX_HOME"]).expanduser() if environ.get("CODEX_HOME") else home / ".codex"


def local_login_files(home: Path, environ: Mapping[str, str]) -> list[tuple[LocalKind, Path]]:
    """The CLIs' credential files that exist here (Claude Code first, then Codex)."""
    found: list[tuple[LocalKind, Path]] = []
    claude = claude_dir(home, environ) / ".credentials.json"
    codex = codex_dir(home, environ) / "auth.json"
    if claude.is_file():
        found.append(("claude", claude))
    if codex.is_file():
        found.append(("chatgpt", codex))
    return found


def claude_email(home: Path, environ: Mapping[str, str]) -> str:
    """The email Claude Code is logged in as: ``oauthAccount.emailAddress`` in its ~/.claude.json."""
    candidates = [home / ".claude.json"]
    if environ.get("CLAUDE_CONFIG_DIR"):
        candidates.insert(0, claude_dir(home, environ) / ".claude.json")
    for path in candidates:
        with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError):
            account = orjson.loads(path.read_bytes()).get("oauthAccount")
            email = account.get("emailAddress") if isinstance(account, dict) else None
            if isinstance(email, str) and email:
                return email
    return ""


def local_logins(
    home: Path, environ: Mapping[str, str], *, email: str = ""
) -> tuple[list[LocalLogin], list[str]]:
    """The logins of the CLIs on this machine, and one line per file that could not be used."""
    logins: list[LocalLogin] = []
    problems: list[str] = []
    for kind, path in local_login_files(home, environ):
        try:
            data = read_json(path)
            if kind == "claude":
                entry = claude_entry(data, email=email or claude_email(home, environ), source=path)
            else:
                entry = codex_entry(data, source=path)
                entry.pop("kind", None)
        except PoolError as exc:
            problems.append(exc.message)
            continue
        logins.append(LocalLogin(kind, path, str(entry["email"]), entry))
    return logins, problems


def read_shared_tokens(path: Path) -> TokenSet:
    """The tokens in a CLI's credential file (Claude Code's or Codex's); ``PoolError`` otherwise."""
    data = read_json(path)
    oauth = data.get("claudeAiOauth") if isinstance(data, dict) else None
    if isinstance(oauth, dict):
        access, refresh = oauth.get("accessToken"), oauth.get("refreshToken")
        expires_ms = oauth.get("expiresAt")
        expires = (
            expires_ms / 1000
            if isinstance(expires_ms, int | float) and not isinstance(expires_ms, bool)
            else None
        )
        id_token = ""
    elif is_codex_auth(data):
        tokens = data["tokens"]
        access, refresh = tokens.get("access_token"), tokens.get("refresh_token")
        expires = jwt_expiry(str(access or ""))
        id_token = str(tokens.get("id_token") or "")
    else:
        raise PoolError(f"{path}: not a Claude Code or Codex credential file any more")
    if not isinstance(access, str) or not isinstance(refresh, str) or not access or not refresh:
        raise PoolError(f"{path}: no access and refresh token in it (logged out?)")
    return TokenSet(access, refresh, expires if expires is not None else jwt_expiry(access), id_token)


def write_shared_tokens(path: Path, tokens: TokenSet, now: float) -> None:
    """Put rotated tokens back into a CLI's credential file in its own shape, other keys kept."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise PoolError(f"{path}: expected a JSON object")
    oauth = data.get("claudeAiOauth")
    if isinstance(oauth, dict):
        oauth["accessToken"] = tokens.access_token
        oauth["refreshToken"] = tokens.refresh_token
        if tokens.expires_at is not None:
            oauth["expiresAt"] = int(tokens.expires_at * 1000)  # Claude Code keeps epoch ms
    elif is_codex_auth(data):
        data["tokens"]["access_token"] = tokens.access_token
        data["tokens"]["refresh_token"] = tokens.refresh_token
        if tokens.id_token:
            data["tokens"]["id_token"] = tokens.id_token
        data["last_refresh"] = iso(now)
    else:
        raise PoolError(f"{path}: not a Claude Code or Codex credential file any more")
    write_bytes_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))

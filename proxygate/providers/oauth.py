"""Keeping subscription tokens fresh: one refresh at a time, on disk before use.

The pipeline asks ``await keeper.fresh(account)`` before sending and gets the account with a
token valid for at least ``refresh_margin_s``; after a 401 it asks ``refresh_after_401``. The
idea to grasp first: a refresh token is single-use (peers.md §3.2), so two refreshes of one
account — two requests in this process, or two proxygate processes on one pool — would log
the account out. Hence, per account:

    asyncio.Lock          one refresh per account in this process
    fcntl.flock           one refresh per account file across processes (``.<name>.lock``)
    re-read under lock    a token another process rotated a moment ago is reused, not refreshed
    write, then use       the new tokens reach the file (0600, atomic) before any request uses them
    shared with a CLI     ``shared_file`` (import --local --share): the CLI's file is re-read under
                          the lock first (the CLI may have refreshed), the rotated tokens written back
    sealed stays sealed   tokens are written encrypted when [secrets] encrypt is on or the file
                          is encrypted already (``store/secrets.py``); reads decrypt

The record the broker holds may be stale (the watcher reloads a changed file a little later),
so the keeper remembers what it refreshed; a record that changed on disk from outside (a new
login, another process) wins over that memory. A refusal the token endpoint calls terminal
raises ``ReauthRequired``: the pipeline releases the lease as "needs re-auth" and fails over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from proxygate.auth.credentials import read_shared_tokens, write_shared_tokens
from proxygate.auth.tokens import OAuthKind, TokenEndpointError, TokenSet, jwt_expiry, refresh_grant
from proxygate.config import OAuthSettings
from proxygate.errors import PoolError, UpstreamError
from proxygate.pool.files import LOCK_POLL_S, lock_path, open_lock, open_secrets, sealed_for, took_lock
from proxygate.pool.records import Account, InvalidAccount
from proxygate.store.files import write_json_atomic
from proxygate.store.secrets import Vault

log = logging.getLogger("proxygate.oauth")

Clock = Callable[[], float]


class ReauthRequired(UpstreamError):
    """The account's refresh token is dead; only a new login helps. Never retried."""

    error_class = "authentication"
    status = 401


class RefreshFailed(UpstreamError):
    """A refresh failed for a reason that may pass (network, 5xx, a file we cannot read)."""


@dataclass(frozen=True, slots=True)
class _Remembered:
    tokens: TokenSet
    replaced: str
    "The access token the refresh replaced: a record still holding it is merely stale."


def record_tokens(account: Account) -> TokenSet:
    """The tokens an account record holds; a JWT's ``exp`` stands in for a missing expiry."""
    expires = account.expires_at.timestamp() if account.expires_at else jwt_expiry(account.access_token)
    return TokenSet(
        account.access_token, account.refresh_token, expires, str(account.raw.get("id_token") or "")
    )


def shared_file(account: Account) -> Path | None:
    """The CLI credential file this account shares its login with (``import --local --share``)."""
    shared = account.raw.get("shared_file")
    return Path(shared).expanduser() if isinstance(shared, str) and shared else None


def with_tokens(account: Account, tokens: TokenSet) -> Account:
    if tokens.access_token == account.access_token and tokens.refresh_token == account.refresh_token:
        return account
    expires = datetime.fromtimestamp(tokens.expires_at, UTC) if tokens.expires_at is not None else None
    return dataclasses.replace(
        account, access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_at=expires
    )


def read_file_tokens(path: Path, vault: Vault | None = None) -> TokenSet:
    """The tokens in an account file now; ``RefreshFailed`` naming the file if it is unreadable."""
    try:
        data = open_secrets(orjson.loads(path.read_bytes()), vault)
    except OSError as exc:
        raise RefreshFailed(f"{path}: cannot read: {exc.strerror}; not refreshed") from None
    except orjson.JSONDecodeError:
        raise RefreshFailed(f"{path}: malformed JSON; not refreshed (fix or re-add the account)") from None
    except InvalidAccount as exc:  # sealed under a key that is not here
        raise RefreshFailed(f"{path}: {exc}; not refreshed") from None
    if not isinstance(data, dict) or not data.get("access_token") or not data.get("refresh_token"):
        raise RefreshFailed(f'{path}: missing "access_token" or "refresh_token"; not refreshed')
    access, refresh = str(data["access_token"]), str(data["refresh_token"])
    expires: float | None = None
    raw_expiry = data.get("expires_at")
    if isinstance(raw_expiry, int | float) and not isinstance(raw_expiry, bool):
        expires = raw_expiry / 1000 if raw_expiry > 1e11 else float(raw_expiry)
    elif isinstance(raw_expiry, str) and raw_expiry:
        with contextlib.suppress(ValueError):
            expires = datetime.fromisoformat(raw_expiry.replace("Z", "+00:00")).timestamp()
    return TokenSet(access, refresh, expires if expires is not None else jwt_expiry(access))


def write_file_tokens(path: Path, tokens: TokenSet, now: float, vault: Vault | None = None) -> None:
    """Merge new tokens into the account file (unknown keys kept), atomically, mode 0600.

    Sealed when ``[secrets] encrypt`` is on or the file is sealed already (keyring calls: run
    this in a thread, as the keeper does).
    """
    current: dict[str, Any] = orjson.loads(path.read_bytes())
    try:
        data = sealed_for(vault, current, {**current, **tokens.file_fields(now)})
    except PoolError as exc:
        raise RefreshFailed(f"{path}: {exc.message}") from None
    write_json_atomic(path, data)


@contextlib.asynccontextmanager
async def file_lock(path: Path, timeout_s: float) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``path``, waited for without blocking the loop."""
    fd = await asyncio.to_thread(open_lock, path)
    try:
        deadline = time.monotonic() + timeout_s
        while not took_lock(fd):
            if time.monotonic() > deadline:
                raise RefreshFailed(f"{path}: another process holds the refresh lock for {timeout_s:.0f}s")
            await asyncio.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class TokenKeeper:
    """Fresh credentials for OAuth accounts; see the module docstring for the rules."""

    def __init__(
        self,
        settings: OAuthSettings,
        session: aiohttp.ClientSession,
        *,
        clock: Clock = time.time,
        vault: Vault | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.clock = clock
        self.vault = vault
        self._remembered: dict[str, _Remembered] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.refreshes = 0
        "Refresh grants spent by this keeper (for tests and status)."

    def current(self, account: Account) -> TokenSet:
        """The newest tokens known for ``account``: our last refresh, unless the file moved on."""
        record = record_tokens(account)
        seen = self._remembered.get(account.id)
        if seen is not None and record.access_token in (seen.replaced, seen.tokens.access_token):
            return seen.tokens
        return record

    async def fresh(self, account: Account) -> Account:
        """``account`` with a token valid for at least the refresh margin (refreshing if needed)."""
        if not account.is_oauth:
            return account
        tokens = self.current(account)
        if not self._is_expiring(tokens):
            return with_tokens(account, tokens)
        async with self._lock(account.id):
            tokens = self.current(account)
            if self._is_expiring(tokens):
                tokens = await self._refresh(account, tokens)
        return with_tokens(account, tokens)

    async def refresh_after_401(self, account: Account, used_token: str) -> Account:
        """Once after a 401: refresh, unless someone already replaced ``used_token``."""
        async with self._lock(account.id):
            tokens = self.current(account)
            if tokens.access_token == used_token:
                tokens = await self._refresh(account, tokens, is_forced=True)
        return with_tokens(account, tokens)

    def _is_expiring(self, tokens: TokenSet) -> bool:
        return tokens.expires_within(self.settings.refresh_margin_s, self.clock())

    def _lock(self, account_id: str) -> asyncio.Lock:
        return self._locks.setdefault(account_id, asyncio.Lock())

    async def _refresh(self, account: Account, stale: TokenSet, *, is_forced: bool = False) -> TokenSet:
        if account.path is None:  # an account without a file (tests, API-built pools)
            return self._remember(account, stale, await self._grant(account, stale.refresh_token))
        shared = shared_file(account)
        async with file_lock(lock_path(account.path), self.settings.lock_timeout_s):
            on_disk = await asyncio.to_thread(read_file_tokens, account.path, self.vault)
            if shared is not None:
                on_disk = await self._adopt_shared(account, shared, on_disk)
            rotated = on_disk.access_token != stale.access_token
            if rotated and not (self._is_expiring(on_disk) and not is_forced):
                # Another process refreshed a moment ago: its refresh token is the live one now.
                log.info("%s: token was refreshed by another process; reusing it", account.id)
                return self._remember(account, stale, on_disk)
            fresh = await self._grant(account, on_disk.refresh_token)
            # Disk before use: if we crashed after using the token but before writing, the
            # spent refresh token would be all the file had (peers.md §3.2, single-use).
            await asyncio.to_thread(write_file_tokens, account.path, fresh, self.clock(), self.vault)
            if shared is not None:
                await self._write_shared(account, shared, fresh)
            return self._remember(account, stale, fresh)

    async def _adopt_shared(self, account: Account, shared: Path, on_disk: TokenSet) -> TokenSet:
        """The CLI's file, re-read under the lock: when the CLI refreshed on its own, its tokens
        are the live ones (ours were spent), so they go into the pool file first."""
        assert account.path is not None
        try:
            theirs = await asyncio.to_thread(read_shared_tokens, shared)
        except PoolError as exc:
            log.warning(
                "%s: shared login unreadable (%s); refreshing from the pool file", account.id, exc.message
            )
            return on_disk
        if theirs.refresh_token == on_disk.refresh_token:
            return on_disk
        log.info("%s: %s was refreshed by its CLI; using its tokens", account.id, shared)
        await asyncio.to_thread(write_file_tokens, account.path, theirs, self.clock(), self.vault)
        return theirs

    async def _write_shared(self, account: Account, shared: Path, fresh: TokenSet) -> None:
        try:
            await asyncio.to_thread(write_shared_tokens, shared, fresh, self.clock())
        except (PoolError, OSError) as exc:
            # The pool file holds the live token; the CLI will need a new login.
            message = exc.message if isinstance(exc, PoolError) else exc.strerror
            log.error("%s: could not write the new tokens back to %s: %s", account.id, shared, message)

    async def _grant(self, account: Account, refresh_token: str) -> TokenSet:
        kind: OAuthKind = "chatgpt" if account.kind == "chatgpt" else "claude"
        self.refreshes += 1
        try:
            tokens = await refresh_grant(self.session, kind, self.settings, refresh_token)
        except TokenEndpointError as exc:
            if exc.is_terminal:
                log.error("%s: refresh refused (%s); needs re-auth: log in again", account.id, exc.code)
                raise ReauthRequired(f"{account.id}: needs re-auth: refresh refused ({exc.code})") from None
            log.warning("%s: refresh failed: %s", account.id, exc.message)
            raise RefreshFailed(f"{account.id}: token refresh failed: {exc.message}") from None
        log.info("%s: access token refreshed", account.id)
        return tokens

    def _remember(self, account: Account, stale: TokenSet, tokens: TokenSet) -> TokenSet:
        self._remembered[account.id] = _Remembered(tokens, stale.access_token)
        return tokens

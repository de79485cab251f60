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
    shared store          with several instances (issue 17), each holding its own copy of the
                          account file: under the local locks, the store's lock
                          ``refresh:<account id>``; its ``tokens`` record, newer than ours, is
                          adopted (and written to our file) instead of refreshing; a refresh
                          reaches the store (sealed when [secrets] encrypt is on) before the file
                          and before use. Store unreachable: the local rules above, logged

The record the broker holds may be stale (the watcher reloads a changed file a little later),
so the keeper remembers what it refreshed; a record that changed on disk from outside (a new
login, another process) wins over that memory, and tokens another instance stored win over
both when they expire later (the store announces them: that instance may have spent our
refresh token, and the provider may have revoked our access token). A refusal the token endpoint calls terminal
raises ``ReauthRequired``: the pipeline releases the lease as "needs re-auth" and fails over.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
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
from proxygate.store.base import TOKENS, Store, StoreUnavailable
from proxygate.store.files import write_json_atomic
from proxygate.store.secrets import SECRET_FIELDS, SecretUnavailable, Vault, is_sealed

log = logging.getLogger("proxygate.oauth")

Clock = Callable[[], float]

REFRESH_LOCK_TTL_S = 45.0
"The store's refresh lock outlives a grant (TOKEN_TIMEOUT, 30 s); a crashed holder's lock lapses after it."
SHARED_POLL_S = 0.05
"How often a refresh waiting on another instance's looks again at the lock and the stored tokens."


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


def is_newer(theirs: TokenSet, ours: TokenSet) -> bool:
    """Whether ``theirs`` replaced ``ours``: other tokens, unless ours are known to expire later."""
    if theirs.access_token == ours.access_token:
        return False
    return not (
        ours.expires_at is not None and theirs.expires_at is not None and ours.expires_at > theirs.expires_at
    )


def shared_record(tokens: TokenSet, now: float, vault: Vault | None) -> dict[str, Any]:
    """The store's ``tokens`` record: sealed when [secrets] encrypt is on (keyring: call in a thread)."""
    record: dict[str, Any] = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": tokens.expires_at,
        "id_token": tokens.id_token,
        "refreshed_at": now,
    }
    return vault.seal_fields(record) if vault is not None and vault.is_encrypting else record


def shared_tokens(record: Mapping[str, Any], vault: Vault | None) -> TokenSet:
    """The tokens of a store record; ``SecretUnavailable`` when it is sealed under a key not here."""
    if any(is_sealed(record.get(name)) for name in SECRET_FIELDS):
        if vault is None:
            raise SecretUnavailable("the stored tokens are encrypted and no keys were given")
        record = vault.open_fields(record)
    access, refresh = record.get("access_token"), record.get("refresh_token")
    if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
        raise SecretUnavailable('the stored tokens lack "access_token" or "refresh_token"')
    expires = record.get("expires_at")
    return TokenSet(
        access,
        refresh,
        float(expires) if isinstance(expires, int | float) and not isinstance(expires, bool) else None,
        str(record.get("id_token") or ""),
    )


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
        store: Store | None = None,
    ) -> None:
        """``store``: refreshes are coordinated through it and their tokens shared (issue 17)."""
        self.settings = settings
        self.session = session
        self.clock = clock
        self.vault = vault
        self.store = store
        self._remembered: dict[str, _Remembered] = {}
        self._shared: dict[str, TokenSet] = {}
        "Tokens another instance stored, by account (the store announces each write)."
        self._locks: dict[str, asyncio.Lock] = {}
        self._is_store_down = False
        "Whether the fallback to local coordination was logged (once per outage)."
        self.refreshes = 0
        "Refresh grants spent by this keeper (for tests and status)."
        if store is not None:
            store.on_change(self._on_stored)

    def current(self, account: Account) -> TokenSet:
        """The newest tokens known for ``account``: our last refresh, unless the file moved on;
        tokens another instance stored when they replaced those."""
        record = record_tokens(account)
        seen = self._remembered.get(account.id)
        if seen is not None and record.access_token in (seen.replaced, seen.tokens.access_token):
            record = seen.tokens
        theirs = self._shared.get(account.id)
        return theirs if theirs is not None and is_newer(theirs, record) else record

    def _on_stored(self, namespace: str, account_id: str, value: dict[str, Any] | None) -> None:
        """Another instance stored (or removed) an account's tokens."""
        if namespace != TOKENS:
            return
        if value is None:
            self._shared.pop(account_id, None)
            return
        try:  # on the loop: the Vault caches its key (the keyring, if any, is asked once per process)
            self._shared[account_id] = shared_tokens(value, self.vault)
        except SecretUnavailable as exc:
            log.warning("%s: tokens stored by another instance cannot be read (%s)", account_id, exc.message)

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
            return await self._refresh_shared(account, stale, stale, is_forced=is_forced)
        shared = shared_file(account)
        async with file_lock(lock_path(account.path), self.settings.lock_timeout_s):
            on_disk = await asyncio.to_thread(read_file_tokens, account.path, self.vault)
            if shared is not None:
                on_disk = await self._adopt_shared(account, shared, on_disk)
            return await self._refresh_shared(account, stale, on_disk, is_forced=is_forced)

    async def _refresh_shared(
        self, account: Account, stale: TokenSet, local: TokenSet, *, is_forced: bool
    ) -> TokenSet:
        """Under the local locks: take the store's lock, then reuse or refresh ``local``
        (the tokens of our file), the store's tokens when another instance replaced them."""
        name = f"refresh:{account.id}"
        fencing, theirs = await self._take_refresh_lock(account.id, name, stale, local)
        try:
            live = theirs if theirs is not None and is_newer(theirs, local) else local
            rotated = live.access_token != stale.access_token
            if rotated and not (self._is_expiring(live) and not is_forced):
                # Another process or instance refreshed a moment ago: its refresh token is the live one now.
                log.info("%s: token was refreshed by another %s; reusing it", account.id,
                         "process" if live is local else "instance")  # fmt: skip
                if live is not local:  # our copies still hold the refresh token it spent
                    await self._write_files(account, live)
                return self._remember(account, stale, live)
            fresh = await self._grant(account, live.refresh_token)
            # Store, then disk, then use: if we crashed after using the token but before writing,
            # the spent refresh token would be all the others had (peers.md §3.2, single-use).
            if fencing is not None:
                await self._publish(account.id, fresh)
            await self._write_files(account, fresh)
            return self._remember(account, stale, fresh)
        finally:
            if self.store is not None and fencing is not None:
                await self.store.unlock(name, fencing)

    async def _take_refresh_lock(
        self, account_id: str, name: str, stale: TokenSet, ours: TokenSet
    ) -> tuple[str | None, TokenSet | None]:
        """(fencing token, the store's tokens) once we hold the store's refresh lock; (None, their
        tokens) when another instance replaced ``stale`` with usable ones while we waited;
        (None, None) with no store."""
        store = self.store
        if store is None:
            return None, None
        deadline = time.monotonic() + self.settings.lock_timeout_s
        while True:
            fencing = await store.lock(name, REFRESH_LOCK_TTL_S)
            theirs = await self._read_stored(account_id)
            if fencing is not None:
                if store.degraded:  # the store's per-process fallback lock
                    self._note_store_down(account_id, store.degraded)
                return fencing, theirs
            if (
                theirs is not None
                and theirs.access_token != stale.access_token
                and is_newer(theirs, ours)
                and not self._is_expiring(theirs)
            ):
                return None, theirs
            if time.monotonic() > deadline:
                raise RefreshFailed(
                    f"{account_id}: another instance holds the refresh lock for "
                    f"{self.settings.lock_timeout_s:.0f}s"
                )
            await asyncio.sleep(SHARED_POLL_S)

    async def _read_stored(self, account_id: str) -> TokenSet | None:
        assert self.store is not None
        record = await self.store.read_state(TOKENS, account_id)
        if record is None:
            return None
        try:
            theirs = await asyncio.to_thread(shared_tokens, record, self.vault)
        except SecretUnavailable as exc:
            log.warning("%s: the stored tokens cannot be read (%s); not used", account_id, exc.message)
            return None
        self._shared[account_id] = theirs
        return theirs

    async def _publish(self, account_id: str, fresh: TokenSet) -> None:
        """The new tokens into the store, for the other instances, before anyone uses them."""
        assert self.store is not None
        record = await asyncio.to_thread(shared_record, fresh, self.clock(), self.vault)
        try:
            await self.store.write_state(TOKENS, account_id, record)
        except StoreUnavailable as exc:
            # Our file keeps them. Queued, they reach the store when it is back and the others
            # adopt them; until then the others' copies hold the refresh token we just spent.
            self._note_store_down(account_id, str(exc))
            self.store.put_state(TOKENS, account_id, record)
            return
        self._shared[account_id] = fresh
        self._is_store_down = False

    def _note_store_down(self, account_id: str, why: str) -> None:
        if not self._is_store_down:
            self._is_store_down = True
            log.warning("%s: shared store unreachable (%s); refresh coordinated on this machine only",
                        account_id, why)  # fmt: skip

    async def _write_files(self, account: Account, tokens: TokenSet) -> None:
        """The pool file, then the CLI's file it shares a login with (if any)."""
        if account.path is not None:
            await asyncio.to_thread(write_file_tokens, account.path, tokens, self.clock(), self.vault)
        if (shared := shared_file(account)) is not None:
            await self._write_shared(account, shared, tokens)

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

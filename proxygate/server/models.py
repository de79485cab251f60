"""``GET /v1/models``: what the pool can actually serve, never a fake static list.

Each enabled account is asked for its provider's model list (cached for ``TTL_S``), and the
answer is filtered by the account's own model globs; model names an account file lists
literally, and the alias names clients may ask for, are added. An account that cannot be
asked (offline, no list endpoint) contributes its literal names only, and is asked again
after ``FAILED_TTL_S``: one failed listing must not hide its models for ten minutes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import orjson

from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.providers.upstream import auth_headers
from proxygate.wire.ir import Format

log = logging.getLogger("proxygate.models")

TTL_S = 600.0
# A failed listing (offline, 5xx, a blip) is retried soon, yet not on every /v1/models call.
FAILED_TTL_S = 20.0
FETCH_TIMEOUT_S = 5.0
_GLOB_CHARS = frozenset("*?[")


class ModelCatalog:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        pool: Callable[[], PoolSnapshot],
        aliases: dict[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.pool = pool
        self.aliases = aliases
        self.clock = clock
        # Cached per account: (clock time the entry expires, model names).
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        # What the list shows as each model's creation time: when this server started listing.
        self.created_s = int(time.time())

    @property
    def created_at(self) -> str:
        """``created_s`` as RFC 3339, for Anthropic's ``created_at``."""
        return (
            datetime.fromtimestamp(self.created_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        )

    async def names(self) -> list[str]:
        accounts = [a for a in self.pool().accounts if not a.disabled]
        found = await asyncio.gather(*(self._account_models(a) for a in accounts))
        names = {m for models in found for m in models}
        names.update(
            alias for alias, target in self.aliases.items() if any(a.serves(target) for a in accounts)
        )
        return sorted(names)

    async def _account_models(self, account: Account) -> tuple[str, ...]:
        literal = tuple(m for m in account.models if not _GLOB_CHARS & set(m))
        cached = self._cache.get(account.id)
        if cached and self.clock() < cached[0]:
            return cached[1]
        try:
            listed = await self._fetch(account)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug("model list of %s unavailable: %s", account.id, exc)
            listed = None
        ttl_s = FAILED_TTL_S if listed is None else TTL_S
        models = tuple(sorted({*literal, *(m for m in listed or () if account.serves(m))}))
        self._cache[account.id] = (self.clock() + ttl_s, models)
        return models

    async def _fetch(self, account: Account) -> list[str] | None:
        """The provider's model names; None when the listing failed (worth asking again soon)."""
        fmt = account.formats[0]
        if fmt is Format.anthropic:
            url, headers = f"{account.base_url}/v1/models?limit=1000", {"anthropic-version": "2023-06-01"}
        elif fmt is Format.gemini:
            url, headers = f"{account.base_url}/v1beta/models", {}
        elif account.kind == "chatgpt":
            return []  # the Codex backend has no public list endpoint
        else:
            url, headers = f"{account.base_url}/models", {}
        headers.update(auth_headers(account))
        async with asyncio.timeout(FETCH_TIMEOUT_S), self.session.get(url, headers=headers) as resp:
            if resp.status != 200:
                log.debug("model list of %s: HTTP %d", account.id, resp.status)
                return None
            data = orjson.loads(await resp.read())
        if not isinstance(data, dict):
            return None
        if fmt is Format.gemini:
            listed = data.get("models")
            key, prefix = "name", "models/"
        else:
            listed = data.get("data")
            key, prefix = "id", ""
        if not isinstance(listed, list):
            return None
        return [str(m.get(key, "")).removeprefix(prefix) for m in listed if isinstance(m, dict)]

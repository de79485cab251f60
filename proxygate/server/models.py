"""``GET /v1/models``: what the pool can actually serve, never a fake static list.

Each enabled account is asked for its provider's model list (cached for ``TTL_S``), and the
answer is filtered by the account's own model globs; model names an account file lists
literally, and the alias names clients may ask for, are added. An account that cannot be
asked (offline, no list endpoint) contributes its literal names only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
import orjson

from proxygate.pool.files import PoolSnapshot
from proxygate.pool.records import Account
from proxygate.providers.upstream import auth_headers
from proxygate.wire.ir import Format

log = logging.getLogger("proxygate.models")

TTL_S = 600.0
FETCH_TIMEOUT_S = 5.0
_GLOB_CHARS = frozenset("*?[")


class ModelCatalog:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        pool: Callable[[], PoolSnapshot],
        aliases: dict[str, str],
    ) -> None:
        self.session = session
        self.pool = pool
        self.aliases = aliases
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}

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
        if cached and time.monotonic() - cached[0] < TTL_S:
            return cached[1]
        try:
            listed = await self._fetch(account)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug("model list of %s unavailable: %s", account.id, exc)
            listed = []
        models = tuple(sorted({*literal, *(m for m in listed if account.serves(m))}))
        self._cache[account.id] = (time.monotonic(), models)
        return models

    async def _fetch(self, account: Account) -> list[str]:
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
                return []
            data = orjson.loads(await resp.read())
        if fmt is Format.gemini:
            return [str(m.get("name", "")).removeprefix("models/") for m in data.get("models", [])]
        return [str(m.get("id", "")) for m in data.get("data", []) if isinstance(m, dict)]

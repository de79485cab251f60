"""The subscriptions' free usage endpoints: where they are and how to ask (peers.md §3.1, §3.2).

Parsing what they answer into ``Headroom`` windows is the broker's (``broker/headroom.py``);
polling them on a schedule is the server's (``server/quota_poll.py``).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from proxygate.auth.tokens import CODEX_USER_AGENT
from proxygate.config import OAuthSettings
from proxygate.errors import UpstreamError
from proxygate.pool.records import Account
from proxygate.providers.upstream import OAUTH_BETA

USAGE_TIMEOUT = aiohttp.ClientTimeout(total=20)


def usage_request(account: Account, settings: OAuthSettings) -> tuple[str, dict[str, str]]:
    """URL and headers of the usage endpoint for ``account`` (whose token is fresh)."""
    auth = {"authorization": f"Bearer {account.access_token}", "accept": "application/json"}
    if account.kind == "chatgpt":
        return settings.openai.usage_url, {
            **auth,
            "chatgpt-account-id": account.account_id,
            "user-agent": CODEX_USER_AGENT,
        }
    return settings.claude.usage_url, {**auth, "anthropic-beta": OAUTH_BETA}


async def fetch_usage(session: aiohttp.ClientSession, account: Account, settings: OAuthSettings) -> Any:
    """One account's usage document; ``UpstreamError`` (status kept) when the endpoint refuses."""
    url, headers = usage_request(account, settings)
    try:
        async with session.get(url, headers=headers, timeout=USAGE_TIMEOUT) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise UpstreamError(f"{account.id}: usage endpoint unreachable: {type(exc).__name__}") from exc
    if status >= 400:
        raise UpstreamError(f"{account.id}: usage endpoint HTTP {status}", status=status)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{account.id}: usage endpoint answered no JSON") from None

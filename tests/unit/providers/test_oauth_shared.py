"""Refresh through a store shared by instances: one grant for copies of one account, stored before use.

Two keepers stand for two instances: each has its own copy of the account file (its own pool
dir) and both use one store, whose lock and ``tokens`` record coordinate them (issue 17).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from proxygate.config import SecretsSettings, StoreSettings
from proxygate.pool.records import Account
from proxygate.providers.oauth import TokenKeeper
from proxygate.server.tasks import supervise
from proxygate.store.base import TOKENS
from proxygate.store.lmdb_store import LMDBStore
from proxygate.store.redis_store import RedisStore
from proxygate.store.secrets import SECRET_FIELDS, Vault, is_sealed, new_key_text
from tests import oauth_fakes
from tests.oauth_fakes import FakeAuthServer, account_file
from tests.redis_server import RedisServer

auth_server = oauth_fakes.auth_server  # the fake authorization server fixture


def file_tokens(account: Account) -> tuple[str, str]:
    assert account.path is not None
    data = orjson.loads(account.path.read_bytes())
    return data["access_token"], data["refresh_token"]


@pytest.mark.parametrize("kind", ["chatgpt", "claude"])
async def test_two_instances_with_copies_of_an_expiring_account_refresh_it_once(
    tmp_path: Path, auth_server: FakeAuthServer, kind: str
) -> None:
    store = LMDBStore(tmp_path / "data")
    mine, theirs = (
        account_file(tmp_path / "A", kind, expires_in_s=60),
        account_file(tmp_path / "B", kind, expires_in_s=60),
    )
    auth_server.delay_s = 0.05
    async with aiohttp.ClientSession() as session:
        a = TokenKeeper(auth_server.settings(), session, store=store)
        b = TokenKeeper(auth_server.settings(), session, store=store)
        results = await asyncio.gather(
            *(k.fresh(acc) for _ in range(50) for k, acc in ((a, mine), (b, theirs)))
        )
    assert [g["refresh_token"] for g in auth_server.refreshes] == ["rt-0"]
    assert {r.access_token for r in results} == {"at-1"}
    # The one that waited adopted the stored tokens into its own file: its rt-0 is spent.
    assert file_tokens(mine) == file_tokens(theirs) == ("at-1", "rt-1")
    stored = store.get_states(TOKENS)["dev@example.com"]
    assert (stored["access_token"], stored["refresh_token"]) == ("at-1", "rt-1")
    store.close()


async def test_after_a_401_the_tokens_another_instance_stored_are_adopted_not_refreshed(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    store = LMDBStore(tmp_path / "data")
    mine = account_file(tmp_path / "A", "chatgpt", expires_in_s=60)
    theirs = account_file(tmp_path / "B", "chatgpt", expires_in_s=3000)  # not due yet on B
    async with aiohttp.ClientSession() as session:
        assert (
            await TokenKeeper(auth_server.settings(), session, store=store).fresh(mine)
        ).access_token == "at-1"
        b = TokenKeeper(auth_server.settings(), session, store=store)
        assert (await b.fresh(theirs)).access_token == "at-0"  # valid as far as B knows
        # The provider revoked at-0 when A refreshed: B's 401 finds A's tokens in the store.
        assert (await b.refresh_after_401(theirs, "at-0")).access_token == "at-1"
    assert len(auth_server.refreshes) == 1
    assert file_tokens(theirs) == ("at-1", "rt-1")
    store.close()


async def test_with_secrets_at_rest_the_stored_tokens_are_sealed(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    """Instances share the data key ([secrets] key); the store never holds a token in clear."""
    key = new_key_text()

    def vault(name: str) -> Vault:
        return Vault(SecretsSettings(encrypt=True, key=key), tmp_path / name / "data", keyring=None)

    store = LMDBStore(tmp_path / "data")
    mine = account_file(tmp_path / "A", "claude", expires_in_s=60)
    theirs = account_file(tmp_path / "B", "claude", expires_in_s=60)
    async with aiohttp.ClientSession() as session:
        a = TokenKeeper(auth_server.settings(), session, store=store, vault=vault("A"))
        b = TokenKeeper(auth_server.settings(), session, store=store, vault=vault("B"))
        fresh = await asyncio.gather(a.fresh(mine), b.fresh(theirs))
    assert [f.access_token for f in fresh] == ["at-1", "at-1"]
    assert len(auth_server.refreshes) == 1
    stored = store.get_states(TOKENS)["dev@example.com"]
    assert all(is_sealed(stored[name]) for name in SECRET_FIELDS if stored.get(name))
    assert "at-1" not in orjson.dumps(stored).decode() and "rt-1" not in orjson.dumps(stored).decode()
    store.close()


async def test_with_redis_unreachable_a_refresh_falls_back_to_the_local_locks(
    redis_server: RedisServer, tmp_path: Path, auth_server: FakeAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Refreshed as without a store (file before use, logged once); the tokens reach Redis once it is back."""
    store = RedisStore(StoreSettings(backend="redis", redis_url=redis_server.url))
    await store.start()
    stop = asyncio.Event()
    mine = account_file(tmp_path / "A", "claude", expires_in_s=60)
    async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tasks:
        for name, run in store.tasks(stop).items():
            tasks.create_task(supervise(name, run, stop=stop))
        try:
            await asyncio.to_thread(redis_server.stop)
            keeper = TokenKeeper(auth_server.settings(), session, store=store)
            results = await asyncio.gather(*(keeper.fresh(mine) for _ in range(10)))
            assert file_tokens(mine) == ("at-1", "rt-1")  # on disk before use, as without a store
            await asyncio.to_thread(redis_server.start)
            redis = aioredis.from_url(redis_server.url)
            for _ in range(150):  # the store reconnects at least every 5 s: 15 s is plenty
                if stored := await redis.hget("proxygate:state:tokens", "dev@example.com"):
                    break
                await asyncio.sleep(0.1)
            await redis.aclose()
            assert stored and orjson.loads(stored)["access_token"] == "at-1"
        finally:
            stop.set()
            store.wake()
    await asyncio.to_thread(store.close)
    assert {r.access_token for r in results} == {"at-1"}
    assert len(auth_server.refreshes) == 1
    fallback = [r.message for r in caplog.records if "refresh coordinated on this machine only" in r.message]
    assert len(fallback) == 1  # logged once

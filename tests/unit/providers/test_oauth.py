"""TokenKeeper: one refresh at a time, new tokens on disk before use, terminal refusals."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxygate.pool.files import load_file
from proxygate.providers.oauth import ReauthRequired, RefreshFailed, TokenKeeper, lock_path
from tests import oauth_fakes
from tests.oauth_fakes import FakeAuthServer, account_file, run_together

auth_server = oauth_fakes.auth_server  # the fake authorization server fixture


@pytest.mark.parametrize("kind", ["chatgpt", "claude"])
async def test_hundred_concurrent_requests_on_an_expiring_token_refresh_once(
    tmp_path: Path, auth_server: FakeAuthServer, kind: str
) -> None:
    account = account_file(tmp_path, kind, expires_in_s=60)  # inside the 5-minute margin
    auth_server.delay_s = 0.05
    async with aiohttp.ClientSession() as session:
        keeper = TokenKeeper(auth_server.settings(), session)
        results = await asyncio.gather(*(keeper.fresh(account) for _ in range(100)))
    assert len(auth_server.refreshes) == 1
    assert {a.access_token for a in results} == {"at-1"}
    grant = auth_server.refreshes[0]
    if kind == "chatgpt":  # form-encoded, the Codex CLI's client id and scope (peers.md §3.2)
        assert grant == {
            "grant_type": "refresh_token",
            "refresh_token": "rt-0",
            "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
            "scope": "openid profile email",
        }
    else:  # JSON, Claude Code's client id (peers.md §3.1)
        assert grant == {
            "grant_type": "refresh_token",
            "refresh_token": "rt-0",
            "client_id": "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
        }


async def test_refreshed_tokens_are_on_disk_0600_with_unknown_keys_kept(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    account = account_file(tmp_path, "chatgpt", expires_in_s=10, note="keep me")
    async with aiohttp.ClientSession() as session:
        fresh = await TokenKeeper(auth_server.settings(), session).fresh(account)
    assert account.path is not None
    on_disk = orjson.loads(account.path.read_bytes())
    assert (on_disk["access_token"], on_disk["refresh_token"], on_disk["note"]) == ("at-1", "rt-1", "keep me")
    assert on_disk["last_refresh"].endswith("Z") and on_disk["expires_at"].endswith("Z")
    assert stat.S_IMODE(account.path.stat().st_mode) == 0o600
    assert fresh.access_token == "at-1"
    assert lock_path(account.path).name == ".dev@example.com.lock"


async def test_a_valid_token_is_not_refreshed(tmp_path: Path, auth_server: FakeAuthServer) -> None:
    account = account_file(tmp_path, "claude", expires_in_s=3600)
    async with aiohttp.ClientSession() as session:
        assert await TokenKeeper(auth_server.settings(), session).fresh(account) is account
    assert auth_server.grants == []


async def test_a_token_another_process_just_rotated_is_reused(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    account = account_file(tmp_path, "chatgpt", expires_in_s=10)
    assert account.path is not None
    rotated = {
        **orjson.loads(account.path.read_bytes()),
        "access_token": "at-other",
        "refresh_token": "rt-other",
    }
    rotated["expires_at"] = time.time() + 3600
    account.path.write_bytes(orjson.dumps(rotated))  # the record we hold is now stale
    async with aiohttp.ClientSession() as session:
        fresh = await TokenKeeper(auth_server.settings(), session).fresh(account)
    assert auth_server.grants == []
    assert (fresh.access_token, fresh.refresh_token) == ("at-other", "rt-other")


async def test_the_keeper_remembers_its_refresh_until_the_record_catches_up(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    account = account_file(tmp_path, "chatgpt", expires_in_s=10)
    async with aiohttp.ClientSession() as session:
        keeper = TokenKeeper(auth_server.settings(), session)
        await keeper.fresh(account)
        again = await keeper.fresh(account)  # stale record (watcher not yet reloaded)
        assert account.path is not None
        reloaded = await keeper.fresh(load_file("chatgpt", account.path))
    assert len(auth_server.refreshes) == 1
    assert again.access_token == reloaded.access_token == "at-1"


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"code": "refresh_token_reused", "message": "already used"}},
        {"error": {"code": "refresh_token_expired", "message": "expired"}},
        {"error": {"code": "refresh_token_invalidated", "message": "revoked"}},
        {"error": "invalid_grant", "error_description": "Refresh token not found or invalid"},
    ],
)
async def test_terminal_refresh_errors_require_reauth(
    tmp_path: Path, auth_server: FakeAuthServer, body: dict[str, object]
) -> None:
    account = account_file(tmp_path, "chatgpt", expires_in_s=10)
    auth_server.push_token(400, body)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(
            ReauthRequired, match=r"^dev@example.com: needs re-auth: refresh refused \(\w+\)$"
        ):
            await TokenKeeper(auth_server.settings(), session).fresh(account)
    assert account.path is not None
    assert orjson.loads(account.path.read_bytes())["refresh_token"] == "rt-0"  # nothing overwritten


async def test_a_server_error_is_not_terminal(tmp_path: Path, auth_server: FakeAuthServer) -> None:
    account = account_file(tmp_path, "claude", expires_in_s=10)
    auth_server.push_token(503, {"error": {"type": "overloaded_error", "message": "busy"}})
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RefreshFailed, match=r"token refresh failed: token endpoint HTTP 503"):
            await TokenKeeper(auth_server.settings(), session).fresh(account)


async def test_a_corrupted_credential_file_is_a_clear_error_and_left_alone(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    account = account_file(tmp_path, "chatgpt", expires_in_s=10)
    assert account.path is not None
    account.path.write_bytes(b'{"access_token": "at-0", trunc')
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RefreshFailed, match=r"dev@example.com.json: malformed JSON; not refreshed"):
            await TokenKeeper(auth_server.settings(), session).fresh(account)
    assert account.path.read_bytes() == b'{"access_token": "at-0", trunc'
    assert auth_server.grants == []


async def test_after_a_401_one_refresh_even_when_many_saw_it(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    account = account_file(tmp_path, "claude", expires_in_s=3600)
    async with aiohttp.ClientSession() as session:
        keeper = TokenKeeper(auth_server.settings(), session)
        results = await asyncio.gather(*(keeper.refresh_after_401(account, "at-0") for _ in range(20)))
    assert len(auth_server.refreshes) == 1
    assert {a.access_token for a in results} == {"at-1"}


CHILD = """
import asyncio, sys, aiohttp
from pathlib import Path
from proxygate.config import ClaudeOAuthSettings, OAuthSettings, OpenAIOAuthSettings
from proxygate.pool.files import load_file
from proxygate.providers.oauth import TokenKeeper

async def main():
    url, path = sys.argv[1], Path(sys.argv[2])
    settings = OAuthSettings(openai=OpenAIOAuthSettings(token_url=url + "/oauth/token"))
    account = load_file("chatgpt", path)
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()  # start together
    async with aiohttp.ClientSession() as session:
        fresh = await TokenKeeper(settings, session).fresh(account)
    print(fresh.access_token)

asyncio.run(main())
"""


async def test_two_processes_sharing_one_account_file_refresh_once(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    account = account_file(tmp_path, "chatgpt", expires_in_s=10)
    auth_server.delay_s = 0.3  # the first holds the file lock while the second arrives
    results = await run_together(CHILD, auth_server.url, str(account.path))
    assert [out for out, _ in results] == [b"at-1", b"at-1"]
    assert [code for _, code in results] == [0, 0]
    assert len(auth_server.refreshes) == 1

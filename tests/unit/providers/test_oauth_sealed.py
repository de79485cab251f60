"""Token refresh with encrypted pool files: tokens read sealed, written sealed, one refresh across processes."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxygate.config import SecretsSettings
from proxygate.pool.files import load_file
from proxygate.pool.sealing import rewrite_pool
from proxygate.providers.oauth import RefreshFailed, TokenKeeper
from proxygate.store.secrets import Vault, is_sealed
from tests import oauth_fakes
from tests.oauth_fakes import FakeAuthServer, oauth_account, run_together

auth_server = oauth_fakes.auth_server  # the fake authorization server fixture


def sealed_account_file(tmp_path: Path, kind: str, **kw: object) -> Path:
    path = tmp_path / "pool" / kind / "dev@example.com.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(oauth_account(kind, **kw)))  # type: ignore[arg-type]
    os.chmod(path, 0o600)
    rewrite_pool(tmp_path / "pool", vault(tmp_path), "encrypt")
    return path


def vault(tmp_path: Path, **settings: object) -> Vault:
    return Vault(SecretsSettings(**settings), tmp_path / "data", keyring=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["chatgpt", "claude"])
async def test_a_sealed_file_is_refreshed_and_its_new_tokens_written_sealed(
    tmp_path: Path, auth_server: FakeAuthServer, kind: str
) -> None:
    path = sealed_account_file(tmp_path, kind, expires_in_s=30, note="keep me")
    v = vault(tmp_path)  # encrypt off: the file being sealed is what keeps it sealed
    account = load_file(kind, path, v)  # type: ignore[arg-type]
    assert account.refresh_token == "rt-0"
    async with aiohttp.ClientSession() as session:
        fresh = await TokenKeeper(auth_server.settings(), session, vault=v).fresh(account)
    assert fresh.access_token == "at-1"
    assert auth_server.refreshes[0]["refresh_token"] == "rt-0"  # the decrypted token was spent
    on_disk = orjson.loads(path.read_bytes())
    assert is_sealed(on_disk["access_token"]) and is_sealed(on_disk["refresh_token"])
    assert b"at-1" not in path.read_bytes() and b"rt-1" not in path.read_bytes()
    assert on_disk["note"] == "keep me"
    reloaded = load_file(kind, path, vault(tmp_path))  # type: ignore[arg-type]
    assert (reloaded.access_token, reloaded.refresh_token) == ("at-1", "rt-1")


async def test_encrypt_on_seals_the_refresh_of_a_plaintext_file(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    path = tmp_path / "pool" / "claude" / "dev@example.com.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(orjson.dumps(oauth_account("claude", expires_in_s=30)))
    account = load_file("claude", path)  # loaded before encryption was turned on
    async with aiohttp.ClientSession() as session:
        await TokenKeeper(auth_server.settings(), session, vault=vault(tmp_path, encrypt=True)).fresh(account)
    on_disk = orjson.loads(path.read_bytes())
    assert is_sealed(on_disk["access_token"]) and is_sealed(on_disk["refresh_token"])


async def test_a_sealed_file_under_a_missing_key_is_not_refreshed(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    path = sealed_account_file(tmp_path, "claude", expires_in_s=30)
    account = load_file("claude", path, vault(tmp_path))
    before = path.read_bytes()
    stranger = Vault(SecretsSettings(), tmp_path / "other", keyring=None)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(
            RefreshFailed,
            match=r"dev@example.com.json: \"access_token\" is encrypted under key \w{12}, which is not",
        ):
            await TokenKeeper(auth_server.settings(), session, vault=stranger).fresh(account)
    assert auth_server.refreshes == [] and path.read_bytes() == before


CHILD = """
import asyncio, sys, aiohttp
from pathlib import Path
from proxygate.config import OAuthSettings, OpenAIOAuthSettings, SecretsSettings
from proxygate.pool.files import load_file
from proxygate.providers.oauth import TokenKeeper
from proxygate.store.secrets import Vault

async def main():
    url, path, data_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    settings = OAuthSettings(openai=OpenAIOAuthSettings(token_url=url + "/oauth/token"))
    vault = Vault(SecretsSettings(), data_dir)
    account = load_file("chatgpt", path, vault)
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()  # start together
    async with aiohttp.ClientSession() as session:
        fresh = await TokenKeeper(settings, session, vault=vault).fresh(account)
    print(fresh.access_token)

asyncio.run(main())
"""


async def test_two_processes_sharing_one_sealed_account_file_refresh_once(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    path = sealed_account_file(tmp_path, "chatgpt", expires_in_s=10)
    auth_server.delay_s = 0.3  # the first holds the file lock while the second arrives
    env = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    results = await run_together(CHILD, auth_server.url, str(path), str(tmp_path / "data"), env=env)
    assert [out for out, _ in results] == [b"at-1", b"at-1"]
    assert [code for _, code in results] == [0, 0]
    assert len(auth_server.refreshes) == 1  # the second read the first's sealed tokens
    on_disk = orjson.loads(path.read_bytes())
    assert is_sealed(on_disk["refresh_token"])
    assert load_file("chatgpt", path, vault(tmp_path)).refresh_token == "rt-1"

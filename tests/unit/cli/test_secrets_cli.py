"""With [secrets] encrypt on, every command that writes a pool file writes it sealed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from proxygate.store.secrets import is_sealed
from tests import oauth_fakes
from tests.oauth_fakes import FakeAuthServer
from tests.unit.cli.invoke import make_env, run

auth_server = oauth_fakes.auth_server  # the fake authorization server fixture

# keyring = false: a test never writes to the keyring of the user who runs it.
SEALED = "[secrets]\nencrypt = true\nkeyring = false\n"


def in_clear(root: Path, *secrets: str) -> list[str]:
    return [
        f"{p}: {s}" for p in root.rglob("*") if p.is_file() for s in secrets if s.encode() in p.read_bytes()
    ]


async def test_a_login_is_written_sealed(tmp_path: Path, auth_server: FakeAuthServer) -> None:
    env = make_env(tmp_path, auth_server.config_toml() + SEALED)
    auth_server.push_token(
        200, {"access_token": "sk-ant-oat01-login-access-0001", "refresh_token": "sk-ant-ort01-login-refresh-01",
              "expires_in": 28800, "account": {"email_address": "max@example.com", "uuid": "u-1"}},
    )  # fmt: skip
    result = await asyncio.to_thread(
        run, env, "add-claude-account", "--login", "--no-browser", stdin="pasted-code\n"
    )
    assert result.exit_code == 0, result.output
    data = orjson.loads((tmp_path / "pool" / "claude" / "max@example.com.json").read_bytes())
    assert is_sealed(data["access_token"]) and is_sealed(data["refresh_token"])
    assert data["email"] == "max@example.com"  # the rest stays readable
    assert in_clear(tmp_path / "pool", "login-access-0001", "login-refresh-01") == []
    listed = await asyncio.to_thread(run, env, "list", "--json")
    assert [a["id"] for a in orjson.loads(listed.output)] == ["max@example.com"]


def test_import_writes_sealed_and_status_names_the_key_file(tmp_path: Path) -> None:
    env = make_env(tmp_path, SEALED)
    source = tmp_path / "keys.json"
    source.write_bytes(orjson.dumps([{"provider": "openai", "api_key": "sk-proj-imported-0123456789abcdef"}]))
    result = run(env, "import-keys", "--from", str(source))
    assert result.exit_code == 0, result.output
    data = orjson.loads((tmp_path / "pool" / "apikeys" / "openai.json").read_bytes())
    assert is_sealed(data["api_key"]) and data["provider"] == "openai"
    assert in_clear(tmp_path / "pool", "0123456789abcdef") == []
    kid = orjson.loads((tmp_path / "data" / "secrets.json").read_bytes())["current"]
    status = run(env, "secrets", "status")
    assert status.output.splitlines() == [
        f"data key {kid} in the key file {tmp_path / 'data' / 'secrets.json'} ([secrets] keyring = false); "
        "[secrets] encrypt on",
        f"key {kid} (current): file {tmp_path / 'data' / 'secrets.json'}; 1 field(s) in the pool",
    ]


def test_secrets_status_lists_files_in_clear_and_keys_that_are_not_here(tmp_path: Path) -> None:
    env = make_env(tmp_path, "[secrets]\nkeyring = false\n")
    apikeys = tmp_path / "pool" / "apikeys"
    apikeys.mkdir(parents=True)
    (apikeys / "plain.json").write_bytes(
        orjson.dumps({"provider": "openai", "api_key": "sk-plain-0123456789"})
    )
    (apikeys / "stray.json").write_bytes(
        orjson.dumps({"provider": "openai", "api_key": "pgenc:v1:0123456789ab:AAAAAAAAAAAAAAAA:BBBB"})
    )
    result = run(env, "secrets", "status", "--json")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.output)
    assert data["fields_by_key"] == {"0123456789ab": 1}
    assert data["plaintext_files"] == [str(apikeys / "plain.json")]
    assert data["current"] is None and data["keys"] == []
    text = run(env, "secrets", "status").output
    assert "key 0123456789ab: not here; 1 field(s) in the pool cannot be read" in text

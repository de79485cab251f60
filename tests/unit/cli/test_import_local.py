"""``proxygate import --local``: the CLIs' own logins join the pool; with --share a refresh
writes the rotated tokens back into the CLI's file, so both keep working (fake auth server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from proxygate.pool.files import load_file
from proxygate.pool.records import Account
from proxygate.providers.oauth import TokenKeeper
from tests import oauth_fakes
from tests.oauth_fakes import FakeAuthServer, chatgpt_id_token, make_jwt

auth_server = oauth_fakes.auth_server
PROXYGATE = Path(sys.executable).parent / "proxygate"


def plant_logins(home: Path, *, expires_in_s: float = 60) -> tuple[Path, Path]:
    claude = home / ".claude" / ".credentials.json"
    claude.parent.mkdir(mode=0o700)
    claude.write_bytes(
        orjson.dumps(
            {
                "claudeAiOauth": {
                    "accessToken": "cc-at",
                    "refreshToken": "cc-rt",
                    "expiresAt": int((time.time() + expires_in_s) * 1000),
                    "scopes": ["user:inference"],
                    "subscriptionType": "max",
                },
                "mcpOAuth": {"keep": "me"},
            }
        )
    )
    (home / ".claude.json").write_bytes(
        orjson.dumps({"oauthAccount": {"emailAddress": "me@example.com"}, "numStartups": 3})
    )
    codex = home / ".codex" / "auth.json"
    codex.parent.mkdir(mode=0o700)
    codex.write_bytes(
        orjson.dumps(
            {
                "OPENAI_API_KEY": None,
                "tokens": {
                    "id_token": chatgpt_id_token("me@example.com", "acct-9"),
                    "access_token": make_jwt({"exp": int(time.time() + expires_in_s)}),
                    "refresh_token": "cx-rt",
                    "account_id": "acct-9",
                },
                "last_refresh": "2026-01-01T00:00:00Z",
            }
        )
    )
    for path in (claude, codex):
        path.chmod(0o600)
    return claude, codex


def run_import(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (home / "config.toml").write_text('addr = "127.0.0.1:9"\ndata_dir = "data"\npool_dir = "pool"\n')
    env = {
        "HOME": str(home),
        "PATH": os.environ["PATH"],
        "PROXYGATE_CONFIG": str(home / "config.toml"),
        "COLUMNS": "300",
    }
    return subprocess.run(
        [str(PROXYGATE), "import", "--local", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_local_adds_both_logins_shared_without_prompting(tmp_path: Path) -> None:
    claude, codex = plant_logins(tmp_path)
    result = run_import(tmp_path)
    assert result.returncode == 0, result.stderr
    pool = tmp_path / "pool"
    claude_file = pool / "claude" / "me@example.com.json"
    chatgpt_file = pool / "chatgpt" / "me@example.com.json"
    assert result.stdout.splitlines() == [
        f"added claude me@example.com from {claude} → {claude_file} "
        f"(shared with Claude Code: each refresh is written back to {claude})",
        f"added chatgpt me@example.com from {codex} → {chatgpt_file} "
        f"(shared with Codex CLI: each refresh is written back to {codex})",
    ]
    entry = orjson.loads(claude_file.read_bytes())
    assert (entry["email"], entry["access_token"], entry["refresh_token"], entry["plan"]) == (
        "me@example.com",
        "cc-at",
        "cc-rt",
        "max",
    )
    assert entry["shared_file"] == str(claude)
    assert orjson.loads(chatgpt_file.read_bytes())["shared_file"] == str(codex)
    assert oct(claude_file.stat().st_mode & 0o777) == "0o600"


def test_take_over_does_not_remember_the_cli_file_and_says_how_to_log_in_again(tmp_path: Path) -> None:
    plant_logins(tmp_path)
    result = run_import(tmp_path, "--take-over")
    assert result.returncode == 0, result.stderr
    assert "log it in again with `claude /login`" in result.stdout
    assert "log it in again with `codex login`" in result.stdout
    entry = orjson.loads((tmp_path / "pool" / "claude" / "me@example.com.json").read_bytes())
    assert "shared_file" not in entry


def test_without_any_login_it_says_what_to_do(tmp_path: Path) -> None:
    result = run_import(tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no CLI login found here")


def test_a_claude_login_without_email_is_named_and_codex_still_imported(tmp_path: Path) -> None:
    plant_logins(tmp_path)
    (tmp_path / ".claude.json").unlink()
    result = run_import(tmp_path)
    assert result.returncode == 1
    assert "the file names no account; pass --email" in result.stderr
    assert (tmp_path / "pool" / "chatgpt" / "me@example.com.json").is_file()
    again = run_import(tmp_path, "--email", "other@example.com")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "pool" / "claude" / "other@example.com.json").is_file()


async def test_shared_claude_login_refresh_writes_the_new_tokens_back(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    claude, _ = plant_logins(tmp_path)
    assert run_import(tmp_path).returncode == 0
    account = load_file("claude", tmp_path / "pool" / "claude" / "me@example.com.json")
    async with aiohttp.ClientSession() as session:
        fresh = await TokenKeeper(auth_server.settings(), session).fresh(account)
    assert [g["refresh_token"] for g in auth_server.refreshes] == ["cc-rt"]
    assert fresh.access_token == "at-1"
    cli = orjson.loads(claude.read_bytes())
    assert cli["claudeAiOauth"]["accessToken"] == "at-1"
    assert cli["claudeAiOauth"]["refreshToken"] == "rt-1"
    assert cli["claudeAiOauth"]["expiresAt"] > time.time() * 1000 + 600_000  # epoch ms, as Claude Code keeps
    assert (cli["claudeAiOauth"]["subscriptionType"], cli["mcpOAuth"]) == ("max", {"keep": "me"})
    assert oct(claude.stat().st_mode & 0o777) == "0o600"


async def test_shared_codex_login_refresh_writes_the_new_tokens_back(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    _, codex = plant_logins(tmp_path)
    assert run_import(tmp_path).returncode == 0
    account = load_file("chatgpt", tmp_path / "pool" / "chatgpt" / "me@example.com.json")
    async with aiohttp.ClientSession() as session:
        await TokenKeeper(auth_server.settings(), session).fresh(account)
    cli = orjson.loads(codex.read_bytes())
    assert (cli["tokens"]["access_token"], cli["tokens"]["refresh_token"]) == ("at-1", "rt-1")
    assert cli["tokens"]["account_id"] == "acct-9" and cli["OPENAI_API_KEY"] is None
    assert cli["last_refresh"] != "2026-01-01T00:00:00Z"


def imported_then_refreshed_by_the_cli(tmp_path: Path, **tokens: object) -> tuple[Path, Account]:
    """The Claude login imported, then Claude Code's own file rewritten with ``tokens`` (the CLI refreshed)."""
    claude, _ = plant_logins(tmp_path)
    assert run_import(tmp_path).returncode == 0
    account = load_file("claude", tmp_path / "pool" / "claude" / "me@example.com.json")
    cli = orjson.loads(claude.read_bytes())
    cli["claudeAiOauth"].update(tokens)
    claude.write_bytes(orjson.dumps(cli))
    return claude, account


async def test_when_the_cli_refreshed_on_its_own_its_token_is_the_one_spent_next(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    """Our copy of the refresh token is dead once the CLI used it: the keeper re-reads the CLI's file."""
    claude, account = imported_then_refreshed_by_the_cli(
        tmp_path, accessToken="cc-at-2", refreshToken="cc-rt-2"
    )
    async with aiohttp.ClientSession() as session:
        fresh = await TokenKeeper(auth_server.settings(), session).fresh(account)
    assert [g["refresh_token"] for g in auth_server.refreshes] == ["cc-rt-2"]
    assert fresh.access_token == "at-1"
    assert orjson.loads(claude.read_bytes())["claudeAiOauth"]["refreshToken"] == "rt-1"
    assert orjson.loads(account.path.read_bytes())["refresh_token"] == "rt-1"  # type: ignore[union-attr]


async def test_a_cli_token_still_valid_is_used_without_a_refresh(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    _, account = imported_then_refreshed_by_the_cli(
        tmp_path, accessToken="cc-at-2", refreshToken="cc-rt-2", expiresAt=int((time.time() + 7200) * 1000)
    )
    async with aiohttp.ClientSession() as session:
        fresh = await TokenKeeper(auth_server.settings(), session).fresh(account)
    assert auth_server.refreshes == []
    assert fresh.access_token == "cc-at-2"
    assert orjson.loads(account.path.read_bytes())["refresh_token"] == "cc-rt-2"  # type: ignore[union-attr]


@pytest.mark.parametrize("flag", ["--take-over"])
async def test_a_taken_over_login_leaves_the_cli_file_alone(
    tmp_path: Path, auth_server: FakeAuthServer, flag: str
) -> None:
    claude, _ = plant_logins(tmp_path)
    before = claude.read_bytes()
    assert run_import(tmp_path, flag).returncode == 0
    account = load_file("claude", tmp_path / "pool" / "claude" / "me@example.com.json")
    async with aiohttp.ClientSession() as session:
        await TokenKeeper(auth_server.settings(), session).fresh(account)
    assert len(auth_server.refreshes) == 1
    assert claude.read_bytes() == before


def test_serve_on_an_empty_pool_suggests_import_local(tmp_path: Path) -> None:
    claude, codex = plant_logins(tmp_path)
    (tmp_path / "config.toml").write_text('addr = "127.0.0.1:0"\ndata_dir = "data"\npool_dir = "pool"\n')
    env = {**os.environ, "HOME": str(tmp_path), "PROXYGATE_CONFIG": str(tmp_path / "config.toml")}
    proc = subprocess.Popen(
        [str(PROXYGATE), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(200):
            if (tmp_path / "data" / "server.json").exists():
                break
            time.sleep(0.05)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert (
        f"found {claude} and {codex}: `proxygate import --local` adds these logins to the pool "
        "(shared with the CLI)"
    ) in stderr
    assert list((tmp_path / "pool").rglob("*.json")) == []  # suggested, not done

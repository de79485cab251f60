"""Subscription commands through CliRunner, against the fake authorization server on loopback."""

from __future__ import annotations

import asyncio
import socket
import stat
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from typer.testing import Result

from tests import oauth_fakes
from tests.conftest import free_port
from tests.oauth_fakes import FakeAuthServer, chatgpt_id_token, make_jwt
from tests.unit.cli.invoke import make_env, run

auth_server = oauth_fakes.auth_server  # the fake authorization server fixture


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


CLAUDE_CODE_FILE = {
    "claudeAiOauth": {
        "accessToken": "sk-ant-oat01-secretaccess0001",
        "refreshToken": "sk-ant-ort01-secretrefresh0001",
        "expiresAt": 1_900_000_000_000,
        "scopes": ["user:inference", "user:profile"],
        "subscriptionType": "max",
        "rateLimitTier": "default_claude_max_20x",
    },
    "otherKey": True,
}


def test_add_claude_account_imports_claude_code_credentials_and_warns(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    source = tmp_path / "credentials.json"
    source.write_bytes(orjson.dumps(CLAUDE_CODE_FILE))
    result = run(env, "add-claude-account", "--from", str(source), "--email", "me@example.com")
    assert result.exit_code == 0, result.output
    path = tmp_path / "pool" / "claude" / "me@example.com.json"
    lines = [line.strip() for line in result.output.splitlines()]
    assert lines[0] == f"added me@example.com, plan max → {path}"
    assert " ".join(lines[1:]) == (
        "note: Claude Code and proxygate now share one single-use refresh token: whichever refreshes second "
        "is logged out. For an independent session run `proxygate add-claude-account --login`."
    )
    assert "secret" not in result.output
    assert mode(path) == 0o600
    assert orjson.loads(path.read_bytes()) == {
        "email": "me@example.com",
        "access_token": "sk-ant-oat01-secretaccess0001",
        "refresh_token": "sk-ant-ort01-secretrefresh0001",
        "expires_at": "2030-03-17T17:46:40Z",  # Claude Code's epoch ms, as the README's pool file has it
        "plan": "max",
        "rate_limit_tier": "default_claude_max_20x",
        "scopes": ["user:inference", "user:profile"],
    }
    listed = run(env, "list-claude", "--json")
    assert [(r["email"], r["plan"], r["state"]) for r in orjson.loads(listed.output)] == [
        ("me@example.com", "max", "ready")
    ]


def test_a_corrupted_credential_file_is_a_clear_error_and_nothing_else_is_lost(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    good = tmp_path / "credentials.json"
    good.write_bytes(orjson.dumps(CLAUDE_CODE_FILE))
    assert run(env, "add-claude-account", "--from", str(good), "--email", "a@example.com").exit_code == 0
    bad = tmp_path / "broken.json"
    bad.write_bytes(b'{"claudeAiOauth": {"accessToken": "sk-ant-oat01-x"')
    result = run(env, "add-claude-account", "--from", str(bad), "--email", "b@example.com")
    assert result.exit_code == 1
    # Where the JSON broke, never what it held: the token must not reach the terminal.
    assert (
        result.output.strip()
        == f"error: {bad}: malformed JSON: unexpected end of data: line 1 column 51 (char 50)"
    )
    assert "sk-ant" not in result.output
    assert sorted(p.name for p in (tmp_path / "pool" / "claude").glob("*.json")) == ["a@example.com.json"]


def test_import_accepts_the_codex_cli_auth_file(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    access = make_jwt({"exp": 1_900_000_000})
    source = tmp_path / "auth.json"
    source.write_bytes(
        orjson.dumps(
            {
                "OPENAI_API_KEY": None,
                "tokens": {
                    "id_token": chatgpt_id_token("cx@example.com", "ws-1", "pro"),
                    "access_token": access,
                    "refresh_token": "rt-codex",
                    "account_id": "ws-1",
                },
                "last_refresh": "2026-11-01T10:00:00Z",
            }
        )
    )
    result = run(env, "import", "--from", str(source))
    assert result.exit_code == 0, result.output
    path = tmp_path / "pool" / "chatgpt" / "cx@example.com.json"
    data = orjson.loads(path.read_bytes())
    assert (data["email"], data["account_id"], data["plan"], data["refresh_token"]) == (
        "cx@example.com", "ws-1", "pro", "rt-codex"
    )  # fmt: skip
    assert (data["expires_at"], data["last_refresh"]) == ("2030-03-17T17:46:40Z", "2026-11-01T10:00:00Z")
    assert mode(path) == 0o600


def no_browser_login(tmp_path: Path, auth_server: FakeAuthServer) -> tuple[int, Path, asyncio.Future[Result]]:
    """``add-account --no-browser`` started in a thread: its callback port, pending-login file, result."""
    port = free_port()
    env = make_env(tmp_path, auth_server.config_toml(callback_port=port))
    pending = tmp_path / "pool" / ".login-chatgpt.json"
    return port, pending, asyncio.ensure_future(asyncio.to_thread(run, env, "add-account", "--no-browser"))


async def _callback_when_ready(port: int, pending: Path, code: str) -> None:
    """Play the browser: wait for the login to start, then hit the loopback callback."""
    for _ in range(200):
        if await asyncio.to_thread(pending.exists):
            break
        await asyncio.sleep(0.02)
    state = orjson.loads(await asyncio.to_thread(pending.read_bytes))["state"]
    async with aiohttp.ClientSession() as client:
        for _ in range(200):
            try:
                async with client.get(
                    f"http://127.0.0.1:{port}/auth/callback?code={code}&state={state}"
                ) as resp:
                    assert resp.status == 200
                    return
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.02)


async def test_add_account_no_browser_waits_for_the_loopback_callback(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    port, pending, login = no_browser_login(tmp_path, auth_server)
    verifier_seen: list[str] = []

    async def browser() -> None:
        for _ in range(200):
            if pending.exists():
                verifier_seen.append(orjson.loads(pending.read_bytes())["verifier"])
                break
            await asyncio.sleep(0.02)
        await _callback_when_ready(port, pending, "code-1")

    await browser()
    result = await login
    assert result.exit_code == 0, result.output
    assert f"{auth_server.url}/oauth/authorize?response_type=code" in result.output.replace("\n", "")
    assert auth_server.grants == [
        {
            "grant_type": "authorization_code",
            "code": "code-1",
            "redirect_uri": f"http://localhost:{port}/auth/callback",
            "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
            "code_verifier": verifier_seen[0],
        }
    ]
    path = tmp_path / "pool" / "chatgpt" / "dev@example.com.json"
    data = orjson.loads(path.read_bytes())
    assert (data["email"], data["account_id"], data["plan"], data["access_token"]) == (
        "dev@example.com", "acct-1", "plus", "at-1"
    )  # fmt: skip
    assert mode(path) == 0o600
    assert not pending.exists()
    assert "at-1" not in result.output and "rt-1" not in result.output


async def test_add_account_code_finishes_a_login_from_another_device(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    env = make_env(tmp_path, auth_server.config_toml())
    pending = tmp_path / "pool" / ".login-chatgpt.json"
    pending.parent.mkdir(parents=True)
    pending.write_bytes(orjson.dumps({"verifier": "v" * 64, "state": "S1", "created_at": time.time()}))
    wrong = await asyncio.to_thread(
        run, env, "add-account", "--code", "http://localhost:1455/auth/callback?code=c9&state=S2"
    )
    assert wrong.exit_code == 1
    assert "state mismatch" in wrong.output
    url = "http://localhost:1455/auth/callback?code=c9&state=S1"
    result = await asyncio.to_thread(run, env, "add-account", "--code", url)
    assert result.exit_code == 0, result.output
    assert [(g["code"], g["code_verifier"]) for g in auth_server.grants] == [("c9", "v" * 64)]
    assert (tmp_path / "pool" / "chatgpt" / "dev@example.com.json").exists()


async def test_add_account_code_without_a_login_in_progress_says_how_to_start(tmp_path: Path) -> None:
    result = await asyncio.to_thread(run, make_env(tmp_path), "add-account", "--code", "abc")
    assert result.exit_code == 1
    assert result.output.startswith(
        "error: no login in progress: start one with `proxygate add-account --no-browser`"
    )


async def test_add_account_device_flow(tmp_path: Path, auth_server: FakeAuthServer) -> None:
    env = make_env(tmp_path, auth_server.config_toml())
    result = await asyncio.to_thread(run, env, "add-account", "--device")
    assert result.exit_code == 0, result.output
    assert "ABCD-1234" in result.output
    assert auth_server.grants[0]["redirect_uri"] == "https://auth.openai.com/deviceauth/callback"
    assert auth_server.grants[0]["code_verifier"] == "dev-verifier"


async def test_a_second_workspace_of_one_email_gets_its_own_file(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    env = make_env(tmp_path, auth_server.config_toml())
    assert (await asyncio.to_thread(run, env, "add-account", "--device")).exit_code == 0
    auth_server.push_token(
        200, {"access_token": "at-w2", "refresh_token": "rt-w2", "expires_in": 60,
              "id_token": chatgpt_id_token("dev@example.com", "acct-2", "team")},
    )  # fmt: skip
    assert (await asyncio.to_thread(run, env, "add-account", "--device")).exit_code == 0
    names = sorted(p.name for p in (tmp_path / "pool" / "chatgpt").glob("*.json"))
    assert names == ["dev@example.com.acct-2.json", "dev@example.com.json"]


async def test_add_claude_account_login_exchanges_the_pasted_code(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    env = make_env(tmp_path, auth_server.config_toml())
    auth_server.push_token(
        200, {"access_token": "sk-ant-oat01-new", "refresh_token": "sk-ant-ort01-new", "expires_in": 28800,
              "account": {"email_address": "max@example.com", "uuid": "u-1"}},
    )  # fmt: skip
    result = await asyncio.to_thread(
        run, env, "add-claude-account", "--login", "--no-browser", stdin="pasted-code\n"
    )
    assert result.exit_code == 0, result.output
    grant = auth_server.grants[0]
    assert (grant["grant_type"], grant["code"], grant["client_id"]) == (
        "authorization_code", "pasted-code", "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
    )  # fmt: skip
    assert grant["redirect_uri"] == "https://platform.claude.com/oauth/code/callback"
    assert len(grant["code_verifier"]) == 64 and grant["state"]
    data = orjson.loads((tmp_path / "pool" / "claude" / "max@example.com.json").read_bytes())
    assert data["access_token"] == "sk-ant-oat01-new"
    assert "share one single-use refresh token" not in result.output


@pytest.mark.parametrize("args", [["add-claude-account"], ["add-claude-account", "--email", "x@y.z"]])
def test_add_claude_account_needs_a_source(tmp_path: Path, args: list[str]) -> None:
    result = run(make_env(tmp_path), *args)
    assert result.exit_code == 1
    assert result.output.startswith("error: say where the account comes from")


def _start_pending(tmp_path: Path) -> Path:
    pending = tmp_path / "pool" / ".login-chatgpt.json"
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_bytes(orjson.dumps({"verifier": "v" * 64, "state": "S1", "created_at": time.time()}))
    return pending


async def test_add_account_code_dash_reads_the_url_from_stdin_not_argv(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    env = make_env(tmp_path, auth_server.config_toml())
    pending = _start_pending(tmp_path)
    url = "http://localhost:1455/auth/callback?code=c7&state=S1"
    result = await asyncio.to_thread(run, env, "add-account", "--code", "-", stdin=url + "\n")
    assert result.exit_code == 0, result.output
    assert [g["code"] for g in auth_server.grants] == ["c7"]
    assert not pending.exists()


@pytest.mark.parametrize(
    ("pasted", "token_answer", "message"),
    [
        (
            "http://localhost:1455/auth/callback?code=c8&state=S1",
            (400, {"error": "invalid_grant", "error_description": "expired"}),
            "invalid_grant",
        ),
        ("http://localhost:1455/auth/callback?error=access_denied&state=S1", None, "said: access_denied"),
    ],
)
async def test_a_failed_login_removes_the_pending_login(
    tmp_path: Path, auth_server: FakeAuthServer, pasted: str, token_answer, message: str
) -> None:
    env = make_env(tmp_path, auth_server.config_toml())
    pending = _start_pending(tmp_path)
    if token_answer:
        auth_server.push_token(*token_answer)
    result = await asyncio.to_thread(run, env, "add-account", "--code", pasted)
    assert result.exit_code == 1
    assert message in result.output
    assert not pending.exists()


async def test_a_paste_that_is_not_ours_keeps_the_pending_login(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    pending = _start_pending(tmp_path)
    for pasted in ("http://localhost:1455/auth/callback?code=c9", "http://x/cb?code=c9&state=S2"):
        result = await asyncio.to_thread(run, env, "add-account", "--code", pasted)
        assert result.exit_code == 1
        assert pending.exists()


async def test_a_browser_login_that_fails_removes_the_pending_login(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    port, pending, login = no_browser_login(tmp_path, auth_server)
    auth_server.push_token(400, {"error": "invalid_grant"})
    await _callback_when_ready(port, pending, "code-x")
    result = await login
    assert result.exit_code == 1
    assert "invalid_grant" in result.output
    assert not pending.exists()


async def test_a_busy_callback_port_keeps_the_login_open_for_code(
    tmp_path: Path, auth_server: FakeAuthServer
) -> None:
    """The message points at --code: the pending login must still be there for it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = make_env(tmp_path, auth_server.config_toml(callback_port=port))
        result = await asyncio.to_thread(run, env, "add-account", "--no-browser")
    assert result.exit_code == 1
    assert f"port {port} is busy" in result.output
    assert (tmp_path / "pool" / ".login-chatgpt.json").exists()

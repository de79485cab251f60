"""A fake OAuth authorization server and usage endpoints on 127.0.0.1, for the subscription tests.

It speaks both providers' token endpoints (form fields for OpenAI, JSON for Anthropic),
the ChatGPT device-code endpoints and both usage endpoints. Tests queue answers with
``push_token`` and read what was asked in ``grants``; by default a refresh rotates the
tokens (``at-N`` / ``rt-N``), as the real servers do.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from proxygate.config import ClaudeOAuthSettings, OAuthSettings, OpenAIOAuthSettings
from proxygate.pool.files import load_file
from proxygate.pool.records import Account

SOURCE_ROOT = Path(__file__).resolve().parents[1]
"The checkout: where a child process imports this proxygate from."


def make_jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def chatgpt_id_token(email: str = "dev@example.com", account_id: str = "acct-1", plan: str = "plus") -> str:
    return make_jwt(
        {
            "email": email,
            "https://api.openai.com/auth": {"chatgpt_account_id": account_id, "chatgpt_plan_type": plan},
        }
    )


@dataclass
class FakeAuthServer:
    url: str = ""
    grants: list[dict[str, Any]] = field(default_factory=list)
    "Every token request's fields (form or JSON), in order."
    token_answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    device_polls: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    device_requests: list[dict[str, Any]] = field(default_factory=list)
    usage_requests: list[dict[str, str]] = field(default_factory=list)
    usage_times: list[float] = field(default_factory=list)
    "When each usage request arrived (monotonic seconds)."
    wham: dict[str, Any] = field(default_factory=dict)
    claude_usage: dict[str, Any] = field(default_factory=dict)
    usage_statuses: list[int] = field(default_factory=list)
    "Statuses the usage endpoint answers next (429: rate-limited), one per request; then 200."
    delay_s: float = 0.0
    issued: int = 0

    def push_token(self, status: int, body: dict[str, Any]) -> None:
        self.token_answers.append((status, body))

    @property
    def refreshes(self) -> list[dict[str, Any]]:
        return [g for g in self.grants if g.get("grant_type") == "refresh_token"]

    def settings(self, **oauth: Any) -> OAuthSettings:
        return OAuthSettings(
            openai=OpenAIOAuthSettings(
                authorize_url=f"{self.url}/oauth/authorize",
                token_url=f"{self.url}/oauth/token",
                device_code_url=f"{self.url}/api/accounts/deviceauth/usercode",
                device_token_url=f"{self.url}/api/accounts/deviceauth/token",
                device_verify_url=f"{self.url}/codex/device",
                usage_url=f"{self.url}/backend-api/wham/usage",
            ),
            claude=ClaudeOAuthSettings(
                authorize_url=f"{self.url}/claude/authorize",
                token_url=f"{self.url}/v1/oauth/token",
                usage_url=f"{self.url}/api/oauth/usage",
            ),
            **oauth,
        )

    def config_toml(self, *, usage_poll_s: float = 0, callback_port: int = 1455) -> str:
        """The same endpoints as a config.toml fragment (polling off unless asked for)."""
        s = self.settings()
        lines = [
            "[oauth]",
            f"usage_poll_s = {usage_poll_s}",
            "[oauth.openai]",
            f"callback_port = {callback_port}",
        ]
        lines += [f'{k} = "{getattr(s.openai, k)}"' for k in ("authorize_url", "token_url", "usage_url")]
        lines += [f'{k} = "{getattr(s.openai, k)}"' for k in ("device_code_url", "device_token_url")]
        lines += ["[oauth.claude]"]
        lines += [f'{k} = "{getattr(s.claude, k)}"' for k in ("authorize_url", "token_url", "usage_url")]
        return "\n".join(lines) + "\n"

    async def token(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            fields = dict(await request.json())
        else:
            fields = dict(await request.post())
        self.grants.append({str(k): v for k, v in fields.items()})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.token_answers:
            status, body = self.token_answers.pop(0)
            return web.json_response(body, status=status)
        self.issued += 1
        n = self.issued
        body = {
            "access_token": f"at-{n}",
            "refresh_token": f"rt-{n}",
            "expires_in": 3600,
            "id_token": chatgpt_id_token(),
            "token_type": "Bearer",
        }
        return web.json_response(body)

    async def device_code(self, request: web.Request) -> web.Response:
        self.device_requests.append(dict(await request.json()))
        return web.json_response({"device_auth_id": "dev-auth-1", "user_code": "ABCD-1234", "interval": "0"})

    async def device_token(self, request: web.Request) -> web.Response:
        self.device_requests.append(dict(await request.json()))
        if self.device_polls:
            status, body = self.device_polls.pop(0)
            return web.json_response(body, status=status)
        return web.json_response(
            {
                "authorization_code": "dev-code",
                "code_verifier": "dev-verifier",
                "code_challenge": "dev-challenge",
            }
        )

    async def usage(self, request: web.Request) -> web.Response:
        self.usage_requests.append(dict(request.headers))
        self.usage_times.append(time.monotonic())
        if self.usage_statuses and (code := self.usage_statuses.pop(0)) != 200:
            return web.json_response({"error": {"type": "rate_limit_error"}}, status=code)
        return web.json_response(self.wham if "wham" in request.path else self.claude_usage)


@pytest.fixture
async def auth_server() -> AsyncIterator[FakeAuthServer]:
    fake = FakeAuthServer()
    app = web.Application()
    app.router.add_post("/oauth/token", fake.token)
    app.router.add_post("/v1/oauth/token", fake.token)
    app.router.add_post("/api/accounts/deviceauth/usercode", fake.device_code)
    app.router.add_post("/api/accounts/deviceauth/token", fake.device_token)
    app.router.add_get("/backend-api/wham/usage", fake.usage)
    app.router.add_get("/api/oauth/usage", fake.usage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


def oauth_account(
    kind: str, *, email: str = "dev@example.com", expires_in_s: float = 3600, **extra: Any
) -> dict[str, Any]:
    """A pool file body for a subscription account whose token expires in ``expires_in_s``."""
    data: dict[str, Any] = {
        "email": email,
        "access_token": "at-0",
        "refresh_token": "rt-0",
        "expires_at": time.time() + expires_in_s,
        **extra,
    }
    if kind == "chatgpt":
        data.setdefault("account_id", "acct-1")
    return data


def account_file(root: Path, kind: str, **kw: object) -> Account:
    """The login ``oauth_account`` describes, as a 0600 file in ``root``'s pool dir, loaded."""
    path = root / "pool" / kind / "dev@example.com.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(oauth_account(kind, **kw)))  # type: ignore[arg-type]
    os.chmod(path, 0o600)
    return load_file(kind, path)  # type: ignore[arg-type]


async def run_together(
    script: str, *args: str, env: dict[str, str] | None = None
) -> list[tuple[bytes, int | None]]:
    """Two ``python -c script ARGS`` in the checkout, released at once when both said ``ready``.

    The script prints ``ready``, waits for a line on stdin, then does its work: this is how two
    processes reach the same account file at the same moment. Their stdouts (stripped), exit codes.
    """
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=SOURCE_ROOT,
            env=env,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
    outputs = await asyncio.gather(*(proc.communicate(b"go\n") for proc in procs))
    return [(out.strip(), proc.returncode) for (out, _), proc in zip(outputs, procs, strict=True)]

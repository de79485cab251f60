"""PKCE, state checks, the loopback callback, pasted codes and the device-code flow."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest

from proxygate.auth.device import DeviceCode, poll_device_grant, poll_interval_s, request_device_code
from proxygate.auth.pkce import (
    CallbackPortBusy,
    LoginError,
    claude_authorize_url,
    new_pkce,
    openai_authorize_url,
    parse_pasted,
    wait_for_callback,
)
from proxygate.auth.tokens import chatgpt_identity, parse_token_response
from proxygate.config import ClaudeOAuthSettings, OpenAIOAuthSettings
from tests import oauth_fakes
from tests.conftest import free_port
from tests.oauth_fakes import FakeAuthServer, chatgpt_id_token, make_jwt

auth_server = oauth_fakes.auth_server  # the fake authorization server fixture


def test_pkce_challenge_is_s256_of_the_verifier() -> None:
    pkce = new_pkce()
    assert 43 <= len(pkce.verifier) <= 128
    assert set(pkce.verifier) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    digest = hashlib.sha256(pkce.verifier.encode()).digest()
    assert pkce.challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert new_pkce().state != pkce.state


def test_openai_authorize_url_carries_the_codex_parameters() -> None:
    pkce = new_pkce()
    url = urlparse(openai_authorize_url(OpenAIOAuthSettings(), pkce))
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://auth.openai.com/oauth/authorize"
    assert {k: v[0] for k, v in parse_qs(url.query).items()} == {
        "response_type": "code",
        "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
        "redirect_uri": "http://localhost:1455/auth/callback",
        "scope": "openid profile email offline_access",
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "state": pkce.state,
        "id_token_add_organizations": "true",
        "codex_cli_simplified_flow": "true",
        "originator": "codex_cli_rs",
    }


def test_claude_authorize_url_asks_for_the_copy_the_code_page() -> None:
    pkce = new_pkce()
    query = {
        k: v[0]
        for k, v in parse_qs(urlparse(claude_authorize_url(ClaudeOAuthSettings(), pkce)).query).items()
    }
    assert query["code"] == "true"
    assert query["redirect_uri"] == "https://platform.claude.com/oauth/code/callback"
    assert (query["code_challenge"], query["state"]) == (pkce.challenge, pkce.state)


@pytest.mark.parametrize(
    "pasted",
    [
        "http://localhost:1455/auth/callback?code=abc&state=S1",
        "  http://localhost:1455/auth/callback?code=abc&state=S1\n",
        "abc#S1",
        "abc",
    ],
)
def test_pasted_redirects_and_codes_are_accepted(pasted: str) -> None:
    assert parse_pasted(pasted, "S1") == "abc"


@pytest.mark.parametrize(
    ("pasted", "message"),
    [
        ("http://localhost:1455/auth/callback?code=abc&state=OTHER", r"state mismatch"),
        ("abc#OTHER", r"state mismatch"),
        ("http://localhost:1455/auth/callback?error=access_denied&state=S1", r"said: access_denied"),
        ("http://localhost:1455/auth/callback?error=access_denied&state=OTHER", r"state mismatch"),
        ("http://localhost:1455/auth/callback?error=access_denied", r"has no state="),
        ("http://localhost:1455/auth/callback?code=abc", r"has no state="),
        ("http://localhost:1455/auth/callback?state=S1", r"has no \?code="),
        ("", r"nothing pasted"),
    ],
)
def test_pasted_text_that_is_not_our_login_is_refused(pasted: str, message: str) -> None:
    with pytest.raises(LoginError, match=message):
        parse_pasted(pasted, "S1")


async def test_loopback_callback_ignores_a_wrong_state_and_takes_the_right_one() -> None:
    port = free_port()
    waiting = asyncio.ensure_future(wait_for_callback(port, "S1", timeout_s=5))
    await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://127.0.0.1:{port}/auth/callback?code=evil&state=S2") as resp:
            assert resp.status == 400
        async with client.get(f"http://127.0.0.1:{port}/auth/callback?code=good&state=S1") as resp:
            assert resp.status == 200
            assert "You can close this tab" in await resp.text()
    assert await waiting == "good"


async def test_loopback_callback_ignores_an_error_without_our_state() -> None:
    """Any page can load ``/auth/callback?error=x`` (an <img> will do): it must not end the login."""
    port = free_port()
    waiting = asyncio.ensure_future(wait_for_callback(port, "S1", timeout_s=5))
    await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as client:
        for forged in ("?error=access_denied", "?error=access_denied&state=S2"):
            async with client.get(f"http://127.0.0.1:{port}/auth/callback{forged}") as resp:
                assert resp.status == 400
        assert not waiting.done()
        async with client.get(f"http://127.0.0.1:{port}/auth/callback?code=good&state=S1") as resp:
            assert resp.status == 200
    assert await waiting == "good"


async def test_loopback_callback_error_with_our_state_ends_the_login() -> None:
    port = free_port()
    waiting = asyncio.ensure_future(wait_for_callback(port, "S1", timeout_s=5))
    await asyncio.sleep(0.1)
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}/auth/callback?error=access_denied&state=S1") as resp,
    ):
        assert resp.status == 400
    with pytest.raises(LoginError, match=r"^the authorization server said: access_denied$"):
        await waiting


@pytest.mark.parametrize(
    ("given", "used_s"),
    [("0", 1.0), (0, 1.0), (0.001, 1.0), ("nan", 5.0), (float("inf"), 60.0), (3600, 60.0), ("7", 7.0),
     (None, 5.0), ("soon", 5.0), (True, 5.0), (-3, 1.0)],
)  # fmt: skip
def test_the_device_poll_interval_is_clamped_to_1_to_60_s(given: object, used_s: float) -> None:
    assert poll_interval_s(given) == used_s


async def test_a_zero_or_nan_interval_from_the_server_polls_at_sane_pace(auth_server: FakeAuthServer) -> None:
    """The fake server says ``"interval": "0"``: polls are 1 s apart, not back to back."""
    auth_server.device_polls = [(403, {"error": "authorization_pending"})] * 2
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    settings = auth_server.settings().openai
    async with aiohttp.ClientSession() as session:
        device = await request_device_code(session, settings)
        assert device.interval_s == 1.0
        await poll_device_grant(session, settings, device, sleep=sleep)
        auth_server.device_polls = [(403, {"error": "authorization_pending"})]
        await poll_device_grant(session, settings, DeviceCode("d", "u", float("nan"), ""), sleep=sleep)
    assert slept == [1.0, 1.0, 5.0]


async def test_a_busy_callback_port_says_so_and_offers_alternatives() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CallbackPortBusy, match=r"^port \d+ is busy .* use --code or --device$"):
            await wait_for_callback(port, "S1", timeout_s=1)


async def test_device_flow_waits_through_pending_and_slows_down(auth_server: FakeAuthServer) -> None:
    auth_server.device_polls = [
        (403, {"error": "authorization_pending"}),
        (400, {"error": "slow_down"}),
        (403, {"error": "authorization_pending"}),
    ]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    settings = auth_server.settings().openai
    async with aiohttp.ClientSession() as session:
        device = await request_device_code(session, settings)
        grant = await poll_device_grant(
            session, settings, DeviceCode(device.device_auth_id, device.user_code, 1.0, ""), sleep=sleep
        )
    assert (device.user_code, device.verify_url) == ("ABCD-1234", f"{auth_server.url}/codex/device")
    assert (grant.authorization_code, grant.code_verifier) == ("dev-code", "dev-verifier")
    assert slept == [1.0, 6.0, 6.0]  # slow_down adds 5 s (RFC 8628 §3.5)
    assert auth_server.device_requests[0] == {"client_id": "app_EMoamEEZ73f0CkXaXp7hrann"}
    assert auth_server.device_requests[1] == {"device_auth_id": "dev-auth-1", "user_code": "ABCD-1234"}


async def test_device_flow_denied_is_a_login_error(auth_server: FakeAuthServer) -> None:
    auth_server.device_polls = [(400, {"error": "access_denied"})]
    settings = auth_server.settings().openai
    async with aiohttp.ClientSession() as session:
        with pytest.raises(LoginError, match=r"^device login failed: HTTP 400 access_denied$"):
            await poll_device_grant(session, settings, DeviceCode("d", "u", 0.0, ""))


def test_id_token_claims_give_email_account_and_plan() -> None:
    identity = chatgpt_identity(chatgpt_id_token("a@b.c", "ws-9", "pro"))
    assert (identity.email, identity.account_id, identity.plan) == ("a@b.c", "ws-9", "pro")
    assert chatgpt_identity("not-a-jwt").email == ""


def test_a_token_answer_without_refresh_token_keeps_the_old_one() -> None:
    tokens = parse_token_response(
        {"access_token": "a2", "expires_in": 100}, previous_refresh="r1", now=1000.0
    )
    assert (tokens.access_token, tokens.refresh_token, tokens.expires_at) == ("a2", "r1", 1100.0)


@pytest.mark.parametrize("expires_in", [10**30, 2**64, -5, 0, "100", True])
def test_an_absurd_expires_in_falls_back_to_the_tokens_own_expiry(expires_in: object) -> None:
    """A refresh spends the old refresh token: an expiry that cannot be written as a date
    must not fail the refresh after it."""
    access = make_jwt({"exp": 5000})
    tokens = parse_token_response(
        {"access_token": access, "refresh_token": "r2", "expires_in": expires_in}, now=1000.0
    )
    assert tokens.expires_at == 5000.0
    absurd = make_jwt({"exp": 10**18})  # nor may the token's own
    assert (
        parse_token_response({"access_token": absurd, "refresh_token": "r2"}, now=1000.0).expires_at is None
    )

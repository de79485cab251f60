"""The PKCE authorization-code login: authorize URLs, the loopback callback, a pasted code.

One idea first: the browser brings back ``code`` and ``state``; we accept the code only when
``state`` is the one we sent (RFC 6749 §10.12, CSRF), and trade it with the verifier only
we know (RFC 7636). The code reaches us one of three ways:

    loopback      the browser is redirected to ``http://localhost:1455/auth/callback`` (ChatGPT:
                  the port the Codex client registered; another port is refused by the
                  authorization server, peers.md §3.2)
    pasted URL    ``--code``: the user copies the final redirect URL (or just the code) from
                  a browser on another device
    copy-the-code Claude: the redirect page shows ``code#state`` to paste (peers.md §3.1)
"""

from __future__ import annotations

import asyncio
import errno
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlparse

from aiohttp import web
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from proxygate.config import ClaudeOAuthSettings, OpenAIOAuthSettings
from proxygate.errors import ProxyError

CALLBACK_PATH = "/auth/callback"

# Verifier length: RFC 7636 §4.1 allows 43–128 unreserved characters; 64 as the Codex CLI uses.
VERIFIER_LENGTH = 64

_SUCCESS_PAGE = "<!doctype html><title>proxygate</title><p>Signed in. You can close this tab and return to the terminal.</p>"


class LoginError(ProxyError):
    """A login did not complete; the message says what to do, never a code or token."""

    error_class = "authentication"
    status = 401


class LoginStillOpen(LoginError):
    """This attempt stopped, but the login can still be finished with ``--code``.

    Unlike a refusal by the authorization server, its pending state must be kept.
    """


class CallbackPortBusy(LoginStillOpen):
    """The loopback port is taken (often by a Codex CLI login in progress)."""


class PasteRefused(LoginStillOpen):
    """The pasted text is not this login's answer; the login itself can still finish."""


@dataclass(frozen=True, slots=True)
class PKCE:
    verifier: str
    challenge: str
    state: str


def new_pkce() -> PKCE:
    """A fresh verifier, its S256 challenge and an unguessable state."""
    verifier = generate_token(VERIFIER_LENGTH)
    return PKCE(verifier, create_s256_code_challenge(verifier), generate_token(32))


def openai_redirect_uri(settings: OpenAIOAuthSettings) -> str:
    return f"http://localhost:{settings.callback_port}{CALLBACK_PATH}"


def openai_authorize_url(settings: OpenAIOAuthSettings, pkce: PKCE) -> str:
    """The ChatGPT login URL with the Codex CLI's parameters (peers.md §3.2)."""
    query = {
        "response_type": "code",
        "client_id": settings.client_id,
        "redirect_uri": openai_redirect_uri(settings),
        "scope": settings.scope,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "state": pkce.state,
        "id_token_add_organizations": "true",
        "codex_cli_simplified_flow": "true",
        "originator": "codex_cli_rs",
    }
    return f"{settings.authorize_url}?{urlencode(query)}"


def claude_authorize_url(settings: ClaudeOAuthSettings, pkce: PKCE) -> str:
    """The Claude login URL; ``code=true`` makes the redirect page show ``code#state`` (peers.md §3.1)."""
    query = {
        "code": "true",
        "client_id": settings.client_id,
        "response_type": "code",
        "redirect_uri": settings.redirect_uri,
        "scope": settings.scope,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "state": pkce.state,
    }
    return f"{settings.authorize_url}?{urlencode(query)}"


def parse_pasted(text: str, expected_state: str) -> str:
    """The code from a pasted redirect URL, ``code#state``, or a bare code; checks the state.

    A pasted URL must carry our ``state`` before anything in it counts, ``?error=`` included:
    a redirect URL without it could come from any page (RFC 6749 §10.12).
    """
    text = text.strip()
    if not text:
        raise PasteRefused("nothing pasted: paste the redirect URL (or the code) from the browser")
    if "://" in text or text.startswith("?"):
        query = parse_qs(urlparse(text).query)
        state = query.get("state", [""])[0]
        if not state:
            raise PasteRefused("the pasted URL has no state=…; paste the whole address the browser ended on")
        if state != expected_state:
            raise PasteRefused(
                "the pasted URL belongs to another login attempt (state mismatch); start again"
            )
        if "error" in query:
            raise LoginError(f"the authorization server said: {query['error'][0]}")
        if "code" not in query:
            raise PasteRefused("the pasted URL has no ?code=…; paste the address the browser ended on")
        code = query["code"][0]
    else:
        code, _, state = text.partition("#")
        if state and state != expected_state:
            raise PasteRefused(
                "the pasted code belongs to another login attempt (state mismatch); start again"
            )
    if not code:
        raise PasteRefused("the pasted text holds no code")
    return code


async def wait_for_callback(
    port: int, expected_state: str, *, timeout_s: float = 600.0, host: str = "127.0.0.1"
) -> str:
    """Serve the loopback callback until a valid code arrives; ``CallbackPortBusy`` if taken."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[str] = loop.create_future()

    async def callback(request: web.Request) -> web.Response:
        query = request.query
        # State first: any web page can make the browser load this URL (an <img> will do), so
        # nothing without our state, ``?error=`` included, may end the login (RFC 6749 §10.12).
        if not hmac.compare_digest(query.get("state", "").encode(), expected_state.encode()):
            # Not ours (a stale tab, or a forged request): ignore it and keep waiting.
            return web.Response(text="State mismatch: this is not the login proxygate started.", status=400)
        if error := query.get("error"):
            if not arrived.done():
                arrived.set_exception(LoginError(f"the authorization server said: {error}"))
            return web.Response(text="Login failed; see the terminal.", status=400)
        code = query.get("code", "")
        if not code:
            return web.Response(text="No code in the callback.", status=400)
        if not arrived.done():
            arrived.set_result(code)
        return web.Response(text=_SUCCESS_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get(CALLBACK_PATH, callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise CallbackPortBusy(
                    f"port {port} is busy (is a Codex login running?); the authorization server accepts "
                    "no other port: finish or stop the other login, or use --code or --device"
                ) from None
            raise
        try:
            async with asyncio.timeout(timeout_s):
                return await arrived
        except TimeoutError:
            raise LoginStillOpen(
                f"no login callback within {timeout_s:.0f}s; try again or use --code"
            ) from None
    finally:
        await runner.cleanup()

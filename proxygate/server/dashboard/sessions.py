"""Dashboard sessions: a signed cookie after logging in with the admin token, a CSRF token per session.

The session travels only in an ``HttpOnly; SameSite=Strict`` cookie, so a page's script cannot
read it and another site's page never sends it. Every state-changing admin call made with the
cookie must also carry the session's CSRF token in ``X-CSRF-Token`` (a header a foreign page
cannot set without a CORS preflight we refuse); forms carry it as ``csrf``.

The cookie is its own proof: ``v1.<random id>.<expiry>.<HMAC-SHA256>`` under a key derived from
the admin token, and the CSRF token is an HMAC of the id. So any process holding the admin
token checks it alike — every worker of ``serve --workers N``, every instance sharing one admin
token — and nothing about sessions is kept in memory beyond the logged-out ids (until their
expiry). A new admin token logs everyone out. Logging out ends the session on the process that
answered and removes the cookie from the browser.

``proxygate dashboard`` asks the running server for a one-time login code (the way Jupyter
prints a token URL): the code is signed the same way, opens one session within
``LOGIN_CODE_TTL_S`` and is then gone — its use is marked by a file created exclusively under
``<data_dir>/login-codes``, so a second worker refuses it too — and the URL left in a
terminal's scrollback or the browser's history logs nobody in later.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from proxygate.store.files import ensure_private_dir

SESSION_COOKIE = "proxygate_session"
SESSION_TTL_S = 12 * 3600.0
"A session ends this long after login, whatever happens in between."
LOGIN_CODE_TTL_S = 120.0
"How long a one-time login link works."
MAX_ENDED = 10_000
"Logged-out sessions remembered (until they expire anyway): memory stays bounded under a flood."
LOGIN_CODES_DIR = "login-codes"
"Under the data dir: one empty file per redeemed login code, removed once the code has expired."
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"

_VERSION = "v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    "The cookie's whole signed value."
    csrf_token: str
    expires_at: float

    def accepts_csrf(self, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf_token.encode())


@dataclass(frozen=True, slots=True)
class _Signed:
    """``v1.<nonce>.<expires>.<signature>`` as parsed and checked."""

    nonce: str
    expires_at: int


class Sessions:
    """Signs and checks session cookies and login codes with a key derived from ``secret()``.

    ``secret`` is read on each use (the admin token is loaded at startup); ``data_dir`` holds
    the redeemed-code marks shared by processes (None: kept in memory, for one process).
    """

    def __init__(
        self,
        secret: Callable[[], str],
        data_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.codes_dir = data_dir / LOGIN_CODES_DIR if data_dir is not None else None
        self.clock = clock
        self._ended: dict[str, float] = {}
        "Nonce of a logged-out session → its expiry."
        self._redeemed: dict[str, float] = {}
        "Nonce of a redeemed login code → its expiry (the one-process fallback)."

    def create(self) -> Session:
        expires_at = int(self.clock() + SESSION_TTL_S)
        nonce = secrets.token_urlsafe(24)
        return Session(self._sign("session", nonce, expires_at), self._csrf(nonce), expires_at)

    def find(self, session_id: str) -> Session | None:
        signed = self._check("session", session_id)
        if signed is None or signed.nonce in self._ended:
            return None
        return Session(session_id, self._csrf(signed.nonce), signed.expires_at)

    def end(self, session_id: str) -> None:
        signed = self._check("session", session_id)
        if signed is None:
            return
        self._forget_expired(self.clock())
        while len(self._ended) >= MAX_ENDED:  # dicts keep insertion order: oldest first
            del self._ended[next(iter(self._ended))]
        self._ended[signed.nonce] = signed.expires_at

    def new_login_code(self) -> str:
        return self._sign("login", secrets.token_urlsafe(24), int(self.clock() + LOGIN_CODE_TTL_S))

    def redeem_login_code(self, code: str) -> bool:
        """True once for a code ``new_login_code`` made (here or in a sibling process), within its lifetime."""
        signed = self._check("login", code)
        if signed is None:
            return False
        now = self.clock()
        self._forget_expired(now)
        if signed.nonce in self._redeemed:
            return False
        self._redeemed[signed.nonce] = signed.expires_at
        if self.codes_dir is None:
            return True
        try:
            ensure_private_dir(self.codes_dir)
            _sweep_marks(self.codes_dir)
            fd = os.open(self.codes_dir / signed.nonce, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False  # a sibling process redeemed it first
        except OSError:
            return True  # the data dir is unusable: this process's own memory still refuses a reuse
        os.close(fd)
        return True

    # -- signing ------------------------------------------------------------------------------

    def _key(self, purpose: str) -> bytes:
        label = f"proxygate dashboard {purpose} {_VERSION}".encode()
        return hmac.new(self.secret().encode(), label, hashlib.sha256).digest()

    def _mac(self, purpose: str, message: str) -> str:
        return _b64(hmac.new(self._key(purpose), message.encode(), hashlib.sha256).digest())

    def _sign(self, purpose: str, nonce: str, expires_at: int) -> str:
        body = f"{_VERSION}.{nonce}.{expires_at}"
        return f"{body}.{self._mac(purpose, body)}"

    def _check(self, purpose: str, value: str) -> _Signed | None:
        """The signed value's parts when the signature is ours and it has not expired."""
        parts = value.split(".") if value else []
        if len(parts) != 4 or parts[0] != _VERSION or not parts[2].isdigit() or not self.secret():
            return None
        body = value.rsplit(".", 1)[0]
        if not hmac.compare_digest(parts[3].encode(), self._mac(purpose, body).encode()):
            return None
        expires_at = int(parts[2])
        if expires_at <= self.clock():
            return None
        return _Signed(parts[1], expires_at)

    def _csrf(self, nonce: str) -> str:
        return self._mac("csrf", nonce)

    def _forget_expired(self, now: float) -> None:
        for kept in (self._ended, self._redeemed):
            for nonce in [n for n, until in kept.items() if until <= now]:
                del kept[nonce]


def _sweep_marks(codes_dir: Path) -> None:
    """Remove the marks of codes that expired: those can no longer be redeemed anyway."""
    now = time.time()  # file times are wall-clock times
    for mark in codes_dir.iterdir():
        with contextlib.suppress(OSError):
            if mark.stat().st_mtime < now - LOGIN_CODE_TTL_S:
                mark.unlink()


SESSIONS = web.AppKey("dashboard_sessions", Sessions)


def session_of(request: web.Request) -> Session | None:
    """The request's live dashboard session, from its cookie (None without the dashboard)."""
    sessions = request.app.get(SESSIONS)
    if sessions is None:
        return None
    return sessions.find(request.cookies.get(SESSION_COOKIE, ""))

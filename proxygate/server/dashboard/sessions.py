"""Dashboard sessions: a cookie after logging in with the admin token, a CSRF token per session.

The session id travels only in an ``HttpOnly; SameSite=Strict`` cookie, so a page's script
cannot read it and another site's page never sends it. Every state-changing admin call made
with the cookie must also carry the session's CSRF token in ``X-CSRF-Token`` (a header a
foreign page cannot set without a CORS preflight we refuse); forms carry it as ``csrf``.

``proxygate dashboard`` asks the running server for a one-time login code (the way Jupyter
prints a token URL): the code opens one session within ``LOGIN_CODE_TTL_S`` and is then gone,
so the URL left in a terminal's scrollback or the browser's history logs nobody in later.
Sessions live in memory: a restart logs everyone out, which is the safe default.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

SESSION_COOKIE = "proxygate_session"
SESSION_TTL_S = 12 * 3600.0
"A session ends this long after login, whatever happens in between."
LOGIN_CODE_TTL_S = 120.0
"How long a one-time login link works."
MAX_SESSIONS = 1000
"More logins than this drop the oldest sessions: memory stays bounded under a login flood."
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf_token: str
    expires_at: float

    def accepts_csrf(self, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self.csrf_token.encode())


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._login_codes: dict[str, float] = {}

    def create(self) -> Session:
        now = self.clock()
        self._forget_expired(now)
        while len(self._sessions) >= MAX_SESSIONS:  # dicts keep insertion order: oldest first
            del self._sessions[next(iter(self._sessions))]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + SESSION_TTL_S)
        self._sessions[session.id] = session
        return session

    def find(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id) if session_id else None
        if session is None:
            return None
        if session.expires_at <= self.clock():
            del self._sessions[session_id]
            return None
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def new_login_code(self) -> str:
        now = self.clock()
        self._forget_expired(now)
        code = secrets.token_urlsafe(32)
        self._login_codes[code] = now + LOGIN_CODE_TTL_S
        return code

    def redeem_login_code(self, code: str) -> bool:
        """True once for a code ``new_login_code`` made, within its lifetime."""
        expires_at = self._login_codes.pop(code, None) if code else None
        return expires_at is not None and expires_at > self.clock()

    def _forget_expired(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[sid]
        for code in [c for c, until in self._login_codes.items() if until <= now]:
            del self._login_codes[code]


SESSIONS = web.AppKey("dashboard_sessions", Sessions)


def session_of(request: web.Request) -> Session | None:
    """The request's live dashboard session, from its cookie (None without the dashboard)."""
    sessions = request.app.get(SESSIONS)
    if sessions is None:
        return None
    return sessions.find(request.cookies.get(SESSION_COOKIE, ""))

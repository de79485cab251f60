"""Dashboard sessions: expiry, one-time login codes, CSRF comparison, a bounded store."""

from __future__ import annotations

from proxygate.server.dashboard import sessions as mod
from proxygate.server.dashboard.sessions import LOGIN_CODE_TTL_S, SESSION_TTL_S, Sessions
from tests.conftest import FakeClock


def test_a_session_expires_after_its_lifetime() -> None:
    clock = FakeClock()
    sessions = Sessions(clock)
    session = sessions.create()
    assert sessions.find(session.id) == session
    clock.advance(SESSION_TTL_S)
    assert sessions.find(session.id) is None
    assert sessions.find("") is None


def test_a_login_code_works_once_and_only_within_its_lifetime() -> None:
    clock = FakeClock()
    sessions = Sessions(clock)
    code = sessions.new_login_code()
    assert sessions.redeem_login_code(code)
    assert not sessions.redeem_login_code(code)
    late = sessions.new_login_code()
    clock.advance(LOGIN_CODE_TTL_S)
    assert not sessions.redeem_login_code(late)
    assert not sessions.redeem_login_code("")


def test_csrf_needs_the_session_token_exactly() -> None:
    session = Sessions(FakeClock()).create()
    assert session.accepts_csrf(session.csrf_token)
    assert not session.accepts_csrf("")
    assert not session.accepts_csrf(session.csrf_token[:-1])
    assert not session.accepts_csrf(session.id)


def test_a_login_flood_drops_the_oldest_sessions(monkeypatch) -> None:
    monkeypatch.setattr(mod, "MAX_SESSIONS", 3)
    sessions = Sessions(FakeClock())
    made = [sessions.create() for _ in range(5)]
    assert [sessions.find(s.id) is not None for s in made] == [False, False, True, True, True]

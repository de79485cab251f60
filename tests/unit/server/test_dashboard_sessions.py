"""Dashboard sessions: signed cookies that expire, one-time login codes, CSRF, logout, a new admin token."""

from __future__ import annotations

from pathlib import Path

from proxygate.server.dashboard import sessions as mod
from proxygate.server.dashboard.sessions import LOGIN_CODE_TTL_S, SESSION_TTL_S, Sessions
from tests.conftest import FakeClock


def signer(clock: FakeClock, token: str = "admin-token", data_dir: Path | None = None) -> Sessions:
    return Sessions(lambda: token, data_dir, clock)


def test_a_session_expires_after_its_lifetime() -> None:
    clock = FakeClock()
    sessions = signer(clock)
    session = sessions.create()
    assert sessions.find(session.id) == session
    clock.advance(SESSION_TTL_S)
    assert sessions.find(session.id) is None
    assert sessions.find("") is None


def test_another_process_with_the_same_admin_token_knows_the_session() -> None:
    clock = FakeClock()
    session = signer(clock).create()
    assert signer(clock).find(session.id) == session  # a sibling worker: nothing shared but the token
    assert signer(clock, token="another-token").find(session.id) is None


def test_a_forged_or_altered_cookie_is_refused() -> None:
    clock = FakeClock()
    sessions = signer(clock)
    version, nonce, expires, mac = sessions.create().id.split(".")
    later = str(int(expires) + 86400)
    assert sessions.find(f"{version}.{nonce}.{later}.{mac}") is None  # a longer life, same signature
    altered = mac[:-1] + ("B" if mac.endswith("A") else "A")  # one character different, always
    assert sessions.find(f"{version}.{nonce}.{expires}.{altered}") is None
    assert sessions.find(f"{version}.{nonce}.{expires}") is None
    assert sessions.find(sessions.new_login_code()) is None  # a login code is not a session


def test_a_login_code_works_once_and_only_within_its_lifetime() -> None:
    clock = FakeClock()
    sessions = signer(clock)
    code = sessions.new_login_code()
    assert sessions.redeem_login_code(code)
    assert not sessions.redeem_login_code(code)
    late = sessions.new_login_code()
    clock.advance(LOGIN_CODE_TTL_S)
    assert not sessions.redeem_login_code(late)
    assert not sessions.redeem_login_code("")


def test_a_login_code_works_once_across_processes_sharing_the_data_dir(tmp_path: Path) -> None:
    clock = FakeClock()
    one, other = signer(clock, data_dir=tmp_path), signer(clock, data_dir=tmp_path)
    code = one.new_login_code()
    assert other.redeem_login_code(code)  # made by one worker, redeemed through the other
    assert not one.redeem_login_code(code)
    assert (tmp_path / mod.LOGIN_CODES_DIR).stat().st_mode & 0o777 == 0o700


def test_csrf_needs_the_session_token_exactly() -> None:
    session = signer(FakeClock()).create()
    assert session.accepts_csrf(session.csrf_token)
    assert not session.accepts_csrf("")
    assert not session.accepts_csrf(session.csrf_token[:-1])
    assert not session.accepts_csrf(session.id)


def test_logout_ends_the_session_and_memory_stays_bounded(monkeypatch) -> None:
    monkeypatch.setattr(mod, "MAX_ENDED", 3)
    sessions = signer(FakeClock())
    made = [sessions.create() for _ in range(5)]
    for session in made:
        sessions.end(session.id)
    assert all(sessions.find(s.id) is None for s in made[2:])
    assert len(sessions._ended) == 3

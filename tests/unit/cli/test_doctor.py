"""``proxygate doctor``: nothing on a healthy install (fresh, no keyring, network or clients), and
each planted problem named on its own ✗ line with exit code 1."""

from __future__ import annotations

import email.utils
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import write_account

PROXYGATE = Path(sys.executable).parent / "proxygate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "config.toml").write_text(
        f'addr = "127.0.0.1:{free_port()}"\ndata_dir = "data"\npool_dir = "pool"\n'
    )
    return tmp_path


def doctor(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": os.environ["PATH"],
        "PROXYGATE_CONFIG": str(home / "config.toml"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",  # no keyring, as on a server
        "COLUMNS": "300",
    }
    return subprocess.run(
        [str(PROXYGATE), "doctor", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("✗")]


def test_a_fresh_install_is_healthy(home: Path) -> None:
    result = doctor(home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems(result) == []
    lines = result.stdout.splitlines()
    assert lines[0] == f"✓ config: {home / 'config.toml'}"
    assert f"✓ data dir {home / 'data'}: not created yet (serve creates it, 0700)" in lines
    assert f"✓ admin token {home / 'data' / 'admin.token'}: not created yet (serve generates it)" in lines
    assert all(line[0] in "✓–" for line in lines)


def test_json_lists_every_finding(home: Path) -> None:
    result = doctor(home, "--json")
    assert result.returncode == 0
    findings = orjson.loads(result.stdout)
    assert {f["check"] for f in findings} >= {
        "config",
        "data_dir",
        "pool_dir",
        "store",
        "admin_token",
        "port",
    }
    assert {f["status"] for f in findings} <= {"ok", "note"}


def test_a_bad_mode_is_named_with_its_fix(home: Path) -> None:
    (home / "data").mkdir(mode=0o755)
    (home / "data").chmod(0o755)
    (home / "pool").mkdir(mode=0o700)
    write_account(home / "pool", "apikeys", "ant", {"provider": "anthropic", "api_key": "sk-ant-doctor-1234"})
    (home / "pool" / "apikeys" / "ant.json").chmod(0o644)
    result = doctor(home)
    assert result.returncode == 1
    assert problems(result) == [
        f"✗ data dir {home / 'data'}: mode 0755, others can read it (want 0700) — fix: chmod 700 {home / 'data'}",
        f"✗ pool dir {home / 'pool' / 'apikeys'}: mode 0755, others can read it (want 0700) — fix: chmod 700 "
        f"{home / 'pool' / 'apikeys'}",
        f"✗ pool file {home / 'pool' / 'apikeys' / 'ant.json'}: mode 0644, others can read it (want 0600) — fix: "
        f"chmod 600 {home / 'pool' / 'apikeys' / 'ant.json'}",
    ]
    assert "sk-ant-doctor" not in result.stdout


def test_an_invalid_pool_file_is_named(home: Path) -> None:
    (home / "pool" / "claude").mkdir(parents=True, mode=0o700)
    (home / "pool").chmod(0o700)
    bad = home / "pool" / "claude" / "broken.json"
    bad.write_text("{not json")
    bad.chmod(0o600)
    result = doctor(home)
    assert result.returncode == 1
    [line] = problems(result)
    assert line.startswith(f"✗ pool file {bad}: ") and line.endswith(f"— fix: fix or remove {bad}")


def test_a_port_taken_by_another_program_is_named(home: Path) -> None:
    port = free_port()
    (home / "config.toml").write_text(f'addr = "127.0.0.1:{port}"\ndata_dir = "data"\npool_dir = "pool"\n')
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        result = doctor(home)
    assert result.returncode == 1
    assert problems(result) == [
        f"✗ port {port} on 127.0.0.1: taken by another program — fix: stop it, or listen elsewhere: "
        f'addr = "127.0.0.1:{port + 1}" in config.toml'
    ]


def test_a_data_dir_that_cannot_be_created_is_named(home: Path) -> None:
    (home / "not-a-dir").write_text("")
    (home / "config.toml").write_text(
        'data_dir = "not-a-dir/data"\npool_dir = "pool"\naddr = "127.0.0.1:9"\n'
    )
    result = doctor(home)
    assert result.returncode == 1
    data = home / "not-a-dir" / "data"
    assert problems(result)[0] == (
        f"✗ data dir {data}: missing, and cannot be created ({home / 'not-a-dir'} is not a directory) — fix: "
        f"mkdir -m 700 -p {data}, or set data_dir in config.toml"
    )


def test_an_invalid_config_is_one_problem(home: Path) -> None:
    (home / "config.toml").write_text('addr = "nowhere"\n')
    result = doctor(home)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "✗ config: addr: 'nowhere' is not HOST:PORT — fix: edit the file it names"
    ]


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a file to another user")
def test_a_file_owned_by_someone_else_is_named(home: Path) -> None:
    (home / "data").mkdir(mode=0o700)
    token = home / "data" / "admin.token"
    token.write_text("x")
    token.chmod(0o600)
    os.chown(token, 65534, 65534)
    result = doctor(home)
    assert result.returncode == 1
    assert problems(result) == [
        f"✗ admin token {token}: owned by uid 65534, not by you (uid 0) — fix: sudo chown -R 0 {token}"
    ]


def test_clients_and_local_logins_are_notes_not_problems(home: Path) -> None:
    (home / ".claude").mkdir()
    (home / ".claude" / "settings.json").write_text('{"env": {"ANTHROPIC_BASE_URL": "https://elsewhere"}}')
    (home / ".claude" / ".credentials.json").write_text('{"claudeAiOauth": {}}')
    result = doctor(home)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert (
        f"– Claude Code: points at https://elsewhere ({home / '.claude' / 'settings.json'}) — try: "
        "proxygate setup claude-code --write"
    ) in lines
    assert any(
        line.startswith("– pool: empty; found ") and "`proxygate import --local`" in line for line in lines
    )


@pytest.fixture
def running(home: Path) -> Iterator[str]:
    env = {**os.environ, "HOME": str(home), "PROXYGATE_CONFIG": str(home / "config.toml")}
    proc = subprocess.Popen(
        [str(PROXYGATE), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            if (home / "data" / "server.json").exists():
                break
            time.sleep(0.05)
        yield orjson.loads((home / "data" / "server.json").read_bytes())["addr"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_port_held_by_our_server_is_fine_and_names_its_version(home: Path, running: str) -> None:
    from proxygate import __version__

    result = doctor(home)
    assert result.returncode == 0, result.stdout
    port = running.rsplit(":", 1)[1]
    assert any(
        line.startswith(f"✓ port {port} on 127.0.0.1: held by our server (proxygate {__version__}, pid ")
        for line in result.stdout.splitlines()
    )
    assert any(line.startswith("✓ store ") and " opens, " in line for line in result.stdout.splitlines())


class SkewedProvider(http.server.BaseHTTPRequestHandler):
    """Answers like a provider whose clock says an hour earlier than ours."""

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response_only(status)
        self.send_header("Date", email.utils.formatdate(time.time() - 3600, usegmt=True))
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._answer(404, b"")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self._answer(200, orjson.dumps({"type": "message", "content": [{"type": "text", "text": "ok"}]}))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SkewedProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_online_finds_clock_skew_and_checks_each_account(home: Path, provider: str) -> None:
    (home / "pool").mkdir(mode=0o700)
    write_account(
        home / "pool",
        "apikeys",
        "ant",
        {"provider": "anthropic", "api_key": "sk-ant-x-9999", "base_url": provider},
    )
    (home / "pool" / "apikeys").chmod(0o700)
    offline = doctor(home)
    assert offline.returncode == 0, offline.stdout
    assert not any(line.startswith(("✓ clock", "✗ clock")) for line in offline.stdout.splitlines())
    result = doctor(home, "--online")
    assert result.returncode == 1
    [clock] = problems(result)
    assert re.fullmatch(
        rf"✗ clock: \+36\d\d s off {provider}/ \(tokens and signatures expire early or late\) — fix: "
        r"sudo timedatectl set-ntp true",
        clock,
    )
    assert any(
        re.fullmatch(r"✓ account ant: HTTP 200 in \d+ ms", line) for line in result.stdout.splitlines()
    )


def test_a_service_unit_starting_a_missing_executable_is_a_problem(home: Path) -> None:
    unit = home / ".config" / "systemd" / "user" / "proxygate.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/opt/gone/bin/proxygate serve\n")
    result = doctor(home)
    assert result.returncode == 1
    assert problems(result) == [
        f"✗ service {unit}: starts /opt/gone/bin/proxygate, which does not exist — fix: proxygate service install"
    ]
    unit.write_text(f"[Service]\nExecStart={PROXYGATE} serve\n")
    result = doctor(home)
    assert result.returncode == 0
    assert f"✓ service {unit}: runs this install ({PROXYGATE})" in result.stdout.splitlines()

"""``service install`` as an upgrade: the new unit replaces the old and the service restarts; when
it does not answer /healthz, the previous unit is put back and restarted.

No systemd runs here, so a stand-in ``systemctl`` on PATH plays the manager: a real program that
starts the unit's ExecStart (with its Environment=) on ``restart`` and stops it with SIGTERM, as
systemd would. ``fail-next`` makes one start do nothing, like a unit whose service dies at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

PROXYGATE = Path(sys.executable).parent / "proxygate"

FAKE_SYSTEMCTL = """#!{python}
import os, pathlib, shlex, signal, subprocess, sys, time
state = pathlib.Path(os.environ["FAKE_SYSTEMD_STATE"])
with open(state / "calls", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
args = [a for a in sys.argv[1:] if a != "--user"]
unit = pathlib.Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user" / "proxygate.service"
pidfile = state / "pid"

def stop():
    if not pidfile.exists():
        return
    try:
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
    except ProcessLookupError:
        pass
    pidfile.unlink()
    runfile = pathlib.Path(os.environ["SERVER_JSON"])
    deadline = time.monotonic() + 30
    while runfile.exists() and time.monotonic() < deadline:  # a clean stop removes it
        time.sleep(0.05)

def start():
    if (state / "fail-next").exists():
        (state / "fail-next").unlink()
        return
    env, command = dict(os.environ), None
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            name, _, value = shlex.split(line.removeprefix("Environment="))[0].partition("=")
            env[name] = value
        elif line.startswith("ExecStart="):
            command = shlex.split(line.removeprefix("ExecStart="))
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    pidfile.write_text(str(proc.pid))

verb = args[0]
if verb == "restart":
    stop()
    start()
elif verb == "disable":
    stop()
elif verb == "is-active":
    print("active" if pidfile.exists() else "inactive")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path / "home"
    (home / ".proxygate").mkdir(parents=True, mode=0o700)
    port = free_port()
    (home / ".proxygate" / "config.toml").write_text(
        f'addr = "127.0.0.1:{port}"\ndata_dir = "data"\npool_dir = "pool"\n'
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
    systemctl.chmod(0o755)
    state = tmp_path / "systemd"
    state.mkdir()
    env = {
        "HOME": str(home),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PROXYGATE_CONFIG": str(home / ".proxygate" / "config.toml"),
        "FAKE_SYSTEMD_STATE": str(state),
        "SERVER_JSON": str(home / ".proxygate" / "data" / "server.json"),
        "COLUMNS": "300",
    }
    yield home, env
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.kill(int((state / "pid").read_text()), signal.SIGKILL)


def install(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROXYGATE), "service", "install", *args], env=env, capture_output=True, text=True, timeout=120
    )


def answers(home: Path) -> bool:
    port = (home / ".proxygate" / "config.toml").read_text().split(":")[1].split('"')[0]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_install_starts_the_service_and_a_failed_upgrade_rolls_back(
    machine: tuple[Path, dict[str, str]],
) -> None:
    home, env = machine
    unit = home / ".config" / "systemd" / "user" / "proxygate.service"
    first = install(env, "--wait-s", "20")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout == f"proxygate runs as a service ({unit}); logs: proxygate service logs\n"
    assert answers(home)
    calls = Path(env["FAKE_SYSTEMD_STATE"]) / "calls"
    assert calls.read_text().splitlines() == [
        "--user show-environment",
        "--user daemon-reload",
        "--user enable proxygate.service",
        "--user restart proxygate.service",
    ]
    before = unit.read_text()
    assert "TimeoutStopSec=45" in before

    # The upgrade: a different unit (shorter drain) whose service does not come up.
    config = home / ".proxygate" / "config.toml"
    config.write_text(config.read_text() + "drain_timeout_s = 5\n")
    (Path(env["FAKE_SYSTEMD_STATE"]) / "fail-next").touch()
    calls.write_text("")
    second = install(env, "--wait-s", "3")
    assert second.returncode == 1
    assert "the new service did not answer /healthz within 3 s: the previous proxygate.service is back" in (
        second.stderr
    )
    assert unit.read_text() == before
    assert calls.read_text().splitlines() == [
        "--user show-environment",
        "--user daemon-reload",
        "--user enable proxygate.service",
        "--user restart proxygate.service",  # the new unit: nothing answers
        "--user daemon-reload",
        "--user enable proxygate.service",
        "--user restart proxygate.service",  # the previous unit again
    ]
    deadline = time.monotonic() + 20
    while not answers(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answers(home)

    # A good upgrade replaces the unit and the service answers.
    third = install(env, "--wait-s", "20")
    assert third.returncode == 0, third.stderr
    assert "TimeoutStopSec=20" in unit.read_text()
    assert answers(home)

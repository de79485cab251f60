"""``proxygate logs``: the log file, the systemd journal, or where the server's output goes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from proxygate.cli import app


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "config.toml").write_text('pool_dir = "pool"\ndata_dir = "data"\n')
    return {
        "PROXYGATE_CONFIG": str(tmp_path / "config.toml"),
        "COLUMNS": "200",
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, ["logs", *args], env=env)


def test_shows_the_last_lines_of_the_log_file(tmp_path: Path, env: dict[str, str]) -> None:
    log_file = tmp_path / "proxygate.log"
    log_file.write_text("".join(f"line {i} [not markup]\n" for i in range(1, 2001)))
    env["PROXYGATE_LOG_FILE"] = str(log_file)
    result = run(env, "-n", "3")
    assert (result.exit_code, result.output.splitlines()) == (
        0,
        ["line 1998 [not markup]", "line 1999 [not markup]", "line 2000 [not markup]"],
    )
    assert run(env).output.splitlines()[0] == "line 1951 [not markup]"  # 50 by default


def test_no_file_no_unit_no_server_says_where_the_output_goes(env: dict[str, str]) -> None:
    result = run(env)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "no server is running, no log_file is set and there is no systemd unit: `proxygate serve` writes "
        'its log to the stderr of whatever starts it; set log_file = "~/.proxygate/proxygate.log" in '
        "config.toml to keep it in a file"
    ]


def test_a_user_unit_reads_the_journal(
    tmp_path: Path, env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    unit = tmp_path / "xdg" / "systemd" / "user" / "proxygate.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=proxygate serve\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "journalctl"  # stands in for systemd's tool: prints the arguments it got
    fake.write_text('#!/bin/sh\necho "journalctl $*"\nexit 3\n')
    fake.chmod(0o755)
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    result = run(env, "-f", "-n", "5")
    assert result.exit_code == 3  # journalctl's own exit code
    assert capfd.readouterr().out.splitlines() == ["journalctl --user -u proxygate -n 5 --no-pager -o cat -f"]


def test_a_running_server_whose_stderr_is_a_file_is_read_there(tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "nohup.out"
    out.write_text("first\nsecond\n")
    with out.open("a") as stderr:
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], stderr=stderr)
    try:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "server.json").write_bytes(
            orjson.dumps({"addr": "127.0.0.1:1", "pid": server.pid})
        )
        result = run(env, "-n", "1")
        assert (result.exit_code, result.output.splitlines()) == (0, ["second"])
    finally:
        server.kill()
        server.wait()


def test_a_running_server_on_a_pipe_is_named_with_its_pid(tmp_path: Path, env: dict[str, str]) -> None:
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], stderr=subprocess.PIPE)
    try:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "server.json").write_bytes(
            orjson.dumps({"addr": "127.0.0.1:1", "pid": server.pid})
        )
        result = run(env)
        target = os.readlink(f"/proc/{server.pid}/fd/2")
        assert result.exit_code == 1
        assert result.output.startswith(f"the server (pid {server.pid}) writes its log to {target}; ")
    finally:
        server.kill()
        server.wait()


def test_follow_prints_new_lines_across_rotation(tmp_path: Path, env: dict[str, str]) -> None:
    log_file = tmp_path / "proxygate.log"
    log_file.write_text("old 1\nold 2\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxygate", "logs", "-f", "-n", "1"],
        env={**os.environ, **env, "PROXYGATE_LOG_FILE": str(log_file), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "old 2\n"
        with log_file.open("a") as f:  # at once: following starts where the tail ended
            f.write("new 1\n")
        assert proc.stdout.readline() == "new 1\n"
        log_file.rename(tmp_path / "proxygate.log.1")  # what the rotating handler does
        log_file.write_text("after rotation\n")
        assert proc.stdout.readline() == "after rotation\n"
    finally:
        proc.kill()
        proc.wait()

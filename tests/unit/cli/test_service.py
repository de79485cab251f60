"""``proxygate service``: units rendered for this install, verified by systemd, and no traceback
where no service manager runs (this container has none)."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROXYGATE = Path(sys.executable).parent / "proxygate"
HAS_SYSTEMD_ANALYZE = shutil.which("systemd-analyze") is not None
NO_SYSTEMD_RUNNING = not Path("/run/systemd/system").is_dir()


def run(home: Path, *args: str, path_env: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": os.environ["PATH"] if path_env is None else path_env,
        "PROXYGATE_CONFIG": str(home / ".proxygate" / "config.toml"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [str(PROXYGATE), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    config = tmp_path / ".proxygate" / "config.toml"
    config.parent.mkdir(mode=0o700)
    config.write_text('data_dir = "data"\npool_dir = "pool"\n')
    return tmp_path


def verify(unit: Path) -> None:
    if not HAS_SYSTEMD_ANALYZE:
        return  # checked where systemd-analyze exists; the text assertions still ran
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.skipif(
    not NO_SYSTEMD_RUNNING, reason="systemd runs here: install would really start the service"
)
def test_install_without_a_service_manager_writes_and_prints_the_unit(home: Path) -> None:
    result = run(home, "service", "install", "--user")
    assert result.returncode == 0, result.stderr
    unit = home / ".config" / "systemd" / "user" / "proxygate.service"
    assert result.stdout == unit.read_text()
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"systemd is not running on this machine (a container?): wrote {unit};")
    lines = unit.read_text().splitlines()
    assert f"ExecStart={PROXYGATE} serve" in lines
    assert Path(PROXYGATE).is_absolute()
    config = home / ".proxygate" / "config.toml"
    for line in (
        f"Environment=PROXYGATE_CONFIG={config}",
        "NoNewPrivileges=yes",
        "UMask=0077",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        f"ReadWritePaths=-{home / '.proxygate'}",  # the config dir holds data and pool here
        "WantedBy=default.target",
    ):
        assert line in lines
    assert oct(unit.stat().st_mode & 0o777) == "0o600"
    # ProtectSystem=strict: the service cannot create its own dirs, so install does
    assert (home / ".proxygate" / "data").is_dir() and (home / ".proxygate" / "pool").is_dir()
    verify(unit)


def test_without_systemctl_install_says_so_in_one_line_and_succeeds(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run(home, "service", "install", "--user", path_env=str(empty))
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("systemd is not installed on this machine: wrote ")
    assert result.stderr.count("\n") == 1
    assert "ExecStart=" in result.stdout


def test_data_and_pool_outside_the_config_dir_are_writable_and_odd_paths_are_escaped(
    home: Path, tmp_path: Path
) -> None:
    data = tmp_path / "my data %d"
    (home / ".proxygate" / "config.toml").write_text(f'data_dir = "{data}"\npool_dir = "/srv/pool"\n')
    result = run(home, "service", "install", "--print")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f'ReadWritePaths=-"{str(data).replace("%", "%%")}"' in lines
    assert "ReadWritePaths=-/srv/pool" in lines
    assert f"ReadWritePaths=-{home / '.proxygate'}" in lines
    unit = tmp_path / "proxygate.service"
    unit.write_text(result.stdout)
    verify(unit)
    assert not (home / ".config").exists()  # --print changes nothing


def test_system_unit_runs_as_the_user_for_the_multi_user_target(home: Path, tmp_path: Path) -> None:
    result = run(home, "service", "install", "--system", "--print")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("User=") for line in lines)
    assert "WantedBy=multi-user.target" in lines
    unit = tmp_path / "proxygate.service"
    unit.write_text(result.stdout)
    verify(unit)


def test_launchd_plist_has_the_agent_keys(home: Path) -> None:
    result = run(home, "service", "install", "--manager", "launchd", "--print")
    assert result.returncode == 0, result.stderr
    agent = plistlib.loads(result.stdout.encode())
    assert agent == {
        "Label": "dev.proxygate",
        "ProgramArguments": [str(PROXYGATE), "serve"],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ExitTimeOut": 45,
        "Umask": 0o077,
        "StandardOutPath": str(home / ".proxygate" / "data" / "proxygate.log"),
        "StandardErrorPath": str(home / ".proxygate" / "data" / "proxygate.log"),
        "EnvironmentVariables": {"PROXYGATE_CONFIG": str(home / ".proxygate" / "config.toml")},
    }


def test_uninstall_removes_the_unit_and_keeps_the_rest(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    assert run(home, "service", "install", path_env=str(empty)).returncode == 0
    unit = home / ".config" / "systemd" / "user" / "proxygate.service"
    assert unit.is_file()
    result = run(home, "service", "uninstall", path_env=str(empty))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"removed {unit}; config, pool and data are untouched\n"
    assert not unit.exists() and (home / ".proxygate" / "config.toml").is_file()
    again = run(home, "service", "uninstall", path_env=str(empty))
    assert again.returncode == 0 and again.stdout == f"no service installed ({unit} does not exist)\n"


def test_status_without_service_or_server_names_both_and_fails(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    (home / ".proxygate" / "config.toml").write_text(
        'data_dir = "data"\npool_dir = "pool"\naddr = "127.0.0.1:9"\n'
    )
    result = run(home, "service", "status", path_env=str(empty))
    assert result.returncode == 1
    unit = home / ".config" / "systemd" / "user" / "proxygate.service"
    assert result.stdout.splitlines() == [
        f"✗ service definition: {unit} (not installed: proxygate service install)",
        "- service manager: systemd is not installed on this machine",
        "✗ server: nothing answers at 127.0.0.1:9",
    ]


def test_a_shared_cli_login_makes_its_directory_writable(home: Path) -> None:
    """import --local --share writes rotated tokens into the CLI's file: the sandbox must allow it."""
    pool = home / ".proxygate" / "pool" / "claude"
    pool.mkdir(parents=True)
    shared = home / ".claude" / ".credentials.json"
    (pool / "me@example.com.json").write_text(
        f'{{"email": "me@example.com", "access_token": "a", "refresh_token": "r", "shared_file": "{shared}"}}'
    )
    result = run(home, "service", "install", "--print")
    assert result.returncode == 0, result.stderr
    assert f"ReadWritePaths=-{home / '.claude'}" in result.stdout.splitlines()

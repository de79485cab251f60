"""``proxygate service``: run this install as a systemd (Linux) or launchd (macOS) service.

One idea first: the service definition is rendered from the install that runs the command
(``cli/service_units.py``), so it always starts the same ``proxygate`` with the same config. An
upgrade is ``service install`` again: the new unit replaces the old one, the service restarts,
and when ``/healthz`` does not answer in time the previous unit is put back and restarted.
Where no service manager runs (a container), the unit is written and printed with one line
saying so, and the command still succeeds: it can be installed by hand.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer

from proxygate.cli.app import Commands, ConfigOption, app, console, err_console, reported, settings_from
from proxygate.cli.logs import FollowOption, LinesOption, logs
from proxygate.cli.service_units import (
    LABEL,
    UNIT,
    Install,
    proxygate_command,
    render_plist,
    render_systemd,
    writable_dirs,
)
from proxygate.config import Settings
from proxygate.store.files import ensure_private_dir, write_bytes_atomic

service = Commands(
    help="Run proxygate as a service: systemd (Linux) or launchd (macOS).", no_args_is_help=True
)
app.add_typer(service, name="service")

# A restarted server answers /healthz within a few seconds (the store opens, the pool loads).
HEALTH_WAIT_S = 20.0
SUBPROCESS_TIMEOUT_S = 30.0


class Manager(StrEnum):
    auto = "auto"
    systemd = "systemd"
    launchd = "launchd"


ManagerOption = Annotated[
    Manager,
    typer.Option("--manager", help="Service manager (auto: launchd on macOS, else systemd).", hidden=True),
]
WaitOption = Annotated[
    float, typer.Option("--wait-s", help="How long to wait for /healthz after a (re)start.", hidden=True)
]
SystemOption = Annotated[
    bool, typer.Option("--system/--user", help="A system unit (run as you, needs root) or a user unit.")
]


@dataclass(frozen=True, slots=True)
class Target:
    """Where the definition lives and how the manager is asked about it."""

    manager: Manager
    path: Path
    is_system: bool

    @property
    def systemctl(self) -> list[str]:
        return ["systemctl"] if self.is_system else ["systemctl", "--user"]


def target_for(manager: Manager, *, is_system: bool) -> Target:
    if manager is Manager.auto:
        manager = Manager.launchd if sys.platform == "darwin" else Manager.systemd
    if manager is Manager.launchd:
        if is_system:
            err_console.print("[red]error:[/] --system is for systemd; on macOS proxygate runs as your agent")
            raise typer.Exit(2)
        return Target(manager, Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist", False)
    if is_system:
        return Target(manager, Path("/etc/systemd/system") / UNIT, True)
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return Target(manager, config_home / "systemd" / "user" / UNIT, False)


def shared_credential_dirs(pool_dir: Path) -> list[Path]:
    """Directories of the CLI credential files shared with ``import --local --share``."""
    dirs = []
    for path in sorted(pool_dir.glob("*/*.json")):
        with contextlib.suppress(OSError, orjson.JSONDecodeError, AttributeError, TypeError):
            shared = orjson.loads(path.read_bytes()).get("shared_file")
            if isinstance(shared, str) and shared:
                dirs.append(Path(shared).expanduser().parent)
    return dirs


def _install_of(settings: Settings) -> Install:
    writable = [settings.data_dir, settings.pool_dir, *shared_credential_dirs(settings.pool_dir)]
    if settings.config_path is not None:
        writable.append(settings.config_path.parent)
    if settings.log_file is not None:
        writable.append(settings.log_file.parent)
    if settings.capture.dir is not None:
        writable.append(settings.capture.dir)
    return Install(
        command=proxygate_command(),
        config_path=settings.config_path.absolute() if settings.config_path else None,
        writable=writable_dirs(writable),
        drain_timeout_s=settings.drain_timeout_s,
        log_path=settings.log_file or settings.data_dir / "proxygate.log",
    )


def _render(target: Target, settings: Settings) -> bytes:
    install = _install_of(settings)
    if target.manager is Manager.launchd:
        return render_plist(install)
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return render_systemd(install, system_user=user if target.is_system else None).encode()


def _unreachable(target: Target) -> str | None:
    """Why the service manager cannot be used here, or None when it can."""
    if target.manager is Manager.launchd:
        return None if shutil.which("launchctl") else "launchctl is not available on this machine"
    if shutil.which("systemctl") is None:
        return "systemd is not installed on this machine"
    if _run([*target.systemctl, "show-environment"]).returncode == 0:
        return None
    if not Path("/run/systemd/system").is_dir():
        return "systemd is not running on this machine (a container?)"
    return "no systemd user manager is reachable (no user session bus; try a login shell)"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(args, 1, "", str(exc))


def _must(args: list[str]) -> None:
    result = _run(args)
    if result.returncode != 0:
        err_console.print(
            f"[red]error:[/] {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}",
            markup=True,
            highlight=False,
        )
        raise typer.Exit(1)


def _start(target: Target) -> None:
    """(Re)start the service from the definition on disk."""
    if target.manager is Manager.launchd:
        domain = "system" if target.is_system else f"gui/{os.getuid()}"
        _run(["launchctl", "bootout", f"{domain}/{LABEL}"])  # not loaded yet is fine
        _must(["launchctl", "bootstrap", domain, str(target.path)])
        return
    _must([*target.systemctl, "daemon-reload"])
    _must([*target.systemctl, "enable", UNIT])
    _must([*target.systemctl, "restart", UNIT])


def _comes_up(settings: Settings, wait_s: float) -> bool:
    from proxygate.cli.admin_client import find_server

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if find_server(settings) is not None:
            return True
        time.sleep(0.5)
    return False


@service.command()
def install(
    config: ConfigOption = None,
    system: SystemOption = False,
    linger: Annotated[
        bool, typer.Option("--linger", help="Keep the user service running after you log out (Linux).")
    ] = False,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the unit (or plist) and change nothing.")
    ] = False,
    manager: ManagerOption = Manager.auto,
    wait_s: WaitOption = HEALTH_WAIT_S,
) -> None:
    """Install (or upgrade) and start the service; roll back when the new one does not come up."""
    with reported():
        settings = settings_from(config)
    target = target_for(manager, is_system=system)
    if print_only:
        sys.stdout.write(_render(target, settings).decode())
        return
    for directory in (settings.data_dir, settings.pool_dir):
        ensure_private_dir(directory)  # ProtectSystem=strict: the service cannot create them itself
    text = _render(target, settings)
    reason = _unreachable(target)
    if reason is not None:
        written = _write(target.path, text)
        sys.stdout.write(text.decode())
        where = f"wrote {target.path}" if written else f"install it as {target.path}"
        err_console.print(
            f"{reason}: {where}; the service starts once a service manager loads it "
            "(or run `proxygate serve`).",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return
    previous = target.path.read_bytes() if target.path.is_file() else None
    if not _write(target.path, text):
        err_console.print(f"[red]error:[/] cannot write {target.path} (run with sudo for --system)")
        raise typer.Exit(1)
    if linger and target.manager is Manager.systemd and not target.is_system:
        _must(["loginctl", "enable-linger", getpass.getuser()])
    _start(target)
    if _comes_up(settings, wait_s):
        console.print(
            f"proxygate runs as a service ({target.path}); logs: proxygate service logs", highlight=False
        )
        return
    if previous is None:
        err_console.print(
            f"[red]error:[/] the service did not answer /healthz within {wait_s:.0f} s; "
            "see proxygate service logs"
        )
        raise typer.Exit(1)
    _write(target.path, previous)
    _start(target)
    err_console.print(
        f"[red]error:[/] the new service did not answer /healthz within {wait_s:.0f} s: "
        f"the previous {target.path.name} is back and restarted; see proxygate service logs"
    )
    raise typer.Exit(1)


def _write(path: Path, payload: bytes) -> bool:
    try:
        write_bytes_atomic(path, payload)
    except OSError:
        return False
    return True


@service.command()
def uninstall(manager: ManagerOption = Manager.auto, system: SystemOption = False) -> None:
    """Stop the service and remove its unit (or plist); config, pool and data stay."""
    target = target_for(manager, is_system=system)
    reason = _unreachable(target)
    if reason is None:
        if target.manager is Manager.launchd:
            domain = "system" if target.is_system else f"gui/{os.getuid()}"
            _run(["launchctl", "bootout", f"{domain}/{LABEL}"])
        else:
            _run([*target.systemctl, "disable", "--now", UNIT])
    try:
        target.path.unlink()
    except FileNotFoundError:
        console.print(f"no service installed ({target.path} does not exist)", highlight=False)
        return
    except OSError as exc:
        err_console.print(f"[red]error:[/] cannot remove {target.path}: {exc.strerror}")
        raise typer.Exit(1) from None
    if reason is None and target.manager is Manager.systemd:
        _run([*target.systemctl, "daemon-reload"])
    console.print(f"removed {target.path}; config, pool and data are untouched", highlight=False)


@service.command()
def status(
    config: ConfigOption = None, manager: ManagerOption = Manager.auto, system: SystemOption = False
) -> None:
    """Whether the service is installed and running, and whether the server answers."""
    from proxygate.cli.admin_client import find_server

    with reported():
        settings = settings_from(config)
    target = target_for(manager, is_system=system)
    installed = target.path.is_file()
    console.print(
        f"{'✓' if installed else '✗'} service definition: {target.path}"
        + ("" if installed else " (not installed: proxygate service install)"),
        highlight=False,
    )
    reason = _unreachable(target)
    if reason is not None:
        console.print(f"- service manager: {reason}", highlight=False)
    elif installed:
        if target.manager is Manager.launchd:
            domain = "system" if target.is_system else f"gui/{os.getuid()}"
            state = (
                "loaded"
                if _run(["launchctl", "print", f"{domain}/{LABEL}"]).returncode == 0
                else "not loaded"
            )
        else:
            state = _run([*target.systemctl, "is-active", UNIT]).stdout.strip() or "unknown"
        console.print(f"{'✓' if state in ('active', 'loaded') else '✗'} service: {state}", highlight=False)
    server = find_server(settings)
    if server is None:
        console.print(f"✗ server: nothing answers at {settings.addr}", highlight=False)
        raise typer.Exit(1)
    console.print(f"✓ server: answering at {server.base_url}", highlight=False)


@service.command()
def restart(
    config: ConfigOption = None,
    manager: ManagerOption = Manager.auto,
    system: SystemOption = False,
    wait_s: WaitOption = HEALTH_WAIT_S,
) -> None:
    """Restart the service (it drains streams in flight first) and wait for /healthz."""
    with reported():
        settings = settings_from(config)
    target = target_for(manager, is_system=system)
    if not target.path.is_file():
        err_console.print(
            f"[red]error:[/] no service installed ({target.path}); run: proxygate service install"
        )
        raise typer.Exit(1)
    reason = _unreachable(target)
    if reason is not None:
        err_console.print(f"[red]error:[/] {reason}")
        raise typer.Exit(1)
    if target.manager is Manager.launchd:
        domain = "system" if target.is_system else f"gui/{os.getuid()}"
        _must(["launchctl", "kickstart", "-k", f"{domain}/{LABEL}"])
    else:
        _must([*target.systemctl, "restart", UNIT])
    if not _comes_up(settings, wait_s):
        err_console.print(f"[red]error:[/] restarted, but /healthz did not answer within {wait_s:.0f} s")
        raise typer.Exit(1)
    console.print("restarted; the server answers", highlight=False)


@service.command("logs")
def service_logs(config: ConfigOption = None, follow: FollowOption = False, lines: LinesOption = 50) -> None:
    """The service's log: the same as `proxygate logs`."""
    logs(config=config, follow=follow, lines=lines)

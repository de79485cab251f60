"""Service definitions for this install: a systemd unit (user or system) and a launchd agent plist.

Rendered from the real paths of the running install (the ``proxygate`` executable next to this
Python, the config in use, the data and pool dirs), never from a template with a guessed
prefix: pipx, uv tool, a venv and a system package all put the executable somewhere else.
Pure text in, text out; ``cli/service.py`` writes them and talks to the service manager.
"""

from __future__ import annotations

import plistlib
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

UNIT = "proxygate.service"
LABEL = "dev.proxygate"

# serve drains for drain_timeout_s on SIGTERM; the manager waits this much longer before SIGKILL.
STOP_MARGIN_S = 15


@dataclass(frozen=True, slots=True)
class Install:
    """What a service definition needs to know about this install."""

    command: tuple[str, ...]
    "How to run proxygate: its absolute executable (or python -m proxygate)."
    config_path: Path | None
    "The config file in use, pinned so the service reads the same one."
    writable: tuple[Path, ...]
    "Directories the service writes: data, pool, the config's dir, shared credential dirs."
    drain_timeout_s: float
    log_path: Path
    "Where launchd sends stdout/stderr (systemd uses the journal)."


def proxygate_command() -> tuple[str, ...]:
    """The installed ``proxygate`` executable: next to this Python first (venv, pipx, uv tool)."""
    beside = Path(sys.executable).parent / "proxygate"
    if beside.is_file():
        return (str(beside.absolute()),)
    found = shutil.which("proxygate")
    if found:
        return (str(Path(found).absolute()),)
    return (str(Path(sys.executable).absolute()), "-m", "proxygate")


def _quote(word: str) -> str:
    """One word of a systemd command line or path list: ``%`` escaped, quoted when it has spaces."""
    word = word.replace("%", "%%")
    if any(c in word for c in " \t\"'\\"):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def render_systemd(install: Install, *, system_user: str | None = None) -> str:
    """A systemd unit; ``system_user`` makes it a system unit that runs as that user."""
    lines = [
        "# proxygate: rendered by `proxygate service install` for this install; re-run it after moving things.",
        "[Unit]",
        "Description=proxygate: one local endpoint in front of many LLM accounts",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
    ]
    if system_user:
        lines += [f"User={system_user}"]
    if install.config_path is not None:
        lines.append(f"Environment={_quote('PROXYGATE_CONFIG=' + str(install.config_path))}")
    lines += [
        "ExecStart=" + " ".join(_quote(word) for word in (*install.command, "serve")),
        "# SIGTERM drains: stop accepting, let streams finish (drain_timeout_s), flush the usage store.",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={int(install.drain_timeout_s) + STOP_MARGIN_S}",
        "Restart=on-failure",
        "RestartSec=2",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
    ]
    # "-": a directory that does not exist (yet) must not stop the service from starting.
    lines += [f"ReadWritePaths=-{_quote(str(path))}" for path in install.writable]
    lines += ["", "[Install]", f"WantedBy={'multi-user.target' if system_user else 'default.target'}", ""]
    return "\n".join(lines)


def render_plist(install: Install) -> bytes:
    """A launchd agent: KeepAlive on failure, stdout and stderr into log_path."""
    agent: dict[str, object] = {
        "Label": LABEL,
        "ProgramArguments": [*install.command, "serve"],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ExitTimeOut": int(install.drain_timeout_s) + STOP_MARGIN_S,
        "Umask": 0o077,
        "StandardOutPath": str(install.log_path),
        "StandardErrorPath": str(install.log_path),
    }
    if install.config_path is not None:
        agent["EnvironmentVariables"] = {"PROXYGATE_CONFIG": str(install.config_path)}
    return plistlib.dumps(agent)


def writable_dirs(paths: Sequence[Path]) -> tuple[Path, ...]:
    """Absolute, deduplicated, without one that lies inside another already listed."""
    unique = sorted({path.expanduser().absolute() for path in paths}, key=lambda p: (len(p.parts), str(p)))
    kept: list[Path] = []
    for path in unique:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return tuple(kept)

"""``proxygate import --local``: the logins of Claude Code and the Codex CLI on this machine.

The CLI and proxygate then hold one single-use refresh token. ``--share`` (the default) keeps
both working: the pool file names the CLI's file (``shared_file``), and the token keeper re-reads
it before each refresh and writes the rotated tokens back. ``--take-over`` gives the login to
proxygate alone: the CLI's copy stops working at its next refresh, so the CLI logs in again.
Nothing here calls the network or prompts.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.markup import escape

from proxygate.auth.credentials import chatgpt_file_name, local_login_files, local_logins
from proxygate.cli.app import console, err_console
from proxygate.cli.oauth import save_account
from proxygate.config import Settings
from proxygate.errors import PoolError
from proxygate.store.secrets import Vault

CLI_NAMES = {"claude": "Claude Code", "chatgpt": "Codex CLI"}
RELOGIN = {"claude": "claude /login", "chatgpt": "codex login"}


def suggestion(home: Path | None = None) -> str | None:
    """One line suggesting ``import --local`` when a CLI's login is here, else None."""
    found = local_login_files(home or Path.home(), os.environ)
    if not found:
        return None
    files = " and ".join(str(path) for _, path in found)
    return f"found {files}: `proxygate import --local` adds these logins to the pool (shared with the CLI)"


def import_local(settings: Settings, *, take_over: bool, email: str) -> None:
    """Add each CLI login found here to the pool; exit 1 when one could not be used."""
    logins, problems = local_logins(Path.home(), os.environ, email=email)
    if not logins and not problems:
        raise PoolError(
            "no CLI login found here (~/.claude/.credentials.json, ~/.codex/auth.json); "
            "log in with `claude` or `codex login` first, or use add-account / add-claude-account --login"
        )
    for login in logins:
        entry = dict(login.entry)
        if not take_over:
            entry["shared_file"] = str(login.source.absolute())
        name = login.name
        if login.kind == "chatgpt":
            name = chatgpt_file_name(
                settings.pool_dir, login.name, str(entry["account_id"]), Vault.of(settings)
            )
        path = save_account(settings, login.kind, name, entry)
        cli = CLI_NAMES[login.kind]
        how = (
            f"shared with {cli}: each refresh is written back to {login.source}"
            if not take_over
            else f"taken over: {cli}'s own copy stops working at its next refresh; "
            f"log it in again with `{RELOGIN[login.kind]}`"
        )
        console.print(
            f"added {login.kind} {login.name} from {login.source} → {path} ({how})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    for line in problems:
        err_console.print(f"[red]not imported:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)

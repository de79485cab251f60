"""``proxygate setup CLIENT``: print, write (--write) or take back (--undo) a client's set-up.

The snippets and the merges come from ``server/snippets.py``, the same source as the
dashboard's Setup page. Writing shows a diff first and keeps the file as it was in
``FILE.proxygate-backup`` (a file that did not exist is marked by ``FILE.proxygate-created``);
a second ``--write`` keeps that first backup, so ``--undo`` always returns to the file from
before proxygate touched it, byte for byte. Without a TTY nothing prompts.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from proxygate.cli.app import ConfigOption, app, console, err_console, reported, settings_from
from proxygate.server.snippets import (
    CLIENTS,
    WRITABLE,
    ClientFile,
    base_url_of,
    client_files,
    needs_token,
    snippets_for,
)
from proxygate.store.files import write_bytes_atomic

BACKUP_SUFFIX = ".proxygate-backup"
CREATED_SUFFIX = ".proxygate-created"


def _client_name(value: str) -> str:
    if value not in CLIENTS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(CLIENTS)}")
    return value


@app.command()
def setup(
    client: Annotated[
        str,
        typer.Argument(
            help=f"One of {', '.join(CLIENTS)}.", callback=_client_name, metavar="CLIENT", show_default=False
        ),
    ],
    config: ConfigOption = None,
    write: Annotated[
        bool, typer.Option("--write", help="Merge the settings into the client's own files (a backup first).")
    ] = False,
    undo: Annotated[
        bool, typer.Option("--undo", help="Put back the files as they were before --write.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before writing.")] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", help="The URL clients use (default: http://HOST:PORT of addr).", metavar="URL"
        ),
    ] = None,
) -> None:
    """Point a coding agent at this server: print its settings, or write them into its files."""
    with reported():
        settings = settings_from(config)
    url = (base_url or base_url_of(settings)).rstrip("/")
    key_needed = needs_token(settings)
    if write and undo:
        err_console.print("[red]error:[/] --write and --undo do not go together")
        raise typer.Exit(2)
    files = client_files(client, url, key_needed)
    if (write or undo) and not files:
        err_console.print(
            f"[red]error:[/] setup {client} only prints its settings (--write and --undo are for "
            f"{', '.join(WRITABLE)})"
        )
        raise typer.Exit(2)
    if undo:
        _undo(files)
    elif write:
        _write(client, files, yes=yes)
    else:
        _print(client, url, key_needed)


def _print(client: str, url: str, key_needed: bool) -> None:
    for snippet in snippets_for(client, url, key_needed):
        console.print(f"[bold]# {snippet.title}[/]", highlight=False)
        if snippet.note:
            console.print(f"# {snippet.note}", highlight=False, markup=False, soft_wrap=True)
        sys.stdout.flush()
        sys.stdout.write(snippet.text + "\n")  # raw: the text is data, its brackets are not markup
    if client in WRITABLE:
        console.print(f"# proxygate setup {client} --write merges this into the files above", highlight=False)


def _write(client: str, files: tuple[ClientFile, ...], *, yes: bool) -> None:
    changes: list[tuple[Path, str | None, str]] = []
    for file in files:
        path = Path(file.path).expanduser()
        try:
            old = path.read_text() if path.exists() else None
            new = file.merge(old)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            err_console.print(f"[red]error:[/] {path}: {exc}; nothing was written", highlight=False)
            raise typer.Exit(1) from None
        if new != old:
            changes.append((path, old, new))
    if not changes:
        console.print(f"{client} already points at this server; nothing to change", highlight=False)
        return
    for path, old, new in changes:
        diff = difflib.unified_diff(
            (old or "").splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=str(path) if old is not None else "/dev/null",
            tofile=str(path),
        )
        sys.stdout.writelines(line if line.endswith("\n") else line + "\n" for line in diff)
    if not yes and sys.stdin.isatty() and not typer.confirm("Write these changes?", default=True):
        raise typer.Exit(1)
    for path, old, new in changes:
        try:
            _back_up(path, existed=old is not None)
            write_bytes_atomic(path, new.encode())
        except OSError as exc:
            err_console.print(f"[red]error:[/] cannot write {path}: {exc.strerror}", highlight=False)
            raise typer.Exit(1) from None
        console.print(f"wrote {path} (undo: proxygate setup {client} --undo)", highlight=False)


def _back_up(path: Path, *, existed: bool) -> None:
    """Keep the file from before proxygate's first write; a later write keeps that one."""
    backup, created = _backup_paths(path)
    if backup.exists() or created.exists():
        return
    if existed:
        shutil.copy2(path, backup)  # bytes, mode and times, for a byte-for-byte undo
    else:
        write_bytes_atomic(created, b"")


def _backup_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + BACKUP_SUFFIX), path.with_name(path.name + CREATED_SUFFIX)


def _undo(files: tuple[ClientFile, ...]) -> None:
    restored = 0
    for file in files:
        path = Path(file.path).expanduser()
        backup, created = _backup_paths(path)
        if backup.exists():
            try:
                os.replace(backup, path)
            except OSError as exc:
                err_console.print(f"[red]error:[/] cannot restore {path}: {exc.strerror}", highlight=False)
                raise typer.Exit(1) from None
            console.print(f"restored {path}", highlight=False)
            restored += 1
        elif created.exists():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            created.unlink()
            console.print(f"removed {path} (proxygate had created it)", highlight=False)
            restored += 1
    if not restored:
        console.print(
            "nothing to undo: no backup from `setup --write` next to "
            + ", ".join(str(Path(f.path).expanduser()) for f in files),
            highlight=False,
            soft_wrap=True,
        )

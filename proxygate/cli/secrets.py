"""`proxygate secrets encrypt|decrypt|rotate|status`: account secrets at rest (issue 13).

Each command acts on the configured pool dir, never prompts, and rewrites one file at a time
(account lock, temp file + fsync + rename: ``pool/sealing.py``); running one twice changes
nothing the second time. A running server's watcher serves the rewritten files at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from proxygate.cli.app import (
    Commands,
    ConfigOption,
    JsonOption,
    app,
    console,
    err_console,
    print_json,
    reported,
    settings_from,
)
from proxygate.config import Settings
from proxygate.errors import PoolError
from proxygate.pool.sealing import FileResult, clear_copies, keys_in_use, plaintext_files, rewrite_pool
from proxygate.store.secrets import Vault

secrets_app = Commands(
    name="secrets",
    help="Encrypt the API keys and OAuth tokens in pool files (AES-256-GCM), or decrypt them.",
    no_args_is_help=True,
)
app.add_typer(secrets_app)


def secrets_line(settings: Settings) -> str:
    """One line for `status` and `doctor`: where the data key lives, and whether writes are sealed."""
    try:
        return Vault.of(settings).describe()
    except PoolError as exc:
        return f"keys unreadable: {exc.message}"


def _warn_copies(copies: list[Path]) -> None:
    for path in copies:
        err_console.print(
            f"[yellow]warning:[/] {escape(str(path))} is not an account file but holds an account's "
            "secret in clear: remove it",
            highlight=False,
        )


def _report(results: list[FileResult], verb: str) -> None:
    changed = [r for r in results if r.result == "changed"]
    failed = [r for r in results if r.result == "failed"]
    for r in changed:
        console.print(f"{verb} {escape(str(r.path))}", highlight=False)
    for r in failed:
        err_console.print(f"[red]not {verb}[/] {escape(str(r.path))}: {escape(r.reason)}", highlight=False)
    unchanged = len(results) - len(changed) - len(failed)
    console.print(
        f"{len(changed)} file(s) {verb}, {unchanged} already so"
        + (f", {len(failed)} failed" if failed else ""),
        highlight=False,
    )
    if failed:
        raise typer.Exit(1)


@secrets_app.command()
def encrypt(config: ConfigOption = None) -> None:
    """Encrypt every secret field in the pool dir under the current data key (made on first use)."""
    with reported():
        settings = settings_from(config)
        vault = Vault.of(settings)
        results = rewrite_pool(settings.pool_dir, vault, "encrypt")
        where = vault.describe()
        copies = clear_copies(settings.pool_dir, vault)
    _warn_copies(copies)
    _report(results, "encrypted")
    console.print(escape(where), highlight=False)
    if not settings.secrets.encrypt:
        console.print(
            "note: encrypted files stay encrypted when refreshed; set \\[secrets] encrypt = true "
            "(PROXYGATE_SECRETS_ENCRYPT=true) so new logins and keys are written encrypted too",
            highlight=False,
        )


@secrets_app.command()
def decrypt(config: ConfigOption = None) -> None:
    """Write every secret field in the pool dir back in clear (the key stays where it is)."""
    with reported():
        settings = settings_from(config)
        results = rewrite_pool(settings.pool_dir, Vault.of(settings), "decrypt")
    _report(results, "decrypted")
    if settings.secrets.encrypt:
        console.print(
            "note: [secrets] encrypt is on: proxygate encrypts these files again as it loads them",
            highlight=False,
            markup=False,
        )


@secrets_app.command()
def rotate(
    config: ConfigOption = None,
    drop_old: Annotated[
        bool,
        typer.Option("--drop-old", help="Then delete the old keys, once no pool file uses them."),
    ] = False,
) -> None:
    """Make a new data key and re-encrypt every pool file under it (old keys kept unless --drop-old)."""
    with reported():
        settings = settings_from(config)
        vault = Vault.of(settings)
        old, new = vault.rotate()
        console.print(f"new data key {new}" + (f" (was {old})" if old else ""), highlight=False)
        results = rewrite_pool(settings.pool_dir, vault, "encrypt")
        copies = clear_copies(settings.pool_dir, vault)
    _warn_copies(copies)
    _report(results, "encrypted")  # exits 1 on a failure: old keys are then kept
    if drop_old:
        with reported():
            used = keys_in_use(settings.pool_dir)
            for place in vault.places():
                if place.key_id == new:
                    continue
                if place.key_id in used:
                    console.print(f"kept key {place.key_id}: {used[place.key_id]} field(s) still use it")
                    continue
                if place.backend == "settings":
                    continue
                vault.forget(place.key_id)
                console.print(f"deleted old key {place.key_id} from the {place.backend}", highlight=False)


@secrets_app.command("status")
def secrets_status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Where the data keys live, which pool files use which key, which hold secrets in clear."""
    with reported():
        settings = settings_from(config)
        vault = Vault.of(settings)
        data: dict[str, Any] = {
            "encrypt": settings.secrets.encrypt,
            "summary": vault.describe(),
            "current": vault.current_key_id() or None,
            "keys": [
                {"id": p.key_id, "backend": p.backend, "where": p.where, "current": p.is_current}
                for p in vault.places()
            ],
            "fields_by_key": keys_in_use(settings.pool_dir),
            "plaintext_files": [str(p) for p in plaintext_files(settings.pool_dir)],
        }
    if as_json:
        print_json(data)
        return
    console.print(escape(data["summary"]), highlight=False)
    for key in data["keys"]:
        uses = data["fields_by_key"].get(key["id"], 0)
        mark = " (current)" if key["current"] else ""
        console.print(
            f"key {key['id']}{mark}: {key['backend']} {escape(key['where'])}; {uses} field(s) in the pool",
            highlight=False,
        )
    for kid, uses in data["fields_by_key"].items():
        if kid not in {k["id"] for k in data["keys"]}:
            console.print(f"[yellow]key {kid}: not here[/]; {uses} field(s) in the pool cannot be read")
    if data["plaintext_files"]:
        console.print(f"{len(data['plaintext_files'])} file(s) with secrets in clear:")
        for path in data["plaintext_files"]:
            console.print(f"  {escape(path)}", highlight=False)

"""Bulk import: a JSON file of account entries becomes one pool file per entry.

Accepted shapes: a JSON array of objects in the pool-file formats, or an object holding such
an array under ``accounts`` or ``keys``. Each entry is validated like a pool file; bad entries
and duplicates (within the file or against the pool) are reported, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxygate.errors import PoolError
from proxygate.pool.files import load_pool, new_account_path, read_json
from proxygate.pool.records import Account, InvalidAccount, Kind, parse_account
from proxygate.store.files import write_json_atomic
from proxygate.store.secrets import Vault


@dataclass(slots=True)
class ImportReport:
    written: list[Path] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def read_entries(path: Path) -> list[Any]:
    try:
        data = read_json(path)
    except InvalidAccount as exc:
        raise PoolError(f"{path}: {exc}") from None
    if isinstance(data, dict):
        for key in ("accounts", "keys"):
            if isinstance(data.get(key), list):
                return list(data[key])
        raise PoolError(f'{path}: expected a JSON array, or an object with an "accounts" or "keys" array')
    if not isinstance(data, list):
        raise PoolError(f"{path}: expected a JSON array of account objects")
    return data


def guess_kind(entry: dict[str, Any]) -> Kind:
    """Which pool an entry belongs to: an explicit ``kind``, else what its fields say."""
    explicit = str(entry.get("kind") or entry.get("type") or "").lower()
    if explicit in ("apikey", "api_key", "key"):
        return "apikey"
    if explicit in ("claude", "anthropic-oauth"):
        return "claude"
    if explicit in ("chatgpt", "codex-oauth", "openai-oauth"):
        return "chatgpt"
    if "api_key" in entry or "provider" in entry:
        return "apikey"
    token = str(entry.get("access_token", ""))
    if token.startswith("sk-ant-"):
        return "claude"
    if "id_token" in entry or token.startswith("eyJ"):
        return "chatgpt"
    raise InvalidAccount('cannot tell a Claude from a ChatGPT account; add "kind": "claude" or "chatgpt"')


def _free_path(pool_dir: Path, kind: Kind, name: str) -> Path:
    """``name``'s pool file, or ``name-2``, ``name-3``… when taken: for entries that name no id."""
    path = new_account_path(pool_dir, kind, name)
    n = 2
    while path.exists():
        path = new_account_path(pool_dir, kind, f"{name}-{n}")
        n += 1
    return path


def import_entries(
    pool_dir: Path,
    entries: list[Any],
    *,
    kind_of: Callable[[dict[str, Any]], Kind] = guess_kind,
    vault: Vault | None = None,
) -> ImportReport:
    """Write each valid, new entry as a pool file.

    An entry without ``id`` is named like ``add-key`` names one (its email, else its provider;
    ``-2``… when taken), and its file name is its id, as for any pool file. A duplicate is the
    same id, the same login, or the same credential (fingerprint) as an account already there.
    With ``[secrets] encrypt`` on (``vault``), what is written is sealed.
    """
    report = ImportReport()
    existing = load_pool(pool_dir, vault)
    seen: set[str] = {a.id for a in existing.accounts}
    seen_logins = {(a.kind, a.email.lower(), a.account_id) for a in existing.accounts if a.email}
    seen_keys = {a.fingerprint: a.label for a in existing.accounts}
    for n, entry in enumerate(entries, 1):
        where = f"entry {n}"
        try:
            if not isinstance(entry, dict):
                raise InvalidAccount("expected a JSON object")
            kind = kind_of(entry)
            explicit = entry.get("id") or entry.get("email")
            name = str(explicit or entry.get("provider") or "")
            if not name:
                raise InvalidAccount('needs "id" or "provider" (API keys), or "email" (subscriptions)')
            path = new_account_path(pool_dir, kind, name) if explicit else _free_path(pool_dir, kind, name)
            account: Account = parse_account(entry, kind, default_id=path.stem, path=path)
        except InvalidAccount as exc:
            report.invalid.append(f"{where}: {exc}")
            continue
        login = (account.kind, account.email.lower(), account.account_id)
        if account.fingerprint in seen_keys:
            same = seen_keys[account.fingerprint]
            report.duplicates.append(
                f"{where}: the same credential as {same} is already in the pool; skipped"
            )
            continue
        if account.id in seen or path.exists() or (account.email and login in seen_logins):
            report.duplicates.append(f"{where}: {account.label} is already in the pool; skipped")
            continue
        write_json_atomic(path, vault.seal_fields(entry) if vault and vault.is_encrypting else entry)
        seen.add(account.id)
        seen_logins.add(login)
        seen_keys[account.fingerprint] = account.label
        report.written.append(path)
    return report

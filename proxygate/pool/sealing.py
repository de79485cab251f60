"""Rewriting a whole pool dir's secrets: encrypt, decrypt, or re-encrypt under the current key.

Each file is rewritten on its own, under its account lock (a token refresh in another process
finishes first, and its new tokens are what gets sealed), by temp file + fsync + rename: the
plaintext is never written anywhere but the file it replaces. A file that needs no change is
left alone, so running a command twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from proxygate.errors import PoolError
from proxygate.pool.files import account_files, account_lock, read_json
from proxygate.pool.records import InvalidAccount
from proxygate.store.files import write_json_atomic
from proxygate.store.secrets import SECRET_FIELDS, Vault, is_sealed, sealed_key_id

Action = Literal["encrypt", "decrypt"]
Result = Literal["changed", "unchanged", "failed"]


@dataclass(frozen=True, slots=True)
class FileResult:
    path: Path
    result: Result
    reason: str = ""


def rewrite_pool(
    pool_dir: Path, vault: Vault, action: Action, *, lock_timeout_s: float = 60.0
) -> list[FileResult]:
    """Encrypt (under the current key, re-sealing old keys' fields) or decrypt every account file."""
    change: Callable[[Mapping[str, Any]], dict[str, Any]] = (
        vault.seal_fields if action == "encrypt" else vault.open_fields
    )
    return [_rewrite(path, change, lock_timeout_s) for _, path in account_files(pool_dir)]


def _rewrite(
    path: Path, change: Callable[[Mapping[str, Any]], dict[str, Any]], timeout_s: float
) -> FileResult:
    if path.is_dir():
        return FileResult(path, "failed", "a directory, not an account file")
    try:
        with account_lock(path, timeout_s=timeout_s) as is_locked:
            if not is_locked:
                return FileResult(
                    path, "failed", f"another process held the account lock for {timeout_s:.0f}s"
                )
            data = read_json(path)
            if not isinstance(data, dict):
                return FileResult(path, "failed", "expected a JSON object")
            new = change(data)
            if new == data:
                return FileResult(path, "unchanged")
            write_json_atomic(path, new)
            return FileResult(path, "changed")
    except InvalidAccount as exc:
        return FileResult(path, "failed", str(exc))
    except PoolError as exc:  # a key that is not here; the file stays as it was
        return FileResult(path, "failed", exc.message)
    except OSError as exc:
        return FileResult(path, "failed", f"cannot write: {exc.strerror}")


def keys_in_use(pool_dir: Path) -> dict[str, int]:
    """Key id → how many sealed fields in the pool name it (for `rotate` and `status`)."""
    used: dict[str, int] = {}
    for _, path in account_files(pool_dir):
        try:
            data = read_json(path)
        except InvalidAccount:
            continue
        if not isinstance(data, dict):
            continue
        for name in SECRET_FIELDS:
            value = data.get(name)
            if is_sealed(value):
                kid = sealed_key_id(value)
                used[kid] = used.get(kid, 0) + 1
    return used


def plaintext_files(pool_dir: Path) -> list[Path]:
    """Account files holding a secret field in clear (for `secrets status`)."""
    found = []
    for _, path in account_files(pool_dir):
        try:
            data = read_json(path)
        except InvalidAccount:
            continue
        if isinstance(data, dict) and any(
            isinstance(data.get(k), str) and data.get(k) and not is_sealed(data.get(k)) for k in SECRET_FIELDS
        ):
            found.append(path)
    return found


# Secrets shorter than this are not looked for elsewhere: a test key like "k" would match anything.
_MIN_SECRET_LEN = 12
# Files past this size are not read (an account file is well under a kilobyte).
_MAX_SCAN_BYTES = 16 * 1024 * 1024


def clear_copies(pool_dir: Path, vault: Vault) -> list[Path]:
    """Files under the pool dir, other than account files, that hold an account secret in clear.

    An editor's backup (``work.json~``), a temp file left by a crash or a copy made by hand would
    keep a key readable after `secrets encrypt`; this names them (never the secret) for removal.
    """
    accounts = {path for _, path in account_files(pool_dir)}
    secrets: set[bytes] = set()
    for path in accounts:
        try:
            data = read_json(path)
            opened = vault.open_fields(data) if isinstance(data, dict) else {}
        except (InvalidAccount, PoolError):
            continue
        secrets |= {
            v.encode()
            for k, v in opened.items()
            if k in SECRET_FIELDS and isinstance(v, str) and len(v) >= _MIN_SECRET_LEN
        }
    found = []
    for path in sorted(pool_dir.rglob("*")):
        if path in accounts or not path.is_file() or path.stat().st_size > _MAX_SCAN_BYTES:
            continue
        try:
            content = path.read_bytes()
        except OSError:
            continue
        if any(secret in content for secret in secrets):
            found.append(path)
    return found

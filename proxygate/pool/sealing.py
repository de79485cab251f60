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

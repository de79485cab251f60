"""The pool directory on disk: loading every file, and changing account files.

Writes go through ``store/files.py`` (atomic, 0600). A file that fails to load never stops
the others: it becomes an ``InvalidFile`` entry naming the file and the problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from proxygate.errors import PoolError
from proxygate.pool.records import KIND_DIRS, KINDS, Account, InvalidAccount, Kind, parse_account
from proxygate.store.files import ensure_private_dir, write_json_atomic


@dataclass(frozen=True, slots=True)
class InvalidFile:
    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """Every account in the pool dir at one moment, plus the files that failed to load."""

    accounts: tuple[Account, ...] = ()
    invalid: tuple[InvalidFile, ...] = ()
    by_id: Mapping[str, Account] = field(default_factory=dict)

    @classmethod
    def of(cls, accounts: Iterable[Account], invalid: Iterable[InvalidFile] = ()) -> PoolSnapshot:
        accounts = tuple(accounts)
        return cls(accounts, tuple(invalid), {a.id: a for a in accounts})

    def find(self, ref: str) -> Account:
        """An account by id or email; raises ``PoolError`` naming what exists."""
        if ref in self.by_id:
            return self.by_id[ref]
        matches = [a for a in self.accounts if a.email and a.email.lower() == ref.lower()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise PoolError(
                f"{ref!r} matches {len(matches)} accounts; use the id: {', '.join(a.id for a in matches)}"
            )
        raise PoolError(f"no account {ref!r} in the pool (see `proxygate list`)")


def kind_dir(pool_dir: Path, kind: Kind) -> Path:
    return pool_dir / KIND_DIRS[kind]


def account_files(pool_dir: Path) -> Iterable[tuple[Kind, Path]]:
    """Every ``*.json`` entry of the kind dirs, files or not: a directory so named is reported."""
    for kind in KINDS:
        directory = kind_dir(pool_dir, kind)
        try:
            entries = sorted(directory.iterdir()) if directory.is_dir() else []
        except OSError:
            entries = []  # unreadable kind dir: nothing to load from it
        for path in entries:
            if path.suffix == ".json" and not path.name.startswith("."):
                yield kind, path


def read_json(path: Path) -> Any:
    """A file's JSON, or ``InvalidAccount`` saying why not (never the file's content)."""
    try:
        return orjson.loads(path.expanduser().read_bytes())
    except OSError as exc:
        raise InvalidAccount(f"cannot read: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise InvalidAccount(f"malformed JSON: {exc}") from None


def load_file(kind: Kind, path: Path) -> Account:
    if path.is_dir():
        raise InvalidAccount("a directory, not an account file")
    return parse_account(read_json(path), kind, default_id=path.stem, path=path)


def load_pool(pool_dir: Path) -> PoolSnapshot:
    """Load every account file; bad ones and duplicate ids become ``InvalidFile`` entries.

    Whatever goes wrong with one file makes that file invalid, never more: the server loads
    the pool at start and on every change, and one odd file must not stop it (issue 10 §2).
    """
    accounts: dict[str, Account] = {}
    invalid: list[InvalidFile] = []
    for kind, path in account_files(pool_dir):
        try:
            account = load_file(kind, path)
        except InvalidAccount as exc:
            invalid.append(InvalidFile(path, str(exc)))
            continue
        except Exception as exc:  # an unforeseen fault in one file stays in that file
            invalid.append(InvalidFile(path, f"cannot load: {type(exc).__name__}"))
            continue
        if account.id in accounts:
            first = accounts[account.id].path
            invalid.append(InvalidFile(path, f"duplicate id {account.id!r} (also in {first}); skipped"))
            continue
        accounts[account.id] = account
    return PoolSnapshot.of(accounts.values(), invalid)


def update_account_file(account: Account, changes: Mapping[str, Any]) -> None:
    """Rewrite the account's file with ``changes`` merged in; unknown keys are preserved."""
    if account.path is None:
        raise PoolError(f"account {account.id!r} has no file")
    try:
        current = orjson.loads(account.path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise PoolError(f"{account.path}: cannot read: {exc}") from None
    write_json_atomic(account.path, {**current, **changes})


def set_enabled(pool_dir: Path, ref: str, *, enabled: bool) -> Account:
    account = load_pool(pool_dir).find(ref)
    update_account_file(account, {"disabled": not enabled})
    return account


def new_account_path(pool_dir: Path, kind: Kind, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "@._+-" else "_" for c in name).strip(".") or "account"
    return kind_dir(pool_dir, kind) / f"{safe}.json"


def add_account_file(
    pool_dir: Path, kind: Kind, name: str, data: Mapping[str, Any], *, replace: bool = False
) -> Path:
    """Validate ``data`` as a ``kind`` account and write it to the pool; returns the path."""
    path = new_account_path(pool_dir, kind, name)
    parse_account(dict(data), kind, default_id=path.stem, path=path)  # raises InvalidAccount
    if path.exists() and not replace:
        raise PoolError(f"{path} already exists")
    ensure_private_dir(pool_dir)
    write_json_atomic(path, data)
    return path

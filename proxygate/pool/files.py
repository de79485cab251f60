"""The pool directory on disk: loading every file, and changing account files.

Writes go through ``store/files.py`` (atomic, 0600). A file that fails to load never stops
the others: it becomes an ``InvalidFile`` entry naming the file and the problem.

Secret fields may be sealed (``store/secrets.py``): a ``Vault`` opens them at load, and seals
what is written when ``[secrets] encrypt`` is on or the file is sealed already. Without a vault,
a sealed file is invalid (no keys to open it). Every rewrite of an existing file holds the
account's lock (``.<name>.lock``, the one token refreshes take), so a rewrite never puts back a
refresh token that another process has just spent.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from proxygate.errors import PoolError
from proxygate.pool.records import KIND_DIRS, KINDS, Account, InvalidAccount, Kind, parse_account
from proxygate.store.files import ensure_private_dir, write_json_atomic
from proxygate.store.secrets import SECRET_FIELDS, SecretUnavailable, Vault, is_sealed, sealed_key_id

log = logging.getLogger("proxygate.pool")

# How often a waiter re-tries an account lock another holds; refreshes take ~0.5 s.
LOCK_POLL_S = 0.05


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


def lock_path(account_path: Path) -> Path:
    """``pool/claude/.you@x.com.lock``: dot-named, so the pool loader never reads it as an account."""
    return account_path.parent / f".{account_path.stem}.lock"


@contextlib.contextmanager
def account_lock(account_path: Path, *, timeout_s: float) -> Iterator[bool]:
    """Hold the account's lock (``flock``); yields False if it stayed taken for ``timeout_s``.

    API key files have no background writer (only subscriptions refresh), so they take no lock
    and get no lock file beside them.
    """
    if account_path.parent.name == KIND_DIRS["apikey"]:
        yield True
        return
    fd = open_lock(lock_path(account_path))
    try:
        deadline = time.monotonic() + timeout_s
        while not took_lock(fd):
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(LOCK_POLL_S)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def open_lock(path: Path) -> int:
    """A descriptor on the lock file ``path`` (0600, made if missing); closing it releases the lock."""
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def took_lock(fd: int) -> bool:
    """Take the exclusive ``flock`` on ``fd`` if it is free, without waiting; False if it is held."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def open_secrets(data: Any, vault: Vault | None) -> Any:
    """A file's JSON with its sealed fields opened; ``InvalidAccount`` with the reason if one cannot be."""
    if not isinstance(data, dict):
        return data
    if vault is None:
        for name in SECRET_FIELDS:
            value = data.get(name)
            if is_sealed(value):
                raise InvalidAccount(
                    f'"{name}" is encrypted (key {sealed_key_id(value)}) and no keys were given'
                )
        return data
    try:
        return vault.open_fields(data)
    except SecretUnavailable as exc:
        raise InvalidAccount(exc.message) from None


def load_file(kind: Kind, path: Path, vault: Vault | None = None) -> Account:
    if path.is_dir():
        raise InvalidAccount("a directory, not an account file")
    data = read_json(path)
    account = parse_account(open_secrets(data, vault), kind, default_id=path.stem, path=path)
    if vault is not None and vault.is_encrypting and vault.needs_sealing(data):
        _upgrade(path, data, vault)
    return account


def _upgrade(path: Path, seen: dict[str, Any], vault: Vault) -> None:
    """Seal a plaintext file just loaded ([secrets] encrypt); a failure leaves it as it was."""
    try:
        with account_lock(path, timeout_s=0) as is_locked:
            # A refresh holds the lock: it writes the file sealed itself. Changed since we read
            # it: the next load (the watcher sees the change) upgrades what is there now.
            if not is_locked or read_json(path) != seen:
                return
            write_json_atomic(path, vault.seal_fields(seen))
        log.info("%s: secrets encrypted ([secrets] encrypt)", path)
    except Exception as exc:  # the account stays usable in plaintext; say why it stayed so
        reason = exc.message if isinstance(exc, PoolError) else f"{type(exc).__name__}: {exc}"
        log.warning("%s: could not encrypt its secrets: %s", path, reason)


def load_pool(pool_dir: Path, vault: Vault | None = None) -> PoolSnapshot:
    """Load every account file; bad ones and duplicate ids become ``InvalidFile`` entries.

    Whatever goes wrong with one file makes that file invalid, never more: the server loads
    the pool at start and on every change, and one odd file must not stop it (issue 10 §2).
    """
    accounts: dict[str, Account] = {}
    invalid: list[InvalidFile] = []
    for kind, path in account_files(pool_dir):
        try:
            account = load_file(kind, path, vault)
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


def update_account_file(account: Account, changes: Mapping[str, Any], vault: Vault | None = None) -> None:
    """Rewrite the account's file with ``changes`` merged in; unknown keys are preserved."""
    if account.path is None:
        raise PoolError(f"account {account.id!r} has no file")
    with account_lock(account.path, timeout_s=60) as is_locked:
        if not is_locked:
            raise PoolError(f"{account.path}: another process holds the account lock; try again")
        try:
            current = orjson.loads(account.path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise PoolError(f"{account.path}: cannot read: {exc}") from None
        write_json_atomic(account.path, sealed_for(vault, current, {**current, **changes}))


def sealed_for(vault: Vault | None, on_disk: Mapping[str, Any], data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` as it must be written over ``on_disk``: sealed if encryption is on or the file was sealed."""
    if vault is not None and vault.seals_writes_to(on_disk):
        return vault.seal_fields(data)
    if vault is None and any(is_sealed(on_disk.get(k)) and not is_sealed(data.get(k)) for k in SECRET_FIELDS):
        raise PoolError("the file is encrypted and no keys were given: not writing secrets in clear")
    return data


def set_enabled(pool_dir: Path, ref: str, *, enabled: bool, vault: Vault | None = None) -> Account:
    account = load_pool(pool_dir, vault).find(ref)
    update_account_file(account, {"disabled": not enabled}, vault)
    return account


def new_account_path(pool_dir: Path, kind: Kind, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "@._+-" else "_" for c in name).strip(".") or "account"
    return kind_dir(pool_dir, kind) / f"{safe}.json"


def add_account_file(
    pool_dir: Path,
    kind: Kind,
    name: str,
    data: Mapping[str, Any],
    *,
    replace: bool = False,
    vault: Vault | None = None,
) -> Path:
    """Validate ``data`` as a ``kind`` account and write it to the pool; returns the path.

    Sealed when ``[secrets] encrypt`` is on; a login replacing a sealed file stays sealed.
    """
    path = new_account_path(pool_dir, kind, name)
    parse_account(dict(data), kind, default_id=path.stem, path=path)  # raises InvalidAccount
    if path.exists() and not replace:
        raise PoolError(f"{path} already exists")
    ensure_private_dir(pool_dir)
    ensure_private_dir(path.parent)
    with account_lock(path, timeout_s=60):  # a refresh of the file replaced finishes first
        on_disk: Mapping[str, Any] = {}
        with contextlib.suppress(InvalidAccount):
            previous = read_json(path) if path.exists() else {}
            on_disk = previous if isinstance(previous, dict) else {}
        write_json_atomic(path, vault.seal_fields(data) if vault and vault.seals_writes_to(on_disk) else data)
    return path

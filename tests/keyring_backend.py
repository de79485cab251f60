"""A real keyring backend for tests: one JSON file named by $PROXYGATE_TEST_KEYRING.

Tests select it with ``PYTHON_KEYRING_BACKEND=tests.keyring_backend.FileKeyring`` (subprocesses)
or pass an instance to ``Vault`` (in process), so no test ever writes to the user's own keyring.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        if path is None and "PROXYGATE_TEST_KEYRING" not in os.environ:
            # keyring's own discovery builds every backend without arguments and skips a
            # TypeError: this one is never picked unless a test names it.
            raise TypeError("FileKeyring needs a path or $PROXYGATE_TEST_KEYRING")
        self.path = path or Path(os.environ["PROXYGATE_TEST_KEYRING"])

    def _read(self) -> dict[str, str]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        return dict(data)

    def get_password(self, service: str, username: str) -> str | None:
        return self._read().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._read()
        data[f"{service}/{username}"] = password
        self.path.write_bytes(orjson.dumps(data))

    def delete_password(self, service: str, username: str) -> None:
        data = self._read()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError(username)
        self.path.write_bytes(orjson.dumps(data))


class LockedKeyring(FileKeyring):
    """A keyring that exists but refuses to store (a locked collection, no session bus)."""

    def set_password(self, service: str, username: str, password: str) -> None:
        from keyring.errors import KeyringLocked

        raise KeyringLocked("locked")

"""Account secrets at rest: AES-256-GCM fields under a data key held in the OS keyring or a key file.

The one idea: a secret field of a pool file (``api_key``, ``access_token``, ``refresh_token``,
``id_token``) is either plaintext (a file dropped by hand keeps working) or sealed as

    pgenc:v1:<key id>:<nonce>:<ciphertext>          (nonce and ciphertext base64url, no padding)

The key id is derived from the key itself (a SHA-256 prefix), so every process that holds a key
knows its id, and an id names one key whichever place holds it. The field's name is the GCM
associated data: a sealed ``api_key`` pasted into ``refresh_token`` does not open.

Where keys live, looked up by id in this order:

    [secrets] key (PROXYGATE_SECRETS_KEY)   a key several instances share; the current one when set
    <data_dir>/secrets.json (0600)          the current key id; the keys themselves when no
                                            keyring backend is usable (headless servers)
    the OS keyring                          service "proxygate", user = key id

Keyring calls block (D-Bus, Keychain): call a ``Vault`` from a thread, never the event loop.
Keys are cached in memory once found; the current key id is re-read from the key file on each
seal, so a ``rotate`` by another process is followed at the next write.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from proxygate.config import SecretsSettings, Settings
from proxygate.errors import PoolError
from proxygate.store.files import ensure_private_dir, write_json_atomic

log = logging.getLogger("proxygate.secrets")

SECRET_FIELDS = ("api_key", "access_token", "refresh_token", "id_token")
"The pool-file fields that hold a credential (issue 13: encrypt fields, not files)."

PREFIX = "pgenc:v1:"
KEY_FILE = "secrets.json"
KEYRING_SERVICE = "proxygate"
_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12  # GCM's standard nonce, random per seal: NIST SP 800-38D allows 2^32 seals per key

Backend = Literal["settings", "file", "keyring"]


class SecretUnavailable(PoolError):
    """A sealed field cannot be opened: its key is not here, or the ciphertext is damaged."""


@dataclass(frozen=True, slots=True)
class KeyPlace:
    """Where one key lives, for ``status`` and ``doctor`` (never the key)."""

    key_id: str
    backend: Backend
    where: str
    "A human pointer: the key file's path, the keyring backend's name, or the setting's name."
    is_current: bool = False


def key_id_of(key: bytes) -> str:
    """A short public name for ``key``: derived, so it can never name a different key."""
    return hashlib.sha256(b"proxygate secrets key id\0" + key).hexdigest()[:12]


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def sealed_key_id(value: Any) -> str:
    """The key id a sealed value names ('' when the value is not in the sealed format)."""
    if not is_sealed(value):
        return ""
    parts = value.split(":")
    return parts[2] if len(parts) == 5 and value.startswith(PREFIX) else ""


def decode_key(text: str, source: str) -> bytes:
    """A 32-byte key from its base64url text; ``PoolError`` naming ``source`` otherwise."""
    try:
        key = _unb64(text.strip())
    except ValueError:
        raise PoolError(f"{source}: not base64url") from None
    if len(key) != _KEY_BYTES:
        raise PoolError(f"{source}: a key is {_KEY_BYTES} bytes (base64url), got {len(key)}")
    return key


# cryptography (~7 MB resident) is imported by the functions that seal and open: a server
# with secrets at rest off never loads it.


def new_key_text() -> str:
    return _b64(os.urandom(_KEY_BYTES))  # what AESGCM.generate_key(bit_length=256) returns


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def seal_with(key: bytes, field: str, plaintext: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext.encode(), field.encode())
    return f"{PREFIX}{key_id_of(key)}:{_b64(nonce)}:{_b64(ciphertext)}"


def open_with(key: bytes, field: str, value: str) -> str:
    """The plaintext of a sealed ``value``; ``SecretUnavailable`` if it does not open."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    parts = value.split(":")
    try:
        nonce, ciphertext = _unb64(parts[3]), _unb64(parts[4])
        return AESGCM(key).decrypt(nonce, ciphertext, field.encode()).decode()
    except (IndexError, ValueError, InvalidTag, UnicodeDecodeError):
        raise SecretUnavailable(
            f'"{field}" does not decrypt under key {sealed_key_id(value)} (damaged, or moved from another field)'
        ) from None


class Vault:
    """The data keys of one data dir: seal and open secret fields, create and rotate keys."""

    def __init__(self, settings: SecretsSettings, data_dir: Path, *, keyring: Any = "auto") -> None:
        """``keyring``: a keyring backend to use, None for none, "auto" for the system's (lazily)."""
        self.settings = settings
        self.data_dir = data_dir
        self.key_file = data_dir / KEY_FILE
        self._keyring_choice = keyring
        self._keys: dict[str, bytes] = {}
        "Keys found, by id: a keyring is asked once per key and process."
        self._lock = threading.Lock()
        self._settings_key: bytes | None = None
        if settings.key:
            self._settings_key = decode_key(settings.key, "[secrets] key (PROXYGATE_SECRETS_KEY)")
            kid = key_id_of(self._settings_key)
            self._keys[kid] = self._settings_key

    @classmethod
    def of(cls, settings: Settings) -> Vault:
        """The vault of a configuration: its [secrets] settings over its data dir."""
        return cls(settings.secrets, settings.data_dir)

    @property
    def is_encrypting(self) -> bool:
        """Whether what proxygate writes gets sealed ([secrets] encrypt)."""
        return self.settings.encrypt

    # Sealing and opening ---------------------------------------------------------------

    def open(self, field: str, value: Any) -> Any:
        """``value`` decrypted if sealed; anything else as it is (plaintext files keep working)."""
        if not is_sealed(value):
            return value
        kid = sealed_key_id(value)
        if not kid:
            raise SecretUnavailable(f'"{field}" is not in the pgenc:v1:<key id>:<nonce>:<ciphertext> format')
        try:
            key = self.key(kid)
        except SecretUnavailable as exc:
            raise SecretUnavailable(f'"{field}" is {exc.message}') from None
        return open_with(key, field, value)

    def open_fields(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return {k: self.open(k, v) if k in SECRET_FIELDS else v for k, v in data.items()}

    def seal_fields(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with every secret field sealed under the current key (already so: kept as is)."""
        key, kid = self._current()
        out: dict[str, Any] = {}
        for name, value in data.items():
            if name in SECRET_FIELDS and isinstance(value, str) and value:
                if is_sealed(value):
                    if sealed_key_id(value) != kid:
                        value = seal_with(key, name, self.open(name, value))
                else:
                    value = seal_with(key, name, value)
            out[name] = value
        return out

    def needs_sealing(self, data: Mapping[str, Any]) -> bool:
        """Whether ``seal_fields`` would change ``data`` (a plaintext field, or one under an old key)."""
        current = self.current_key_id()
        return any(
            isinstance(v, str) and v and (not is_sealed(v) or sealed_key_id(v) != current)
            for k, v in data.items()
            if k in SECRET_FIELDS
        )

    def seals_writes_to(self, on_disk: Mapping[str, Any]) -> bool:
        """A write seals when encryption is on, or when the file it changes is already sealed."""
        return self.is_encrypting or any(is_sealed(on_disk.get(k)) for k in SECRET_FIELDS)

    # Keys ------------------------------------------------------------------------------

    def key(self, kid: str) -> bytes:
        """The key named ``kid``: settings, key file, then keyring; ``SecretUnavailable`` if none."""
        with self._lock:
            if kid in self._keys:
                return self._keys[kid]
        key_text = self._read_key_file().get("keys", {}).get(kid)
        place: KeyPlace | None = None
        if isinstance(key_text, str):
            place = KeyPlace(kid, "file", str(self.key_file))
        else:
            keyring = self._keyring()
            if keyring is not None:
                try:
                    key_text = keyring.get_password(KEYRING_SERVICE, kid)
                except Exception as exc:  # any backend failure (locked, no D-Bus) = not available
                    log.warning("keyring lookup of key %s failed: %s", kid, type(exc).__name__)
                    key_text = None
                if isinstance(key_text, str):
                    place = KeyPlace(kid, "keyring", _backend_name(keyring))
        if place is None or not isinstance(key_text, str):
            raise SecretUnavailable(
                f"encrypted under key {kid}, which is not available here "
                f"(not in PROXYGATE_SECRETS_KEY, {self.key_file}, or the OS keyring)"
            )
        try:
            key = decode_key(key_text, f"key {kid} in the {place.backend}")
        except PoolError as exc:
            raise SecretUnavailable(exc.message) from None
        if key_id_of(key) != kid:
            raise SecretUnavailable(f"the {place.backend} holds a different key under id {kid}")
        with self._lock:
            self._keys[kid] = key
        return key

    def current_key_id(self) -> str:
        """The key new seals use ('' when none exists yet)."""
        if self._settings_key is not None:
            return key_id_of(self._settings_key)
        current = self._read_key_file().get("current")
        return current if isinstance(current, str) else ""

    def _current(self) -> tuple[bytes, str]:
        """(key, key id) of the current key, created on first use."""
        kid = self.current_key_id()
        if not kid:
            with self._exclusive():
                kid = self.current_key_id() or self._create_key()
        return self.key(kid), kid

    def seal(self, field: str, plaintext: str) -> str:
        key, _ = self._current()
        return seal_with(key, field, plaintext)

    def rotate(self) -> tuple[str, str]:
        """Make a new current key; returns (old id, new id). Old keys stay, so old files still open."""
        if self._settings_key is not None:
            raise PoolError(
                "the key comes from PROXYGATE_SECRETS_KEY / [secrets] key: to rotate, put a new key "
                "there (keep the old one in the key file or keyring until `secrets encrypt` has run)"
            )
        with self._exclusive():
            old = self.current_key_id()
            return old, self._create_key()

    def forget(self, kid: str) -> None:
        """Drop a key that is no longer current from the key file and the keyring."""
        with self._exclusive():
            data = self._read_key_file()
            if data.get("current") == kid:
                raise PoolError(f"key {kid} is the current key; rotate first")
            keys = dict(data.get("keys", {}))
            keys.pop(kid, None)
            in_keyring = [k for k in data.get("keyring", []) if k != kid]
            write_json_atomic(self.key_file, {**data, "keys": keys, "keyring": in_keyring})
            keyring = self._keyring()
            if keyring is not None:
                with contextlib.suppress(Exception):  # not there, or backend gone: nothing to drop
                    keyring.delete_password(KEYRING_SERVICE, kid)
            with self._lock:
                self._keys.pop(kid, None)

    def places(self) -> list[KeyPlace]:
        """Every key this vault knows of and where it lives (the current one first)."""
        current = self.current_key_id()
        data = self._read_key_file()
        found: dict[str, KeyPlace] = {}
        if self._settings_key is not None:
            kid = key_id_of(self._settings_key)
            found[kid] = KeyPlace(kid, "settings", "PROXYGATE_SECRETS_KEY / [secrets] key")
        for kid in data.get("keys", {}):
            found.setdefault(kid, KeyPlace(kid, "file", str(self.key_file)))
        for kid in data.get("keyring", []):
            found.setdefault(kid, KeyPlace(kid, "keyring", "OS keyring"))
        if current and current not in found:
            found[current] = KeyPlace(current, "keyring", "OS keyring")
        places = [
            KeyPlace(p.key_id, p.backend, p.where, is_current=p.key_id == current) for p in found.values()
        ]
        return sorted(places, key=lambda p: not p.is_current)

    def describe(self) -> str:
        """One line for ``status`` and ``doctor``: which backend holds the current key."""
        current = self.current_key_id()
        encrypting = "on" if self.is_encrypting else "off"
        if not current:
            where = (
                f"the OS keyring ({self.keyring_name()})"
                if self._keyring() is not None and self.settings.keyring
                else f"the key file {self.key_file}"
            )
            return f"no data key yet (the first one will go to {where}); [secrets] encrypt {encrypting}"
        place = next((p for p in self.places() if p.is_current), None)
        if place is None or place.backend == "file":
            why = "no usable keyring backend" if self.settings.keyring else "[secrets] keyring = false"
            where = f"the key file {self.key_file} ({why})"
        elif place.backend == "keyring":
            where = f"the OS keyring ({self.keyring_name()})"
        else:
            where = "PROXYGATE_SECRETS_KEY / [secrets] key"
        return f"data key {current} in {where}; [secrets] encrypt {encrypting}"

    def keyring_name(self) -> str:
        keyring = self._keyring()
        return _backend_name(keyring) if keyring is not None else "none usable"

    def _create_key(self) -> str:
        """A new random key, stored (keyring if usable, else the key file) and made current."""
        key_text = new_key_text()
        key = decode_key(key_text, "new key")
        kid = key_id_of(key)
        data = self._read_key_file()
        keys = dict(data.get("keys", {}))
        in_keyring = list(data.get("keyring", []))
        keyring = self._keyring() if self.settings.keyring else None
        if keyring is not None and _keyring_store(keyring, kid, key_text):
            in_keyring.append(kid)
            backend = "OS keyring"
        else:
            keys[kid] = key_text
            backend = f"key file {self.key_file}"
        ensure_private_dir(self.data_dir)
        write_json_atomic(self.key_file, {"current": kid, "keys": keys, "keyring": in_keyring})
        with self._lock:
            self._keys[kid] = key
        log.info("new data key %s in the %s", kid, backend)
        return kid

    def _read_key_file(self) -> dict[str, Any]:
        try:
            data = orjson.loads(self.key_file.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SecretUnavailable(f"{self.key_file}: cannot read the key file: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys", {}), dict):
            raise SecretUnavailable(f"{self.key_file}: not a proxygate key file")
        return data

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One key change at a time across processes (two first seals must not make two keys)."""
        ensure_private_dir(self.data_dir)
        fd = os.open(self.data_dir / ".secrets.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _keyring(self) -> Any:
        """The keyring backend to use, or None when none is usable (e.g. the fail backend)."""
        if self._keyring_choice == "auto":
            self._keyring_choice = system_keyring()
        return self._keyring_choice


def system_keyring() -> Any:
    """The OS keyring backend keyring picks, or None if it has no usable one."""
    try:
        import keyring
        from keyring.backends import fail
    except Exception:  # keyring broken by a bad plugin: the key file serves
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:
        return None
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 0) <= 0:
        return None
    return backend


def _keyring_store(keyring: Any, kid: str, key_text: str) -> bool:
    """Store and read back; False when the backend refuses (locked, no session bus)."""
    try:
        keyring.set_password(KEYRING_SERVICE, kid, key_text)
        return bool(keyring.get_password(KEYRING_SERVICE, kid) == key_text)
    except Exception as exc:
        log.warning("the keyring refused the data key (%s); using the key file", type(exc).__name__)
        return False


def _backend_name(keyring: Any) -> str:
    cls = type(keyring)
    return f"{cls.__module__}.{cls.__qualname__}"

"""The vault: AES-256-GCM fields, key ids, where keys live (settings, key file, keyring), rotation."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from proxygate.config import SecretsSettings, load_settings
from proxygate.errors import ConfigError, PoolError
from proxygate.store.secrets import (
    PREFIX,
    SecretUnavailable,
    Vault,
    key_id_of,
    new_key_text,
    open_with,
    seal_with,
    sealed_key_id,
)
from tests.keyring_backend import FileKeyring, LockedKeyring

SECRET = "sk-ant-api03-" + "Zq7" * 30 + "-tail0123456789AB"


def vault(tmp_path: Path, *, keyring: object = None, **settings: object) -> Vault:
    return Vault(SecretsSettings(**settings), tmp_path / "data", keyring=keyring)  # type: ignore[arg-type]


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_sealed_field_is_standard_aes_256_gcm_with_the_field_name_as_associated_data(
    tmp_path: Path,
) -> None:
    v = vault(tmp_path)
    sealed = v.seal("api_key", SECRET)
    prefix, version, kid, nonce, ciphertext = sealed.split(":")
    assert (prefix, version) == ("pgenc", "v1")
    key = unb64(orjson.loads((tmp_path / "data" / "secrets.json").read_bytes())["keys"][kid])
    assert kid == key_id_of(key) and len(key) == 32 and len(unb64(nonce)) == 12
    # Any AES-GCM implementation opens it: nonce, ciphertext || 16-byte tag, AAD = field name.
    assert AESGCM(key).decrypt(unb64(nonce), unb64(ciphertext), b"api_key").decode() == SECRET
    assert v.open("api_key", sealed) == SECRET
    assert SECRET not in sealed and SECRET[-16:] not in sealed


def test_the_same_secret_seals_differently_each_time(tmp_path: Path) -> None:
    v = vault(tmp_path)
    assert v.seal("api_key", SECRET) != v.seal("api_key", SECRET)  # fresh nonce per seal


def test_a_sealed_value_moved_to_another_field_does_not_open(tmp_path: Path) -> None:
    v = vault(tmp_path)
    sealed = v.seal("access_token", "at-secret")
    kid = sealed_key_id(sealed)
    with pytest.raises(SecretUnavailable, match=rf'^"refresh_token" does not decrypt under key {kid} '):
        v.open("refresh_token", sealed)


def test_a_damaged_ciphertext_is_a_clear_error(tmp_path: Path) -> None:
    v = vault(tmp_path)
    sealed = v.seal("api_key", SECRET)
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SecretUnavailable, match=r'^"api_key" does not decrypt under key \w{12} \(damaged'):
        v.open("api_key", flipped)


def test_plaintext_passes_through_open(tmp_path: Path) -> None:
    v = vault(tmp_path)
    assert v.open("api_key", SECRET) == SECRET
    assert v.open_fields({"api_key": SECRET, "note": "x"}) == {"api_key": SECRET, "note": "x"}
    assert not (tmp_path / "data" / "secrets.json").exists()  # opening plaintext makes no key


def test_without_a_keyring_the_key_goes_to_a_0600_key_file(tmp_path: Path) -> None:
    v = vault(tmp_path)
    kid = sealed_key_id(v.seal("api_key", SECRET))
    key_file = tmp_path / "data" / "secrets.json"
    data = orjson.loads(key_file.read_bytes())
    assert data["current"] == kid and list(data["keys"]) == [kid] and data["keyring"] == []
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert (
        v.describe()
        == f"data key {kid} in the key file {key_file} (no usable keyring backend); [secrets] encrypt off"
    )


def test_with_a_keyring_the_key_lives_there_and_the_key_file_only_names_it(tmp_path: Path) -> None:
    ring = FileKeyring(tmp_path / "ring.json")
    v = vault(tmp_path, keyring=ring)
    sealed = v.seal("api_key", SECRET)
    kid = sealed_key_id(sealed)
    data = orjson.loads((tmp_path / "data" / "secrets.json").read_bytes())
    assert data == {"current": kid, "keys": {}, "keyring": [kid]}
    assert key_id_of(unb64(ring.get_password("proxygate", kid) or "")) == kid
    # Another process (a new vault, empty cache) finds the key by id in the keyring.
    assert vault(tmp_path, keyring=ring).open("api_key", sealed) == SECRET
    assert v.describe().startswith(f"data key {kid} in the OS keyring (tests.keyring_backend.FileKeyring)")
    # Without the keyring the field is unavailable, with a reason that names the places looked.
    with pytest.raises(
        SecretUnavailable, match=rf'^"api_key" is encrypted under key {kid}, which is not available'
    ):
        vault(tmp_path).open("api_key", sealed)


def test_a_keyring_that_refuses_to_store_falls_back_to_the_key_file(tmp_path: Path) -> None:
    v = vault(tmp_path, keyring=LockedKeyring(tmp_path / "ring.json"))
    kid = sealed_key_id(v.seal("api_key", SECRET))
    assert list(orjson.loads((tmp_path / "data" / "secrets.json").read_bytes())["keys"]) == [kid]


def test_keyring_false_keeps_the_key_in_the_file_even_with_a_keyring(tmp_path: Path) -> None:
    ring = FileKeyring(tmp_path / "ring.json")
    v = Vault(SecretsSettings(keyring=False), tmp_path / "data", keyring=ring)
    kid = sealed_key_id(v.seal("api_key", SECRET))
    assert list(orjson.loads((tmp_path / "data" / "secrets.json").read_bytes())["keys"]) == [kid]
    assert not (tmp_path / "ring.json").exists()
    key_file = tmp_path / "data" / "secrets.json"
    assert (
        v.describe()
        == f"data key {kid} in the key file {key_file} ([secrets] keyring = false); [secrets] encrypt off"
    )


def test_a_key_from_the_settings_is_current_and_shared_by_id(tmp_path: Path) -> None:
    text = new_key_text()
    a = vault(tmp_path / "a", key=text)
    b = vault(tmp_path / "b", key=text)
    sealed = a.seal("refresh_token", "rt-1")
    assert sealed_key_id(sealed) == key_id_of(unb64(text))
    assert b.open("refresh_token", sealed) == "rt-1"  # another instance, same shared key
    assert not (tmp_path / "a" / "data" / "secrets.json").exists()  # nothing written for it
    with pytest.raises(PoolError, match=r"^the key comes from PROXYGATE_SECRETS_KEY"):
        a.rotate()


def test_a_wrong_shared_key_cannot_open_what_another_key_sealed(tmp_path: Path) -> None:
    sealed = vault(tmp_path / "a", key=new_key_text()).seal("api_key", SECRET)
    with pytest.raises(SecretUnavailable, match=r"which is not available here"):
        vault(tmp_path / "b", key=new_key_text()).open("api_key", sealed)


def test_a_bad_shared_key_fails_at_load_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^secrets.key: must be 32 bytes \(base64url\), got 3$"):
        load_settings(None, {"PROXYGATE_SECRETS_KEY": "abcd"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"^secrets.key: not base64url"):
        load_settings(None, {"PROXYGATE_SECRETS_KEY": "a"}, cwd=tmp_path)
    loaded = load_settings(
        None, {"PROXYGATE_SECRETS_KEY": new_key_text(), "PROXYGATE_SECRETS_ENCRYPT": "1"}, cwd=tmp_path
    )
    assert loaded.secrets.encrypt


def test_rotate_makes_a_new_current_key_and_old_fields_still_open(tmp_path: Path) -> None:
    v = vault(tmp_path)
    old_sealed = v.seal("api_key", SECRET)
    old, new = v.rotate()
    assert old == sealed_key_id(old_sealed) and new != old
    assert vault(tmp_path).current_key_id() == new  # other processes follow the key file
    assert v.open("api_key", old_sealed) == SECRET
    resealed = v.seal_fields({"api_key": old_sealed, "note": "n"})
    assert sealed_key_id(resealed["api_key"]) == new and resealed["note"] == "n"
    assert [(p.key_id, p.is_current) for p in v.places()] == [(new, True), (old, False)]
    v.forget(old)
    with pytest.raises(SecretUnavailable):
        vault(tmp_path).open("api_key", old_sealed)
    with pytest.raises(PoolError, match=rf"^key {new} is the current key; rotate first$"):
        v.forget(new)


def test_a_rotate_by_another_process_is_followed_at_the_next_seal(tmp_path: Path) -> None:
    server = vault(tmp_path)
    first = sealed_key_id(server.seal("access_token", "at-1"))
    _, new = vault(tmp_path).rotate()  # the CLI, in another process
    assert sealed_key_id(server.seal("access_token", "at-2")) == new != first


def test_needs_sealing_and_seals_writes_to(tmp_path: Path) -> None:
    v = vault(tmp_path)
    sealed = v.seal("api_key", SECRET)
    assert v.needs_sealing({"api_key": SECRET})
    assert not v.needs_sealing({"api_key": sealed, "email": "a@b.c"})
    assert not v.seals_writes_to({"api_key": SECRET})  # encrypt off, plaintext file: stays plaintext
    assert v.seals_writes_to({"api_key": sealed})  # a sealed file stays sealed
    assert vault(tmp_path, encrypt=True).seals_writes_to({"api_key": SECRET})


def test_an_unreadable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secrets.json").write_text("{nope")
    with pytest.raises(SecretUnavailable, match=r"secrets.json: cannot read the key file"):
        vault(tmp_path).open("api_key", PREFIX + "0123456789ab:AAAA:BBBB")


@settings(max_examples=200, deadline=None)
@given(
    plaintext=st.text(min_size=1),
    field=st.sampled_from(["api_key", "access_token", "refresh_token", "id_token"]),
)
def test_open_undoes_seal_for_any_text(plaintext: str, field: str) -> None:
    key = unb64(new_key_text())
    sealed = seal_with(key, field, plaintext)
    assert sealed.count(":") == 4 and sealed.startswith(PREFIX)  # base64url never adds a ":"
    assert open_with(key, field, sealed) == plaintext

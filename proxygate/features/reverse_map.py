"""The persisted way back for opaque replacements: ``PG_…`` token → original, sealed, bounded.

A request's own replacements are restored from its own map (features/restoration.py). This
map is for answers that quote a token the current request did not send: a Responses turn that
continues a conversation stored at the provider (``previous_response_id``), or a second
instance answering what the first replaced (both share the key). It lives behind the
``Store`` (namespace ``guardrails``), so it survives restarts; each original is sealed with
AES-SIV under a key derived from the guardrails key, so the store holds no value in clear;
past ``reverse_map_max_entries`` the least recently used tokens are dropped.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from proxygate.store.base import GUARDRAILS, Store


def _derive(key: bytes, label: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(label)
    return mac.finalize()


class ReverseMap:
    def __init__(self, store: Store, key: bytes, max_entries: int) -> None:
        self.store = store
        self.max_entries = max(max_entries, 0)
        self._siv = AESSIV(_derive(key, b"reverse map 1") + _derive(key, b"reverse map 2"))
        self._entries: OrderedDict[str, str] = OrderedDict()
        saved = store.get_states(GUARDRAILS)
        for token, data in sorted(saved.items(), key=lambda item: float(item[1].get("ts", 0))):
            sealed = data.get("sealed")
            if isinstance(sealed, str):
                self._entries[token] = sealed
        self._evict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, token: str, original: str) -> None:
        if token in self._entries:
            self._entries.move_to_end(token)
            return
        sealed = self._siv.encrypt(original.encode(), [token.encode()])
        text = base64.urlsafe_b64encode(sealed).decode()
        self._entries[token] = text
        self.store.put_state(GUARDRAILS, token, {"sealed": text, "ts": time.time()})
        self._evict()

    def recall(self, token: str) -> str | None:
        sealed = self._entries.get(token)
        if sealed is None:
            return None
        try:
            return self._siv.decrypt(base64.urlsafe_b64decode(sealed), [token.encode()]).decode()
        except (InvalidTag, ValueError):  # sealed under another key: not ours to restore
            return None

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            token, _ = self._entries.popitem(last=False)
            self.store.put_state(GUARDRAILS, token, None)


__all__ = ["ReverseMap"]

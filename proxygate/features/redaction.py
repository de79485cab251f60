"""Replacing detected values: deterministic under a secret key, realistic where it helps.

The same value always gets the same replacement (across turns, restarts and instances that
share the key), so a conversation stays coherent and prompt caches keep hitting. A
replacement is derived with HMAC-SHA256 (``cryptography``) over the detector and the value:

    email         a fake address      casey.brooks417@example.net
    name          a fake person       Riley Okafor
    phone         the same shape      +44 20 7946 0958 → +44 63 1180 2714
    ip_address    a global address    8.8.8.8 → 41.188.20.77; IPv6 in 2a0x::/16
    anything else an opaque token     PG_API_KEY_k3v9q2m8x7c4d1fh

The way back is a ``Redaction``: one request's map from each replacement to its original
(the model only ever sees what this request sent, so the answer can only hold these).
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import os
import re
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, hmac

from proxygate.errors import ConfigError
from proxygate.features.detectors import TRIGGERED, Allow, Finding, ScanOptions, find, resolve, scan
from proxygate.store.files import ensure_private_dir

KEY_FILE = "guardrails.key"

_FAKE_FIRST = [
    "Alex",
    "Jordan",
    "Casey",
    "Taylor",
    "Morgan",
    "Riley",
    "Quinn",
    "Avery",
    "Dakota",
    "Skyler",
    "Jamie",
    "Parker",
    "Rowan",
    "Finley",
    "Sage",
    "Emery",
    "Hayden",
    "Reese",
    "Blair",
    "Drew",
    "Cameron",
    "Remy",
    "Peyton",
    "Robin",
    "Spencer",
    "Tatum",
    "Arden",
    "Blake",
    "Devon",
    "Eden",
    "Harley",
    "Jules",
    "Kai",
    "Marley",
    "Noel",
    "Oakley",
    "Sawyer",
    "Ellis",
    "Logan",
    "Nico",
    "Sasha",
    "Toni",
    "Ari",
    "Lior",
    "Mika",
    "Noa",
    "Ren",
]
_FAKE_LAST = [
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Varga",
    "Takeda",
    "Albescu",
    "Brandt",
    "Castell",
    "Delacroix",
    "Eriksen",
    "Falk",
    "Gallo",
    "Halvorsen",
    "Ibarra",
    "Jansen",
    "Kowal",
    "Laine",
    "Marchetti",
    "Nyberg",
    "Osei",
    "Pavlou",
    "Quental",
    "Rasku",
    "Sorensen",
    "Tamm",
    "Ueda",
    "Valdez",
    "Wester",
    "Yilmaz",
    "Zeller",
    "Aalto",
    "Bergstrom",
    "Cardoso",
    "Dalca",
    "Esposti",
    "Ferro",
    "Grieve",
    "Hollis",
    "Ilves",
    "Jovic",
    "Kallio",
    "Lehto",
    "Mwangi",
    "Novik",
    "Orsini",
    "Pereira",
    "Rautio",
    "Strand",
]
_FAKE_DOMAINS = ("example.net", "example.org", "mail.example.com", "example.com")
_B32 = str.maketrans("", "", "=")


def load_key(settings_key: str, data_dir: Path) -> bytes:
    """The replacement key: ``[guardrails] key`` (or PROXYGATE_GUARDRAILS_KEY), else the 0600
    key file in the data dir, created on first use (two processes starting at once agree)."""
    if settings_key:
        try:
            key = bytes.fromhex(settings_key)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError("guardrails.key: expected 64 hex characters")
        return key
    path = data_dir / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return _read_key_file(path)
    ensure_private_dir(data_dir)
    tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, os.urandom(32).hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process got there first: then its key is the key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{path}: expected 64 hex characters (a guardrails key)")
    return key


class Replacer:
    """Deterministic replacements under one key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, detector: str, value: str, attempt: int = 0) -> bytes:
        mac = hmac.HMAC(self._key, hashes.SHA256())
        mac.update(f"{detector}\0{attempt}\0{value}".encode())
        return mac.finalize()

    def replacement(self, detector: str, value: str, attempt: int = 0) -> str:
        d = self.digest(detector, value, attempt)
        match detector:
            case "email":
                first = _FAKE_FIRST[d[0] % len(_FAKE_FIRST)].lower()
                last = _FAKE_LAST[d[1] % len(_FAKE_LAST)].lower()
                number = int.from_bytes(d[2:4]) % 1000
                return f"{first}.{last}{number}@{_FAKE_DOMAINS[d[4] % len(_FAKE_DOMAINS)]}"
            case "name":
                return f"{_FAKE_FIRST[d[0] % len(_FAKE_FIRST)]} {_FAKE_LAST[d[1] % len(_FAKE_LAST)]}"
            case "phone":
                return _fake_phone(value, d)
            case "ip_address":
                return _fake_ip(value, d)
            case _:
                tag = base64.b32encode(d[:10]).decode().translate(_B32).lower()
                return f"PG_{detector.upper()}_{tag}"


def _fake_phone(value: str, d: bytes) -> str:
    """The same separators and length; the digits after a +country code come from the digest."""
    keep = 0
    if value.startswith("+"):
        match = re.match(r"\+\d{1,3}", value)
        keep = match.end() if match else 1
    out, i = [value[:keep]], 0
    for ch in value[keep:]:
        if ch.isdigit():
            digit = d[5 + i % 27] % 10
            if i == 0 and digit < 2:  # a national number does not start with 0 or 1
                digit += 2
            out.append(str(digit))
            i += 1
        else:
            out.append(ch)
    return "".join(out)


def _fake_ip(value: str, d: bytes) -> str:
    if ":" in value:
        groups = [f"{int.from_bytes(d[i : i + 2]):x}" for i in range(2, 16, 2)]
        return f"2a0{d[0] % 10:x}:" + ":".join(groups)
    first = 11 + d[0] % 180  # 11-190: skips 0/8, 10/8 and the multicast and reserved tops
    if first in (100, 127, 169, 172):  # shared, loopback, link-local, private
        first += 1
    return f"{first}.{d[1]}.{d[2]}.{1 + d[3] % 254}"


# Keys whose values are never text a person wrote: opaque ids, signatures, encrypted or
# binary payloads, wire enums. Everything else that is a string gets scanned.
SKIP_KEYS = frozenset(
    {
        "model", "role", "type", "id", "tool_use_id", "call_id", "tool_call_id", "signature",
        "encrypted_content", "thoughtSignature", "thought_signature", "image_url", "file_data",
        "file_id", "media_type", "mime_type", "mimeType", "cache_control", "previous_response_id",
        "stop_reason", "finish_reason", "status", "object", "prompt_cache_key", "service_tier",
        "reasoning_effort", "tool_choice", "inlineData", "fileData", "inline_data",
    }
)  # fmt: skip
# Blocks passed whole: their text is covered by a signature or is not readable text.
SKIP_TYPES = frozenset({"thinking", "redacted_thinking", "reasoning", "image", "input_image", "input_file"})
JSON_TEXT_KEYS = frozenset({"arguments", "partial_json"})
"String fields that hold JSON text (tool-call arguments): values inside are JSON-escaped."


class FindingsCache:
    """Findings per text already scanned, least recently used dropped past ``max_chars``.

    An agent resends the whole conversation every turn: only the new turn's text needs a
    scan, the history's findings are known (the same text gives the same findings).
    """

    __slots__ = ("_chars", "_entries", "max_chars")

    def __init__(self, max_chars: int = 16 * 1024 * 1024) -> None:
        self.max_chars = max_chars
        self._entries: OrderedDict[str, list[Finding]] = OrderedDict()
        self._chars = 0

    def get(self, text: str) -> list[Finding] | None:
        found = self._entries.get(text)
        if found is not None:
            self._entries.move_to_end(text)
        return found

    def put(self, text: str, findings: list[Finding]) -> None:
        if len(text) > self.max_chars // 8 or text in self._entries:
            return
        self._entries[text] = findings
        self._chars += len(text)
        while self._chars > self.max_chars:
            old, _ = self._entries.popitem(last=False)
            self._chars -= len(old)


class Redaction:
    """One request's replacements: original → replacement and back, and counts per detector."""

    __slots__ = ("_allow", "_cache", "_enabled", "_options", "_replacer", "counts", "forward", "reverse")

    def __init__(
        self,
        replacer: Replacer,
        enabled: Iterable[str],
        options: ScanOptions,
        allow: Allow,
        cache: FindingsCache | None = None,
    ) -> None:
        self._replacer = replacer
        self._enabled = tuple(enabled)
        self._options = options
        self._allow = allow
        self._cache = cache
        self.forward: dict[str, str] = {}
        self.reverse: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def text(self, text: str) -> str:
        """``text`` with every finding replaced; everything between stays byte for byte."""
        if len(text) < 6:
            return text
        cache = self._cache
        findings = None if cache is None else cache.get(text)
        if findings is None:
            findings = scan(text, self._enabled, self._options, self._allow)
            if cache is not None:
                cache.put(text, findings)
        if not findings:
            return text
        out: list[str] = []
        at = 0
        for f in findings:
            out.append(text[at : f.start])
            out.append(self.replace(f.detector, text[f.start : f.end]))
            at = f.end
        out.append(text[at:])
        return "".join(out)

    def replace(self, detector: str, value: str) -> str:
        self.counts[detector] = self.counts.get(detector, 0) + 1
        if (known := self.forward.get(value)) is not None:
            return known
        for attempt in range(8):
            fake = self._replacer.replacement(detector, value, attempt)
            if fake not in self.reverse and fake not in self.forward:  # never two originals for one fake
                break
        self.forward[value] = fake
        self.reverse[fake] = value
        return fake

    def json_text(self, text: str) -> str:
        """Tool-call arguments (JSON in a string): scan the values, keep the client's layout."""
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self.text(text)
        before = len(self.forward), sum(self.counts.values())
        new = self.value(data)
        if (len(self.forward), sum(self.counts.values())) == before:
            return text
        # Replace each original's JSON-escaped form in place; re-encode only if one is missing.
        out = text
        for original, fake in self.forward.items():
            escaped = orjson.dumps(original).decode()[1:-1]
            out = out.replace(escaped, fake)
        try:
            if orjson.loads(out) == new:
                return out
        except orjson.JSONDecodeError:
            pass
        return orjson.dumps(new).decode()

    def body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A whole request body redacted: its new texts scanned in one pass, then replaced."""
        texts: list[str] = []
        _collect(body, "", texts)
        self.prescan(texts)
        result: dict[str, Any] = self.value(body)
        return result

    def prescan(self, texts: list[str]) -> None:
        """Scan the texts not seen before and cache their findings: the detectors that run
        over every text do it once over all of them joined (one regex pass per detector
        instead of one per text and detector); the triggered ones stay per text, where their
        trigger skips most texts at once.

        A NUL joins the texts: no detector matches across it, except a finding that spans two
        texts; the texts it touches are left out of the cache and scanned on their own.
        """
        cache = self._cache
        if cache is None:
            return
        todo = [t for t in dict.fromkeys(texts) if len(t) >= 6 and "\0" not in t and cache.get(t) is None]
        if len(todo) < 2:
            return
        starts, at = [], 0
        for text in todo:
            starts.append(at)
            at += len(text) + 1
        joined = [name for name in self._enabled if name not in TRIGGERED]
        triggered = [name for name in self._enabled if name in TRIGGERED]
        per_text = [find(text, triggered, self._options, self._allow) for text in todo]
        spanning: set[int] = set()
        for f in find("\0".join(todo), joined, self._options, self._allow):
            i = bisect.bisect_right(starts, f.start) - 1
            if f.end > starts[i] + len(todo[i]):
                spanning.update(range(i, bisect.bisect_right(starts, f.end - 1)))
            else:
                per_text[i].append(Finding(f.start - starts[i], f.end - starts[i], f.detector))
        for i, text in enumerate(todo):
            if i not in spanning:
                cache.put(text, resolve(per_text[i]))

    def value(self, node: Any, key: str = "") -> Any:
        """A request body (or part of one) with its text fields redacted; untouched parts are shared."""
        if isinstance(node, str):
            if key in JSON_TEXT_KEYS:
                return self.json_text(node)
            return self.text(node)
        if isinstance(node, list):
            return [self.value(item, key) for item in node]
        if isinstance(node, dict):
            if node.get("type") in SKIP_TYPES or node.get("thought") is True:
                return node
            textual = str(node.get("media_type") or node.get("mime_type") or "").startswith("text/")
            return {
                k: v if (k in SKIP_KEYS or (k == "data" and not textual)) else self.value(v, k)
                for k, v in node.items()
            }
        return node


def _collect(node: Any, key: str, out: list[str]) -> None:
    """The strings ``Redaction.value`` scans as text, in order (the same skips)."""
    if isinstance(node, str):
        if key not in JSON_TEXT_KEYS:
            out.append(node)
    elif isinstance(node, list):
        for item in node:
            _collect(item, key, out)
    elif isinstance(node, dict):
        if node.get("type") in SKIP_TYPES or node.get("thought") is True:
            return
        textual = str(node.get("media_type") or node.get("mime_type") or "").startswith("text/")
        for k, v in node.items():
            if not (k in SKIP_KEYS or (k == "data" and not textual)):
                _collect(v, k, out)


__all__ = ["KEY_FILE", "FindingsCache", "Redaction", "Replacer", "load_key"]

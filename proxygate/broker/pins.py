"""Conversation pinning: a conversation keeps its account while that account is healthy.

Providers cache prompt prefixes per account (Anthropic's prompt cache, OpenAI's
``prompt_cache_key``); moving a conversation to another account pays the whole prefix again.
So each request carries a conversation key, and the ``PinTable`` remembers which account
served that key, for ``pin_ttl_s`` after the last turn (a sliding TTL). The key is the first
of (peers.md §3.1, §3.2, §6 item 6):

    1. ``x-claude-code-session-id`` header (Claude Code)
    2. the session in Anthropic ``metadata.user_id``: a JSON string with ``session_id``
       (Claude Code ≥ 2.1.78) or the older ``user_<hex>_account_<uuid>_session_<uuid>``
    3. Codex ``session_id`` / ``session-id`` header, then the body's ``prompt_cache_key``
    4. Responses ``conversation`` (an id or ``{"id": …}``), then ``previous_response_id``
    5. a hash of the system prompt + the first user message (any format)

A prefix-hash key of a request with a single turn names a *new* conversation: it pins, but
does not follow an existing pin (identical one-shot prompts are not one conversation, and a
burst of new conversations should spread); its second turn hashes the same and follows.

Pure: ``conversation_key`` reads only its arguments; the table takes ``now`` as an argument.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxygate.wire.ir import TURNS_FIELD, Format

_OLD_USER_ID_SESSION = re.compile(r"session_([0-9a-fA-F-]{36})")  # sub2api's pattern
MAX_KEY_CHARS = 128
"Longer client-chosen values are hashed: the store's keys stay small (LMDB allows 511 bytes)."
SWEEP_EVERY = 1024
"Expired pins are dropped every this many new pins, so the table stays bounded by traffic."
MAX_PINS = 100_000
"""Live pins at most: a flood of one-shot prompts within one TTL must not grow memory without
bound (~200 B a pin: 20 MB). Past it the least recently used conversation loses its pin."""


def conversation_key(fmt: Format, headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """The key that identifies the request's conversation, or ``""`` when nothing does."""
    return conversation(fmt, headers, body)[0]


def conversation(fmt: Format, headers: Mapping[str, str], body: Mapping[str, Any]) -> tuple[str, bool]:
    """``(key, follows_pin)``: the conversation key, and whether an existing pin should be followed."""
    key = _explicit_key(fmt, headers, body)
    if key:
        return key, True
    return _prefix_hash(fmt, body), _has_history(fmt, body)


def _explicit_key(fmt: Format, headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    if session := _header(headers, "x-claude-code-session-id"):
        return _key("cc", session)
    if fmt is Format.anthropic and (session := _user_id_session(body.get("metadata"))):
        return _key("cc", session)
    if session := _header(headers, "session_id") or _header(headers, "session-id"):
        return _key("codex", session)
    if isinstance(cache_key := body.get("prompt_cache_key"), str) and cache_key:
        return _key("cache", cache_key)
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if isinstance(conversation, str) and conversation:
        return _key("conv", conversation)
    if isinstance(previous := body.get("previous_response_id"), str) and previous:
        return _key("resp", previous)
    return ""


def cache_key_for(conversation_key: str) -> str:
    """The ``prompt_cache_key`` sent upstream for a conversation whose client sent none: the
    same on every turn, different across conversations, and never the client's identifiers."""
    digest = hashlib.blake2b(conversation_key.encode("utf-8", "surrogatepass"), digest_size=16)
    return "pg-" + digest.hexdigest()


_SYSTEM_ROLES = ("system", "developer")


def _has_history(fmt: Format, body: Mapping[str, Any]) -> bool:
    """Whether the conversation has more than one non-system item (not its first request)."""
    items = body.get(TURNS_FIELD[fmt])
    if not isinstance(items, list):
        return False
    seen = 0
    for m in items:
        if not (isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES):
            seen += 1
            if seen > 1:
                return True
    return False


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    return value.strip() if isinstance(value, str) else ""


def _key(kind: str, value: str) -> str:
    """``kind:value``, the value hashed unless it is short printable ASCII.

    Client bytes never reach a key as they are: a non-UTF-8 header byte arrives as a lone
    surrogate (``'\\udcff'``), which no encoder accepts (issue 10 §2).
    """
    if len(value) > MAX_KEY_CHARS or not (value.isascii() and value.isprintable()):
        value = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{kind}:{value}"


def _user_id_session(metadata: Any) -> str:
    if not isinstance(metadata, dict):
        return ""
    user_id = metadata.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        return ""
    if user_id.startswith("{"):
        try:
            data = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return ""
        session = data.get("session_id") if isinstance(data, dict) else None
        return session if isinstance(session, str) else ""
    match = _OLD_USER_ID_SESSION.search(user_id)
    return match.group(1) if match else ""


PREFIX_SAMPLE_BYTES = 1024
"""Of a long prefix, its first and last this many bytes and its length are hashed: two
conversations alike in all three are the same conversation in practice (and sharing a pin
would cost them nothing but balance), while hashing all of it was ~10 µs a request."""


def _prefix_hash(fmt: Format, body: Mapping[str, Any]) -> str:
    """Hash of (system prompt, first user message): the same conversation's stable prefix."""
    match fmt:
        case Format.anthropic:
            system, turns = body.get("system"), body.get("messages")
        case Format.chat:
            messages = body.get("messages")
            turns = messages if isinstance(messages, list) else []
            system = [m for m in turns if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES][:1]
        case Format.responses:
            system, turns = body.get("instructions"), body.get("input")
            if isinstance(turns, str):
                turns = [{"role": "user", "content": turns}]
        case Format.gemini:
            system = body.get("systemInstruction") or body.get("system_instruction")
            turns = [
                {"role": c.get("role", "user"), **c}
                for c in body.get("contents") or []
                if isinstance(c, dict)
            ]
    first_user = next(
        (t for t in turns or [] if isinstance(t, dict) and t.get("role", "user") == "user"),
        None,
    )
    if first_user is None:
        return ""
    prefix = orjson.dumps([system, first_user], option=orjson.OPT_SORT_KEYS)
    if len(prefix) > 2 * PREFIX_SAMPLE_BYTES:  # a coding agent repeats 10-20 KB on every turn
        prefix = prefix[:PREFIX_SAMPLE_BYTES] + len(prefix).to_bytes(8, "big") + prefix[-PREFIX_SAMPLE_BYTES:]
    return "h:" + hashlib.sha256(prefix).hexdigest()[:32]


@dataclass(slots=True)
class Pin:
    """A conversation's account, until ``expires_at`` (moved forward by every turn)."""

    account_id: str
    expires_at: float
    persisted_expires_at: float = 0.0
    "The expiry last written to the store: a turn rewrites the pin only when this is stale."

    def to_json(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "expires_at": self.expires_at}


class PinTable:
    """Conversation key → ``Pin`` with a sliding TTL."""

    def __init__(self, ttl_s: float, *, max_pins: int = MAX_PINS) -> None:
        self.ttl_s = ttl_s
        self.max_pins = max_pins
        self._pins: dict[str, Pin] = {}
        "In least recently used order: a touched pin moves to the end."
        self._added = 0
        self.expired: list[str] = []
        "Keys dropped as expired since the owner last drained this (to delete them from the store)."

    def __len__(self) -> int:
        return len(self._pins)

    def get(self, key: str, now: float) -> Pin | None:
        pin = self._pins.get(key)
        if pin is not None and pin.expires_at <= now:
            del self._pins[key]
            self.expired.append(key)
            return None
        return pin

    def put(self, key: str, account_id: str, now: float) -> Pin:
        """Pin (or re-pin) ``key`` to ``account_id`` for ``ttl_s`` from ``now``."""
        pin = self._pins.pop(key, None)
        if pin is None:
            self._added += 1
            if self._added % SWEEP_EVERY == 0:
                self.sweep(now)
            if len(self._pins) >= self.max_pins:
                oldest = next(iter(self._pins))
                del self._pins[oldest]
                self.expired.append(oldest)
            pin = Pin(account_id, now + self.ttl_s)
        else:
            pin.account_id = account_id
            pin.expires_at = now + self.ttl_s
        self._pins[key] = pin
        return pin

    def needs_persist(self, pin: Pin, *, moved: bool) -> bool:
        """Write a new or moved pin at once; a touched one when a quarter TTL has slid by."""
        return moved or pin.expires_at - pin.persisted_expires_at >= self.ttl_s / 4

    def sweep(self, now: float) -> list[str]:
        """Drop expired pins; returns their keys."""
        gone = [k for k, p in self._pins.items() if p.expires_at <= now]
        for key in gone:
            del self._pins[key]
        self.expired.extend(gone)
        return gone

    def restore(self, pins: Mapping[str, Mapping[str, Any]], now: float) -> None:
        for key, data in pins.items():
            expires_at = float(data.get("expires_at", 0.0))
            if expires_at > now and isinstance(account_id := data.get("account_id"), str):
                self._pins[key] = Pin(account_id, expires_at, expires_at)
            else:
                self.expired.append(key)

    def forget(self, key: str) -> None:
        """Drop one pin without listing it as expired (another instance deleted it from the store)."""
        self._pins.pop(key, None)

    def drop_account(self, account_id: str) -> list[str]:
        """Forget every pin to ``account_id`` (the account left the pool)."""
        gone = [k for k, p in self._pins.items() if p.account_id == account_id]
        for key in gone:
            del self._pins[key]
        return gone

    def count_by_account(self, now: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for pin in self._pins.values():
            if pin.expires_at > now:
                counts[pin.account_id] = counts.get(pin.account_id, 0) + 1
        return counts

    def __iter__(self) -> Iterator[tuple[str, Pin]]:
        return iter(self._pins.items())

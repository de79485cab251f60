"""Thinking-signature recovery: a conversation that moved keeps thinking blocks the new account cannot verify.

Anthropic signs every ``thinking`` block for the account (and provider) that wrote it; replayed
to another account it answers 400 "Invalid `signature` in `thinking` block". The recovery
(issue 16 §7): drop every ``thinking`` and ``redacted_thinking`` block from the history and
send once more to the same account. When that leaves the assistant turn of an unfinished tool
loop without the thinking it must start with, thinking is turned off for that request too
(Anthropic refuses the request otherwise).
"""

from __future__ import annotations

from typing import Any

import orjson

_THINKING = frozenset({"thinking", "redacted_thinking"})


def is_signature_error(status: int, first_bytes: bytes) -> bool:
    """Whether an upstream 400's body (its first bytes suffice: errors are small) is the
    invalid-thinking-signature refusal."""
    if status != 400:
        return False
    lowered = first_bytes[:4096].lower()
    return b"signature" in lowered and b"thinking" in lowered


def strip_thinking(body: bytes) -> bytes | None:
    """``body`` (Anthropic Messages JSON) without thinking blocks, or None when it has none."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        return None
    stripped = False
    last_assistant: dict[str, Any] | None = None
    lost_thinking_last = False
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        content = message.get("content")
        last_assistant, lost_thinking_last = message, False
        if not isinstance(content, list):
            continue
        kept = [b for b in content if not (isinstance(b, dict) and b.get("type") in _THINKING)]
        if len(kept) != len(content):
            stripped = lost_thinking_last = True
            message["content"] = kept or [{"type": "text", "text": "…"}]  # empty text is refused
    if not stripped:
        return None
    if lost_thinking_last and last_assistant is not None and _in_tool_loop(messages, last_assistant):
        data.pop("thinking", None)  # the loop's turn must open with thinking: without it, none
    return orjson.dumps(data)


def _in_tool_loop(messages: list[Any], assistant: dict[str, Any]) -> bool:
    """The assistant turn called a tool and the conversation ends with its results."""
    content = assistant.get("content")
    calls = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_use" for b in content
    )
    if not calls or len(messages) < 2 or messages[-2] is not assistant:
        return False
    return isinstance(messages[-1], dict) and messages[-1].get("role") == "user"

"""Claude Code ≥ 2.1.154 sends ``role: "system"`` messages mid-conversation: every target keeps them in place."""

from __future__ import annotations

from typing import Any

from proxygate.wire import anthropic, chat, gemini, responses

CLAUDE_CODE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "You are Claude Code."}],
    "messages": [
        {"role": "user", "content": "fix the bug"},
        {"role": "assistant", "content": [{"type": "text", "text": "Looking."}]},
        {"role": "system", "content": "The user switched to plan mode."},
        {"role": "user", "content": [{"type": "text", "text": "go on"}]},
    ],
}


def _decoded() -> Any:
    return anthropic.decode_request(CLAUDE_CODE)


def test_to_chat_the_system_turn_stays_a_system_message_in_place() -> None:
    messages = chat.encode_request(_decoded())["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("system", "You are Claude Code."),
        ("user", "fix the bug"),
        ("assistant", "Looking."),
        ("system", "The user switched to plan mode."),
        ("user", "go on"),
    ]


def test_to_responses_the_system_turn_is_an_input_message_in_place() -> None:
    body = responses.encode_request(_decoded())
    assert body["instructions"] == "You are Claude Code."
    roles = [(item.get("role"), _text(item)) for item in body["input"]]
    assert roles == [
        ("user", "fix the bug"),
        ("assistant", "Looking."),
        (roles[2][0], "The user switched to plan mode."),
        ("user", "go on"),
    ]
    assert roles[2][0] in ("system", "developer")


def test_to_gemini_the_system_turn_becomes_user_text_in_place() -> None:
    body = gemini.encode_request(_decoded())
    assert body["systemInstruction"] == {"parts": [{"text": "You are Claude Code."}]}
    texts = [" | ".join(p.get("text", "") for p in c["parts"]) for c in body["contents"]]
    assert texts[0] == "fix the bug" and texts[1] == "Looking."
    assert "The user switched to plan mode." in texts[2] and texts[2].endswith("go on")
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]


def test_back_to_anthropic_the_system_turn_is_kept_verbatim() -> None:
    messages = anthropic.encode_request(_decoded())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "system", "user"]
    assert messages[2]["content"][0]["text"] == "The user switched to plan mode."


def _text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])

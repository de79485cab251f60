"""Capability shaping: each format's body fitted to [models."<glob>"], and what changed named."""

from __future__ import annotations

from proxygate.config import ModelLimitSettings
from proxygate.features.limits import IMAGE_PLACEHOLDER, ModelLimits, shape
from proxygate.wire.ir import Format

NO_VISION = ModelLimitSettings(images=False)
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def test_anthropic_images_and_thinking_removed_with_a_placeholder() -> None:
    body = {
        "model": "m",
        "max_tokens": 64000,
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "what is this?"}, {"type": "image", "source": PNG}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "a cat"},
                ],
            },
        ],
    }
    shaped, changed = shape(
        Format.anthropic, body, ModelLimitSettings(images=False, thinking=False, max_output_tokens=8192)
    )
    assert changed == ["max_tokens", "thinking", "images"]
    assert shaped == {
        "model": "m",
        "max_tokens": 8192,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "text", "text": IMAGE_PLACEHOLDER},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]},
        ],
    }
    assert (
        "thinking" in body and body["messages"][0]["content"][1]["type"] == "image"
    )  # the input is not changed


def test_chat_images_tools_and_reasoning() -> None:
    body = {
        "model": "m",
        "max_completion_tokens": 100,
        "reasoning_effort": "high",
        "tools": [{"type": "function", "function": {"name": "ls", "parameters": {}}}],
        "tool_choice": "auto",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": '{"d":"/"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "bin etc"},
        ],
    }
    shaped, changed = shape(Format.chat, body, ModelLimitSettings(images=False, tools=False, thinking=False))
    assert changed == ["tools", "thinking", "images"]
    assert shaped == {
        "model": "m",
        "max_completion_tokens": 100,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": IMAGE_PLACEHOLDER}]},
            {"role": "assistant", "content": '[tool call ls: {"d":"/"}]'},
            {"role": "user", "content": "[tool result: bin etc]"},
        ],
    }


def test_responses_and_gemini_images() -> None:
    responses = {
        "model": "m",
        "input": [
            {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA"}]}
        ],
        "reasoning": {"effort": "high"},
    }
    shaped, changed = shape(Format.responses, responses, ModelLimitSettings(images=False, thinking=False))
    assert changed == ["thinking", "images"]
    assert shaped["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": IMAGE_PLACEHOLDER}]}
    ]
    assert "reasoning" not in shaped
    gemini = {
        "contents": [
            {
                "role": "user",
                "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/jpeg", "data": "AA"}}],
            }
        ],
        "generationConfig": {"maxOutputTokens": 9000, "thinkingConfig": {"thinkingBudget": 100}},
    }
    shaped, changed = shape(
        Format.gemini, gemini, ModelLimitSettings(images=False, thinking=False, max_output_tokens=4096)
    )
    assert changed == ["max_tokens", "thinking", "images"]
    assert shaped == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}, {"text": IMAGE_PLACEHOLDER}]}],
        "generationConfig": {"maxOutputTokens": 4096},
    }


def test_nothing_to_change_changes_nothing() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert shape(
        Format.anthropic, body, ModelLimitSettings(images=False, tools=False, max_output_tokens=100)
    ) == (
        body,
        [],
    )


def test_first_matching_glob_applies_to_the_asked_or_aliased_name() -> None:
    limits = ModelLimits({"local-*": NO_VISION, "*": ModelLimitSettings()}, {"fast": "local-llama"})
    assert limits.limits_for("local-qwen") is NO_VISION
    assert limits.limits_for("fast") is NO_VISION
    assert limits.limits_for("claude") == ModelLimitSettings()


def test_context_window_leaves_room_for_the_prompt() -> None:
    prompt = "word " * 3500  # 17,500 ASCII characters: 5,000 tokens estimated
    body = {"model": "m", "max_tokens": 8000, "messages": [{"role": "user", "content": prompt}]}
    shaped, changed = shape(Format.anthropic, body, ModelLimitSettings(context_window=8192), model="m")
    assert changed == ["max_tokens"]
    assert 3000 <= shaped["max_tokens"] <= 3190  # 8192 - ~5,000 (and a few for the markup)
    small = {**body, "max_tokens": 1000}
    assert shape(Format.anthropic, small, ModelLimitSettings(context_window=8192), model="m") == (small, [])

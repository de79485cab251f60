"""Shared IR helpers: envelopes (§5.7.3), tool arguments and ids (§5.5), history repair (§6.3),
and the local token estimate (§1.1)."""

from __future__ import annotations

import pytest

from proxygate.wire import envelope
from proxygate.wire.content import arguments_to_input, input_to_arguments, parse_data_url, sanitize_id
from proxygate.wire.history import repair_tool_pairing
from proxygate.wire.ir import (
    Base64Source,
    Image,
    Message,
    ReasoningState,
    Request,
    Text,
    ToolCall,
    ToolDef,
    ToolResult,
    Usage,
)
from proxygate.wire.tokens import IMAGE_TOKENS, TOOL_USE_SYSTEM_TOKENS, estimate_input_tokens


def test_envelope_round_trip_is_deterministic_and_rejects_garbage() -> None:
    state = ReasoningState("gemini", "thought_signature", "EvwB/+==", "gemini-3-pro")
    sealed = envelope.seal(state)
    assert sealed == envelope.seal(state)
    assert sealed.startswith("pgx1.gemini.") and envelope.is_sealed(sealed)
    assert envelope.unseal(sealed) == state
    assert [envelope.unseal(v) for v in ("EpYB", "pgx1.x", "pgx1.a.b.!!!", "pgx1.a.b.WzFd")] == [None] * 4


@pytest.mark.parametrize(
    ("arguments", "value"),
    [
        ("", {}),
        ("  ", {}),
        ('{"a": [1]}', {"a": [1]}),
        ("[1]", {"_raw_arguments": "[1]"}),
        ("{bad", {"_raw_arguments": "{bad"}),
    ],
)
def test_arguments_to_input(arguments: str, value: dict[str, object]) -> None:
    assert arguments_to_input(arguments) == value


def test_input_to_arguments_is_compact_ordered_and_unwraps_raw() -> None:
    assert input_to_arguments({"b": "é", "a": 1}) == '{"b":"é","a":1}'
    assert input_to_arguments(None) == "{}"
    assert input_to_arguments({"_raw_arguments": "{bad"}) == "{bad"


def test_sanitize_id_passes_valid_ids_and_is_a_pure_function() -> None:
    assert sanitize_id("toolu_01A") == "toolu_01A"
    assert sanitize_id("functions.bash:0") == "functions_bash_0"
    long = "call_" + "a" * 60
    short = sanitize_id(long, max_len=40)
    assert (
        len(short),
        short == sanitize_id(long, max_len=40),
        short != sanitize_id(long + "b", max_len=40),
    ) == (
        40,
        True,
        True,
    )


def test_parse_data_url() -> None:
    assert parse_data_url("data:image/png;base64,iVBO") == Base64Source("image/png", "iVBO")
    assert parse_data_url("data:text/plain,hello") is None
    assert parse_data_url("https://x") is None


def test_repair_moves_results_before_interleaved_user_text_and_fills_gaps() -> None:
    messages = (
        Message("assistant", (ToolCall("a", "t"), ToolCall("b", "t"))),
        Message("user", (Text("wait"),)),
        Message("tool", (ToolResult("b", (Text("B"),)),)),
    )
    assert repair_tool_pairing(messages) == (
        messages[0],
        Message(
            "user",
            (
                ToolResult("a", (Text("Tool call was interrupted; no result."),), is_error=True, name="t"),
                ToolResult("b", (Text("B"),)),
                Text("wait"),
            ),
        ),
    )


def test_repair_synthesizes_results_for_a_trailing_tool_call_turn() -> None:
    messages = (Message("user", (Text("go"),)), Message("assistant", (ToolCall("a", "t"),)))
    assert repair_tool_pairing(messages)[-1] == Message(
        "user", (ToolResult("a", (Text("Tool call was interrupted; no result."),), is_error=True, name="t"),)
    )


def test_token_estimate_counts_system_tools_and_messages() -> None:
    empty = Request("m", (Message("user", (Text("hi"),)),))
    assert estimate_input_tokens(empty) == 5  # 2 chars / 3.5 + 4 overhead, rounded up
    rich = Request(
        "m",
        (Message("user", (Text("a" * 350), Image(Base64Source("image/png", "x")))),),
        system=(Text("日本語"),),
        tools=(ToolDef("t", "d", {"type": "object"}),),
    )
    tool = (1 + 1 + len('{"type":"object"}')) / 3.5 + 8
    assert estimate_input_tokens(rich) == int(3 + TOOL_USE_SYSTEM_TOKENS + tool + 4 + 100 + IMAGE_TOKENS) + 1


def test_usage_prompt_tokens_includes_cache() -> None:
    assert Usage(input_tokens=1, cache_read_tokens=2, cache_write_tokens=3).prompt_tokens == 6

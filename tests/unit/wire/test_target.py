"""Encoders obey the target: what the provider and model accept (issue 18)."""

from __future__ import annotations

from proxygate.wire import anthropic, chat, responses
from proxygate.wire.target import Target

ANT_THINKING = {
    "model": "x",
    "max_tokens": 8000,
    "thinking": {"type": "enabled", "budget_tokens": 4000},
    "messages": [{"role": "user", "content": "hi"}],
}


def test_chat_cache_key_and_effort_follow_the_target() -> None:
    req = anthropic.decode_request(ANT_THINKING)
    permissive = chat.encode_request(req)
    assert (permissive["reasoning_effort"], "prompt_cache_key" in permissive) == ("low", True)
    strict = chat.encode_request(req, target=Target(accepts_cache_key=False, reasoning_efforts=()))
    assert "reasoning_effort" not in strict and "prompt_cache_key" not in strict
    nearest = chat.encode_request(req, target=Target(reasoning_efforts=("medium", "high")))
    assert nearest["reasoning_effort"] == "medium"


def test_reasoning_content_only_where_required() -> None:
    body = {
        "model": "x",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "again"},
        ],
    }
    req = anthropic.decode_request(body)
    needs = chat.encode_request(req, target=Target(needs_reasoning_content=True))["messages"]
    assert [m.get("reasoning_content") for m in needs if m["role"] == "assistant"] == ["", None]
    assert all("reasoning_content" not in m for m in chat.encode_request(req)["messages"])


def test_responses_without_reasoning_for_a_model_that_takes_none() -> None:
    req = anthropic.decode_request(ANT_THINKING)
    body = responses.encode_request(req, target=Target(reasoning_efforts=()))
    assert "reasoning" not in body and "reasoning.encrypted_content" not in body.get("include", [])
    body = responses.encode_request(req, target=Target(reasoning_efforts=("high",)))
    assert body["reasoning"]["effort"] == "high"


def test_anthropic_sampling_and_max_tokens_from_a_chat_request() -> None:
    req = chat.decode_request(
        {"model": "m", "temperature": 0, "top_p": 0.9, "messages": [{"role": "user", "content": "hi"}]}
    )
    body = anthropic.encode_request(req, target=Target(max_output_tokens=8192))
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0, 0.9, 8192)
    body = anthropic.encode_request(req, target=Target(exclusive_sampling=True))
    assert (body["temperature"], "top_p" in body, body["max_tokens"]) == (0, False, 32000)
    asked = chat.decode_request(
        {"model": "m", "max_tokens": 50_000, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert anthropic.encode_request(asked, target=Target(max_output_tokens=8192))["max_tokens"] == 8192


def test_chat_tool_calls_without_ids_get_unique_ids_and_their_results() -> None:
    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    req = chat.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": None, "tool_calls": [call, call]},
                {"role": "tool", "content": "1"},
                {"role": "tool", "content": "2"},
            ],
        }
    )
    body = anthropic.encode_request(req)
    uses = [b["id"] for b in body["messages"][1]["content"]]
    results = [b["tool_use_id"] for b in body["messages"][2]["content"] if b["type"] == "tool_result"]
    assert len(set(uses)) == 2 and results == uses


def test_chat_answer_tool_calls_without_ids_differ_between_answers() -> None:
    def answer(args: str) -> dict[str, object]:
        call = {"type": "function", "function": {"name": "f", "arguments": args}}
        return {
            "choices": [
                {"message": {"role": "assistant", "tool_calls": [call]}, "finish_reason": "tool_calls"}
            ]
        }

    first, second = (chat.decode_response(answer(a)).parts[0] for a in ('{"a":1}', '{"a":2}'))
    assert first.id and second.id and first.id != second.id  # type: ignore[union-attr]

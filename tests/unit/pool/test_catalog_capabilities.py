"""Provider and model capabilities: what each upstream accepts beyond its format."""

from __future__ import annotations

import pytest

from proxygate.pool import parse_account
from proxygate.pool.catalog import PROVIDERS, model_spec, target


@pytest.mark.parametrize(
    ("provider", "accepts"),
    [("openai", True), ("openrouter", True), ("chatgpt", True), ("codex", True)]
    + [(name, False) for name in ("cerebras", "deepseek", "glm", "minimax", "custom", "anthropic")],
)
def test_prompt_cache_key_only_where_known_to_be_accepted(provider: str, accepts: bool) -> None:
    assert PROVIDERS[provider].accepts_prompt_cache_key is accepts


def test_a_pool_file_turns_prompt_cache_key_on_or_off() -> None:
    base = {"provider": "custom", "base_url": "http://127.0.0.1:1", "api_key": "k"}
    assert not parse_account(base, "apikey", default_id="c").accepts_prompt_cache_key
    on = parse_account({**base, "prompt_cache_key": True}, "apikey", default_id="c")
    assert on.accepts_prompt_cache_key
    off = {"provider": "openai", "api_key": "k", "prompt_cache_key": False}
    assert not parse_account(off, "apikey", default_id="o").accepts_prompt_cache_key
    with pytest.raises(ValueError, match="prompt_cache_key"):
        parse_account({**base, "prompt_cache_key": "yes"}, "apikey", default_id="c")


def test_reasoning_effort_per_model() -> None:
    openai = PROVIDERS["openai"]
    assert target(openai, "gpt-4o").effort("high") is None
    assert target(openai, "gpt-4.1-mini").effort("low") is None
    assert target(openai, "o3").effort("minimal") == "low"
    assert target(openai, "o3").effort("xhigh") == "high"
    assert target(openai, "gpt-5").effort("minimal") == "minimal"
    assert target(openai, "gpt-5-codex").effort("minimal") == "low"
    assert target(PROVIDERS["openrouter"], "openai/o4-mini").effort("medium") == "medium"
    assert target(PROVIDERS["custom"], "some-local-model").effort("high") is None  # unknown: dropped
    assert target(openai, "gpt-4o", reasoning_efforts=("low",)).effort("high") == "low"  # config


def test_output_limits_and_quirks() -> None:
    anthropic = PROVIDERS["anthropic"]
    assert target(anthropic, "claude-3-5-haiku-20241022").max_output_tokens == 8192
    assert target(anthropic, "claude-sonnet-4-5-20250929").max_output_tokens == 64000
    assert target(anthropic, "claude-sonnet-4-5").exclusive_sampling
    assert not target(anthropic, "claude-sonnet-4-20250514").exclusive_sampling
    assert target(anthropic, "claude-sonnet-4-5", max_output_tokens=1000).max_output_tokens == 1000
    assert target(PROVIDERS["deepseek"], "deepseek-reasoner").needs_reasoning_content
    assert model_spec("totally-unknown") is None

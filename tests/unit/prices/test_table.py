"""The price table: shipped data, name matching, overrides, and the cost of one usage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxygate.config import PriceSettings
from proxygate.errors import ConfigError
from proxygate.prices import PriceTable, load_prices, shipped_prices
from proxygate.wire.ir import Format, Usage
from proxygate.wire.usage import UsageSniffer, chat_usage


@pytest.fixture
def table(tmp_path: Path) -> PriceTable:
    return load_prices(tmp_path, {})


def test_every_shipped_entry_has_a_source_url_and_a_date() -> None:
    prices = shipped_prices()
    assert len(prices) > 30
    for price in prices:
        assert price.source.startswith("https://"), price.model
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", price.date), price.model
        assert price.provider in ("anthropic", "openai", "gemini", "deepseek", "glm", "cerebras", "minimax")
        assert price.rates.input > 0 and price.rates.output > 0, price.model


def test_shipped_names_are_unique() -> None:
    names = [n for p in shipped_prices() for n in (p.model, *p.aliases)]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("asked", "priced_as"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5[1m]", "claude-sonnet-4-5"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("o3-2025-04-16", "o3"),
        ("gpt-5-codex", "gpt-5"),
        ("GPT-5-mini", "gpt-5-mini"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.5-pro-preview-06-05", "gemini-2.5-pro"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-3-pro-preview", "gemini-3-pro"),
        ("deepseek-reasoner", "deepseek-chat"),
        ("MiniMax-M2", "minimax-m2"),
    ],
)
def test_dated_and_prefixed_names_find_their_model(table: PriceTable, asked: str, priced_as: str) -> None:
    price = table.find(asked)
    assert price is not None
    assert price.model == priced_as


@pytest.mark.parametrize("model", ["my-local-llama", "gpt-5-codex-turbo", "claude-sonnet-9", ""])
def test_a_model_without_a_price_has_unknown_cost_not_zero(table: PriceTable, model: str) -> None:
    assert table.find(model) is None
    assert table.cost_usd(model, Usage(input_tokens=1000, output_tokens=10)) is None


def test_anthropic_cost_prices_each_kind_of_token_at_its_rate(table: PriceTable) -> None:
    usage = Usage(
        input_tokens=1_000,
        output_tokens=2_000,
        cache_read_tokens=100_000,
        cache_write_tokens=10_000,
        cache_write_1h_tokens=4_000,
    )
    expected = (1_000 * 3.0 + 2_000 * 15.0 + 100_000 * 0.30 + 6_000 * 3.75 + 4_000 * 6.0) / 1e6
    assert table.cost_usd("claude-sonnet-4-5-20250929", usage) == pytest.approx(expected)


def test_a_priced_request_with_no_tokens_costs_zero(table: PriceTable) -> None:
    assert table.cost_usd("claude-haiku-4-5", Usage()) == 0.0


def test_openai_cached_prompt_tokens_are_priced_once_at_the_cached_rate(table: PriceTable) -> None:
    """prompt_tokens 10,000 of which 8,000 cached: 2,000 at input, 8,000 at cached input."""
    usage = chat_usage(
        {"prompt_tokens": 10_000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 8_000}}
    )
    expected = (2_000 * 2.50 + 8_000 * 1.25 + 500 * 10.0) / 1e6
    assert table.cost_usd("gpt-4o-2024-08-06", usage) == pytest.approx(expected)


def test_long_prompts_cost_the_long_context_tier_for_the_whole_request(table: PriceTable) -> None:
    short = Usage(input_tokens=100, cache_read_tokens=199_900, output_tokens=1_000)
    long = Usage(input_tokens=101, cache_read_tokens=199_900, output_tokens=1_000)
    assert table.cost_usd("claude-sonnet-4-5", short) == pytest.approx(
        (100 * 3.0 + 199_900 * 0.30 + 1_000 * 15.0) / 1e6
    )
    assert table.cost_usd("claude-sonnet-4-5", long) == pytest.approx(
        (101 * 6.0 + 199_900 * 0.60 + 1_000 * 22.50) / 1e6
    )
    gemini_long = Usage(input_tokens=250_000, output_tokens=1_000)
    assert table.cost_usd("gemini-2.5-pro", gemini_long) == pytest.approx(
        (250_000 * 2.50 + 1_000 * 15.0) / 1e6
    )


def test_one_hour_cache_writes_are_read_from_the_anthropic_stream() -> None:
    sniffer = UsageSniffer(Format.anthropic, is_stream=True)
    sniffer.feed(
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5,'
        b'"cache_creation_input_tokens":3000,"cache_read_input_tokens":0,"cache_creation":'
        b'{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":2000},"output_tokens":1}}}\n\n'
    )
    sniffer.close()
    assert sniffer.usage == Usage(
        input_tokens=5, output_tokens=1, cache_write_tokens=3000, cache_write_1h_tokens=2000
    )


def test_config_overrides_a_shipped_price_and_keeps_its_cache_prices(tmp_path: Path) -> None:
    table = load_prices(tmp_path, {"claude-sonnet-4-5": PriceSettings(input=2.0, output=10.0)})
    price = table.find("claude-sonnet-4-5-20250929")
    assert price is not None
    assert (price.origin, price.source) == ("config", "config.toml [prices]")
    assert (price.rates.input, price.rates.output, price.rates.cache_read, price.rates.cache_write) == (
        2.0,
        10.0,
        0.30,
        3.75,
    )
    assert price.long_context is None


def test_a_new_model_without_cache_prices_pays_input_price_for_cache(tmp_path: Path) -> None:
    table = load_prices(tmp_path, {"my-local-llama": PriceSettings(input=1.0, output=2.0)})
    usage = Usage(input_tokens=1_000_000, cache_read_tokens=1_000_000, output_tokens=1_000_000)
    assert table.cost_usd("my-local-llama", usage) == pytest.approx(4.0)


def test_the_price_file_overrides_shipped_and_config_overrides_the_file(tmp_path: Path) -> None:
    (tmp_path / "prices.toml").write_text(
        '[prices."gpt-4o"]\ninput = 1.0\noutput = 4.0\n\n[prices."in-house"]\ninput = 0.5\noutput = 0.5\n'
    )
    table = load_prices(tmp_path, {"in-house": PriceSettings(input=0.1, output=0.2)})
    gpt = table.find("gpt-4o-2024-11-20")
    house = table.find("in-house")
    assert gpt is not None and house is not None
    assert (gpt.origin, gpt.source, gpt.rates.input, gpt.rates.cache_read) == (
        "file",
        str(tmp_path / "prices.toml"),
        1.0,
        1.25,
    )
    assert (house.origin, house.rates.input, house.rates.output) == ("config", 0.1, 0.2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[prices", r"^{file}: Expected ']' at the end of a table declaration \(at end of document\)$"),
        (
            '[prices."x"]\ninput = "cheap"\n',
            r"^{file}: prices\.x\.input: expected a number ≥ 0 .*got 'cheap'$",
        ),
        ('[prices."x"]\ninput = -1\n', r"^{file}: prices\.x\.input: expected a number ≥ 0 .*got -1$"),
        ('[prices."x"]\nprompt = 1\n', r"^{file}: prices\.x\.prompt: unknown price \(known: input, .*\)$"),
        ('["gpt-4o"]\ninput = 1\n', r"^{file}: unknown table 'gpt-4o' \(expected \[prices\.\"MODEL\"\]\)$"),
    ],
)
def test_a_bad_price_file_is_one_clear_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("{file}", re.escape(str(path)))):
        load_prices(tmp_path, {})

"""A Claude-Code-like conversation through the proxy, then `proxygate usage`: tokens and cost
match a hand computation from the shipped price table (issue 11, "Done when").

Five streamed turns with the official anthropic SDK, one of them a tool call answered by a
tool result; the upstream reports cache writes (5-minute and 1-hour) and cache reads the way
the Anthropic API does. The CLI runs against the same config and data dir.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import orjson
import pytest
from typer.testing import CliRunner

from proxygate.cli import app
from tests.conftest import free_port
from tests.upstream import ok_sse

MODEL = "claude-sonnet-4-5-20250929"

# Per turn: input, cache writes (of which 1-hour), cache reads, output — as an agent's
# growing, cached context produces them.
TURNS = [
    {"input": 20, "cache_write": 3000, "cache_write_1h": 0, "cache_read": 0, "output": 40},
    {"input": 15, "cache_write": 500, "cache_write_1h": 0, "cache_read": 3000, "output": 30},
    {"input": 12, "cache_write": 800, "cache_write_1h": 800, "cache_read": 3500, "output": 120},
    {"input": 9, "cache_write": 0, "cache_write_1h": 0, "cache_read": 4300, "output": 60},
    {"input": 7, "cache_write": 200, "cache_write_1h": 0, "cache_read": 4300, "output": 80},
]

# claude-sonnet-4-5 in proxygate/prices/prices.toml, USD per million tokens.
SONNET_4_5 = {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75, "cache_write_1h": 6.0}


def hand_cost(turn: dict[str, int]) -> float:
    p = SONNET_4_5
    written_5m = turn["cache_write"] - turn["cache_write_1h"]
    return (
        turn["input"] * p["input"]
        + turn["output"] * p["output"]
        + turn["cache_read"] * p["cache_read"]
        + written_5m * p["cache_write"]
        + turn["cache_write_1h"] * p["cache_write_1h"]
    ) / 1_000_000


def turn_sse(turn: dict[str, int], blocks: list[dict[str, Any]], stop_reason: str) -> bytes:
    start_usage = {
        "input_tokens": turn["input"],
        "cache_creation_input_tokens": turn["cache_write"],
        "cache_read_input_tokens": turn["cache_read"],
        "cache_creation": {
            "ephemeral_5m_input_tokens": turn["cache_write"] - turn["cache_write_1h"],
            "ephemeral_1h_input_tokens": turn["cache_write_1h"],
        },
        "output_tokens": 1,
    }
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": start_usage}  # fmt: skip
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message})
    ]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            events += [
                ("content_block_start", {"type": "content_block_start", "index": index,
                                         "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"type": "content_block_delta", "index": index,
                                         "delta": {"type": "text_delta", "text": block["text"]}}),
            ]  # fmt: skip
        else:
            events += [
                ("content_block_start", {"type": "content_block_start", "index": index,
                                         "content_block": {**block, "input": {}}}),
                ("content_block_delta", {"type": "content_block_delta", "index": index,
                                         "delta": {"type": "input_json_delta",
                                                   "partial_json": orjson.dumps(block["input"]).decode()}}),
            ]  # fmt: skip
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events += [
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                           "usage": {"output_tokens": turn["output"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for n, d in events)


TOOL_CALL = {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}}
TOOLS = [
    {
        "name": "Bash",
        "description": "Run a shell command",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
    }
]


def cli_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def tokens_and_cost(entry: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "requests",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "total_tokens",
    )
    return {**{k: entry[k] for k in keys}, "cost_usd": entry["cost_usd"]}


async def test_claude_code_like_conversation_costs_what_the_price_table_says(upstream, start_proxy) -> None:
    proxy = await start_proxy(
        {"ant": {"provider": "anthropic", "api_key": "sk-ant-upstream-0000", "base_url": upstream.url}},
        config=f'addr = "127.0.0.1:{free_port()}"\n',  # nothing listens there: --addr finds the server
    )
    upstream.push(
        ok_sse(turn_sse(TURNS[0], [{"type": "text", "text": "Let me look."}, TOOL_CALL], "tool_use")),
        *(ok_sse(turn_sse(t, [{"type": "text", "text": f"answer {i}"}], "end_turn")) for i, t in enumerate(TURNS[1:], 2)),
    )  # fmt: skip
    client = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="client", max_retries=0)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "what is in this directory?"}]
    request_ids = []
    for n in range(5):
        async with client.messages.stream(
            model=MODEL, max_tokens=1024, system="You are a coding agent.", tools=TOOLS, messages=messages
        ) as stream:
            final = await stream.get_final_message()
        request_ids.append(stream.response.headers["x-proxygate-request-id"])
        messages.append(
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]}
        )
        if n == 0:
            assert (final.stop_reason, final.content[1].type, final.content[1].input) == (
                "tool_use",
                "tool_use",
                {"command": "ls"},
            )
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "README.md\nsrc"}]})  # fmt: skip
        else:
            messages.append({"role": "user", "content": f"and then {n}?"})
        assert final.usage.cache_read_input_tokens == TURNS[n]["cache_read"]
    await client.close()
    assert upstream.requests[1].body["messages"][2]["content"][0]["tool_use_id"] == "toolu_01"

    expected_cost = sum(hand_cost(t) for t in TURNS)
    expected = {
        "requests": 5,
        "input_tokens": sum(t["input"] for t in TURNS),
        "output_tokens": sum(t["output"] for t in TURNS),
        "cache_read_tokens": sum(t["cache_read"] for t in TURNS),
        "cache_write_tokens": sum(t["cache_write"] for t in TURNS),
        "total_tokens": sum(t["input"] + t["output"] + t["cache_read"] + t["cache_write"] for t in TURNS),
        "cost_usd": pytest.approx(expected_cost, rel=1e-9),
    }
    cli = ("-c", str(proxy.settings.config_path), "--addr", proxy.url.removeprefix("http://"))

    # The CLI blocks on its HTTP call; the server answers from this test's loop meanwhile.
    default = await asyncio.to_thread(cli_json, "usage", *cli)
    by_model = await asyncio.to_thread(cli_json, "usage", "--by", "model", *cli)
    by_day = await asyncio.to_thread(cli_json, "usage", "--by", "day", "--since", "7d", *cli)
    logged = await asyncio.to_thread(cli_json, "requests", *cli)

    assert tokens_and_cost(default["total"]) == expected
    assert [(r["model"], tokens_and_cost(r)) for r in by_model["rows"]] == [(MODEL, expected)]
    today = default["days"][-1]["day"]
    assert [(r["day"], tokens_and_cost(r)) for r in by_day["rows"]] == [(today, expected)]
    assert tokens_and_cost(by_day["total"]) == expected
    assert [e["request_id"] for e in logged["requests"]] == request_ids[::-1]
    assert [e["cost_usd"] for e in logged["requests"]] == pytest.approx([hand_cost(t) for t in TURNS][::-1])

"""Dataset capture through the real proxy, with the official SDKs as clients (issue 11).

A Claude-Code-like conversation (anthropic SDK, streaming, five turns with tool calls and thinking)
and a Chat conversation converted to an Anthropic upstream are captured, exported by the real
``proxygate capture export`` command in a subprocess, and checked against the OpenAI chat
fine-tuning rules and against the turns actually sent and received.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest

from proxygate.features.capture import DatasetCapture
from proxygate.server.keys import PIPELINE
from tests.conftest import write_account
from tests.serving import start_serve
from tests.upstream import ok_json, ok_sse, status

ANT = {"provider": "anthropic", "api_key": "sk-ant-upstream-0000", "models": ["*"]}
SESSION = "0d9c2b1e-5a4f-4c1e-9f57-6a1f0b2c3d4e"
TOOLS = [
    {
        "name": "read_file",
        "description": "Read a file.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


def ant_sse(blocks: list[dict[str, Any]], stop_reason: str = "end_turn") -> bytes:
    """An Anthropic stream of ``blocks`` (text, thinking with a signature, tool_use)."""
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_up",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            },
        )
    ]
    for i, block in enumerate(blocks):
        match block["type"]:
            case "text":
                start: dict[str, Any] = {"type": "text", "text": ""}
                deltas = [
                    {"type": "text_delta", "text": block["text"][:3]},
                    {"type": "text_delta", "text": block["text"][3:]},
                ]
            case "thinking":
                start = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [
                    {"type": "thinking_delta", "thinking": block["thinking"]},
                    {"type": "signature_delta", "signature": "EqQBCkgIARABGAIiQ-secret-signature"},
                ]
            case _:
                start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                args = orjson.dumps(block["input"]).decode()
                deltas = [
                    {"type": "input_json_delta", "partial_json": args[:5]},
                    {"type": "input_json_delta", "partial_json": args[5:]},
                ]
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": i, "content_block": start})
        )
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d}) for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return b"".join(b"event: " + n.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for n, d in events)


def export(cwd: Path, *args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """``proxygate capture export ARGS`` in its own process, in ``cwd`` (its config.toml): no server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYGATE_")} | environ
    return subprocess.run(
        [sys.executable, "-m", "proxygate", "capture", "export", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(Path(__file__).parents[2])},
        timeout=60,
        check=False,
    )


def assert_fine_tuning_valid(example: dict[str, Any]) -> None:
    """The OpenAI chat fine-tuning rules: roles, tool_call ids answered by tool messages, assistant last."""
    assert set(example) <= {"messages", "tools"}
    messages = example["messages"]
    assert messages[-1]["role"] == "assistant"
    open_calls: set[str] = set()
    for message in messages:
        assert message["role"] in ("system", "user", "assistant", "tool")
        if message["role"] == "tool":
            open_calls.remove(message["tool_call_id"])  # KeyError: a result without its call
            assert isinstance(message["content"], str)
        else:
            assert not open_calls, f"tool calls {open_calls} not answered before a {message['role']} message"
        for call in message.get("tool_calls", []):
            assert call["type"] == "function" and orjson.loads(call["function"]["arguments"]) is not None
            open_calls.add(call["id"])
    assert not open_calls
    for tool in example.get("tools", []):
        assert tool["type"] == "function" and tool["function"]["name"]


def capture_lines(capture_dir: Path) -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for p in sorted(capture_dir.glob("capture-*.jsonl"))
        for line in p.read_bytes().splitlines()
    ]


async def test_claude_code_like_session_exports_as_one_valid_conversation(
    upstream, start_proxy, tmp_path
) -> None:
    proxy = await start_proxy(
        {"ant": {**ANT, "base_url": upstream.url}}, env={"PROXYGATE_CAPTURE_ENABLED": "true"}
    )
    capture_dir = proxy.settings.capture.dir
    client = anthropic.AsyncAnthropic(
        base_url=proxy.url,
        api_key="client",
        max_retries=0,
        default_headers={"x-claude-code-session-id": SESSION},
    )
    answers = [
        [
            {"type": "thinking", "thinking": "Look at the file first."},
            {"type": "text", "text": "Let me read it."},
            {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {"path": "a.py"}},
        ],
        [{"type": "text", "text": "It defines main()."}],
        [
            {"type": "tool_use", "id": "toolu_02", "name": "read_file", "input": {"path": "b.py"}},
            {"type": "tool_use", "id": "toolu_03", "name": "read_file", "input": {"path": "c.py"}},
        ],
        [{"type": "text", "text": "Both import a."}],
        [{"type": "text", "text": "Done: renamed."}],
    ]
    results = {"toolu_01": "def main(): pass", "toolu_02": "import a", "toolu_03": "from a import main"}
    user_turns = ["What does a.py do?", None, "And b.py, c.py?", None, "Rename main to run."]
    history: list[dict[str, Any]] = []
    # What a fine-tuning example of this conversation must hold, built from what was sent and received.
    expected: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding agent."}]
    pending_results: list[dict[str, Any]] = []
    for turn, answer in enumerate(answers):
        if user_turns[turn] is not None:
            history.append({"role": "user", "content": [{"type": "text", "text": user_turns[turn]}]})
            expected.append({"role": "user", "content": user_turns[turn]})
        else:
            history.append({"role": "user", "content": pending_results})
        upstream.push(ok_sse(ant_sse(answer, "tool_use" if answer[-1]["type"] == "tool_use" else "end_turn")))
        async with client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=1000,
            system=[
                {
                    "type": "text",
                    "text": f"x-anthropic-billing-header: cc_version=2.1.0.{turn:03x}; cch={turn:05x};",
                },
                {"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}},
            ],
            tools=TOOLS,
            messages=history,
            metadata={"user_id": orjson.dumps({"session_id": SESSION}).decode()},
        ) as stream:
            final = await stream.get_final_message()
        history.append(
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]}
        )
        text = "".join(b.text for b in final.content if b.type == "text")
        calls = [b for b in final.content if b.type == "tool_use"]
        thinking = "".join(b.thinking for b in final.content if b.type == "thinking")
        message: dict[str, Any] = {"role": "assistant"}
        if text or not calls:
            message["content"] = text
        if thinking:
            message["reasoning_content"] = thinking
        if calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": orjson.dumps(c.input).decode()},
                }
                for c in calls
            ]
        expected.append(message)
        pending_results = [
            {"type": "tool_result", "tool_use_id": c.id, "content": results[c.id]} for c in calls
        ]
        expected += [{"role": "tool", "tool_call_id": c.id, "content": results[c.id]} for c in calls]
    await client.close()

    # On disk within 5 s, while the server still runs.
    for _ in range(50):
        if len(capture_lines(capture_dir)) == 5:
            break
        await asyncio.sleep(0.1)
    records = capture_lines(capture_dir)
    assert [r["metadata"]["turn"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["metadata"]["restart"] for r in records] == [False] * 5
    assert {r["metadata"]["conversation"] for r in records} == {f"cc:{SESSION}"}
    # Last-turn mode: every message of the conversation is stored exactly once, tools once.
    stored = [m for r in records for m in r["messages"]]
    assert len(stored) == len(expected)
    assert [("tools" in r) for r in records] == [True, False, False, False, False]
    assert b"secret-signature" not in b"".join(p.read_bytes() for p in capture_dir.iterdir())
    assert b"x-anthropic-billing-header" not in b"".join(p.read_bytes() for p in capture_dir.iterdir())
    assert stat.S_IMODE(capture_dir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in capture_dir.iterdir()} == {0o600}

    out = tmp_path / "dataset.jsonl"
    done = export(tmp_path, "--out", str(out))  # the config's <data_dir>/capture
    assert done.returncode == 0, done.stderr
    lines = out.read_bytes().splitlines()
    assert len(lines) == 1
    example = orjson.loads(lines[0])
    assert_fine_tuning_valid(example)
    assert example["messages"] == expected
    assert example["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "read_file",
                "description": "Read a file.",
                "parameters": TOOLS[0]["input_schema"],
            },
        }
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


async def test_chat_client_over_an_anthropic_upstream_is_captured_in_chat_shape(
    upstream, start_proxy, tmp_path
) -> None:
    proxy = await start_proxy(
        {"ant": {**ANT, "base_url": upstream.url}},
        config='[capture]\nenabled = true\ndir = "captured"\ngzip = true\n',
    )
    capture_dir = proxy.settings.capture.dir
    assert capture_dir == tmp_path / "captured"
    [stage] = [s for s in proxy.app[PIPELINE].stages if isinstance(s, DatasetCapture)]
    client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="client", max_retries=0)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "now",
                "description": "The time.",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What time is it?"},
    ]
    upstream.push(
        ok_sse(ant_sse([{"type": "tool_use", "id": "toolu_9", "name": "now", "input": {}}], "tool_use"))
    )
    stream = await client.chat.completions.create(
        model="claude-x", messages=messages, tools=tools, stream=True
    )
    chunks = [c async for c in stream]
    call = next(
        c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls
    )
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "now", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "12:00"},
    ]
    upstream.push(
        ok_json(
            {
                "id": "msg_2",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [{"type": "text", "text": "It is noon."}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 5, "output_tokens": 4},
            }
        )
    )
    done = await client.chat.completions.create(model="claude-x", messages=messages, tools=tools)
    assert done.choices[0].message.content == "It is noon."
    # A failed turn is not captured.
    upstream.push(status(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}))
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="claude-x", messages=[*messages, {"role": "user", "content": "x"}]
        )
    await client.close()
    await proxy.runner.cleanup()  # a clean stop flushes the writer
    assert not stage.writer.is_running

    files = sorted(capture_dir.iterdir())
    assert [p.suffix for p in files] == [".gz"]
    out = tmp_path / "chat.jsonl"
    result = export(tmp_path, "--dir", str(capture_dir), "--out", str(out), "--since", "1h")
    assert result.returncode == 0, result.stderr
    [example] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert_fine_tuning_valid(example)
    assert example == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What time is it?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": call.id, "type": "function", "function": {"name": "now", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "12:00"},
            {"role": "assistant", "content": "It is noon."},
        ],
        "tools": tools,
    }


def gemini_sse(parts: list[dict[str, Any]]) -> bytes:
    chunk = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2},
        "responseId": "resp-gem",
    }
    return b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"


async def test_gemini_tool_calls_without_ids_stay_paired_across_turns(
    upstream, start_proxy, tmp_path
) -> None:
    """A Gemini client resends calls without ids: its results still answer the captured call."""
    proxy = await start_proxy(
        {"gem": {"provider": "gemini", "api_key": "gem-key-0000", "base_url": upstream.url, "models": ["*"]}},
        env={"PROXYGATE_CAPTURE_ENABLED": "1", "PROXYGATE_CAPTURE_DIR": str(tmp_path / "gemini-capture")},
    )
    assert proxy.settings.capture.dir == tmp_path / "gemini-capture"
    url = f"{proxy.url}/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    call = {"functionCall": {"name": "now", "args": {}}}
    history: list[dict[str, Any]] = [{"role": "user", "parts": [{"text": "What time is it?"}]}]
    body = {"systemInstruction": {"parts": [{"text": "Be brief."}]}, "contents": history}
    async with aiohttp.ClientSession() as http:
        upstream.push(ok_sse(gemini_sse([call])))
        async with http.post(url, json=body) as answer:
            assert answer.status == 200 and b"functionCall" in await answer.read()
        history += [
            {"role": "model", "parts": [call]},
            {"role": "user", "parts": [{"functionResponse": {"name": "now", "response": {"time": "12:00"}}}]},
        ]
        upstream.push(ok_sse(gemini_sse([{"text": "Noon."}])))
        async with http.post(url, json={**body, "contents": history}) as answer:
            assert answer.status == 200 and b"Noon." in await answer.read()
    await proxy.runner.cleanup()

    out = tmp_path / "gemini.jsonl"
    result = export(tmp_path, "--out", str(out), PROXYGATE_CAPTURE_DIR=str(tmp_path / "gemini-capture"))
    assert result.returncode == 0, result.stderr
    [example] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert_fine_tuning_valid(example)
    [captured_call] = example["messages"][2]["tool_calls"]
    assert example["messages"][3] == {
        "role": "tool",
        "tool_call_id": captured_call["id"],
        "content": '{"time":"12:00"}',
    }
    assert [m["role"] for m in example["messages"]] == ["system", "user", "assistant", "tool", "assistant"]


def responses_events(item: dict[str, Any], deltas: list[str]) -> bytes:
    """A Responses stream of one output item (a message or a function call)."""
    done = {**item, "status": "completed"}
    if item["type"] == "function_call":
        done["arguments"] = "".join(deltas)
        kind = "response.function_call_arguments.delta"
    else:
        done["content"] = [{"type": "output_text", "text": "".join(deltas), "annotations": []}]
        kind = "response.output_text.delta"
    resp = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-5",
        "output": [done],
        "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
    }
    events = [
        {"type": "response.created", "response": {**resp, "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "status": "in_progress"}},
        *[
            {"type": kind, "item_id": item["id"], "output_index": 0, "content_index": 0, "delta": d}
            for d in deltas
        ],
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": resp},
    ]
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps({**e, "sequence_number": i}) + b"\n\n"
        for i, e in enumerate(events)
    )


async def test_codex_like_responses_session_exports_as_one_conversation(
    upstream, start_proxy, tmp_path
) -> None:
    proxy = await start_proxy(
        {
            "cx": {
                "provider": "codex",
                "api_key": "sk-up-0000",
                "base_url": upstream.url + "/v1",
                "models": ["*"],
            }
        },
        env={"PROXYGATE_CAPTURE_ENABLED": "true"},
    )
    client = openai.AsyncOpenAI(
        base_url=proxy.url + "/v1", api_key="client", max_retries=0, default_headers={"session_id": "codex-1"}
    )
    tools: list[Any] = [
        {"type": "function", "name": "shell", "parameters": {"type": "object"}, "strict": False}
    ]
    items: list[Any] = [{"role": "user", "content": [{"type": "input_text", "text": "List files."}]}]
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_ls", "name": "shell", "arguments": ""}
    upstream.push(ok_sse(responses_events(call, ['{"cmd":', '"ls"}'])))
    stream = await client.responses.create(
        model="gpt-5", instructions="You are Codex.", input=items, tools=tools, stream=True, store=False
    )
    first = [e async for e in stream][-1].response
    items += [
        {
            "type": "function_call",
            "call_id": "call_ls",
            "name": "shell",
            "arguments": first.output[0].arguments,
        },
        {"type": "function_call_output", "call_id": "call_ls", "output": "a.py b.py"},
    ]
    message = {"type": "message", "id": "msg_1", "role": "assistant", "content": []}
    upstream.push(ok_sse(responses_events(message, ["Two ", "files."])))
    stream = await client.responses.create(
        model="gpt-5", instructions="You are Codex.", input=items, tools=tools, stream=True, store=False
    )
    assert [e async for e in stream][-1].response.output_text == "Two files."
    await client.close()
    await proxy.runner.cleanup()

    records = capture_lines(proxy.settings.capture.dir)
    assert [(r["metadata"]["conversation"], r["metadata"]["offset"]) for r in records] == [
        ("codex:codex-1", 0),
        ("codex:codex-1", 3),
    ]
    out = tmp_path / "codex.jsonl"
    result = export(tmp_path, "--out", str(out))
    assert result.returncode == 0, result.stderr
    [example] = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert_fine_tuning_valid(example)
    ls = {"id": "call_ls", "type": "function", "function": {"name": "shell", "arguments": '{"cmd":"ls"}'}}
    assert example == {
        "messages": [
            {"role": "system", "content": "You are Codex."},
            {"role": "user", "content": "List files."},
            {"role": "assistant", "tool_calls": [ls]},
            {"role": "tool", "tool_call_id": "call_ls", "content": "a.py b.py"},
            {"role": "assistant", "content": "Two files."},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "shell", "parameters": {"type": "object"}, "strict": False},
            }
        ],
    }


async def test_a_real_server_stopped_by_sigterm_leaves_every_turn_on_disk(upstream, tmp_path) -> None:
    write_account(tmp_path / "pool", "apikeys", "ant", {**ANT, "base_url": upstream.url})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYGATE_")}
    served = await start_serve(
        tmp_path,
        "[capture]\nenabled = true\ngzip = true\n",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
        attempts=400,
    )
    port = served.port
    try:
        client = anthropic.AsyncAnthropic(
            base_url=f"http://127.0.0.1:{port}", api_key="client", max_retries=0
        )
        for text in ("first", "second"):
            upstream.push(ok_sse(ant_sse([{"type": "text", "text": f"{text} answer"}])))
            async with client.messages.stream(
                model="claude-x", max_tokens=10, messages=[{"role": "user", "content": text}]
            ) as stream:
                await stream.get_final_message()
        await client.close()
    finally:
        await served.stop(timeout_s=30)
    assert served.proc.returncode == 0
    out = tmp_path / "stopped.jsonl"
    result = export(tmp_path, "--out", str(out))
    assert result.returncode == 0, result.stderr
    exported = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [[m["content"] for m in c["messages"]] for c in exported] == [
        ["first", "first answer"],
        ["second", "second answer"],
    ]

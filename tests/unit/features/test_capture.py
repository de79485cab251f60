"""Dataset capture without a server: records, chains, export, the writer thread and the stage's hooks."""

from __future__ import annotations

import gzip
import logging
import stat
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from typer.testing import CliRunner

from proxygate.call import Call
from proxygate.cli import app
from proxygate.cli.capture import since_ts
from proxygate.config import CaptureSettings
from proxygate.errors import ClientError
from proxygate.features.capture import (
    MAX_ANSWER_BYTES,
    Chains,
    DatasetCapture,
    Turn,
    assistant_message,
    chat_messages,
    dataset_capture,
    decode_answer,
    export_conversations,
    iso_time,
    render_turn,
)
from proxygate.features.capture_files import CaptureWriter, ExportReport, read_records, write_dataset
from proxygate.wire.codecs import CODECS
from proxygate.wire.ir import Format
from tests.upstream import anthropic_message, anthropic_sse, chat_sse, responses_sse

SIGNATURE = "EqQBCkgIARABGAIiQ-signature"

# --------------------------------------------------------------------------- records


def claude_code_body(*, turn2: bool = True) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "fix the bug"}]
    if turn2:
        messages += [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "check tests", "signature": SIGNATURE},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Running them."},
                    {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"cmd": "pytest"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "1 failed"}],
                    },
                    {"type": "text", "text": "<system-reminder>be careful</system-reminder>"},
                ],
            },
        ]
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.0.abc; cch=12345;"},
            {"type": "text", "text": "You are Claude Code."},
        ],
        "tools": [{"name": "bash", "description": "Run.", "input_schema": {"type": "object"}}],
        "messages": messages,
    }


def test_an_anthropic_history_normalises_to_chat_messages_without_signatures() -> None:
    request = CODECS[Format.anthropic].decode_request(claude_code_body())
    messages, tools = chat_messages(request)
    assert messages == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "fix the bug"},
        {
            "role": "assistant",
            "content": "Running them.",
            "reasoning_content": "check tests",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "bash", "arguments": '{"cmd":"pytest"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "1 failed"},
        {"role": "user", "content": "<system-reminder>be careful</system-reminder>"},
    ]
    assert tools == [
        {
            "type": "function",
            "function": {"name": "bash", "description": "Run.", "parameters": {"type": "object"}},
        }
    ]


def test_a_responses_history_keeps_reasoning_summaries_and_drops_encrypted_content() -> None:
    body = {
        "model": "gpt-5",
        "instructions": "be good",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "think"}],
                "encrypted_content": "gAAA",
            },
            {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": '{"cmd":"ls"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.py"},
        ],
        "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}],
    }
    messages, tools = chat_messages(CODECS[Format.responses].decode_request(body))
    assert messages == [
        {"role": "system", "content": "be good"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "reasoning_content": "think",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "shell", "arguments": '{"cmd":"ls"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.py"},
    ]
    assert tools == [{"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}]


def ant_stream(blocks: list[dict[str, Any]]) -> bytes:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**anthropic_message(""), "content": [], "stop_reason": None}}
    ]
    for i, block in enumerate(blocks):
        if block["type"] == "thinking":
            start: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": SIGNATURE},
            ]
        elif block["type"] == "text":
            start, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": block["text"]}]
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": block["json"]}]
        events.append({"type": "content_block_start", "index": i, "content_block": start})
        events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": i})
    events += [
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        (
            Format.anthropic,
            ant_stream(
                [
                    {"type": "thinking", "thinking": "hmm"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_7", "name": "read", "json": '{"path": "a"}'},
                ]
            ),
            {
                "role": "assistant",
                "content": "Let me look.",
                "reasoning_content": "hmm",
                "tool_calls": [
                    {
                        "id": "toolu_7",
                        "type": "function",
                        "function": {"name": "read", "arguments": '{"path": "a"}'},
                    }
                ],
            },
        ),
        (Format.anthropic, anthropic_sse("pong"), {"role": "assistant", "content": "pong"}),
        (
            Format.anthropic,
            orjson.dumps(anthropic_message("whole")),
            {"role": "assistant", "content": "whole"},
        ),
        (Format.chat, chat_sse("abc"), {"role": "assistant", "content": "abc"}),
        (Format.responses, responses_sse("resp"), {"role": "assistant", "content": "resp"}),
        (
            Format.gemini,
            b"data: "
            + orjson.dumps(
                {
                    "candidates": [
                        {
                            "content": {
                                "role": "model",
                                "parts": [
                                    {"text": "plan", "thought": True},
                                    {"functionCall": {"name": "f", "args": {}}},
                                ],
                            },
                            "finishReason": "STOP",
                        }
                    ]
                }
            )
            + b"\r\n\r\n",
            {
                "role": "assistant",
                "reasoning_content": "plan",
                "tool_calls": [
                    {
                        "id": "call_gem_7bd826af77b93d84770e",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
        ),
    ],
)
def test_the_answer_the_client_received_becomes_the_assistant_message(
    fmt: Format, raw: bytes, expected: dict[str, Any]
) -> None:
    assert assistant_message(decode_answer(fmt, raw)) == expected


def turn(
    body: dict[str, Any],
    answer: bytes,
    *,
    request_id: str,
    conversation: str = "cc:s1",
    ts: float = 1_800_000_000.0,
) -> Turn:
    return Turn(
        request_id=request_id,
        fmt=Format.anthropic,
        body=body,
        answer=answer,
        model=body["model"],
        upstream_model=body["model"],
        upstream_format=Format.anthropic,
        conversation=conversation,
        route="default",
        wall_started=ts,
    )


def ant_body(*texts: str, system: str = "sys") -> dict[str, Any]:
    """A conversation alternating user and assistant texts (user first)."""
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]
    return {"model": "claude-x", "max_tokens": 10, "system": system, "messages": messages}


def test_last_turn_records_hold_only_new_messages_and_full_records_hold_everything() -> None:
    chains = Chains()
    first = render_turn(turn(ant_body("u1"), anthropic_sse("a1"), request_id="r1"), chains, "last-turn")
    second = render_turn(
        turn(ant_body("u1", "a1", "u2"), anthropic_sse("a2"), request_id="r2", ts=1_800_000_001.5),
        chains,
        "last-turn",
    )
    assert first == {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"},
        ],
        "metadata": {
            "conversation": "cc:s1",
            "chain": "r1",
            "turn": 1,
            "offset": 0,
            "restart": False,
            "request_id": "r1",
            "model": "claude-x",
            "upstream_model": "claude-x",
            "client_format": "anthropic",
            "upstream_format": "anthropic",
            "route": "default",
            "mode": "last-turn",
            "time": "2027-01-15T08:00:00.000Z",
        },
    }
    assert (
        second["messages"],
        second["metadata"]["chain"],
        second["metadata"]["turn"],
        second["metadata"]["offset"],
    ) == (
        [{"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}],
        "r1",
        2,
        3,
    )
    assert second["metadata"]["time"] == "2027-01-15T08:00:01.500Z"
    full = render_turn(
        turn(ant_body("u1", "a1", "u2"), anthropic_sse("a2"), request_id="r3"), Chains(), "full"
    )
    assert (len(full["messages"]), full["metadata"]["offset"]) == (5, 0)


def place(chains: Chains, *texts: str, request_id: str, conversation: str = "c") -> tuple[str, int, bool]:
    request = CODECS[Format.anthropic].decode_request(ant_body(*texts))
    messages, tools = chat_messages(request)
    p = chains.place(conversation, request_id, messages, tools)
    return p.chain, p.offset, p.restart


def test_a_request_continues_the_chain_whose_prefix_it_extends_furthest() -> None:
    chains = Chains()
    assert place(chains, "u1", request_id="r1") == ("r1", 0, False)
    assert place(chains, "u1", "a1", "u2", request_id="r2") == ("r1", 3, False)
    # A side request in the same session (title generation): a chain of its own.
    assert place(chains, "title this", request_id="r3") == ("r3", 0, False)
    assert place(chains, "u1", "a1", "u2", "a2", "u3", request_id="r4") == ("r1", 5, False)
    # The same request again (a regenerated answer) replaces the last answer: offset at it.
    assert place(chains, "u1", "a1", "u2", "a2", "u3", request_id="r5") == ("r1", 6, False)
    # The user edited an earlier message: a new chain holding the whole history.
    assert place(chains, "u1", "a1", "u2 edited", request_id="r6") == ("r6", 0, True)


def test_a_forgotten_conversation_restarts_with_its_whole_history() -> None:
    chains = Chains(max_conversations=1)
    place(chains, "u1", request_id="r1", conversation="a")
    place(chains, "v1", request_id="r2", conversation="b")  # evicts "a"
    assert place(chains, "u1", "a1", "u2", request_id="r3", conversation="a") == ("r3", 0, True)


def test_a_client_that_drops_old_thinking_still_continues_its_chain() -> None:
    chains = Chains()
    with_thinking = [
        {"type": "thinking", "thinking": "t", "signature": SIGNATURE},
        {"type": "text", "text": "a1"},
    ]
    body = ant_body("u1", "a1", "u2")
    body["messages"][1]["content"] = with_thinking
    messages, tools = chat_messages(CODECS[Format.anthropic].decode_request(body))
    chains.place("c", "r1", messages, tools)
    later = ant_body("u1", "a1", "u2", "a2", "u3")  # a1 resent without its thinking
    messages, tools = chat_messages(CODECS[Format.anthropic].decode_request(later))
    assert chains.place("c", "r2", messages, tools).chain == "r1"


# --------------------------------------------------------------------------- export


def records_of(
    *turns: tuple[dict[str, Any], bytes, str], mode: str = "last-turn", conversation: str = "cc:s1"
) -> list[dict[str, Any]]:
    chains = Chains()
    return [
        render_turn(
            turn(body, answer, request_id=rid, conversation=conversation, ts=1_800_000_000.0 + i),
            chains,
            mode,
        )  # type: ignore[arg-type]
        for i, (body, answer, rid) in enumerate(turns)
    ]


def test_export_rebuilds_each_chain_and_leaves_out_what_a_longer_chain_repeats() -> None:
    before_restart = records_of(
        (ant_body("u1"), anthropic_sse("a1"), "r1"), (ant_body("u1", "a1", "u2"), anthropic_sse("a2"), "r2")
    )
    # After a restart the same session comes back whole (a fresh Chains), plus a side request.
    after_restart = records_of(
        (ant_body("u1", "a1", "u2", "a2", "u3"), anthropic_sse("a3"), "r3"),
        (ant_body("title?"), anthropic_sse("Bug fix"), "r4"),
    )
    for r in after_restart:
        r["metadata"]["time"] = iso_time(1_800_000_100.0)
    assert after_restart[0]["metadata"]["restart"] is True
    texts = [
        [m["content"] for m in c["messages"]] for c in export_conversations([*before_restart, *after_restart])
    ]
    assert texts == [["sys", "u1", "a1", "u2", "a2", "u3", "a3"], ["sys", "title?", "Bug fix"]]
    recent = export_conversations([*before_restart, *after_restart], since=iso_time(1_800_000_050.0))
    assert len(recent) == 2
    assert export_conversations(before_restart, since=iso_time(1_800_000_050.0)) == []


def test_export_leaves_out_a_chain_whose_beginning_was_removed() -> None:
    records = records_of(
        (ant_body("u1"), anthropic_sse("a1"), "r1"),
        (ant_body("u1", "a1", "u2"), anthropic_sse("a2"), "r2"),
        (ant_body("v1"), anthropic_sse("b1"), "r3"),
    )
    report = ExportReport()
    exported = export_conversations(records[1:], report=report)  # r1's file is gone
    assert ([[m["content"] for m in c["messages"]] for c in exported], report.incomplete) == (
        [["sys", "v1", "b1"]],
        1,
    )


def test_export_of_full_mode_keeps_the_last_request_of_each_conversation() -> None:
    records = records_of(
        (ant_body("u1"), anthropic_sse("a1"), "r1"),
        (ant_body("u1", "a1", "u2"), anthropic_sse("a2"), "r2"),
        mode="full",
    )
    assert [[m["content"] for m in c["messages"]] for c in export_conversations(records)] == [
        ["sys", "u1", "a1", "u2", "a2"]
    ]


def test_a_regenerated_answer_replaces_the_first_one_in_the_export() -> None:
    records = records_of(
        (ant_body("u1"), anthropic_sse("first"), "r1"),
        (ant_body("u1"), anthropic_sse("second"), "r2"),
        (ant_body("u1", "second", "u2"), anthropic_sse("a2"), "r3"),
    )
    assert [len(r["messages"]) for r in records] == [3, 1, 2]  # each message stored once
    [conversation] = export_conversations(records)
    assert [m["content"] for m in conversation["messages"]] == ["sys", "u1", "second", "u2", "a2"]


# --------------------------------------------------------------------------- the writer


def test_writer_files_are_private_gzip_members_rotated_past_max_bytes(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "capture"
    writer: CaptureWriter[int] = CaptureWriter(
        directory,
        lambda n: {"messages": [{"role": "user", "content": f"m{n}" + "x" * 200}]},
        compress=True,
        max_bytes=300,
    )
    for n in range(6):  # one batch at a time: files rotate between batches
        writer.put(n)
        while writer.written <= n:
            time.sleep(0.001)
    writer.close()
    files = sorted(directory.iterdir())
    assert len(files) >= 2 and all(p.name.endswith(".jsonl.gz") for p in files)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    contents = [m["content"][:2] for r in read_records(directory) for m in r["messages"]]
    assert contents == ["m0", "m1", "m2", "m3", "m4", "m5"]
    assert gzip.decompress(files[0].read_bytes()).startswith(b'{"messages"')


def test_a_turn_that_cannot_be_rendered_is_skipped_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def render(n: int) -> dict[str, Any]:
        if n % 2:
            raise ValueError("broken answer")
        return {"messages": [{"role": "assistant", "content": str(n)}]}

    writer: CaptureWriter[int] = CaptureWriter(tmp_path, render)
    with caplog.at_level(logging.WARNING, logger="proxygate.capture"):
        for n in range(5):
            writer.put(n)
        writer.close()
    assert [r["messages"][0]["content"] for r in read_records(tmp_path)] == ["0", "2", "4"]
    assert [r.getMessage() for r in caplog.records] == [
        "capture: a turn could not be recorded (ValueError: broken answer)"
    ]
    assert writer.written == 3


def test_a_writer_far_behind_drops_turns_instead_of_growing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()

    def render(n: int) -> dict[str, Any]:
        gate.wait(10)
        return {"messages": [{"role": "user", "content": str(n)}]}

    writer: CaptureWriter[int] = CaptureWriter(tmp_path, render)
    with caplog.at_level(logging.WARNING, logger="proxygate.capture"):
        for n in range(3000):
            writer.put(n)
        gate.set()
        writer.close()
    assert 2048 <= writer.written < 3000
    assert [r.getMessage() for r in caplog.records] == [
        "capture: 2048 turns waiting to be written; dropping turns"
    ]


def test_an_unwritable_directory_loses_turns_with_one_line_until_it_is_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "capture"
    blocked.write_text("a file where the directory should be")
    rendered_1 = threading.Event()

    def render(n: int) -> dict[str, Any]:
        if n == 1:
            rendered_1.set()  # its batch is taken from the queue: turn 2 comes in a later one
        if n == 2:
            blocked.unlink()  # fixed before turn 2 is written
        return {"messages": [{"role": "user", "content": str(n)}]}

    writer: CaptureWriter[int] = CaptureWriter(blocked, render)
    with caplog.at_level(logging.WARNING, logger="proxygate.capture"):
        writer.put(0)
        writer.put(1)
        assert rendered_1.wait(10)
        writer.put(2)
        writer.close()
    assert [r["messages"][0]["content"] for r in read_records(blocked)] == ["2"]
    assert [r.getMessage() for r in caplog.records] == [
        f"capture: cannot write to {blocked} ([Errno 20] Not a directory: '{blocked}'); turns are lost"
    ]


def test_read_records_keeps_what_precedes_a_damaged_end(tmp_path: Path) -> None:
    good = gzip.compress(b'{"messages": [{"role": "user", "content": "kept"}]}\nnot json\n')
    (tmp_path / "capture-20270101T000000Z-001.jsonl.gz").write_bytes(
        good + gzip.compress(b'{"messages": []}\n')[:12]
    )
    (tmp_path / "notes.txt").write_text("ignored")
    report = ExportReport()
    assert [r["messages"] for r in read_records(tmp_path, report)] == [[{"role": "user", "content": "kept"}]]
    assert (report.files, report.bad_lines, report.damaged_files) == (
        1,
        1,
        ["capture-20270101T000000Z-001.jsonl.gz"],
    )


def test_the_dataset_file_is_private_and_leaves_its_directory_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    write_dataset(tmp_path / "out.jsonl", [b"a\n", b"b\n"])
    assert (tmp_path / "out.jsonl").read_bytes() == b"a\nb\n"
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# --------------------------------------------------------------------------- the stage


def make_call(model: str = "claude-x", **fields: Any) -> Call:
    body = ant_body("hi")
    call = Call(
        "pg_1", Format.anthropic, CIMultiDictProxy(CIMultiDict()), body, orjson.dumps(body), model, True
    )
    for name, value in fields.items():
        setattr(call, name, value)
    return call


def test_capture_off_adds_no_stage_and_no_tap() -> None:
    assert dataset_capture(CaptureSettings(enabled=False)) == []


async def test_the_stage_captures_successes_of_matching_models_and_routes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = CaptureSettings(enabled=True, dir=tmp_path, models=("claude-*",), routes=("default",))
    [stage] = dataset_capture(settings)
    assert isinstance(stage, DatasetCapture)
    other_model = make_call("gpt-5")
    stage.on_request(other_model)
    assert other_model.output_tap is None

    def answered(call: Call, answer: bytes, **outcome: Any) -> Call:
        stage.on_request(call)
        assert call.output_tap is not None
        for i in range(0, len(answer), 7):
            call.output_tap(answer[i : i + 7])
        for name, value in {"status": 200, "route": "default", **outcome}.items():
            setattr(call, name, value)
        stage.on_done(call)
        return call

    answered(make_call(), anthropic_sse("kept"))
    answered(make_call(), anthropic_sse("failed"), status=529, error_class="overloaded")
    answered(make_call(), anthropic_sse("cut"), error_class="timeout")
    answered(make_call(), anthropic_sse("other route"), route="cheap")
    with caplog.at_level(logging.WARNING, logger="proxygate.capture"):
        huge = answered(make_call(), b" " * (MAX_ANSWER_BYTES + 1))
        answered(make_call(), b" " * (MAX_ANSWER_BYTES + 1))
    assert huge.output_tap is None
    await stage.close()
    assert [r["messages"][-1] for r in read_records(tmp_path)] == [{"role": "assistant", "content": "kept"}]
    assert [r.getMessage() for r in caplog.records] == ["capture: answers over 16 MB are not captured (pg_1)"]


# --------------------------------------------------------------------------- the command


def test_since_reads_ages_and_dates() -> None:
    now = 1_800_000_000.0
    assert [since_ts(v, now) for v in ("7d", "12h", "30m", "2027-01-15", "2027-01-15T08:00:00+01:00")] == [
        now - 7 * 86400,
        now - 12 * 3600,
        now - 1800,
        1_800_000_000.0 - 8 * 3600,
        1_800_000_000.0 - 3600,
    ]
    with pytest.raises(
        ClientError, match=r"^--since: 'soon' is neither an age \(7d, 12h, 30m\) nor a date \(2026-11-01\)$"
    ):
        since_ts("soon", now)


def test_export_command_prints_jsonl_without_a_server(tmp_path: Path) -> None:
    capture_dir = tmp_path / "data" / "capture"
    writer: CaptureWriter[dict[str, Any]] = CaptureWriter(capture_dir, lambda r: r)
    for record in records_of(
        (ant_body("u1"), anthropic_sse("a1"), "r1"), (ant_body("u1", "a1", "u2"), anthropic_sse("a2"), "r2")
    ):
        writer.put(record)
    writer.close()
    (tmp_path / "config.toml").write_text('pool_dir = "pool"\ndata_dir = "data"\n')
    runner = CliRunner()
    env = {"PROXYGATE_CONFIG": str(tmp_path / "config.toml")}
    result = runner.invoke(app, ["capture", "export"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        orjson.dumps(
            {
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "u1"},
                    {"role": "assistant", "content": "a1"},
                    {"role": "user", "content": "u2"},
                    {"role": "assistant", "content": "a2"},
                ]
            }
        ).decode()
    ]
    assert result.stderr.splitlines() == ["exported 1 conversations from 1 files"]
    bad = runner.invoke(app, ["capture", "export", "--since", "soon"], env=env)
    assert (bad.exit_code, bad.stderr.strip()) == (
        1,
        "error: --since: 'soon' is neither an age (7d, 12h, 30m) nor a date (2026-11-01)",
    )

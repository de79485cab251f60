"""protocols.md Appendix A: one conversation (a read_file tool cycle) in each of the four formats.

The codec tests decode and encode these bodies, and the conversion tests carry them across
formats, so all of them speak about the same conversation.
"""

from __future__ import annotations

from typing import Any

READ_FILE_SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}

ANT_A: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 16000,
    "thinking": {"type": "enabled", "budget_tokens": 4000},
    "system": "Be brief.",
    "tools": [{"name": "read_file", "description": "Read a file", "input_schema": READ_FILE_SCHEMA}],
    "messages": [
        {"role": "user", "content": "What does a.py do?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Read it first.", "signature": "EpYB"},
                {"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {"path": "a.py"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "print('hi')"},
                {"type": "text", "text": "Also, is it safe?"},
            ],
        },
    ],
}
CHAT_A: dict[str, Any] = {
    "model": "deepseek-v4-pro",
    "max_tokens": 16000,
    "reasoning_effort": "medium",
    "stream": True,
    "stream_options": {"include_usage": True},
    "tools": [
        {
            "type": "function",
            "function": {"name": "read_file", "description": "Read a file", "parameters": READ_FILE_SCHEMA},
        }
    ],
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What does a.py do?"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Read it first.",
            "tool_calls": [
                {
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path":"a.py"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "print('hi')"},
        {"role": "user", "content": "Also, is it safe?"},
    ],
}
RESP_A: dict[str, Any] = {
    "model": "gpt-5.2",
    "instructions": "Be brief.",
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "reasoning": {"effort": "medium", "summary": "auto"},
    "tools": [
        {
            "type": "function",
            "name": "read_file",
            "description": "Read a file",
            "strict": False,
            "parameters": READ_FILE_SCHEMA,
        }
    ],
    "input": [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "What does a.py do?"}],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Read it first."}],
            "encrypted_content": "gAAAAB",
        },
        {
            "type": "function_call",
            "call_id": "toolu_01A",
            "name": "read_file",
            "arguments": '{"path":"a.py"}',
        },
        {"type": "function_call_output", "call_id": "toolu_01A", "output": "print('hi')"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Also, is it safe?"}]},
    ],
}
GEM_A: dict[str, Any] = {
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "tools": [
        {
            "functionDeclarations": [
                {"name": "read_file", "description": "Read a file", "parametersJsonSchema": READ_FILE_SCHEMA}
            ]
        }
    ],
    "generationConfig": {
        "maxOutputTokens": 16000,
        "thinkingConfig": {"thinkingLevel": "MEDIUM", "includeThoughts": True},
    },
    "contents": [
        {"role": "user", "parts": [{"text": "What does a.py do?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "read_file", "args": {"path": "a.py"}}, "thoughtSignature": "EvwB"}
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "read_file", "response": {"output": "print('hi')"}}},
                {"text": "Also, is it safe?"},
            ],
        },
    ],
}

"""A local estimate of a request's input tokens, for ``/v1/messages/count_tokens`` (§1.1).

When the chosen upstream is not Anthropic there is no tokenizer endpoint to ask, and proxygate
downloads no tokenizer. The answer is an honest estimate, documented as one:

* ASCII text: one token per 3.5 characters. English prose runs near 4 characters per token and
  source code near 3 with Claude's and OpenAI's tokenizers; 3.5 sits between and errs on the
  high side for prose, which is the safe side for context accounting (compacting a little early
  beats overflowing).
* Other characters: one token each (CJK characters are mostly one token or more; accented
  Latin letters inflate the count slightly — again on the safe side).
* Fixed costs: a few tokens per message and per tool for the role/format markup, the tool-use
  system prompt Anthropic adds when tools are present (documented at ~350 tokens), and a flat
  amount per image and document, since their size in tokens depends on pixel or page counts the
  estimate does not decode.

Expect ±15% on typical coding-agent traffic; it is an estimate, not a bill.
"""

from __future__ import annotations

import math

import orjson

from proxygate.wire.ir import (
    Base64Source,
    Document,
    Image,
    Opaque,
    Part,
    Reasoning,
    Refusal,
    Request,
    Text,
    TextSource,
    ToolCall,
    ToolDef,
    ToolResult,
)

ASCII_CHARS_PER_TOKEN = 3.5
MESSAGE_OVERHEAD_TOKENS = 4  # role and turn markers
TOOL_OVERHEAD_TOKENS = 8  # per tool definition's wrapper
TOOL_USE_SYSTEM_TOKENS = 350  # Anthropic's tool-use system prompt (docs: 313-346 by tool_choice)
# Anthropic bills an image at width*height/750 tokens, ~1600 for the 1.15 MP it resizes to.
IMAGE_TOKENS = 1600
# A PDF page costs ~1500-3000 tokens (text plus page image); count base64 bytes toward pages.
PDF_TOKENS_PER_KIB = 40


def text_tokens(text: str) -> float:
    ascii_chars = sum(1 for ch in text if ch < "\x80")
    return ascii_chars / ASCII_CHARS_PER_TOKEN + (len(text) - ascii_chars)


def _part_tokens(part: Part) -> float:
    match part:
        case Text(text=text) | Refusal(text=text):
            return text_tokens(text)
        case Reasoning(text=text):
            # Anthropic ignores thinking of earlier turns; other upstreams see it as text.
            return text_tokens(text)
        case ToolCall(name=name, arguments=arguments):
            return text_tokens(name) + text_tokens(arguments) + MESSAGE_OVERHEAD_TOKENS
        case ToolResult(parts=parts):
            return sum(_part_tokens(p) for p in parts) + MESSAGE_OVERHEAD_TOKENS
        case Image():
            return IMAGE_TOKENS
        case Document(source=TextSource(text=text), title=title):
            return text_tokens(text) + text_tokens(title or "")
        case Document(source=Base64Source(data=data)):
            return len(data) * 3 / 4 / 1024 * PDF_TOKENS_PER_KIB
        case Document():
            return IMAGE_TOKENS
        case Opaque(raw=raw):
            return text_tokens(orjson.dumps(raw).decode())
    return 0.0


def _tool_tokens(tool: ToolDef) -> float:
    schema = orjson.dumps(tool.parameters).decode() if tool.parameters is not None else ""
    return text_tokens(tool.name) + text_tokens(tool.description) + text_tokens(schema) + TOOL_OVERHEAD_TOKENS


def estimate_input_tokens(req: Request) -> int:
    """Estimated input tokens of system prompt, tools and messages (see the module docstring)."""
    total = sum(text_tokens(p.text) for p in req.system)
    if req.tools:
        total += TOOL_USE_SYSTEM_TOKENS + sum(_tool_tokens(t) for t in req.tools)
    for msg in req.messages:
        total += MESSAGE_OVERHEAD_TOKENS + sum(_part_tokens(p) for p in msg.parts)
    return max(1, math.ceil(total))

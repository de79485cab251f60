"""History repairs run on the IR before encoding for strict targets (protocols.md §6.1, §6.3).

Interrupted tools, resumed or rewound sessions and lossy converters leave tool calls without
results, results without calls and results behind an interleaved user message. ANT, CHAT and
GEM reject all three with a 400 that repeats on every later turn, so every encoder first runs
``repair_tool_pairing``: each assistant turn's calls are answered, in call order, at the start
of the next user turn.
"""

from __future__ import annotations

from proxygate.wire.ir import (
    Document,
    Image,
    Message,
    Part,
    Text,
    ToolCall,
    ToolResult,
)

INTERRUPTED_RESULT = "Tool call was interrupted; no result."


def result_text(result: ToolResult) -> str:
    """The text parts of a tool result joined with newlines (CHAT ``tool`` content is text)."""
    return "\n".join(p.text for p in result.parts if isinstance(p, Text))


def _orphan_as_text(result: ToolResult) -> Text:
    # Keep the information instead of dropping it (§6.3 b).
    label = result.name or result.call_id
    return Text(f"[tool result for {label}]: {result_text(result)}")


def repair_tool_pairing(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """Answer every tool call in the next user turn; orphan results become user text."""
    out: list[Message] = []
    i, n = 0, len(messages)
    while i < n:
        msg = messages[i]
        role = "user" if msg.role == "tool" else msg.role
        if role == "assistant":
            out.append(msg)
            calls = [p for p in msg.parts if isinstance(p, ToolCall)]
            j = i + 1
            while j < n and messages[j].role != "assistant":
                j += 1
            out.extend(_answer(calls, messages[i + 1 : j]))
            i = j
            continue
        # A user/system turn not preceded by tool calls: every result in it is an orphan.
        parts = tuple(_orphan_as_text(p) if isinstance(p, ToolResult) else p for p in msg.parts)
        out.append(Message(role, parts))
        i += 1
    return tuple(out)


def _answer(calls: list[ToolCall], span: tuple[Message, ...]) -> list[Message]:
    """The turns after an assistant turn, with its calls' results first and in call order."""
    found: dict[str, ToolResult] = {}
    rest: list[Message] = []
    call_ids = {c.id for c in calls}
    for msg in span:
        kept: list[Part] = []
        for part in msg.parts:
            if isinstance(part, ToolResult) and part.call_id in call_ids and part.call_id not in found:
                found[part.call_id] = part
            elif isinstance(part, ToolResult):
                kept.append(_orphan_as_text(part))
            else:
                kept.append(part)
        if kept:
            rest.append(Message("user" if msg.role == "tool" else msg.role, tuple(kept)))
    if not calls:
        return rest
    results: list[Part] = [
        found.get(c.id) or ToolResult(c.id, (Text(INTERRUPTED_RESULT),), is_error=True, name=c.name)
        for c in calls
    ]
    if rest and rest[0].role == "user":
        return [Message("user", (*results, *rest[0].parts)), *rest[1:]]
    return [Message("user", tuple(results)), *rest]


def has_content(part: Part) -> bool:
    """False for text that would be an empty block (§6.1); everything else counts."""
    if isinstance(part, Text):
        return bool(part.text.strip())
    return True


def media_of(result: ToolResult) -> tuple[Image | Document, ...]:
    return tuple(p for p in result.parts if isinstance(p, Image | Document))

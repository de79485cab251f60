"""Folding a stream of IR events into one ``Response``: a stream collected into one answer.

Used when a client asked for no stream but the upstream only streams (the ChatGPT backend,
peers.md §3.2). Items are taken from the block events, not from a terminal object, which the
ChatGPT backend may send with an empty ``output`` (protocols.md §3.7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxygate.errors import UpstreamError
from proxygate.wire import ir


@dataclass(slots=True)
class _Block:
    kind: ir.BlockKind
    start: ir.BlockStart
    text: list[str] = field(default_factory=list)
    state: ir.ReasoningState | None = None

    def part(self) -> ir.Part | None:
        joined = "".join(self.text)
        match self.kind:
            case "text":
                return ir.Text(joined)
            case "refusal":
                return ir.Refusal(joined)
            case "reasoning":
                return ir.Reasoning(joined, self.state)
            case "tool_call":
                return ir.ToolCall(
                    self.start.tool_id,
                    self.start.tool_name,
                    joined or "{}",
                    kind=self.start.tool_kind,
                    state=self.state,
                )
            case "opaque":
                if self.start.raw is None or self.start.fmt is None:
                    return None
                return ir.Opaque(self.start.fmt, self.start.raw)
        return None  # pragma: no cover  (BlockKind is exhaustive)


@dataclass(slots=True)
class ResponseBuilder:
    """Folds IR stream events into one ``Response``."""

    id: str = ""
    model: str = ""
    usage: ir.Usage = field(default_factory=ir.Usage)
    finish: ir.Finish | None = None
    blocks: dict[int, _Block] = field(default_factory=dict)

    def feed(self, event: ir.StreamEvent) -> None:
        match event:
            case ir.Start(id=response_id, model=model, usage=usage):
                self.id, self.model, self.usage = response_id, model, usage
            case ir.BlockStart(index=index, kind=kind):
                self.blocks[index] = _Block(kind, event)
            case ir.Delta(index=index):
                block = self.blocks.get(index)
                if block is None:
                    return
                block.text.append(event.text or event.args or event.reasoning)
                if event.state is not None:
                    block.state = event.state
            case ir.Finish():
                self.finish = event
            case ir.Error(error_class=error_class, message=message, status=status):
                raise UpstreamError(
                    f"upstream stream failed: {message}", status=status, error_class=error_class
                )
            case _:
                pass

    def response(self) -> ir.Response:
        if self.finish is None:
            raise UpstreamError("upstream stream ended before its final event")
        parts = tuple(p for _, block in sorted(self.blocks.items()) if (p := block.part()) is not None)
        return ir.Response(
            id=self.id,
            model=self.model,
            parts=parts,
            stop_reason=self.finish.stop_reason,
            stop_sequence=self.finish.stop_sequence,
            usage=self.usage.merge(self.finish.usage),
        )

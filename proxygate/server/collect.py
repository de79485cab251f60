"""A stream collected into one JSON answer, for a client that asked for no stream.

The ChatGPT backend only streams (peers.md §3.2: ``stream: true`` is mandatory), so a client
that sent ``stream: false`` gets the upstream events folded into an IR ``Response`` and
encoded in its own format. The upstream decoder gives IR events; ``ResponseBuilder`` folds
them. Items are taken from the block events, not from the terminal object, which the
ChatGPT backend may send with an empty ``output`` (protocols.md §3.7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from aiohttp import web

from proxygate.broker import Lease
from proxygate.call import Call
from proxygate.errors import UpstreamError
from proxygate.server.relay import Upstream
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


async def collected_response(
    call: Call, lease: Lease, upstream: Upstream, headers: dict[str, str], *, idle_s: float
) -> web.Response:
    """Read the whole upstream stream and answer one JSON body in the client's format."""
    from proxygate.wire.codecs import CODECS

    decoder = CODECS[lease.upstream_format].StreamDecoder()
    builder = ResponseBuilder()
    async for chunk in upstream.chunks(idle_s):
        for event in decoder.feed(chunk):
            builder.feed(event)
    for event in decoder.close():
        builder.feed(event)
    response = builder.response().with_model(call.model)
    call.usage = response.usage
    body = orjson.dumps(CODECS[call.fmt].encode_response(response))
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}  # was the stream's
    return web.Response(status=200, body=body, headers=headers, content_type="application/json")

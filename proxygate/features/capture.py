"""Stage: dataset capture, each successful turn as a record in the OpenAI chat fine-tuning shape.

The one idea: a record is what one request added to its conversation. Clients resend the whole
history every turn, so in ``last-turn`` mode the stage remembers, per conversation, how many
(normalised) messages it already holds and a hash of them; the next request that extends that
prefix is stored as only its new messages plus the answer, with the ``offset`` where they go.
``export_conversations`` puts them back together: ``messages[:offset] + record.messages``.

    on_request   (loop)    keep a reference to the parsed body; set the output tap
    output tap   (loop)    buffer the bytes the client receives (bounded)
    on_done      (loop)    a success of a matching route: queue a ``Turn``
    render_turn  (thread)  decode request and answer with the client format's codecs, normalise
                           through the Chat codec, place in its chain, build the record

A record (one JSON line)::

    {"messages": [{"role": "system" | "user" | "assistant" | "tool", …}, …, {"role": "assistant", …}],
     "tools": [{"type": "function", "function": {…}}],          # when the request had tools
     "metadata": {"conversation", "chain", "turn", "offset", "restart", "request_id", "model",
                  "upstream_model", "client_format", "upstream_format", "route", "mode", "time"}}

Messages are what the Chat codec encodes (``tool_calls`` with ids, ``tool`` messages with
``tool_call_id``); thinking text goes to the assistant message's ``reasoning_content`` and
signatures are dropped. A conversation may hold several *chains* (Claude Code sends side requests
such as title generation under the same session id): each request continues the chain whose
prefix it extends the furthest, or starts a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

import orjson

from proxygate.call import Call
from proxygate.config import CaptureMode, CaptureSettings
from proxygate.errors import ConfigError
from proxygate.features.capture_files import CaptureWriter, ExportReport
from proxygate.wire import ir
from proxygate.wire.codecs import CODECS
from proxygate.wire.collect import ResponseBuilder

MAX_ANSWER_BYTES = 16 * 1024 * 1024
"An answer is buffered up to this size (a 64k-token streamed answer is ~5 MB of SSE); larger ones are skipped."
MAX_CONVERSATIONS = 4096
"Conversations whose captured prefix is remembered (LRU); a forgotten one restarts with its whole history."
MAX_CHAINS = 8
"Chains remembered per conversation (the main one, sub-agents, side requests)."
BILLING_HEADER = "x-anthropic-billing-header:"
"Claude Code's first system block: a nonce that changes every request (anthropics/claude-code#68900)."


def dataset_capture(
    settings: CaptureSettings, *, switch: Callable[[Call], bool] | None = None, tenant_on: bool = False
) -> list[DatasetCapture]:
    """The capture stage when ``[capture] enabled`` or a tenant turns it on (``tenant_on``); none at
    all otherwise (no per-request cost). ``switch`` decides per request (a tenant's on/off/inherit)."""
    if not (settings.enabled or tenant_on):
        return []
    return [DatasetCapture(settings, switch=switch)]


@dataclass(frozen=True, slots=True)
class Turn:
    """One successful request and the answer its client received, as the writer thread needs it."""

    request_id: str
    fmt: ir.Format
    body: dict[str, Any]
    answer: bytes
    model: str
    upstream_model: str
    upstream_format: ir.Format
    conversation: str
    route: str
    wall_started: float


class _Answer:
    """The output tap: the bytes sent to the client, kept up to ``MAX_ANSWER_BYTES``."""

    __slots__ = ("body", "chunks", "size")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.chunks: list[bytes] = []
        self.size = 0

    def __call__(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= MAX_ANSWER_BYTES:
            self.chunks.append(chunk)
        elif self.chunks:
            self.chunks = []  # over the bound: the record is skipped, the memory freed now


class DatasetCapture:
    def __init__(self, settings: CaptureSettings, *, switch: Callable[[Call], bool] | None = None) -> None:
        if settings.dir is None:
            raise ConfigError("[capture] dir is not set")
        self.settings = settings
        self.switch = switch
        "Per request on or off (a tenant's setting); None: always (``[capture] enabled``)."
        self.chains = Chains()
        self.writer: CaptureWriter[Turn] = CaptureWriter(
            settings.dir,
            self.render,
            compress=settings.gzip,
            max_bytes=int(settings.max_mb * 1024 * 1024),
        )

    def on_request(self, call: Call) -> None:
        if call.op != "generate" or not _matches(call.model, self.settings.models):
            return
        if self.switch is not None and not self.switch(call):
            return
        # Guardrails run before this stage: call.body is their anonymised body, and the tap sees
        # the answer before the originals are put back (server/relay.send), so both stay anonymised.
        call.output_tap = _Answer(call.body)  # the relay drops call.body later; the tap keeps it

    def on_done(self, call: Call) -> None:
        answer = call.output_tap
        if not isinstance(answer, _Answer) or call.status >= 400 or call.error_class:
            return
        call.output_tap = None
        if answer.size > MAX_ANSWER_BYTES:
            self.writer.warn_once(
                "size",
                "capture: answers over %d MB are not captured (%s)",
                MAX_ANSWER_BYTES >> 20,
                call.request_id,
            )
            return
        if self.settings.routes and not _matches(call.route, self.settings.routes):
            return
        self.writer.put(
            Turn(
                request_id=call.request_id,
                fmt=call.fmt,
                body=answer.body,
                answer=b"".join(answer.chunks),
                model=call.model,
                upstream_model=call.upstream_model,
                upstream_format=call.upstream_format or call.fmt,
                conversation=call.conversation or f"req:{call.request_id}",
                route=call.route,
                wall_started=call.wall_started,
            )
        )

    async def close(self) -> None:
        """Write what is queued and close the file (at a clean stop)."""
        await asyncio.to_thread(self.writer.close)

    def render(self, turn: Turn) -> dict[str, Any]:
        """The record of ``turn`` (runs on the writer thread, which alone touches ``chains``)."""
        return render_turn(turn, self.chains, self.settings.mode)


def _matches(value: str, globs: tuple[str, ...]) -> bool:
    return not globs or any(fnmatchcase(value, g) for g in globs)


# --------------------------------------------------------------------------- records (pure)


def render_turn(turn: Turn, chains: Chains, mode: CaptureMode) -> dict[str, Any]:
    """Decode ``turn``, place it in its chain and build its record."""
    request = CODECS[turn.fmt].decode_request(turn.body, path_model=turn.model)
    messages, tools = chat_messages(request)
    answer = assistant_message(decode_answer(turn.fmt, turn.answer))
    answer_ids = tuple(c["id"] for c in answer.get("tool_calls", ()))
    place = chains.place(turn.conversation, turn.request_id, messages, tools, answer_ids)
    if mode == "full":
        new, offset, with_tools = messages, 0, True
    else:
        new, offset, with_tools = messages[place.offset :], place.offset, place.tools_changed
        if place.call_ids:
            new = [_renamed_result(m, place.call_ids) for m in new]
    record: dict[str, Any] = {"messages": [*new, answer]}
    if tools and with_tools:
        record["tools"] = tools
    record["metadata"] = {
        "conversation": turn.conversation,
        "chain": place.chain,
        "turn": sum(1 for m in messages if m["role"] == "assistant") + 1,
        "offset": offset,
        "restart": place.restart,
        "request_id": turn.request_id,
        "model": turn.model,
        "upstream_model": turn.upstream_model,
        "client_format": turn.fmt.value,
        "upstream_format": turn.upstream_format.value,
        "route": turn.route,
        "mode": mode,
        "time": iso_time(turn.wall_started),
    }
    return record


def chat_messages(request: ir.Request) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The request's history and tools as Chat Completions ``messages`` and ``tools``."""
    system = tuple(p for p in map(_without_billing_header, request.system) if p.text.strip())
    messages = tuple(ir.Message(m.role, _plain_reasoning(m.parts)) for m in request.messages)
    body = CODECS[ir.Format.chat].encode_request(
        replace(request, system=system, messages=messages, stream=False)
    )
    return [_tidy(m) for m in body["messages"]], body.get("tools") or []


def _tidy(message: dict[str, Any]) -> dict[str, Any]:
    """A pure tool-call turn without ``content``: the shape of OpenAI's fine-tuning examples."""
    if message["role"] == "assistant" and message.get("content") is None and message.get("tool_calls"):
        return {k: v for k, v in message.items() if k != "content"}
    return message


def _renamed_result(message: dict[str, Any], call_ids: Mapping[str, str]) -> dict[str, Any]:
    if message["role"] == "tool" and message.get("tool_call_id") in call_ids:
        return {**message, "tool_call_id": call_ids[message["tool_call_id"]]}
    return message


def _without_billing_header(part: ir.Text) -> ir.Text:
    if not part.text.startswith(BILLING_HEADER):
        return part
    _, _, rest = part.text.partition("\n")
    return ir.Text(rest.lstrip("\n"))


def _plain_reasoning(parts: tuple[ir.Part, ...]) -> tuple[ir.Part, ...]:
    """Thinking text without its signature: the Chat codec then keeps it as ``reasoning_content``."""
    return tuple(
        ir.Reasoning(p.text, None, p.is_summary) if isinstance(p, ir.Reasoning) else p
        for p in parts
        if not (isinstance(p, ir.Reasoning) and not p.text)  # redacted thinking has no text to learn
    )


def decode_answer(fmt: ir.Format, raw: bytes) -> ir.Response:
    """What the client received (a JSON body or an event stream in ``fmt``) as one ``Response``."""
    codec = CODECS[fmt]
    if raw[:64].lstrip()[:1] == b"{":
        return codec.decode_response(orjson.loads(raw))
    decoder = codec.StreamDecoder()
    builder = ResponseBuilder()
    for event in decoder.feed(raw):
        builder.feed(event)
    for event in decoder.close():
        builder.feed(event)
    return builder.response()


def assistant_message(response: ir.Response) -> dict[str, Any]:
    """The answer as a Chat assistant message (the Chat codec's own shape, signatures dropped)."""
    choice = CODECS[ir.Format.chat].encode_response(response)["choices"][0]
    message: dict[str, Any] = choice["message"]
    refusal = message.pop("refusal", None)
    if message.get("content") is None and not message.get("tool_calls"):
        message["content"] = refusal or ""
    return _tidy(message)


def iso_time(ts: float) -> str:
    """A record's time: UTC, milliseconds, sortable as text."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


# --------------------------------------------------------------------------- chains


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request's messages go: its chain, the index of its first new message, and flags."""

    chain: str
    offset: int
    restart: bool
    tools_changed: bool
    call_ids: Mapping[str, str] = field(default_factory=dict)
    "The client's ids for the last answer's tool calls → the captured answer's, where they differ."


@dataclass(slots=True)
class _Chain:
    id: str
    seen: int
    "Messages of the last request placed in this chain (its answer comes right after them)."
    digest: bytes
    "Hash of those messages."
    tools_digest: bytes
    answer_ids: tuple[str, ...] = ()
    "Tool call ids of the captured answer (a Gemini client resends calls with ids of its own)."


@dataclass(slots=True)
class Chains:
    """Per conversation, the chains already captured (an LRU of ``MAX_CONVERSATIONS``)."""

    max_conversations: int = MAX_CONVERSATIONS
    _by_conversation: OrderedDict[str, list[_Chain]] = field(default_factory=OrderedDict)

    def place(
        self,
        conversation: str,
        request_id: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        answer_ids: tuple[str, ...] = (),
    ) -> Placement:
        """Find (or start) the chain ``messages`` continue and advance it past them."""
        digests = prefix_digests(messages)
        tools_digest = hashlib.blake2b(
            orjson.dumps(tools, option=orjson.OPT_SORT_KEYS), digest_size=16
        ).digest()
        chains = self._by_conversation.get(conversation)
        if chains is None:
            chains = self._by_conversation[conversation] = []
            if len(self._by_conversation) > self.max_conversations:
                self._by_conversation.popitem(last=False)
        else:
            self._by_conversation.move_to_end(conversation)
        n = len(messages)
        call_ids: dict[str, str] = {}
        best = max(
            (c for c in chains if c.seen <= n and digests[c.seen] == c.digest),
            key=lambda c: c.seen,
            default=None,
        )
        if best is None:
            best = _Chain(request_id, 0, digests[0], b"")
            chains.append(best)
            del chains[:-MAX_CHAINS]
            offset, is_new = 0, True
        else:
            chains.remove(best)
            chains.append(best)  # most recently used last
            # The client's copy of our last answer: the captured one stands in for it.
            skip = 1 if n > best.seen and messages[best.seen]["role"] == "assistant" else 0
            offset, is_new = best.seen + skip, False
            if skip:
                resent = tuple(c["id"] for c in messages[best.seen].get("tool_calls", ()))
                if resent != best.answer_ids and len(resent) == len(best.answer_ids):
                    call_ids = dict(zip(resent, best.answer_ids, strict=True))
        placement = Placement(
            chain=best.id,
            offset=offset,
            restart=is_new and any(m["role"] == "assistant" for m in messages),
            tools_changed=is_new or tools_digest != best.tools_digest,
            call_ids=call_ids,
        )
        best.seen, best.digest, best.tools_digest, best.answer_ids = n, digests[n], tools_digest, answer_ids
        return placement


def prefix_digests(messages: list[dict[str, Any]]) -> list[bytes]:
    """``d[i]`` identifies ``messages[:i]``; assistant thinking is left out (clients drop it from old turns)."""
    digests = [b""]
    for message in messages:
        key = {k: v for k, v in message.items() if k != "reasoning_content"}
        h = hashlib.blake2b(digests[-1], digest_size=16)
        h.update(orjson.dumps(key, option=orjson.OPT_SORT_KEYS))
        digests.append(h.digest())
    return digests


# --------------------------------------------------------------------------- export (pure)


@dataclass(slots=True)
class _Rebuilt:
    conversation: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    last_time: str = ""
    has_gap: bool = False


def export_conversations(
    records: Iterable[Mapping[str, Any]], *, since: str = "", report: ExportReport | None = None
) -> list[dict[str, Any]]:
    """Whole conversations, one ``{"messages": …, "tools": …}`` per chain, from capture records.

    ``since`` (an ISO time like the records' ``time``) keeps chains whose last turn is not older.
    A chain that is the beginning of a longer one of its conversation (captured again in full
    after a restart, or ``full`` mode's earlier requests) is left out, and so is one whose
    beginning is missing (counted in ``report.incomplete``): it would not be a valid example.
    """
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        meta = record.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        request_id = str(meta.get("request_id") or id(record))
        conversation = str(meta.get("conversation") or request_id)
        grouped.setdefault((conversation, str(meta.get("chain") or request_id)), []).append(record)
    rebuilt: list[_Rebuilt] = []
    for (conversation, _), chain_records in grouped.items():
        chain = _Rebuilt(conversation)
        for record in sorted(chain_records, key=_time_of):  # stable: file order within a time
            meta = record.get("metadata")
            offset = meta.get("offset", 0) if isinstance(meta, Mapping) else 0
            offset = offset if isinstance(offset, int) and offset >= 0 else 0
            chain.has_gap = chain.has_gap or offset > len(chain.messages)
            chain.messages = [*chain.messages[:offset], *record["messages"]]
            if isinstance(record.get("tools"), list):
                chain.tools = record["tools"]
            chain.last_time = max(chain.last_time, _time_of(record))
        rebuilt.append(chain)
    whole = [c for c in rebuilt if not c.has_gap]
    if report is not None:
        report.incomplete += len(rebuilt) - len(whole)
    kept = [c for c in whole if c.last_time >= since and not _is_subsumed(c, whole)]
    return [{"messages": c.messages, **({"tools": c.tools} if c.tools else {})} for c in kept]


def _time_of(record: Mapping[str, Any]) -> str:
    meta = record.get("metadata")
    value = meta.get("time") if isinstance(meta, Mapping) else None
    return value if isinstance(value, str) else ""


def _is_subsumed(chain: _Rebuilt, chains: list[_Rebuilt]) -> bool:
    """A longer (or as long and later) chain of the conversation starts with this one."""
    for other in chains:
        if other is chain or other.conversation != chain.conversation:
            continue
        if len(other.messages) < len(chain.messages):
            continue
        if len(other.messages) == len(chain.messages) and other.last_time < chain.last_time:
            continue
        if len(other.messages) == len(chain.messages) and other.last_time == chain.last_time:
            continue  # identical twins: keep both rather than guess
        if all(_same_turn(a, b) for a, b in zip(chain.messages, other.messages, strict=False)):
            return True
    return False


def _same_turn(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    # Answers are compared by role only: the captured answer and the client's resent copy of it
    # may differ in formatting (tool arguments' spacing, dropped thinking).
    return a.get("role") == b.get("role") and (a.get("role") == "assistant" or a == b)

"""proxygate's intermediate representation (protocols.md §5.0).

Every wire format decodes into these types and encodes from them, so conversion is
client → IR → upstream and back: N codecs, not N² converters. Stream events are small
frozen dataclasses joined in one union and dispatched with ``match``.

Conventions every codec keeps (so encoders stay simple):

* Tool results live as ``ToolResult`` parts inside ``user`` messages (Anthropic's shape);
  decoders of formats with a separate tool role/item fold them into the user turn that
  follows the assistant's calls. Encoders also accept ``role="tool"`` and treat it as user.
* The system prompt is ``Request.system``; a ``system`` message inside ``messages`` is a
  mid-conversation instruction (Claude Code, CHAT ``developer``) that each encoder places
  per §5.1.
* ``ToolCall.arguments`` is JSON *text* for function tools (ANT ``input`` objects are serialised
  by ``content.input_to_arguments``) and the raw freeform text for ``kind="custom"`` tools.
* A stream's blocks are strictly sequential: ``BlockStart(i)``, ``Delta(i)``…, ``BlockStop(i)``,
  then ``i + 1`` — decoders buffer interleaving upstreams (§5.14.2), so encoders never have to.
* Opaque reasoning state (``ReasoningState``) only goes back to its ``origin`` (§5.7.2).

Adding a field: give it a default and never rename or remove one (other codecs build on this).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from proxygate.errors import ClientError, UpstreamError


class Format(StrEnum):
    """The four wire formats; one spelling everywhere (STYLE.md §2)."""

    anthropic = "anthropic"
    chat = "chat"
    responses = "responses"
    gemini = "gemini"


TURNS_FIELD = {
    Format.anthropic: "messages",
    Format.chat: "messages",
    Format.responses: "input",
    Format.gemini: "contents",
}
"The request body's list of the conversation's items (turns), per format."


class Usage(NamedTuple):
    """Token counts in Anthropic's accounting: ``input_tokens`` excludes cache reads and writes.

    Codecs convert at the edge (protocols.md §5.11): OpenAI's ``prompt_tokens`` include cached
    tokens, so ``input = prompt - cached``.

    A named tuple, not a frozen dataclass: every request builds several (the sniffer merges
    each usage report), and a tuple is built in a fifth of the time.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    "The part of ``cache_write_tokens`` written with Anthropic's 1-hour TTL (priced higher)."

    def __add__(self, other: Usage) -> Usage:  # type: ignore[override]  # sums, never concatenates
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )

    def merge(self, other: Usage) -> Usage:
        """Later reports win field by field where they are non-zero (ANT message_delta is cumulative)."""
        if not any(self):  # the first report (every stream's message_start)
            return other
        return Usage(
            other.input_tokens or self.input_tokens,
            other.output_tokens or self.output_tokens,
            other.cache_read_tokens or self.cache_read_tokens,
            other.cache_write_tokens or self.cache_write_tokens,
            other.reasoning_tokens or self.reasoning_tokens,
            other.cache_write_1h_tokens or self.cache_write_1h_tokens,
        )

    @property
    def prompt_tokens(self) -> int:
        """The whole prompt as OpenAI and Gemini count it (cache reads and writes included)."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        """Everything billed: the whole prompt and the output (what budgets count)."""
        return self.prompt_tokens + self.output_tokens


class StopReason(StrEnum):
    """Why generation ended; the closed IR set of protocols.md §5.10."""

    end_turn = "end_turn"
    max_tokens = "max_tokens"
    tool_use = "tool_use"
    stop_sequence = "stop_sequence"
    refusal = "refusal"
    pause_turn = "pause_turn"
    context_exceeded = "context_exceeded"
    error = "error"


# --------------------------------------------------------------------------- errors


class ProtocolError(UpstreamError):
    """The upstream broke its wire format (unparseable body, impossible event order)."""

    error_class = "server"
    status = 502


class StreamTruncated(ProtocolError):
    """The upstream stream ended before the format's terminator (protocols.md §5.14.1 rule 5)."""


class InvalidRequest(ClientError):
    """The client's body cannot be represented (wrong types, an empty conversation)."""


# --------------------------------------------------------------------------- parts

Role = Literal["system", "user", "assistant", "tool"]
ToolKind = Literal["function", "custom"]


@dataclass(frozen=True, slots=True)
class CacheMark:
    """An Anthropic ``cache_control`` breakpoint (protocols.md §1.10, §5.13); ttl "5m" | "1h"."""

    ttl: str | None = None


@dataclass(frozen=True, slots=True)
class ReasoningState:
    """Provider-opaque reasoning continuity that goes back to its ``origin`` only (§5.7).

    kind: ``signature`` (Anthropic thinking), ``redacted`` (Anthropic redacted_thinking data),
    ``encrypted`` (OpenAI encrypted_content), ``thought_signature`` (Gemini), ``plaintext``
    (DeepSeek-style: the reasoning text itself is the state; ``payload`` may be empty).
    origin: a ``Format`` value or a provider family such as ``"deepseek"``.
    """

    origin: str
    kind: str
    payload: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class Text:
    text: str
    cache: CacheMark | None = None


@dataclass(frozen=True, slots=True)
class Base64Source:
    media_type: str
    data: str


@dataclass(frozen=True, slots=True)
class UrlSource:
    url: str


@dataclass(frozen=True, slots=True)
class FileSource:
    """A provider-scoped file id: never valid at another provider (§5.2)."""

    file_id: str


@dataclass(frozen=True, slots=True)
class TextSource:
    """A plain-text document body."""

    text: str
    media_type: str = "text/plain"


MediaSource = Base64Source | UrlSource | FileSource | TextSource


@dataclass(frozen=True, slots=True)
class Image:
    source: MediaSource
    detail: str | None = None
    cache: CacheMark | None = None


@dataclass(frozen=True, slots=True)
class Document:
    source: MediaSource
    title: str | None = None
    filename: str | None = None
    cache: CacheMark | None = None


@dataclass(frozen=True, slots=True)
class Audio:
    data: str
    format: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's tool call. ``arguments`` is JSON text (function) or raw input (custom).

    ``state`` carries reasoning continuity bound to this call (Gemini ``thoughtSignature``
    on a ``functionCall`` part, §4.5).
    """

    id: str
    name: str
    arguments: str = "{}"
    kind: ToolKind = "function"
    cache: CacheMark | None = None
    state: ReasoningState | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    parts: tuple[Text | Image | Document, ...] = ()
    is_error: bool = False
    name: str | None = None
    cache: CacheMark | None = None


@dataclass(frozen=True, slots=True)
class Reasoning:
    """Visible reasoning text (possibly empty) plus the opaque state that continues it."""

    text: str = ""
    state: ReasoningState | None = None
    is_summary: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    text: str


@dataclass(frozen=True, slots=True)
class Opaque:
    """A block only its own format understands (server-tool blocks…); re-emitted to ``fmt`` only."""

    fmt: Format
    raw: dict[str, Any]


Part = Text | Image | Document | Audio | ToolCall | ToolResult | Reasoning | Refusal | Opaque


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    parts: tuple[Part, ...] = ()


# --------------------------------------------------------------------------- request


@dataclass(frozen=True, slots=True)
class ToolDef:
    """A tool the model may call. ``parameters`` is a JSON Schema (None: no arguments).

    ``kind="custom"`` is a freeform/grammar tool (``grammar`` holds the format object);
    ``kind="hosted"`` is a provider-executed tool kept as ``raw`` for format ``origin`` only.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    kind: Literal["function", "custom", "hosted"] = "function"
    strict: bool | None = None
    grammar: dict[str, Any] | None = None
    cache: CacheMark | None = None
    origin: Format | None = None
    raw: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """auto | none | required (any tool) | tool (exactly ``name``); ``allowed`` narrows the set."""

    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None
    allowed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


def sampling_number(value: Any) -> float | None:
    """A float sampling parameter read from a request body: a JSON number (never a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


@dataclass(frozen=True, slots=True)
class ReasoningConfig:
    """What the client asked about thinking (§5.7.4); None on Request means "not said"."""

    mode: Literal["off", "budget", "adaptive", "effort"] = "effort"
    budget_tokens: int | None = None
    effort: Effort | None = None
    summary: str | None = None
    include_encrypted: bool = False
    display: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """Structured output (§5.9)."""

    kind: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """One generation request in no particular format.

    ``passthrough`` holds the source format's fields the IR does not model, keyed by the
    format they belong to; encoders re-emit only their own format's entry.
    """

    model: str
    messages: tuple[Message, ...] = ()
    system: tuple[Text, ...] = ()
    tools: tuple[ToolDef, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    sampling: Sampling = field(default_factory=Sampling)
    reasoning: ReasoningConfig | None = None
    response_format: ResponseFormat | None = None
    cache: CacheMark | None = None
    cache_key: str | None = None
    user_id: str | None = None
    stream: bool = False
    source: Format | None = None
    passthrough: dict[str, dict[str, Any]] = field(default_factory=dict)

    def with_model(self, model: str, *, stream: bool | None = None) -> Request:
        """This request for another model id (the upstream's), optionally (not) streaming."""
        return replace(self, model=model, stream=self.stream if stream is None else stream)


# --------------------------------------------------------------------------- response


@dataclass(frozen=True, slots=True)
class Response:
    id: str
    model: str
    parts: tuple[Part, ...] = ()
    stop_reason: StopReason = StopReason.end_turn
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)

    def with_model(self, model: str) -> Response:
        """This response under the model name the client asked for (§6.26)."""
        return replace(self, model=model)


# --------------------------------------------------------------------------- stream events

BlockKind = Literal["text", "reasoning", "tool_call", "refusal", "opaque"]


@dataclass(frozen=True, slots=True)
class Start:
    """The response began; ``usage`` holds what is known of the input side so far."""

    id: str
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class BlockStart:
    """Block ``index`` opens. Tool blocks name their call; opaque blocks carry ``raw`` of format ``fmt``.

    Encoders emit an opaque block (and its deltas) only when ``fmt`` is their own format (§6.27).
    """

    index: int
    kind: BlockKind
    tool_id: str = ""
    tool_name: str = ""
    tool_kind: ToolKind = "function"
    raw: dict[str, Any] | None = None
    fmt: Format | None = None


@dataclass(frozen=True, slots=True)
class Delta:
    """One fragment for block ``index``: exactly one of the fields is set.

    ``text`` for text/refusal blocks, ``args`` a JSON-text fragment of a tool call (or raw text
    for custom tools), ``reasoning`` thinking text, ``state`` reasoning continuity.
    """

    index: int
    text: str = ""
    args: str = ""
    reasoning: str = ""
    state: ReasoningState | None = None


@dataclass(frozen=True, slots=True)
class BlockStop:
    index: int


@dataclass(frozen=True, slots=True)
class Finish:
    """The response ended normally; ``usage`` is the final cumulative count."""

    stop_reason: StopReason
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class Error:
    """The upstream failed mid-stream; ``error_class`` is an IR class of protocols.md §5.12."""

    error_class: str
    message: str
    status: int = 500


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


StreamEvent = Start | BlockStart | Delta | BlockStop | Finish | Error | KeepAlive

"""Putting originals back into answers: whole JSON bodies and SSE streams, in the client's format.

A ``Restorer`` knows one request's replacements. In a JSON answer it restores every string
(tool-call arguments, which are JSON text, get the JSON-escaped original, so the arguments
stay valid JSON). In a stream, text arrives in pieces, and a replacement may be split across
events at any byte: each text channel (a content block, a choice, a tool call's arguments, an
output item) holds back the tail that could be the start of a replacement until the next
piece decides, and releases it before the channel ends. Events without text pass through as
they came (keep-alives included); an event whose text changed is re-encoded.

Thinking blocks, signatures and encrypted reasoning are never touched: the model's text there
is covered by a signature the client sends back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxygate.features.redaction import JSON_TEXT_KEYS, SKIP_TYPES
from proxygate.wire.ir import Format

# An opaque replacement (features/redaction.py): PG_, the detector, 16 base32 characters.
TOKEN = r"PG_[A-Z][A-Z_]*?_[a-z2-7]{16}"
_PARTIAL_TOKEN = re.compile(r"P|PG|PG_[A-Z_]*|PG_[A-Z][A-Z_]*_[a-z2-7]{1,15}")
Lookup = Callable[[str], "str | None"]
"The persisted way back (features/reverse_map.py) for tokens this request did not send."

_KEEP_KEYS = frozenset({"signature", "encrypted_content", "thoughtSignature", "thought_signature", "data"})
_BLANK_LINE = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class Restorer:
    """One request's way back: replacement → original."""

    __slots__ = ("_escaped", "_lookup", "_pattern", "_prefixes", "_reverse", "_text_pattern", "max_len")

    def __init__(self, reverse: Mapping[str, str], lookup: Lookup | None = None) -> None:
        self._reverse = dict(reverse)
        self._lookup = lookup
        self._escaped = {fake: orjson.dumps(original).decode()[1:-1] for fake, original in reverse.items()}
        fakes = sorted(reverse, key=len, reverse=True)  # the longest wins where one starts another
        alternatives = [*map(re.escape, fakes), *([TOKEN] if lookup is not None else [])]
        self._pattern = re.compile("|".join(alternatives) or "(?!)")
        self._text_pattern = re.compile(self._pattern.pattern.encode())
        self.max_len = max([len(fakes[0]) if fakes else 0, 48 if lookup is not None else 0])
        prefixes = {fake[:i] for fake in fakes for i in range(1, len(fake))}
        self._prefixes = frozenset(prefixes)  # a complete fake that starts a longer one is in it too

    def text(self, text: str, *, is_json: bool = False) -> str:
        return self._pattern.sub(lambda m: self._original(m.group(0), is_json), text)

    def _original(self, fake: str, is_json: bool) -> str:
        known = (self._escaped if is_json else self._reverse).get(fake)
        if known is not None:
            return known
        original = self._lookup(fake) if self._lookup is not None else None
        if original is None:
            return fake  # not ours (or forgotten): left as the model wrote it
        return orjson.dumps(original).decode()[1:-1] if is_json else original

    def _may_continue(self, tail: str) -> bool:
        if tail in self._prefixes:
            return True
        return self._lookup is not None and _PARTIAL_TOKEN.fullmatch(tail) is not None

    def split(self, text: str) -> tuple[str, str]:
        """``(ready, held)``: ``held`` is the shortest-starting tail that may still become a
        replacement (never the inside of a complete one)."""
        n = len(text)
        start = max(0, n - self.max_len + 1)
        inside = [m.span() for m in self._pattern.finditer(text, max(0, start - self.max_len))]
        for p in range(start, n):
            if self._may_continue(text[p:]) and not any(s < p < e for s, e in inside):
                return text[:p], text[p:]
        return text, ""

    def value(self, node: Any, key: str = "") -> Any:
        if isinstance(node, str):
            return self.text(node, is_json=key in JSON_TEXT_KEYS)
        if isinstance(node, list):
            return [self.value(item, key) for item in node]
        if isinstance(node, dict):
            if node.get("type") in SKIP_TYPES or node.get("thought") is True:
                return node
            return {k: v if k in _KEEP_KEYS else self.value(v, k) for k, v in node.items()}
        return node

    def mentions(self, data: bytes) -> bool:
        return self._text_pattern.search(data) is not None

    def body(self, raw: bytes) -> bytes:
        """A whole JSON answer with its originals back; byte for byte when it holds none."""
        if not self.mentions(raw):
            return raw
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:  # a plain-text or HTML error page: restored as text
            return self.text(raw.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        return orjson.dumps(self.value(data))


Factory = Callable[[str], dict[str, Any]]
"Builds a delta event of one channel carrying the given text (to release held text)."


@dataclass(slots=True)
class _Channel:
    held: str = ""
    is_json: bool = False
    event: str | None = None
    factory: Factory | None = None


@dataclass(slots=True)
class _Event:
    """One SSE event: its non-data lines as they came, its data parsed."""

    lines: list[bytes]
    name: str | None
    data: Any
    changed: bool = False
    before: list[bytes] = field(default_factory=list)
    "Events to send before this one (held text released when a channel ends)."


class StreamRestorer:
    """The output transform of a request with replacements (``Call.output_transform``)."""

    def __init__(self, restorer: Restorer, fmt: Format) -> None:
        self.restorer = restorer
        self.fmt = fmt
        self._buf = b""
        self._channels: dict[tuple[Any, ...], _Channel] = {}

    # -- the Call.output_transform protocol ----------------------------------------------

    def whole(self, body: bytes) -> bytes:
        return self.restorer.body(body)

    def text(self, text: str) -> str:
        return self.restorer.text(text)

    def feed(self, data: bytes) -> bytes:
        data = self._buf + data
        end = 0
        for match in _BLANK_LINE.finditer(data):
            end = match.end()
        self._buf = data[end:]
        if not end:
            return b""
        out: list[bytes] = []
        at = 0
        for match in _BLANK_LINE.finditer(data, 0, end):
            out.append(self._event(data[at : match.end()]))
            at = match.end()
        return b"".join(out)

    def close(self) -> bytes:
        out = [self._event(self._buf)] if self._buf.strip() else []
        self._buf = b""
        out.append(self._release(list(self._channels)))
        return b"".join(out)

    # -- events --------------------------------------------------------------------------

    def _event(self, raw: bytes) -> bytes:
        lines = raw.splitlines()
        data_lines = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
        if not data_lines:
            return raw  # a comment (keep-alive), or nothing
        data = b"\n".join(data_lines)
        if data == b"[DONE]":  # Chat's end: release every channel first
            return self._release(list(self._channels)) + raw
        if not data.startswith(b"{") or (not self.restorer.mentions(data) and not self._may_hold(data)):
            return raw
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return raw
        name = next((line[6:].strip().decode() for line in lines if line.startswith(b"event:")), None)
        event = _Event([line for line in lines if line and not line.startswith(b"data:")], name, parsed)
        if isinstance(parsed, dict):
            {
                Format.anthropic: self._anthropic,
                Format.chat: self._chat,
                Format.responses: self._responses,
                Format.gemini: self._gemini,
            }[self.fmt](event, parsed)
        if not event.changed:
            return b"".join(event.before) + raw
        return b"".join(event.before) + _encode(event.lines, event.data)

    def _may_hold(self, data: bytes) -> bool:
        """Could this event carry a delta? Then it must be parsed even without a replacement."""
        return bool(self._channels) or b"delta" in data or b'"text"' in data or b"parts" in data

    def _update(
        self,
        event: _Event,
        key: tuple[Any, ...],
        container: dict[str, Any],
        field_name: str,
        *,
        is_json: bool,
        is_final: bool,
        factory: Factory,
    ) -> None:
        piece = container.get(field_name)
        if not isinstance(piece, str):
            return
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel(is_json=is_json)
        text = channel.held + piece
        if is_final:
            ready, held = text, ""
        else:
            ready, held = self.restorer.split(text)
        new = self.restorer.text(ready, is_json=is_json)
        channel.held, channel.event, channel.factory = held, event.name, factory
        if new != piece:
            container[field_name] = new
            event.changed = True
        if not held:
            del self._channels[key]

    def _release(self, keys: list[tuple[Any, ...]]) -> bytes:
        out: list[bytes] = []
        for key in keys:
            channel = self._channels.pop(key, None)
            if channel is None or not channel.held or channel.factory is None:
                continue
            text = self.restorer.text(channel.held, is_json=channel.is_json)
            lines = [f"event: {channel.event}".encode()] if channel.event else []
            out.append(_encode(lines, channel.factory(text)))
        return b"".join(out)

    def _release_where(self, event: _Event, match: Callable[[tuple[Any, ...]], bool]) -> None:
        keys = [key for key in self._channels if match(key)]
        if keys:
            event.before.append(self._release(keys))

    def _rest(self, event: _Event, data: dict[str, Any], skip: str = "") -> None:
        """Restore every other string of the event (ids and signatures stay)."""
        for k, v in data.items():
            if k == skip or k in _KEEP_KEYS or isinstance(v, (int, float, bool)) or v is None:
                continue
            new = self.restorer.value(v, k)
            if new != v:
                data[k] = new
                event.changed = True

    # -- per format ----------------------------------------------------------------------

    def _anthropic(self, event: _Event, data: dict[str, Any]) -> None:
        kind = data.get("type")
        index = data.get("index")
        if kind == "content_block_delta" and isinstance(delta := data.get("delta"), dict):
            dtype = delta.get("type")
            if dtype in ("text_delta", "input_json_delta"):
                is_json = dtype == "input_json_delta"
                name = "partial_json" if is_json else "text"

                def factory(
                    text: str, index: Any = index, dtype: Any = dtype, name: str = name
                ) -> dict[str, Any]:
                    return {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": dtype, name: text},
                    }

                self._update(
                    event, ("a", index, name), delta, name, is_json=is_json, is_final=False, factory=factory
                )
            elif dtype not in ("thinking_delta", "signature_delta"):
                self._rest(event, data)
            return
        if kind == "content_block_stop":
            self._release_where(event, lambda key: key[1] == index)
        elif kind in ("message_delta", "message_stop", "error"):
            self._release_where(event, lambda key: True)
        self._rest(event, data)

    def _chat(self, event: _Event, data: dict[str, Any]) -> None:
        if "error" in data:  # an error ends the stream: held text goes first
            self._release_where(event, lambda key: True)
            self._rest(event, data)
            return
        top = {k: v for k, v in data.items() if k not in ("choices", "usage")}
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            i = choice.get("index", 0)
            is_final = choice.get("finish_reason") is not None
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for name in ("content", "refusal"):

                    def factory(text: str, i: Any = i, name: str = name) -> dict[str, Any]:
                        return {
                            **top,
                            "choices": [{"index": i, "delta": {name: text}, "finish_reason": None}],
                        }

                    self._update(
                        event, ("c", i, name), delta, name, is_json=False, is_final=is_final, factory=factory
                    )
                for call in delta.get("tool_calls") or []:
                    function = call.get("function") if isinstance(call, dict) else None
                    if not isinstance(function, dict):
                        continue
                    k = call.get("index", 0)

                    def args(text: str, i: Any = i, k: Any = k) -> dict[str, Any]:
                        tool = {"index": k, "function": {"arguments": text}}
                        return {
                            **top,
                            "choices": [{"index": i, "delta": {"tool_calls": [tool]}, "finish_reason": None}],
                        }

                    self._update(
                        event,
                        ("t", i, k),
                        function,
                        "arguments",
                        is_json=True,
                        is_final=is_final,
                        factory=args,
                    )
            elif isinstance(choice.get("message"), dict):
                self._rest(event, choice)
            if is_final:
                self._release_where(event, _in_choice(i))

    def _responses(self, event: _Event, data: dict[str, Any]) -> None:
        kind = str(data.get("type", ""))
        oi, ci = data.get("output_index"), data.get("content_index")

        def copy_with(text: str, data: dict[str, Any] = data) -> dict[str, Any]:
            return {**data, "delta": text}

        if kind == "response.output_text.delta":
            self._update(
                event, ("t", oi, ci), data, "delta", is_json=False, is_final=False, factory=copy_with
            )
            return
        if kind == "response.function_call_arguments.delta":
            self._update(
                event, ("f", oi, None), data, "delta", is_json=True, is_final=False, factory=copy_with
            )
            return
        if kind in ("response.output_text.done", "response.content_part.done"):
            self._release_where(event, lambda key: key[0] == "t" and key[1] == oi and key[2] == ci)
        elif kind in ("response.function_call_arguments.done", "response.output_item.done"):
            self._release_where(event, lambda key: key[1] == oi)
        elif kind in ("response.completed", "response.incomplete", "response.failed", "error"):
            self._release_where(event, lambda key: True)
        self._rest(event, data)

    def _gemini(self, event: _Event, data: dict[str, Any]) -> None:
        if "error" in data:
            self._release_where(event, lambda key: True)
            self._rest(event, data)
            return
        top = {k: v for k, v in data.items() if k not in ("candidates", "usageMetadata")}
        for candidate in data.get("candidates") or []:
            if not isinstance(candidate, dict):
                continue
            i = candidate.get("index", 0)
            is_final = candidate.get("finishReason") is not None
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts or []:
                if not isinstance(part, dict) or part.get("thought") is True:
                    continue
                if isinstance(part.get("text"), str):

                    def factory(text: str, i: Any = i) -> dict[str, Any]:
                        parts = [{"text": text}]
                        return {
                            **top,
                            "candidates": [{"index": i, "content": {"role": "model", "parts": parts}}],
                        }

                    self._update(
                        event, ("g", i), part, "text", is_json=False, is_final=is_final, factory=factory
                    )
                else:
                    new = self.restorer.value(part)
                    if new != part:
                        part.clear()
                        part.update(new)
                        event.changed = True
            if is_final:
                self._release_where(event, _in_choice(i))


def _in_choice(i: Any) -> Callable[[tuple[Any, ...]], bool]:
    return lambda key: key[1] == i


def _encode(lines: list[bytes], data: Any) -> bytes:
    return b"\n".join([*lines, b"data: " + orjson.dumps(data)]) + b"\n\n"


__all__ = ["Restorer", "StreamRestorer"]

"""The codec registry: each wire format's six entry points under its ``Format``.

The relay converts with ``CODECS[src].decode_request(...)`` → IR → ``CODECS[dst].encode_request``
and streams through ``CODECS[upstream].StreamDecoder()`` / ``CODECS[client].StreamEncoder(...)``.
Modules load on first use, so a format whose module is not written yet costs nothing until asked
for. Adding a format is one line in ``MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from proxygate.wire.ir import Finish, Format, Request, Response, StreamEvent

MODULES: dict[Format, str] = {
    Format.anthropic: "proxygate.wire.anthropic",
    Format.chat: "proxygate.wire.chat",
    Format.responses: "proxygate.wire.responses",
    Format.gemini: "proxygate.wire.gemini",
}


class StreamDecoder(Protocol):
    finish: Finish | None

    def feed(self, chunk: bytes) -> list[StreamEvent]: ...

    def close(self) -> list[StreamEvent]: ...


class StreamEncoder(Protocol):
    def encode(self, event: StreamEvent) -> bytes: ...

    def close(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Codec:
    """One format's request, response and stream codecs."""

    fmt: Format
    decode_request: Callable[..., Request]
    encode_request: Callable[..., dict[str, Any]]
    decode_response: Callable[[dict[str, Any]], Response]
    encode_response: Callable[..., dict[str, Any]]
    StreamDecoder: Callable[..., StreamDecoder]
    StreamEncoder: Callable[..., StreamEncoder]


def load_codec(fmt: Format) -> Codec:
    module = importlib.import_module(MODULES[fmt])
    return Codec(
        fmt,
        module.decode_request,
        module.encode_request,
        module.decode_response,
        module.encode_response,
        module.StreamDecoder,
        module.StreamEncoder,
    )


class _Registry(Mapping[Format, Codec]):
    """``Format`` → ``Codec``, importing each codec module on first lookup."""

    def __init__(self) -> None:
        self._loaded: dict[Format, Codec] = {}

    def __getitem__(self, fmt: Format) -> Codec:
        if fmt not in self._loaded:
            if fmt not in MODULES:
                raise KeyError(fmt)
            self._loaded[fmt] = load_codec(fmt)
        return self._loaded[fmt]

    def __iter__(self) -> Iterator[Format]:
        return iter(MODULES)

    def __len__(self) -> int:
        return len(MODULES)


CODECS: Mapping[Format, Codec] = _Registry()


def convert_request(
    body: dict[str, Any], src: Format, dst: Format, *, model: str, path_model: str | None = None
) -> dict[str, Any]:
    """A ``src`` request body re-encoded as a ``dst`` body for upstream ``model``."""
    request = CODECS[src].decode_request(body, path_model=path_model)
    return CODECS[dst].encode_request(request.with_model(model))

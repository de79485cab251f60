"""A ``Call``: one client request as it moves through the pipeline.

Ingress fills it (request id, the client's format, the parsed body, model, stream flag);
stages may read and annotate it; the relay records what happened on it (account, status,
usage) so that the usage record, the log line and the client's error all carry one id.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from multidict import CIMultiDictProxy

from proxygate.wire.ir import Format, Usage

Op = Literal["generate", "count_tokens", "compact"]


class OutputTransform(Protocol):
    """Rewrites the answer on its way to the client (the relay calls it; see ``server/relay.send``)."""

    def whole(self, body: bytes) -> bytes:
        """A whole JSON answer."""

    def text(self, text: str) -> str:
        """Upstream text quoted in an error message to the client."""

    def feed(self, data: bytes) -> bytes:
        """Stream bytes (whole SSE events); returns what to send now, maybe nothing."""

    def close(self) -> bytes:
        """The end of the stream: whatever is still held back."""


_sequence = itertools.count()


def new_request_id() -> str:
    """``pg_`` + 24 hex digits that sort by arrival: the millisecond (12), a per-process
    sequence (4: order within a millisecond) and randomness (8: other processes).

    The arrival it carries bounds the search for it in the request log (``--before ID``):
    no page written before it can hold it (store/lmdb_store.py).
    """
    # An id names a request, it guards nothing: ``random`` (reseeded in a forked child) is
    # enough, and spares every request the system call of ``os.urandom``.
    return f"pg_{time.time_ns() // 1_000_000:012x}{next(_sequence) & 0xFFFF:04x}{random.getrandbits(32):08x}"


@dataclass(slots=True)
class Call:
    request_id: str
    fmt: Format
    headers: CIMultiDictProxy[str]
    body: dict[str, Any]
    raw_body: bytes
    model: str
    is_stream: bool
    query: str = ""
    asks_usage: bool = False
    "The client set ``stream_options.include_usage`` (Chat): it wants the usage chunk."
    op: Op = "generate"
    "generate; count_tokens (/v1/messages/count_tokens); compact (/v1/responses/compact)."
    started: float = field(default_factory=time.monotonic)
    wall_started: float = field(default_factory=time.time)
    tenant: str = ""
    conversation: str = ""
    "The conversation key (broker/pins.py), empty when nothing identifies one."
    shaped: list[str] = field(default_factory=list)
    "What features/limits.py changed to fit the model (``images``, ``tools``, …): x-proxygate-shaped."
    output_tap: Callable[[bytes], None] | None = None
    "Set by a stage that must see the answer: called with every body chunk sent to the client."
    output_transform: OutputTransform | None = None
    "Set by a stage that rewrites the answer (guardrails restore originals); the tap sees it before."
    redactions: dict[str, int] = field(default_factory=dict)
    "Guardrail detector → values replaced in this request (counts only, never values)."
    # Filled by the relay:
    route: str = ""
    "The routing config in use (``x-proxygate-route`` without the +failover mark)."
    account_id: str = ""
    upstream_format: Format | None = None
    upstream_model: str = ""
    status: int = 0
    usage: Usage = field(default_factory=Usage)
    error_class: str = ""
    error: str = ""
    attempts: int = 0
    failovers: list[tuple[str, int, str]] = field(default_factory=list)
    "Each attempt failed over before the answer: (account id, upstream status or 0, error), in order."
    first_byte_ms: float = 0.0
    "From arrival to the first body byte sent to the client (0: none was sent)."
    cost_usd: float | None = None
    "What the usage cost at API prices (a subscription's API-equivalent value); None: no price."

    @property
    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

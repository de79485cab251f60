"""A ``Call``: one client request as it moves through the pipeline.

Ingress fills it (request id, the client's format, the parsed body, model, stream flag);
stages may read and annotate it; the relay records what happened on it (account, status,
usage) so that the usage record, the log line and the client's error all carry one id.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from multidict import CIMultiDictProxy

from proxygate.wire.ir import Format, Usage

Op = Literal["generate", "count_tokens", "compact"]


def new_request_id() -> str:
    return "pg_" + os.urandom(12).hex()


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
    # Filled by the relay:
    account_id: str = ""
    upstream_format: Format | None = None
    upstream_model: str = ""
    status: int = 0
    usage: Usage = field(default_factory=Usage)
    error_class: str = ""
    error: str = ""
    attempts: int = 0

    @property
    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000

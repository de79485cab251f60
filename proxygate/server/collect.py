"""A stream collected into one JSON answer, for a client that asked for no stream.

The ChatGPT backend only streams (peers.md §3.2: ``stream: true`` is mandatory), so a client
that sent ``stream: false`` gets the upstream events folded into an IR ``Response``
(``wire/collect.py``) and encoded in its own format.
"""

from __future__ import annotations

import aiohttp
import orjson
from aiohttp import web

from proxygate.broker import Lease
from proxygate.call import Call
from proxygate.errors import ConnectionLost, ResponseLimit, UpstreamError, UpstreamTimeout
from proxygate.providers.upstream import scrub
from proxygate.server.convert import client_stamp
from proxygate.server.relay import Upstream, answered
from proxygate.wire.codecs import CODECS
from proxygate.wire.collect import ResponseBuilder
from proxygate.wire.sse import SSEError


async def collected_response(
    call: Call, lease: Lease, upstream: Upstream, headers: dict[str, str], *, idle_s: float, max_bytes: int
) -> web.Response:
    """Read the whole upstream stream and answer one JSON body in the client's format.

    Nothing reaches the client before the stream is complete, so a cut, a silence or a broken
    stream raises an ``UpstreamError`` (the pipeline fails over); over ``max_bytes`` of stream,
    a ``ResponseLimit``.
    """
    decoder = CODECS[lease.upstream_format].StreamDecoder()
    builder = ResponseBuilder()
    size = 0
    try:
        async for chunk in upstream.chunks(idle_s):
            size += len(chunk)
            if size > max_bytes:
                raise ResponseLimit(
                    f"upstream answer larger than {max_bytes // (1024 * 1024)} MB (max_response_mb)"
                )
            for event in decoder.feed(chunk):
                builder.feed(event)
        for event in decoder.close():
            builder.feed(event)
    except TimeoutError:
        raise UpstreamTimeout(f"upstream silent for {idle_s:.0f}s mid-answer") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionLost(f"upstream answer cut: {type(exc).__name__}") from None
    except SSEError as exc:
        raise ConnectionLost(f"upstream stream broken: {exc}") from None
    except UpstreamError as exc:  # a truncated or unparseable stream may quote upstream bytes
        exc.message = scrub(lease.account, exc.message)
        raise
    response = builder.response().with_model(call.model)
    call.usage = response.usage
    body = orjson.dumps(CODECS[call.fmt].encode_response(response, **client_stamp(call.fmt)))
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}  # was the stream's
    return web.Response(
        status=200, body=answered(call, body), headers=headers, content_type="application/json"
    )

"""A stream collected into one JSON answer, for a client that asked for no stream.

The ChatGPT backend only streams (peers.md §3.2: ``stream: true`` is mandatory), so a client
that sent ``stream: false`` gets the upstream events folded into an IR ``Response``
(``wire/collect.py``) and encoded in its own format.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from proxygate.broker import Lease
from proxygate.call import Call
from proxygate.server.convert import client_stamp
from proxygate.server.relay import Upstream, answered
from proxygate.wire.codecs import CODECS
from proxygate.wire.collect import ResponseBuilder


async def collected_response(
    call: Call, lease: Lease, upstream: Upstream, headers: dict[str, str], *, idle_s: float
) -> web.Response:
    """Read the whole upstream stream and answer one JSON body in the client's format."""
    decoder = CODECS[lease.upstream_format].StreamDecoder()
    builder = ResponseBuilder()
    async for chunk in upstream.chunks(idle_s):
        for event in decoder.feed(chunk):
            builder.feed(event)
    for event in decoder.close():
        builder.feed(event)
    response = builder.response().with_model(call.model)
    call.usage = response.usage
    body = orjson.dumps(CODECS[call.fmt].encode_response(response, **client_stamp(call.fmt)))
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}  # was the stream's
    return web.Response(
        status=200, body=answered(call, body), headers=headers, content_type="application/json"
    )

"""The converted route: client format → IR → the account's format, and the answer back.

Chosen when the leased account does not speak the client's format (the broker prefers one
that does). Requests convert once; streams convert chunk by chunk as they arrive — upstream
bytes → upstream decoder → IR events → client encoder → bytes — so time-to-first-token
stays the upstream's. The codecs are sans-I/O (``wire/``); this module is their I/O shell.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import time
from collections.abc import Mapping

import aiohttp
import orjson
from aiohttp import web

from proxygate.broker import Lease
from proxygate.broker.pins import cache_key_for
from proxygate.call import Call
from proxygate.config import ModelLimitSettings
from proxygate.errors import ClientError, ConnectionLost, UpstreamError, UpstreamTimeout
from proxygate.pool import catalog
from proxygate.providers.upstream import scrub
from proxygate.server.relay import (
    Upstream,
    answered,
    client_gone,
    end_output,
    fail_stream,
    read_answer,
    send,
    send_head,
    start_response,
)
from proxygate.wire import ir
from proxygate.wire.codecs import CODECS
from proxygate.wire.sse import SSEError
from proxygate.wire.target import Target
from proxygate.wire.tokens import estimate_input_tokens


def target_of(lease: Lease, models: Mapping[str, ModelLimitSettings] | None = None) -> Target:
    """What the leased account's provider and model accept: pool/catalog.py, the pool file's
    ``prompt_cache_key``, and the first config ``[models."<glob>"]`` matching the upstream model."""
    account = lease.account
    limits = next((v for glob, v in (models or {}).items() if fnmatch.fnmatchcase(lease.model, glob)), None)
    efforts: tuple[str, ...] | None = None
    if limits is not None and limits.thinking is False:
        efforts = ()
    elif limits is not None and limits.reasoning_efforts:
        efforts = limits.reasoning_efforts
    return catalog.target(
        account.spec,
        lease.model,
        prompt_cache_key=account.accepts_prompt_cache_key,
        reasoning_efforts=efforts,
        max_output_tokens=limits.max_output_tokens if limits is not None else 0,
    )


def request_body(call: Call, lease: Lease, models: Mapping[str, ModelLimitSettings] | None = None) -> bytes:
    """The client's request re-encoded for the leased account's format, model and provider."""
    source, target = CODECS[call.fmt], CODECS[lease.upstream_format]
    try:
        request = source.decode_request(call.body, path_model=call.model)
    except ir.InvalidRequest:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ClientError(f"cannot read the {call.fmt.value} request: {exc}") from None
    request = request.with_model(lease.model, stream=call.is_stream)
    if request.cache_key is None and call.conversation and lease.upstream_format is ir.Format.responses:
        # Converted routes cache too: the conversation's own key (sent only where accepted: target).
        request = dataclasses.replace(request, cache_key=cache_key_for(call.conversation))
    return orjson.dumps(target.encode_request(request, target=target_of(lease, models)))


def estimate_tokens(call: Call) -> web.Response:
    """``count_tokens`` for a non-Anthropic account: an honest local estimate (wire/tokens.py)."""
    request = CODECS[call.fmt].decode_request(call.body, path_model=call.model)
    return web.json_response(
        {"input_tokens": estimate_input_tokens(request)}, headers={"x-proxygate-estimate": "true"}
    )


def client_stamp(fmt: ir.Format) -> dict[str, int]:
    """Only Chat objects carry a creation time; the codecs have no clock, so it comes from here."""
    return {"created": int(time.time())} if fmt is ir.Format.chat else {}


def response_id(fmt: ir.Format) -> str:
    prefix = {ir.Format.anthropic: "msg_", ir.Format.chat: "chatcmpl-", ir.Format.responses: "resp_"}
    return prefix.get(fmt, "") + os.urandom(12).hex()


async def relay(
    request: web.Request,
    call: Call,
    lease: Lease,
    upstream: Upstream,
    headers: dict[str, str],
    *,
    idle_s: float,
    is_stream: bool,
    max_bytes: int,
) -> web.StreamResponse:
    """Answer in the client's format. Raises ``UpstreamError`` only before the first byte."""
    source, target = CODECS[lease.upstream_format], CODECS[call.fmt]
    stamp = client_stamp(call.fmt)
    headers.pop("content-type", None)
    if not is_stream:
        raw = await read_answer(upstream, idle_s, max_bytes)
        try:
            response = source.decode_response(orjson.loads(raw))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(
                scrub(lease.account, f"unreadable {lease.upstream_format.value} answer: {exc}")
            ) from None
        call.usage = response.usage
        if not response.id:  # some compatible servers send none; "chatcmpl-" alone is no id
            response = dataclasses.replace(response, id=response_id(call.fmt))
        body = orjson.dumps(target.encode_response(response.with_model(call.model), **stamp))
        return web.Response(
            status=200, body=answered(call, body), headers=headers, content_type="application/json"
        )

    decoder = source.StreamDecoder(fallback_id=os.urandom(6).hex())
    include_usage = call.asks_usage or call.fmt is not ir.Format.chat
    encoder = target.StreamEncoder(
        model=call.model, response_id=response_id(call.fmt), include_usage=include_usage, **stamp
    )
    out = await start_response(request, 200, headers, is_stream=True)
    watch = StreamWatch(lease)
    try:
        head_sent = False
        async for chunk in upstream.chunks(idle_s):
            if upstream.has_ended:  # what is left to write leaves with the stream's end
                out.hold_to_end()
            data = b"".join(encoder.encode(event) for event in watch.events(decoder.feed(chunk)))
            if data:
                await send(out, call, data)
            if not head_sent:
                head_sent = True
                await send_head(out, call)
        data = b"".join(encoder.encode(event) for event in watch.events(decoder.close())) + encoder.close()
        if data:
            await send(out, call, data)
        await end_output(out, call)
    except aiohttp.ClientConnectionResetError:
        client_gone(call)
        return out
    except TimeoutError:
        await fail_stream(out, call, UpstreamTimeout(f"upstream silent for {idle_s:.0f}s mid-stream"))
    except (aiohttp.ClientError, OSError) as exc:
        await fail_stream(
            out, call, ConnectionLost(f"upstream connection lost mid-stream: {type(exc).__name__}")
        )
    except SSEError as exc:  # an event over the 16 MiB cap
        await fail_stream(out, call, ConnectionLost(f"upstream stream broken: {exc}"))
    except UpstreamError as exc:  # a truncated or unparseable stream, max_stream_s
        exc.message = scrub(lease.account, exc.message)  # may quote the upstream's bytes
        await fail_stream(out, call, exc)
    finally:
        # Also when the client left (cancelled): the start told the input tokens.
        call.usage = decoder.finish.usage if decoder.finish is not None else watch.usage
    await out.write_eof()
    return out


class StreamWatch:
    """Watches the IR events on their way to the encoder: the usage known so far, and error
    messages from the upstream with the account's credentials masked."""

    __slots__ = ("account", "usage")

    def __init__(self, lease: Lease) -> None:
        self.account = lease.account
        self.usage = ir.Usage()

    def events(self, events: list[ir.StreamEvent]) -> list[ir.StreamEvent]:
        for i, event in enumerate(events):
            if type(event) is ir.Start:
                self.usage = event.usage
            elif type(event) is ir.Error:
                events[i] = dataclasses.replace(event, message=scrub(self.account, event.message))
        return events
